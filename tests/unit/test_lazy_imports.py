"""botocore and cryptography load only when a provider that needs them is used.

Each is several MiB of resident memory in every process (a sidecar, each worker), so
a gateway without Amazon or Vertex providers must not pay for them.
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import asyncio, sys
import proxy.__main__
from aiohttp.test_utils import TestServer
from proxy.app import create_app
from proxy.config import load_config

async def main():
    app = create_app(load_config(sys.argv[1]), environ={"OPENAI_API_KEY": "sk-x"})
    async with TestServer(app):  # start-up: sessions, adapters, price table
        pass

asyncio.run(main())
print(sorted(m for m in ("botocore", "cryptography") if m in sys.modules))
"""


def test_startup_does_not_load_heavy_provider_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, "config/imagegate.yaml"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]", out.stderr
