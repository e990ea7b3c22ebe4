"""Property tests: hostile multipart and JSON bodies get a 4xx or a well-formed 200,
never a 5xx, a hang, or a leaked temp file."""

from __future__ import annotations

import http.client
import time
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import Served
from tests.images import png

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def send(
    served: Served, body: bytes, content_type: str, *, length: int | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(served.host, served.port, timeout=20)
    try:
        conn.putrequest("POST", "/v3/images/edits")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body) if length is None else length))
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def assert_sane(served: Served, status: int, raw: bytes) -> None:
    assert status < 500, raw[:500]
    answer = msgspec.json.decode(raw)
    if status == 200:
        assert answer["provider"] == "openai"
        assert isinstance(answer["data"], list)
    else:
        assert 400 <= status < 500
        assert set(answer["error"]) == {"message", "type", "param", "code"}
    # Removal runs on the request's exit path; give the thread pool a moment.
    for _ in range(100):
        if not [p for p in served.temp_root.rglob("*") if p.is_file()]:
            return
        time.sleep(0.01)
    raise AssertionError("temp files left behind")


NAMES = st.sampled_from(
    ["image", "image[]", "image[0]", "mask", "model", "prompt", "n", "size", "stream",
     "extra_headers[X-A]", "extra_headers[Authorization]", "metadata[a]", "x[", "a[b][]",
     "", "image[x]", "n[]"]
)  # fmt: skip
CONTENT = st.one_of(
    st.just(png()),
    st.just(png(3, 3, alpha=0)),
    st.binary(max_size=64),
    st.sampled_from(
        [b"openai/gpt-image-2", b"hello", b"2", b"true", b"\xff\xfe", b"x" * 3000]
    ),
)
HEADER_NOISE = st.sampled_from(
    ["", "Content-Type: image/png\r\n", "Content-Type: text/plain; charset=bogus\r\n",
     "Content-Transfer-Encoding: base64\r\n", "X-Dup: 1\r\nX-Dup: 2\r\n",
     "Content-Type: multipart/mixed; boundary=zz\r\n", "X-Huge: " + "h" * 8000 + "\r\n"]
)  # fmt: skip


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b", "----x", "a" * 70, "weird boundary", "é"]))
    parts = []
    required = [("model", b"openai/gpt-image-2", False), ("prompt", b"p", False)]
    if draw(st.booleans()):
        parts.extend(required)
    for _ in range(draw(st.integers(0, 6))):
        parts.append((draw(NAMES), draw(CONTENT), draw(st.booleans())))
    eol = draw(st.sampled_from(["\r\n", "\n", ""]))
    out = bytearray()
    for name, content, is_file in parts:
        disp = f'form-data; name="{name}"' + ('; filename="f.png"' if is_file else "")
        out += f"--{boundary}{eol}Content-Disposition: {disp}{eol}".encode()
        out += draw(HEADER_NOISE).encode() + eol.encode() + content + eol.encode()
    if draw(st.booleans()):
        out += f"--{boundary}--{eol}".encode()
    if draw(st.booleans()) and out:
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@FUZZ
@given(multipart_bodies())
def test_hostile_multipart(served: Served, case: tuple[bytes, str]) -> None:
    body, ctype = case
    status, raw = send(served, body, ctype)
    assert_sane(served, status, raw)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["openai/gpt-image-2", "nope/x", "x", ""]) | JSON_VALUES,
        "prompt": st.text(max_size=30) | JSON_VALUES,
        "n": st.integers(-5, 20) | JSON_VALUES,
        "images": st.lists(
            st.fixed_dictionaries({}, optional={
                "file_id": st.sampled_from(["file-1", "../x", ""]) | JSON_VALUES,
                "image_url": st.sampled_from(
                    ["data:image/png;base64,iVBORw0KGgo=", "https://a.example/x.png",
                     "http://10.0.0.1/", "data:,", "javascript:alert(1)"]) | JSON_VALUES,
                "other": JSON_VALUES,
            }),
            max_size=3,
        ) | JSON_VALUES,
        "mask": JSON_VALUES,
        "extra_headers": st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3) | JSON_VALUES,
        "metadata": JSON_VALUES,
        "unknown": JSON_VALUES,
    },
)  # fmt: skip


@FUZZ
@given(FIELDS)
def test_hostile_json_fields(served: Served, fields: dict[str, Any]) -> None:
    status, raw = send(served, msgspec.json.encode(fields), "application/json")
    assert_sane(served, status, raw)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.integers(1, 100_000).map(lambda d: b"[" * d + b"]" * d),
        st.integers(1, 100_000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
        st.sampled_from([
            b'{"model":"openai/a","model":"openai/b","prompt":"p","images":[{"file_id":"f"}]}',
            b'{"n": 1' + b"0" * 5000 + b"}",
            b'{"n": 1e400}',
            b'{"prompt": "\xed\xa0\x80"}',
            b'{"prompt": "\\ud800"}',
        ]),
    )
)  # fmt: skip
def test_hostile_json_bytes(served: Served, body: bytes) -> None:
    status, raw = send(served, body, "application/json")
    assert_sane(served, status, raw)


def test_ten_thousand_tiny_parts(served: Served) -> None:
    part = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'
    status, raw = send(
        served, part * 10_000 + b"--b--\r\n", "multipart/form-data; boundary=b"
    )
    assert status == 400
    assert_sane(served, status, raw)


def test_body_shorter_than_declared_does_not_hang(served: Served) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        + png()
    )
    conn = http.client.HTTPConnection(served.host, served.port, timeout=20)
    conn.putrequest("POST", "/v3/images/edits")
    conn.putheader("Content-Type", "multipart/form-data; boundary=b")
    conn.putheader("Content-Length", str(len(body) + 1000))
    conn.endheaders()
    conn.send(body)
    conn.sock.shutdown(1)  # half-close: no more bytes coming
    try:
        status = conn.getresponse().status
    except http.client.RemoteDisconnected:
        status = None  # aiohttp drops a connection whose body ended early
    finally:
        conn.close()
    assert status in (400, None)
    # Nothing leaked, and the next request is served.
    ok = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        + png()
    )
    ok += b'\r\n--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nopenai/m'
    ok += b'\r\n--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n--b--\r\n'
    status2, raw = send(served, ok, "multipart/form-data; boundary=b")
    assert status2 == 200
    assert_sane(served, status2, raw)
