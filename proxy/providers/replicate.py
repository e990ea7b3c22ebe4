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

from proxy.errors import (
    InvalidRequest,
    ProxyError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from proxy.images import decode_data_url
from proxy.models import EditJob, EditResult
from proxy.providers import _inputs, _polling, _replies, _sizes
from proxy.providers import _openai_compat as compat
from proxy.providers._call import UpstreamCall, send
from proxy.providers._prepare import Needs, Prepared, prepare, splice
from proxy.providers._results import Outputs, finish
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


def build_input(job: EditJob, prepared: Prepared) -> dict[str, Any]:
    data: dict[str, Any] = {**job.extra, "prompt": job.prompt}
    urls = []
    for i, img in enumerate(job.images):
        url = compat.image_ref(img, prepared.images[i]).get("image_url")
        if url is None:  # a file id Replicate cannot resolve
            raise InvalidRequest(
                "replicate needs the image itself, not a file id", param=f"images[{i}]"
            )
        urls.append(url)
    if len(urls) == 1:
        data["input_image"] = urls[0]
    elif urls:
        data["input_images"] = urls
    if prepared.edit_mask_b64 is not None:
        data["mask"] = "data:image/png;base64," + prepared.edit_mask_b64
    ratio = _sizes.aspect_ratio(job.size, ASPECT_RATIOS, provider="replicate")
    if ratio is not None:
        data["aspect_ratio"] = ratio
    if job.output_format in ("png", "jpeg", "webp"):
        data["output_format"] = job.output_format
    return data


def outputs_of(pred: Prediction, hosts: list[str], *, provider: str) -> Outputs:
    """A finished prediction's images, or what its end means for the client."""
    if pred.status == "canceled":
        raise UpstreamUnavailable(
            f"provider '{provider}' canceled the prediction",
            provider=provider,
            code="prediction_canceled",
        )
    if pred.status != "succeeded":
        raise UpstreamRejected(
            f"provider '{provider}' prediction {pred.status}: {pred.error or 'no reason given'}",
            provider=provider,
            code=f"prediction_{pred.status}",
        )
    found = [pred.output] if isinstance(pred.output, str) else pred.output or []
    if not found:
        raise UpstreamProtocolError(
            f"provider '{provider}' returned no image",
            provider=provider,
            code="upstream_protocol_error",
        )
    return Outputs([output_image(u, hosts, provider=provider) for u in found])


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

    def needs(self, job: EditJob) -> Needs:
        return Needs(base64=True, edit_mask="white")

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        owner_name = _inputs.model_path(job.model, provider=job.provider, segments=2)
        headers = {
            **job.extra_headers,
            "Content-Type": "application/json",
            "Prefer": f"wait={self._config.wait_s}",
        }
        body = msgspec.json.encode({"input": build_input(job, prepared)})
        return UpstreamCall("POST", f"/models/{owner_name}/predictions", headers, body)

    def parse(self, provider: str, reply: UpstreamResponse) -> Prediction:
        if not reply.ok:
            raise _replies.failure(provider, reply, error_message(reply.body))
        return parse_prediction(provider, reply.body)

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        deadline = asyncio.get_running_loop().time() + self._config.deadline_s
        prepared = await prepare(job, self.needs(job), splice=True)
        call = splice(self.build(job, prepared), prepared)
        pred = self.parse(upstream.name, await send(upstream, call))
        if pred.status not in _FINAL:
            pred = await self._follow(pred, upstream, deadline)
        hosts = self._config.output_hosts
        outputs = outputs_of(pred, hosts, provider=upstream.name)
        return await finish(outputs, job=job, upstream=upstream, hosts=hosts)

    async def _follow(
        self, pred: Prediction, upstream: Upstream, deadline: float
    ) -> Prediction:
        get_url = self._api_url(pred.urls.get, upstream.name)

        async def fetch() -> Prediction:
            return self.parse(upstream.name, await upstream.get(get_url))

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
