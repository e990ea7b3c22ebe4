"""A fake Stability AI v2beta Stable Image API (edit and generate endpoints).

Multipart in; answers JSON ``{"image", "finish_reason", "seed"}`` when the request's
``Accept`` is ``application/json``, else the raw image with ``finish-reason`` and
``seed`` headers, as Stability documents. Errors use ``{"id", "name", "errors"}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.base import OUTPUT_B64, OUTPUT_PNG, FakeProvider

EDIT_ENDPOINTS = {"inpaint", "erase", "outpaint", "search-and-replace",
                  "search-and-recolor", "remove-background"}  # fmt: skip
GENERATE_ENDPOINTS = {"ultra", "core", "sd3"}


class FakeStability(FakeProvider):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.app.router.add_post("/v2beta/stable-image/edit/{endpoint}", self._edit)
        self.app.router.add_post(
            "/v2beta/stable-image/generate/{endpoint}", self._generate
        )

    def error_body(self, status: int, message: str) -> Any:
        names = {400: "bad_request", 401: "unauthorized", 403: "forbidden",
                 429: "rate_limit_exceeded", 500: "internal_error"}  # fmt: skip
        return {"id": "a1b2c3d4e5f6", "name": names.get(status, "error"),
                "errors": [message]}  # fmt: skip

    def file(self, name: str) -> bytes:
        found = [f.data for f in self.last.files if f.name == name]
        assert len(found) == 1, f"{name}: {len(found)} parts"
        return found[0]

    async def _edit(self, request: web.Request) -> web.StreamResponse:
        assert request.match_info["endpoint"] in EDIT_ENDPOINTS
        return await self._handle(request, image_required=True)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        assert request.match_info["endpoint"] in GENERATE_ENDPOINTS
        return await self._handle(request, image_required=False)

    async def _handle(
        self, request: web.Request, *, image_required: bool
    ) -> web.StreamResponse:
        rec = await self.record(request)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(self.error_body(401, "bad key"), status=401)
        assert request.content_type == "multipart/form-data"
        if image_required and not any(f.name == "image" for f in rec.files):
            return web.json_response(
                self.error_body(400, "image: required"), status=400
            )
        for f in rec.files:
            assert f.content_type.startswith("image/"), f
        accept = request.headers.get("Accept", "image/*")

        def success() -> web.StreamResponse:
            if accept == "application/json":
                return web.json_response(
                    {"image": OUTPUT_B64, "finish_reason": "SUCCESS", "seed": 42}
                )
            return web.Response(
                body=OUTPUT_PNG,
                content_type="image/png",
                headers={"finish-reason": "SUCCESS", "seed": "42"},
            )

        return await self.answer(request, success)
