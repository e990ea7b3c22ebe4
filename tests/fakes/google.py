"""A fake Gemini API ``models/{model}:generateContent`` for image models.

Checks ``x-goog-api-key`` (a wrong key gets Google's HTTP 400 ``API_KEY_INVALID``),
decodes the inline images and the prompt part, and answers one image per call with a
``usageMetadata`` split by modality.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from tests.fakes.base import OUTPUT_B64, FakeProvider


class FakeGemini(FakeProvider):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.images: list[list[tuple[str, bytes]]] = []  # per call: (mime, bytes)
        self.prompts: list[str] = []
        self.models: list[str] = []
        self.app.router.add_post("/v1beta/models/{call}", self._handle)

    def error_body(self, status: int, message: str) -> Any:
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
        return {"error": {"code": status, "message": message,
                          "status": names.get(status, "UNKNOWN")}}  # fmt: skip

    @staticmethod
    def reply(images: int = 1, text: str | None = "Here you go") -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if text:
            parts.append({"text": text})
        parts += [
            {"inlineData": {"mimeType": "image/png", "data": OUTPUT_B64}}
        ] * images
        return {
            "candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {
                "promptTokenCount": 1300, "candidatesTokenCount": 1300,
                "totalTokenCount": 2600,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10},
                                        {"modality": "IMAGE", "tokenCount": 1290}],
                "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 10},
                                            {"modality": "IMAGE", "tokenCount": 1290}],
            },
            "modelVersion": "gemini-3.1-flash-image",
        }  # fmt: skip

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        assert method == "generateContent", request.path
        self.models.append(model)
        rec = await self.record(request)
        if request.headers.get("x-goog-api-key") != self.key:
            return web.json_response(
                {"error": {"code": 400, "message": "API key not valid. Please pass a "
                           "valid API key.", "status": "INVALID_ARGUMENT",
                           "details": [{"@type": "type.googleapis.com/google.rpc."
                                        "ErrorInfo", "reason": "API_KEY_INVALID"}]}},
                status=400,
            )  # fmt: skip
        assert "Authorization" not in request.headers
        assert rec.json is not None
        (content,) = rec.json["contents"]
        *image_parts, text_part = content["parts"]
        self.prompts.append(text_part["text"])
        self.images.append(
            [
                (p["inlineData"]["mimeType"], base64.b64decode(p["inlineData"]["data"]))
                for p in image_parts
            ]
        )
        assert rec.json["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
        return await self.answer(request, lambda: web.json_response(self.reply()))
