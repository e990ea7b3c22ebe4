"""A fake Azure OpenAI images API: both the deployment surface (``api-version``
required) and the v1 surface (deployment in ``model``); ``api-key`` auth."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.openai import Received, images_reply
from tests.fakes.provider import RESULT_B64, FakeProvider

API_VERSION = "2025-04-01-preview"


def _reply(rec: Received) -> dict[str, Any]:
    n = int(rec.json.get("n", 1)) if rec.json else int(rec.fields.get("n", ["1"])[0])
    return {**images_reply(n), "data": [{"b64_json": RESULT_B64}] * n}


class FakeAzure(FakeProvider):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        for op in ("edits", "generations"):
            self.route(
                "POST", f"/openai/deployments/{{dep}}/images/{op}", self._deployment
            )
            self.route("POST", f"/openai/v1/images/{op}", self._v1)

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": str(status), "message": message}}

    def _refused(self, request: web.Request) -> web.Response | None:
        if (
            request.headers.get("api-key") != self.key
            or "Authorization" in request.headers
        ):
            return web.json_response(
                {"error": {"code": "401", "message": "Access denied due to invalid "
                           "subscription key or wrong API endpoint."}},
                status=401,
            )  # fmt: skip
        return None

    async def _deployment(
        self, request: web.Request, rec: Received
    ) -> web.StreamResponse:
        if request.query.get("api-version") != API_VERSION:
            return web.json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, status=404
            )
        return self._refused(request) or await self.scripted(
            request, lambda: _reply(rec)
        )

    async def _v1(self, request: web.Request, rec: Received) -> web.StreamResponse:
        model = (
            rec.fields.get("model", [None])[0]
            if rec.json is None
            else rec.json.get("model")
        )
        if not model:
            return web.json_response(
                {"error": {"code": "invalid_request", "message": "model is required"}},
                status=400,
            )
        return self._refused(request) or await self.scripted(
            request, lambda: _reply(rec)
        )
