"""Replicate predictions for image models (e.g. ``black-forest-labs/flux-kontext-pro``).

API: https://replicate.com/docs/topics/predictions/create-a-prediction
``POST /v1/models/{owner}/{name}/predictions`` with ``{"input": {...}}`` and
``Prefer: wait=N``: the reply holds the finished prediction when the model is quick,
otherwise the proxy polls ``urls.get`` (on the API host only) until ``succeeded``,
``failed`` or ``canceled``, up to ``deadline_s``; past it the prediction is canceled
and the client gets a 504. Output URIs are fetched (from ``output_hosts`` only) when
the client wants ``b64_json``; ``data:`` URI outputs are used as they are.
Deviations: inputs are model-specific; the proxy sends ``prompt``, the first image as
``input_image`` (several as ``input_images``), the mask as ``mask`` (white = edit),
``size`` as ``aspect_ratio``, and forwards unknown client fields into ``input``.
One prediction per image: the handler fans ``n`` out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import msgspec

from proxy import sizes, translate
from proxy.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from proxy.images import b64, decode_data_url
from proxy.models import EditJob, EditResult
from proxy.providers import _inputs, _polling, _replies
from proxy.providers import _openai_compat as compat
from proxy.providers.base import (
    Auth,
    Capabilities,
    ConfigBase,
    Pool,
    Seconds,
    StaticKey,
)
from proxy.upstream import Upstream, UpstreamResponse

ASPECT_RATIOS = (
    "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9", "9:21",
    "2:1", "1:2",
)  # fmt: skip


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="replicate"):
    base_url: str = "https://api.replicate.com/v1"
    api_key_env: str = "REPLICATE_API_TOKEN"
    wait_s: Annotated[int, msgspec.Meta(ge=1, le=60)] = 60  # Prefer: wait=N
    poll_interval_s: Seconds = 1.0
    deadline_s: Seconds = 300.0
    output_hosts: list[str] = msgspec.field(
        default_factory=lambda: [
            "https://replicate.delivery",
            "https://*.replicate.delivery",
        ]
    )
    pool: Pool = Pool()


class Urls(msgspec.Struct, frozen=True):
    get: str | None = None
    cancel: str | None = None


class Prediction(msgspec.Struct):
    status: str
    output: str | list[str] | None = None
    error: str | None = None
    urls: Urls = Urls()


_FINAL = frozenset({"succeeded", "failed", "canceled"})


class _Problem(msgspec.Struct):
    detail: str | None = None
    title: str | None = None


def error_message(body: bytes) -> str | None:
    """Replicate's errors are problem details: ``{"title", "detail", "status"}``."""
    try:
        problem = msgspec.json.decode(body, type=_Problem)
    except msgspec.DecodeError:
        return None
    return problem.detail or problem.title


def parse_prediction(provider: str, body: bytes) -> Prediction:
    return _replies.decode(provider, body, Prediction)


async def build_input(job: EditJob) -> dict[str, Any]:
    data: dict[str, Any] = {**job.extra, "prompt": job.prompt}
    urls = []
    for i, img in enumerate(job.images):
        url = (await compat.image_ref(img)).get("image_url")
        if url is None:  # a file id Replicate cannot resolve
            raise InvalidRequest(
                "replicate needs the image itself, not a file id", param=f"images[{i}]"
            )
        urls.append(url)
    if len(urls) == 1:
        data["input_image"] = urls[0]
    elif urls:
        data["input_images"] = urls
    white = await _inputs.white_mask(job, provider="replicate")
    if white is not None:
        data["mask"] = "data:image/png;base64," + b64(white)
    ratio = sizes.aspect_ratio(job.size, ASPECT_RATIOS, provider="replicate")
    if ratio is not None:
        data["aspect_ratio"] = ratio
    if job.output_format in ("png", "jpeg", "webp"):
        data["output_format"] = job.output_format
    return data


