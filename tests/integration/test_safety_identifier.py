"""OpenAI's ``safety_identifier`` (which supersedes ``user``) through the proxy: the
client's ``user`` goes under the new name, and with ``safety_identifier: derive`` a
request without one carries a stable hash of its client key, never the key."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tests.conftest import StartGateway
from tests.gateway import KEY_A, KEY_B, key_entry
from tests.images import png

KEYS = {"team-a": key_entry(KEY_A), "team-b": key_entry(KEY_B)}


def client_id(key: str, name: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return hmac.new(
        digest, b"imagegate client id\x00" + name.encode(), "sha256"
    ).hexdigest()


def sent(fake: Any) -> dict[str, Any]:
    rec = fake.last
    if rec.json is not None:
        return dict(rec.json)
    return {k: v[0] for k, v in rec.fields.items()}


async def test_derived_identifier_is_a_stable_hash_of_the_client_key(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(section={"safety_identifier": "derive"}, keys=KEYS)
    for key, name in ((KEY_A, "team-a"), (KEY_A, "team-a"), (KEY_B, "team-b")):
        await gw.sdk(key).images.generate(model="openai/gpt-image-2", prompt="a cat")
        body = sent(gw.fake)
        assert body["safety_identifier"] == client_id(key, name)
        assert len(body["safety_identifier"]) == 64
        assert "user" not in body
    first, again, other = (r.json["safety_identifier"] for r in gw.fake.received)
    assert first == again != other
    assert KEY_A not in str(gw.fake.received)
    assert "team-a" not in first
    # Multipart edits carry it as a form field.
    await gw.sdk(KEY_B).images.edit(
        model="openai/gpt-image-2.6-flare",
        image=("a.png", png(8, 8), "image/png"),
        prompt="x",
    )
    assert gw.fake.last.fields["safety_identifier"] == [client_id(KEY_B, "team-b")]


async def test_client_user_wins_and_long_ones_are_hashed(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(section={"safety_identifier": "derive"}, keys=KEYS)
    sdk = gw.sdk(KEY_A)
    await sdk.images.generate(model="openai/gpt-image-2", prompt="a", user="u-1")
    assert sent(gw.fake)["safety_identifier"] == "u-1"
    long = "user-" + "x" * 100
    await sdk.images.generate(model="openai/gpt-image-2", prompt="a", user=long)
    assert (
        sent(gw.fake)["safety_identifier"] == hashlib.sha256(long.encode()).hexdigest()
    )
    # A client's own safety_identifier is sent as it is, `user` beside it too.
    await sdk.images.generate(
        model="openai/gpt-image-2", prompt="a", user="u-2",
        extra_body={"safety_identifier": "s-9"},
    )  # fmt: skip
    assert sent(gw.fake)["safety_identifier"] == "s-9"
    assert sent(gw.fake)["user"] == "u-2"


async def test_default_maps_user_only(start_gateway: StartGateway) -> None:
    gw = await start_gateway(keys=KEYS)
    await gw.sdk(KEY_A).images.generate(model="openai/gpt-image-2", prompt="a")
    assert "safety_identifier" not in sent(gw.fake)
    await gw.sdk(KEY_A).images.generate(
        model="openai/gpt-image-2", prompt="a", user="u"
    )
    assert sent(gw.fake)["safety_identifier"] == "u"


async def test_azure_gpt_image_deployment(start_gateway: StartGateway) -> None:
    gw = await start_gateway(
        "azure", section={"safety_identifier": "derive"}, keys=KEYS
    )
    await gw.sdk(KEY_B).images.generate(model="azure/house", prompt="a")
    assert sent(gw.fake)["safety_identifier"] == client_id(KEY_B, "team-b")
