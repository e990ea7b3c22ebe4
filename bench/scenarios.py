"""The benchmark's scenarios (issues 2 and 8) and the request bodies they send.

Every target gets byte-identical bodies; only the URL differs. The fake upstream picks
its reply by the path's first segment, and imagegate by the model's provider prefix
(``openai/`` → the small reply, ``big/`` → the 1.5 MB reply).
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec

KiB = 1024
MiB = 1024 * KiB
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    concurrency: int
    reply: str  # "small", "big" or "stream": the upstream's reply
    kind: str  # "multipart", "json" or "stream" (multipart with stream=true)
    files: tuple[tuple[str, int], ...] = ()  # (part name, bytes)
    data_url_bytes: int = 0
    rss: bool = False  # sample the proxy's peak RSS

    @property
    def model(self) -> str:
        provider = "openai" if self.reply == "small" else self.reply
        return f"{provider}/gpt-image-2"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("small-c1", "64 KiB multipart edit, c=1", 1, "small", "multipart",
             files=(("image", 64 * KiB),)),
    Scenario("small-c32", "64 KiB multipart edit, c=32", 32, "small", "multipart",
             files=(("image", 64 * KiB),)),
    Scenario("small-c64", "64 KiB multipart edit, c=64", 64, "small", "multipart",
             files=(("image", 64 * KiB),)),
    Scenario("realistic-c16", "1 MiB image + 1 MiB mask, 1.5 MB reply, c=16", 16,
             "big", "multipart", files=(("image", MiB), ("mask", MiB))),
    Scenario("json-c16", "JSON with a 1 MiB data URL, c=16", 16, "small", "json",
             data_url_bytes=MiB),
    Scenario("upload8-c16", "4 x 8 MiB images, c=16", 16, "small", "multipart",
             files=tuple(("image[]", 8 * MiB) for _ in range(4)), rss=True),
    Scenario("upload1-c16", "4 x 1 MiB images, c=16", 16, "small", "multipart",
             files=tuple(("image[]", MiB) for _ in range(4)), rss=True),
    Scenario("stream-c1", "streamed 64 KiB edit, time to first partial image, c=1",
             1, "stream", "stream", files=(("image", 64 * KiB),)),
)  # fmt: skip
BY_NAME = {s.name: s for s in SCENARIOS}


def png_bytes(size: int) -> bytes:
    """PNG magic followed by random bytes: the proxy sniffs, it does not decode."""
    return PNG_MAGIC + os.urandom(max(size - len(PNG_MAGIC), 0))


def multipart(
    fields: dict[str, str], files: list[tuple[str, bytes]]
) -> tuple[bytes, str]:
    """A multipart/form-data body shaped like the OpenAI SDK's."""
    boundary = f"bench{secrets.token_hex(12)}"
    out = bytearray()
    for name, value in fields.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n"
        ).encode()
    for i, (name, data) in enumerate(files):
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="f{i}.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def body(scenario: Scenario) -> tuple[bytes, str]:
    """The request body and Content-Type one scenario sends to every target."""
    prompt = "Put a small red hat on the cat"
    if scenario.kind == "json":
        url = "data:image/png;base64," + base64.b64encode(
            png_bytes(scenario.data_url_bytes)
        ).decode("ascii")
        doc = {
            "model": scenario.model,
            "prompt": prompt,
            "images": [{"image_url": url}],
        }
        return msgspec.json.encode(doc), "application/json"
    files = [(name, png_bytes(size)) for name, size in scenario.files]
    fields = {"model": scenario.model, "prompt": prompt}
    if scenario.kind == "stream":
        fields |= {"stream": "true", "partial_images": "1"}
    return multipart(fields, files)


def write_body(scenario: Scenario, directory: Path) -> tuple[Path, str]:
    data, content_type = body(scenario)
    path = directory / f"{scenario.name}.body"
    path.write_bytes(data)
    return path, content_type
