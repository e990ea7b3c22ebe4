"""A fake Bedrock runtime: ``POST /model/{modelId}/invoke`` that recomputes the SigV4
signature from the test credentials (independently of botocore, from AWS's published
algorithm) and answers in Nova Canvas's or Stability's reply shape."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.fakes.openai import Received
from tests.fakes.provider import RESULT_B64, FakeProvider

ACCESS_KEY = "AKIDEXAMPLETEST"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-example"
REGION = "us-east-1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
}
NOVA_TASKS = {
    "TEXT_IMAGE": "textToImageParams",
    "INPAINTING": "inPaintingParams",
    "OUTPAINTING": "outPaintingParams",
    "IMAGE_VARIATION": "imageVariationParams",
}
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(
    request: web.Request, body: bytes, signed: list[str], date: str
) -> str:
    amz_date = request.headers["X-Amz-Date"]
    path = quote(request.raw_path.split("?")[0], safe="/~")
    headers = "".join(f"{h}:{' '.join(request.headers[h].split())}\n" for h in signed)
    canonical = "\n".join([
        request.method, path, "", headers, ";".join(signed),
        hashlib.sha256(body).hexdigest(),
    ])  # fmt: skip
    scope = f"{date}/{REGION}/bedrock/aws4_request"
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()
    ])  # fmt: skip
    key = _hmac(f"AWS4{SECRET_KEY}".encode(), date)
    for part in (REGION, "bedrock", "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class FakeBedrock(FakeProvider):
    def __init__(self, key: str = ACCESS_KEY) -> None:
        super().__init__(key)
        self.route("POST", "/model/{model}/invoke", self._invoke)

    def error_body(self, status: int, message: str) -> Any:
        return {"message": message}

    def _signature_error(self, request: web.Request, body: bytes) -> str | None:
        match = _AUTH.match(request.headers.get("Authorization", ""))
        if match is None:
            return "missing or malformed Authorization"
        signed = match["signed"].split(";")
        if match["key"] != ACCESS_KEY or match["service"] != "bedrock":
            return "wrong credential scope"
        if "host" not in signed or "x-amz-date" not in signed:
            return "host and x-amz-date must be signed"
        if request.headers.get("X-Amz-Security-Token") != SESSION_TOKEN or (
            "x-amz-security-token" not in signed
        ):
            return "session token missing or unsigned"
        want = expected_signature(request, body, signed, match["date"])
        return None if hmac.compare_digest(want, match["sig"]) else "signature mismatch"

    async def _invoke(self, request: web.Request, rec: Received) -> web.StreamResponse:
        body = await request.read()
        problem = self._signature_error(request, body)
        if problem is not None:
            return web.json_response({"message": f"403 {problem}"}, status=403)
        model = request.match_info["model"]
        payload = rec.json or {}
        if "nova-canvas" in model:
            error = _nova_problem(payload)
            if error:
                return web.json_response({"message": error}, status=400)
            n = payload["imageGenerationConfig"].get("numberOfImages", 1)
            return await self.scripted(request, lambda: {"images": [RESULT_B64] * n})
        return await self.scripted(
            request,
            lambda: {"seeds": [7], "finish_reasons": [None], "images": [RESULT_B64]},
        )


def _nova_problem(payload: dict[str, Any]) -> str | None:
    task = payload.get("taskType")
    if task not in NOVA_TASKS or NOVA_TASKS[task] not in payload:
        return f"ValidationException: bad taskType {task!r}"
    params = payload[NOVA_TASKS[task]]
    for key in ("image", "maskImage"):
        if key in params and not base64.b64decode(params[key]).startswith(b"\x89PNG"):
            return f"ValidationException: {key} is not a base64 PNG"
    return None
