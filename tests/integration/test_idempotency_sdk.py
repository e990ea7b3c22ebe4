"""The official ``openai`` SDK sends ``Idempotency-Key`` (``extra_headers=``) on a call
it retries after its own timeout: the provider is slow the first time, the SDK gives up
and retries, and the gateway answers the retry from the first run (one provider call,
one charge), for a JSON generation and for a multipart edit (whose retry has a new
multipart boundary). And the README's curl and SDK examples, run as written."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import msgspec
import openai
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.conftest import CLIENT_KEY, StartGateway
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import key_entry, metric
from tests.images import png
from tests.observability.procs import require_binary


@pytest.mark.parametrize("call", ["generate", "edit"])
async def test_sdk_retry_after_timeout_is_answered_from_the_first_run(
    start_gateway: StartGateway, registry: CollectorRegistry, call: str
) -> None:
    gateway = await start_gateway(
        keys={"team": key_entry(CLIENT_KEY, budget_usd_day=5.0)}
    )
    gateway.fake.script(Reply(delay_s=2.0))  # the first call outlasts the SDK
    client = openai.AsyncOpenAI(
        base_url=str(gateway.proxy.make_url("/v3")),
        api_key=CLIENT_KEY,
        timeout=0.75,
        max_retries=5,
    )
    gateway.clients.append(client)
    headers = {"Idempotency-Key": f"sdk-{call}-1"}
    if call == "generate":
        result = await client.images.generate(
            model="openai/gpt-image-2", prompt="a cat", extra_headers=headers
        )
    else:
        result = await client.images.edit(
            model="openai/gpt-image-2",
            prompt="a hat",
            image=("a.png", png(8, 8, seed=3), "image/png"),
            extra_headers=headers,
        )
    assert result.data
    assert result.data[0].b64_json
    assert result.model_extra is not None
    cost = result.model_extra["cost"]
    assert cost > 0
    assert len(gateway.fake.received) == 1
    outcome = "imagegate_idempotency_requests_total"
    assert metric(registry, outcome, outcome="replayed") >= 1
    assert metric(registry, outcome, outcome="stored") == 1
    # One charge: the key's spend is the one call's cost.
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(gateway.proxy.make_url("/v3/usage"), headers=auth) as r,
    ):
        usage = await r.json()
    assert usage["day"]["spent_usd"] == pytest.approx(cost, abs=1e-6)


def _readme_block(repo_root: Path, lang: str, marker: str) -> str:
    blocks: list[str] = re.findall(
        rf"```{lang}\n(.*?)```", (repo_root / "README.md").read_text(), re.S
    )
    return next(b for b in blocks if marker in b)


async def _run(*argv: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return out


async def test_readme_examples_run_once_for_two_sends(
    proxy: TestServer, fake_openai: FakeOpenAI, repo_root: Path
) -> None:
    require_binary("curl")
    here = f"{proxy.host}:{proxy.port}"
    curl = _readme_block(repo_root, "sh", "Idempotency-Key").replace(
        "localhost:8080", here
    )
    answers = [msgspec.json.decode(await _run("bash", "-c", curl)) for _ in range(2)]
    assert answers[0] == answers[1]
    assert answers[0]["provider"] == "openai"
    code = _readme_block(repo_root, "python", "Idempotency-Key").replace(
        "http://127.0.0.1:8080", f"http://{here}"
    )
    printed = {(await _run(sys.executable, "-c", code)).decode() for _ in range(2)}
    assert len(printed) == 1
    assert printed.pop().split()[1] == "openai"
    # Both examples send the same request under the same key (JSON key order and
    # spacing differ, the canonical body does not): one provider call for all four.
    assert len(fake_openai.received) == 1
