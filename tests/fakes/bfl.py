"""A fake Black Forest Labs API: submit ``POST /v1/{model}`` → ``{id, polling_url}``,
``GET /v1/get_result?id=`` → Pending … Ready with a signed ``sample`` URL."""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tests.fakes.openai import Received
from tests.fakes.provider import RESULT_PNG, FakeProvider
from tests.images import flat_png


class FakeBFL(FakeProvider):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.pending_polls = 1
        self.final = "Ready"  # or Error / Failed / Content Moderated / never
        self.poll_base = ""  # where polling_url points; defaults to this server
        self.sample = ""  # the result URL; defaults to this server's delivery path
        self._ids = itertools.count(1)
        self._polls: dict[str, int] = {}
        # A FLUX.2 job's width and height: its result has that size (BFL bills it).
        self._sizes: dict[str, tuple[int, int]] = {}
        self.route("POST", "/v1/{model}", self._submit)
        self.route("GET", "/v1/get_result", self._result)
        self.route("GET", "/delivery/{file}", self._file)

    def error_body(self, status: int, message: str) -> Any:
        return {"detail": message}

    def _refused(self, request: web.Request) -> web.Response | None:
        if (
            request.headers.get("x-key") != self.key
            or "Authorization" in request.headers
        ):
            return web.json_response({"detail": "Not authenticated"}, status=403)
        return None

    async def _submit(self, request: web.Request, rec: Received) -> web.StreamResponse:
        refused = self._refused(request)
        if refused:
            return refused
        body = rec.json or {}
        if not body.get("prompt"):
            return web.json_response(
                {"detail": [{"loc": ["body", "prompt"], "msg": "field required",
                             "type": "value_error.missing"}]}, status=422)  # fmt: skip
        if request.match_info["model"].startswith("flux-2-"):
            flux2 = self._flux2(request.match_info["model"], body)
            if flux2 is not None:
                return web.json_response({"detail": flux2}, status=422)
        jid = f"job{next(self._ids)}"
        self._polls[jid] = 0
        if "width" in body:
            self._sizes[jid] = (body["width"], body["height"])
        base = self.poll_base or self.url
        return await self.scripted(
            request,
            lambda: {"id": jid, "polling_url": f"{base}/v1/get_result?id={jid}"},
        )

    @staticmethod
    def _flux2(model: str, body: dict[str, Any]) -> str | None:
        """FLUX.2: sized by width and height (no aspect_ratio), up to 8 reference
        images as input_image, input_image_2, ... (klein: 4)."""
        if "aspect_ratio" in body:
            return "aspect_ratio is not a FLUX.2 field"
        if ("width" in body) != ("height" in body) or not all(
            isinstance(body.get(k, 0), int) for k in ("width", "height")
        ):
            return "width and height go together, as integers"
        refs = [k for k in body if k.startswith("input_image")]
        expected = ["input_image", *(f"input_image_{i}" for i in range(2, 9))]
        if refs != expected[: len(refs)] or len(refs) > (4 if "klein" in model else 8):
            return f"invalid reference images {refs}"
        return None

    async def _result(self, request: web.Request, rec: Received) -> web.StreamResponse:
        refused = self._refused(request)
        if refused:
            return refused
        jid = request.query["id"]
        self._polls[jid] += 1
        if self._polls[jid] <= self.pending_polls or self.final == "never":
            return web.json_response({"id": jid, "status": "Pending", "result": None})
        reply: dict[str, Any] = {"id": jid, "status": self.final, "result": None}
        if self.final == "Ready":
            sample = self.sample or f"{self.url}/delivery/{jid}.png"
            reply["result"] = {"sample": sample, "seed": 1}
        return web.json_response(reply)

    async def _file(self, request: web.Request, rec: Received) -> web.StreamResponse:
        if "x-key" in request.headers:
            return web.Response(status=400, text="no credentials on delivery URLs")
        size = self._sizes.get(request.match_info["file"].removesuffix(".png"))
        body = RESULT_PNG if size is None else flat_png(*size, color_type=2)
        return web.Response(body=body, content_type="image/png")
