"""Data-URL decoding: exact bytes back, and a 400 naming the field for bad base64."""

from __future__ import annotations

import base64
import os

import pytest

from proxy.errors import InvalidRequest
from proxy.images import decode_data_url


def test_round_trip_of_a_large_image() -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1 << 20)
    url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    assert decode_data_url(url, param="images[0].image_url") == data


@pytest.mark.parametrize(
    "payload",
    ["QQ=", "Q===", "==", "QQ==QQ==", "QQ ==", "QQ==\n", "Q", "ab-_", "QU*D", "QUJD="],
)
def test_invalid_base64_is_a_400(payload: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_data_url(f"data:image/png;base64,{payload}", param="mask.image_url")
    assert info.value.param == "mask.image_url"
    assert "base64" in info.value.message
