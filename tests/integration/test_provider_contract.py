"""One contract for every adapter: the official OpenAI SDK → proxy → a fake provider
speaking that provider's wire format, run for every case of ``tests.contract.CASES``;
and the check that every ``ProviderConfig`` variant has a case and a fake.
"""

from __future__ import annotations

import base64
import typing

import openai
import pytest

from proxy.providers.registry import ProviderConfig
from tests.conftest import UPSTREAM_KEY, StartGateway
from tests.contract import CASES, IDS, LEAK, MAX_REPLY, PARAMS, Env, start_env
from tests.fakes.base import OUTPUT_PNG, Reply
from tests.fakes.registry import FAKES


def provider_types() -> set[str]:
    """The tags of the ``ProviderConfig`` union, read from the union itself."""
    return {cls.__struct_config__.tag for cls in typing.get_args(ProviderConfig)}


def test_every_provider_type_has_a_contract_case() -> None:
    missing = provider_types() - {k for k, cases in CASES.items() if cases}
    assert not missing, f"ProviderConfig variants without a contract case: {missing}"
    assert set(CASES) <= provider_types(), "contract cases for unknown provider types"


def test_every_provider_type_has_a_fake() -> None:
    missing = provider_types() - set(FAKES)
    assert not missing, f"no fake in tests/fakes/registry.py for: {missing}"


@pytest.fixture(params=PARAMS, ids=IDS)
async def env(request: pytest.FixtureRequest, start_gateway: StartGateway) -> Env:
    return await start_env(
        start_gateway, request.param, limits={"max_response_bytes": MAX_REPLY}
    )


async def test_success(env: Env) -> None:
    result = await env.edit()
    env.check()
    assert result.data is not None
    assert len(result.data) == 1
    assert result.data[0].b64_json is not None
    if env.kind != "openai":  # the OpenAI fake has its own canned image
        assert base64.b64decode(result.data[0].b64_json) == OUTPUT_PNG
    extra = result.model_extra or {}
    assert extra["provider"] == env.case.model.split("/")[0]
    assert "cost" in extra


async def test_generation(env: Env) -> None:
    if env.case.generate_model is None:
        with pytest.raises(openai.BadRequestError) as exc:
            await env.sdk.images.generate(model=env.case.model, prompt="a boat")
        assert exc.value.param == "model"
        return
    result = await env.sdk.images.generate(
        model=env.case.generate_model, prompt="a boat", n=2
    )
    assert result.data is not None
    assert len(result.data) == 2
    assert all(d.b64_json for d in result.data)
    provider = env.case.generate_model.split("/")[0]
    assert (result.model_extra or {})["provider"] == provider


async def test_provider_400_passes_through(env: Env) -> None:
    env.script(400, "the prompt is too short")
    with pytest.raises(openai.BadRequestError) as exc:
        await env.edit()
    assert "the prompt is too short" in exc.value.message


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_a_502_that_echoes_nothing(
    env: Env, status: int
) -> None:
    env.script(status)
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert LEAK not in exc.value.response.text
    assert UPSTREAM_KEY not in exc.value.response.text


async def test_rate_limit_keeps_retry_after(env: Env) -> None:
    env.script(429, "slow down", headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as exc:
        await env.edit()
    assert exc.value.response.headers["Retry-After"] == "7"


async def test_provider_5xx_is_a_502(env: Env) -> None:
    env.script(500)
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502
    assert LEAK not in exc.value.response.text


async def test_hang_is_a_504(env: Env) -> None:
    env.fake.script(Reply(delay_s=3.0))
    with pytest.raises(openai.APIStatusError) as exc:
        await env.edit()
    assert exc.value.status_code == 504


async def test_dropped_connection_is_a_502(env: Env) -> None:
    env.fake.script(Reply(drop=True))
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502


@pytest.mark.parametrize(
    "body", [b"x" * (MAX_REPLY + 1024), b"{not json"], ids=["oversized", "malformed"]
)
async def test_bad_reply_is_a_502(env: Env, body: bytes) -> None:
    env.fake.script(Reply(body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(openai.InternalServerError) as exc:
        await env.edit()
    assert exc.value.status_code == 502
