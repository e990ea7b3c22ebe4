"""The redactor on its own: which forms of a secret it finds, and what it leaves."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from urllib.parse import quote, quote_plus

from proxy.errors import UpstreamRateLimited
from proxy.providers._aws import SigV4Signer
from proxy.providers.base import StaticKey
from proxy.redact import REDACTED, Redactor, error_detail, error_headers

KEY = 'k3y/with+odd=chars "and" \\ slash'


def test_every_form_of_a_secret_is_replaced() -> None:
    redactor = Redactor([StaticKey("x-key", KEY)])
    json_escaped = KEY.replace("\\", "\\\\").replace('"', '\\"')
    for form in (KEY, quote(KEY, safe=""), quote_plus(KEY), json_escaped):
        assert redactor.text(f"<{form}>") == f"<{REDACTED}>"
    assert redactor.data(f"[{quote(KEY, safe='')}]".encode()) == b"[[redacted]]"
    assert redactor.text(None) is None
    assert redactor.text("") == ""


def test_short_values_are_not_treated_as_secrets() -> None:
    # A 4-character "key" would turn ordinary words into [redacted].
    assert Redactor([StaticKey("x-key", "test")]).text("a test") == "a test"


def test_aws_signer_has_no_secrets_before_it_signs() -> None:
    assert SigV4Signer(lambda: None, service="bedrock", region="r").secrets() == ()


def test_error_members_and_headers_are_redacted() -> None:
    redactor = Redactor([StaticKey("x-key", KEY)])
    exc = UpstreamRateLimited(
        f"slow ({KEY})", provider="p", code=KEY, headers={"Retry-After": KEY}
    )
    detail = error_detail(exc, redactor)
    assert (detail.message, detail.code) == (f"slow ({REDACTED})", REDACTED)
    assert error_headers(exc, redactor) == {"Retry-After": REDACTED}


def test_escapes_in_either_case_and_every_character_escaped() -> None:
    redactor = Redactor([StaticKey("x-key", "sk-upstream-test")])
    for form in ("sk%2Dupstream%2Dtest", "sk%2dupstream%2dtest"):
        assert redactor.text(f"key={form}&") == f"key={REDACTED}&"
    odd = Redactor([StaticKey("x-key", KEY)])
    assert odd.text(quote(KEY, safe="").lower()) == REDACTED


def test_base64_at_every_offset_inside_a_longer_text() -> None:
    secret = "sk-upstream-test"
    redactor = Redactor([StaticKey("x-key", secret)])
    for prefix in (b"", b"u", b"us", b"user:"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(prefix + secret.encode() + b"\xff\xfe").decode()
            out = redactor.text(f"Basic {text}")
            assert REDACTED in out, (prefix, encode)
            assert text not in out


def test_bytes_without_a_secret_are_not_copied() -> None:
    body = b'{"data":[{"b64_json":"' + b"A" * 4096 + b'"}]}'
    assert Redactor([StaticKey("x-key", KEY)]).data(body) is body


class _Rotating:
    """A credential source whose secret changes (a token refreshed, say)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def headers(self) -> Mapping[str, str]:
        return {"authorization": f"Bearer {self.secret}"}

    def secrets(self) -> Sequence[str]:
        return (self.secret,)


def test_a_rotated_secret_is_redacted_beside_fixed_keys() -> None:
    rotating = _Rotating("tok-first-0123456789")
    redactor = Redactor([StaticKey("x-key", KEY), rotating])
    assert redactor.text(f"{KEY} tok-first-0123456789") == "[redacted] [redacted]"
    rotating.secret = "tok-second-0123456789"
    assert redactor.data(b"tok-second-0123456789") == b"[redacted]"
    assert redactor.text(f"{KEY}") == "[redacted]"
