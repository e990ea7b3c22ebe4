"""Provider cases for the contract suite (adapters of issue 3, part b).

Each case says how to start the provider's fake upstream, configure the proxy for it,
shape the provider's own error body, and check the request the fake received.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.azure import API_VERSION, FakeAzure
from tests.fakes.provider import FakeProvider
from tests.fakes.xai import FakeXAI

KEY = "upstream-secret-key"


@dataclass(frozen=True)
class Case:
    id: str
    provider: str  # the configured provider name (= type)
    model: str  # the full model name a client sends
    fake: Callable[[str], FakeProvider]
    config: Callable[[str], dict[str, Any]]  # fake base URL -> provider section
    error: Callable[[str], Any]  # message -> the provider's error body
    check: Callable[[FakeProvider], None]  # asserts on a successful edit's request
    env: dict[str, str] = field(default_factory=dict)
    polling: bool = False
    # Upstream requests one edit makes (submit + polls + downloads).
    calls: int = 1


def _openai_error(message: str) -> Any:
    return {"error": {"message": message, "type": "invalid_request_error",
                      "param": None, "code": "bad"}}  # fmt: skip


def _check_azure_deployment(fake: FakeProvider) -> None:
    rec = fake.last
    assert (
        rec.path == f"/openai/deployments/house/images/edits?api-version={API_VERSION}"
    )
    assert rec.headers["api-key"] == KEY
    assert "Authorization" not in rec.headers
    assert rec.fields["model"] == ["house"]
    assert [f.name for f in rec.files] == ["image"]


def _check_azure_v1(fake: FakeProvider) -> None:
    rec = fake.last
    assert rec.path == "/openai/v1/images/edits"
    assert rec.headers["api-key"] == KEY
    assert rec.fields["model"] == ["house"]


def _check_xai(fake: FakeProvider) -> None:
    rec = fake.last
    assert rec.path == "/v1/images/edits"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.json is not None
    assert rec.json["model"] == "grok-imagine-image"
    assert rec.json["response_format"] == "b64_json"
    assert rec.json["image"]["type"] == "image_url"
    assert rec.json["image"]["url"].startswith("data:image/png;base64,")


CASES = [
    Case(
        "azure-deployments",
        "azure",
        "azure/house",
        FakeAzure,
        lambda url: {"base_url": url, "deployments": {"house": "gpt-image-2"}},
        _openai_error,
        _check_azure_deployment,
        env={"AZURE_OPENAI_API_KEY": KEY},
    ),
    Case(
        "azure-v1",
        "azure",
        "azure/house",
        FakeAzure,
        lambda url: {"base_url": url, "surface": "v1"},
        _openai_error,
        _check_azure_v1,
        env={"AZURE_OPENAI_API_KEY": KEY},
    ),
    Case(
        "xai",
        "xai",
        "xai/grok-imagine-image",
        FakeXAI,
        lambda url: {"base_url": f"{url}/v1"},
        lambda message: {
            "code": "Client specified an invalid argument",
            "error": message,
        },
        _check_xai,
        env={"XAI_API_KEY": KEY},
    ),
]