class ReplicateAdapter:
    name: ClassVar[str] = "replicate"
    # Inputs go as data URIs or https URLs, which Replicate fetches itself.
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_images=4, image_urls=True, native_n=False
    )

    def __init__(self, config: Config) -> None:
        self._config = config
        self._api = urlsplit(config.base_url)

    def listed_models(self) -> list[str]:
        return [f"black-forest-labs/flux-kontext-{v}" for v in ("pro", "max")]

    def auth(self, key: str) -> Auth:
        return StaticKey("Authorization", key, prefix="Bearer ")

    def _check(self, upstream: Upstream, resp: UpstreamResponse) -> Prediction:
        if not resp.ok:
            raise _replies.failure(upstream.name, resp, error_message(resp.body))
        return parse_prediction(upstream.name, resp.body)

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        deadline = asyncio.get_running_loop().time() + self._config.deadline_s
        owner_name = _inputs.model_path(job.model, provider=upstream.name, segments=2)
        resp = await upstream.post(
            f"/models/{owner_name}/predictions",
            data=msgspec.json.encode({"input": await build_input(job)}),
            headers={
                **job.extra_headers,
                "Content-Type": "application/json",
                "Prefer": f"wait={self._config.wait_s}",
            },
        )
        pred = self._check(upstream, resp)
        if pred.status not in _FINAL:
            pred = await self._follow(pred, upstream, deadline)
        return await self._result(job, pred, upstream)

    async def _follow(
        self, pred: Prediction, upstream: Upstream, deadline: float
    ) -> Prediction:
        get_url = self._api_url(pred.urls.get, upstream.name)

        async def fetch() -> Prediction:
            return self._check(upstream, await upstream.get(get_url))

        try:
            return await _polling.poll(
                fetch,
                lambda p: p.status in _FINAL,
                interval_s=self._config.poll_interval_s,
                deadline=deadline,
                provider=upstream.name,
            )
        except ProxyError:
            if pred.urls.cancel:
                # Stop paying for a prediction nobody will read; best effort.
                cancel = self._api_url(pred.urls.cancel, upstream.name)
                with contextlib.suppress(ProxyError):
                    await upstream.post(cancel)
            raise

    def _api_url(self, url: str | None, provider: str) -> str:
        origin = f"{self._api.scheme}://{self._api.netloc}"
        return _polling.require_allowed(url or "", [origin], provider=provider)

    async def _result(
        self, job: EditJob, pred: Prediction, upstream: Upstream
    ) -> EditResult:
        name = upstream.name
        if pred.status == "canceled":
            raise UpstreamUnavailable(
                f"provider '{name}' canceled the prediction",
                provider=name,
                code="prediction_canceled",
            )
        if pred.status != "succeeded":
            raise UpstreamRejected(
                f"provider '{name}' prediction {pred.status}: {pred.error or 'no reason given'}",
                provider=name,
                code=f"prediction_{pred.status}",
            )
        outputs = [pred.output] if isinstance(pred.output, str) else pred.output or []
        if not outputs:
            raise UpstreamProtocolError(
                f"provider '{name}' returned no image",
                provider=name,
                code="upstream_protocol_error",
            )
        hosts = self._config.output_hosts
        images = [output_image(u, hosts, provider=name) for u in outputs]
        return await translate.images_result(
            images, job=job, upstream=upstream, hosts=hosts
        )


def output_image(uri: str, hosts: list[str], *, provider: str) -> bytes | str:
    """An output file: inline ``data:`` bytes, or a URL on the allowed output hosts."""
    if not uri.startswith("data:"):
        return _polling.require_allowed(uri, hosts, provider=provider)
    try:
        return decode_data_url(uri, param="output")
    except InvalidRequest as exc:
        raise UpstreamProtocolError(
            f"provider '{provider}' returned an unreadable data URI",
            provider=provider,
            code="upstream_protocol_error",
        ) from exc
