from __future__ import annotations

import openai

from tests.fakes.openai import FakeOpenAI
from tests.images import png


async def test_sdk_single_image(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    result = await sdk.images.edit(
        model="openai/gpt-image-2", image=("a.png", png(), "image/png"), prompt="hat"
    )
    assert result.data
    assert result.data[0].b64_json
    print(result.model_extra)
    print(fake_openai.last)
