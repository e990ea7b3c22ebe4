"""A fake Replicate API: model predictions with ``Prefer: wait``, polling through
``urls.get``, cancel, and output files on a delivery path."""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tests.fakes.openai import Received
from tests.fakes.provider import RESULT_PNG, FakeProvider


class FakeReplicate(FakeProvider):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.sync = True  # finish within Prefer: wait
        self.polls_before_done = 1
        self.final = "succeeded"  # or failed / canceled / never
        self.canceled: list[str] = []
        self.output = ""  # the output URL; defaults to this server's delivery path
        self.get_url = ""  # urls.get; defaults to this server's prediction path
        self._ids = itertools.count(1)
        self._polls: dict[str, int] = {}
        self.route("POST", "/v1/models/{owner}/{name}/predictions", self._create)
        self.route("GET", "/v1/predictions/{id}", self._get)
        self.route("POST", "/v1/predictions/{id}/cancel", self._cancel)
        self.route("GET", "/delivery/{file}", self._file)

    def error_body(self, status: int, message: str) -> Any:
        return {"title": "error", "detail": message, "status": status}

    def _prediction(self, pid: str, status: str) -> dict[str, Any]:
        pred: dict[str, Any] = {
            "id": pid, "status": status, "output": None, "error": None,
            "urls": {"get": self.get_url or f"{self.url}/v1/predictions/{pid}",
                     "cancel": f"{self.url}/v1/predictions/{pid}/cancel"},
        }  # fmt: skip
        if status == "succeeded":
            pred["output"] = self.output or f"{self.url}/delivery/{pid}.png"
        if status == "failed":
            pred["error"] = "NSFW content detected"
        return pred

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"title": "Unauthenticated", "detail": "bad token",
                                      "status": 401}, status=401)  # fmt: skip
        return None

    async def _create(self, request: web.Request, rec: Received) -> web.StreamResponse:
        refused = self._refused(request)
        if refused:
            return refused
        if not request.headers.get("Prefer", "").startswith("wait"):
            return web.json_response({"detail": "expected Prefer: wait"}, status=400)
        if not rec.json or not rec.json.get("input", {}).get("prompt"):
            return web.json_response({"detail": "input.prompt is required"}, status=422)
        pid = f"p{next(self._ids)}"
        self._polls[pid] = 0
        status = self.final if self.sync and self.final != "never" else "starting"
        return await self.scripted(request, lambda: self._prediction(pid, status))

    async def _get(self, request: web.Request, rec: Received) -> web.StreamResponse:
        refused = self._refused(request)
        if refused:
            return refused
        pid = request.match_info["id"]
        self._polls[pid] += 1
        done = self._polls[pid] > self.polls_before_done and self.final != "never"
        return web.json_response(
            self._prediction(pid, self.final if done else "processing")
        )

    async def _cancel(self, request: web.Request, rec: Received) -> web.StreamResponse:
        self.canceled.append(request.match_info["id"])
        return web.json_response(self._prediction(request.match_info["id"], "canceled"))

    async def _file(self, request: web.Request, rec: Received) -> web.StreamResponse:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="no credentials on delivery URLs")
        return web.Response(body=RESULT_PNG, content_type="image/png")
