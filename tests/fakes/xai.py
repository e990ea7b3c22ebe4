"""A fake xAI images API: JSON only, ``image`` xor ``images`` (at most 3), each
``{url, type: "image_url"}``; ``response_format`` defaults to ``url``. ``size`` is
refused on every model; ``grok-imagine-image-2.0`` takes ``quality`` low|medium and
``resolution`` 1k|1.5k|2k, ``grok-imagine-image`` neither ``quality`` nor ``style``."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tests.fakes.openai import Received
from tests.fakes.provider import RESULT_B64, FakeProvider


class FakeXAI(FakeProvider):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.route("POST", "/v1/images/edits", self._edit)
        self.route("POST", "/v1/images/generations", self._generate)

    def error_body(self, status: int, message: str) -> Any:
        return {"code": "Client specified an invalid argument", "error": message}

    def _error(self, status: int, message: str) -> web.Response:
        return web.json_response({"code": "Client specified an invalid argument",
                                  "error": message}, status=status)  # fmt: skip

    def _check(self, request: web.Request, rec: Received) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return self._error(401, "Incorrect API key provided")
        if rec.json is None or request.content_type != "application/json":
            return self._error(400, "only application/json is accepted")
        body = rec.json
        v2 = str(body.get("model", "")).startswith("grok-imagine-image-2")
        for name in ("size",) if v2 else ("size", "quality", "style"):
            if name in body:
                return self._error(400, f"Argument not supported: {name}")
        if v2 and body.get("quality", "low") not in ("low", "medium"):
            return self._error(400, "quality must be low or medium")
        if v2 and body.get("resolution", "1k") not in ("1k", "1.5k", "2k"):
            return self._error(422, "invalid resolution")
        return None

    def _reply(self, body: dict[str, Any]) -> dict[str, Any]:
        n = int(body.get("n", 1))
        fmt = body.get("response_format", "url")
        item = {"b64_json": RESULT_B64} if fmt == "b64_json" else {
            "url": "https://imgen.x.ai/xai-tmp-imgen-1.png"}  # fmt: skip
        return {"data": [dict(item) for _ in range(n)]}

    async def _edit(self, request: web.Request, rec: Received) -> web.StreamResponse:
        refused = self._check(request, rec)
        if refused:
            return refused
        body = rec.json
        assert body is not None
        if ("image" in body) == ("images" in body):
            return self._error(400, "exactly one of image or images is required")
        refs = [body["image"]] if "image" in body else body["images"]
        if len(refs) > 3 or any(r.get("type") != "image_url" or not r.get("url")
                                for r in refs):  # fmt: skip
            return self._error(400, "invalid image reference")
        return await self.scripted(request, lambda: self._reply(body))

    async def _generate(
        self, request: web.Request, rec: Received
    ) -> web.StreamResponse:
        refused = self._check(request, rec)
        if refused:
            return refused
        body = rec.json
        assert body is not None
        return await self.scripted(
            request, lambda: {**self._reply(body), "created": int(time.time())}
        )
