"""A real S3-compatible server for the suite: moto's server mode (PyPI ``moto[server]``,
a dev dependency), started on a free loopback port.

Why moto: MinIO, Ceph RGW, Garage and SeaweedFS are not packaged in Debian and their
installers download binaries; moto installs with pip anywhere, speaks S3's wire
protocol (SigV4, multipart uploads, ListObjectsV2, presigned URLs) over real HTTP, and
checks signatures (with ``INITIAL_NO_AUTH_ACTION_COUNT`` set; see ``_user``).
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
from dataclasses import dataclass
from typing import Any

from tests.gateway import free_port

REGION = "us-east-1"
# moto answers its first three calls without checking them: the fixture spends them
# on an IAM user, its S3 policy and its access key; every later call must be signed
# with that key (a wrong signature is a 403).
_POLICY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
)


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes]
    access_key: str = ""
    secret_key: str = ""

    @property
    def credentials(self) -> dict[str, str]:
        """The environment that gives a process this server's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def _user(self) -> None:
        import boto3

        iam = boto3.client(
            "iam", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id="AKIAUNCHECKED", aws_secret_access_key="unchecked",
        )  # fmt: skip
        iam.create_user(UserName="imagegate")
        iam.put_user_policy(
            UserName="imagegate", PolicyName="s3", PolicyDocument=_POLICY
        )
        key = iam.create_access_key(UserName="imagegate")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def files_config(self, bucket: str, **s3: Any) -> dict[str, Any]:
        """A ``files`` config section using ``bucket`` on this server."""
        settings = {
            "bucket": bucket,
            "endpoint_url": self.url,
            "region": REGION,
            "addressing_style": "path",
            **s3,
        }
        return {"backend": "s3", "s3": settings}


@contextlib.contextmanager
def s3_server(*, auth: bool = True) -> Iterator[S3Server]:
    """``auth``: signatures checked (with an IAM user's key). moto cannot check
    presigned URLs then (it reads only the Authorization header): links are tested on
    a server without auth, and moto does not enforce a presigned URL's expiry."""
    port = free_port()
    home = tempfile.mkdtemp(prefix="imagegate-moto-")
    env = {
        **os.environ,
        "HOME": home,
    }
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                break
            assert proc.poll() is None, "moto server exited at start"
            assert time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.05)
        server = S3Server(port, proc)
        if auth:
            server._user()
        else:
            server.access_key, server.secret_key = "AKIAUNCHECKED", "unchecked"
        yield server
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
