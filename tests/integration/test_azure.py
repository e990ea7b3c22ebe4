"""Azure OpenAI adapter specifics beyond the shared contract: generation through the
deployment path, priced as the deployed model."""

from __future__ import annotations

from tests.conftest import StartGateway
from tests.gateway import post_json


async def test_azure_generation_uses_the_deployment_path(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        "azure", section={"deployments": {"img": "gpt-image-2"}}
    )
    fake, server = gateway.fake, gateway.proxy
    got, body = await post_json(
        server, "/v3/images/generations", {"model": "azure/img", "prompt": "x"}
    )
    assert got == 200, body
    assert fake.last.path == "/openai/deployments/img/images/generations"
    assert body["cost"] is not None  # priced as azure/gpt-image-2
