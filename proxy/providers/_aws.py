"""AWS request signing (SigV4) with botocore's signer and its standard credential chain.

botocore is AWS's own implementation: the canonical request, the credential chain
(environment, shared files and profiles, SSO, container and instance roles) and
refreshing temporary credentials are all subtle, and botocore keeps up with them. The
environment link of the chain reads the mapping the app was given, not ``os.environ``.
Resolving and refreshing credentials may read files or call the instance metadata
service, and hashing a large body takes CPU, so both run in a worker thread. botocore
is imported when first used: it is ~6 MiB of every process otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from proxy.errors import ProviderNotConfigured

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

log = logging.getLogger("imagegate")
Resolver = Callable[[], "Credentials | None"]


def _quiet_botocore() -> None:
    """Hold botocore's logs at WARNING whatever the root level: at DEBUG it logs each
    canonical request, session token included. (``setup_logging`` does it too; this
    covers any other entry point.)"""
    botocore_log = logging.getLogger("botocore")
    if botocore_log.level < logging.WARNING:  # NOTSET included
        botocore_log.setLevel(logging.WARNING)


def credential_chain(environ: Mapping[str, str], profile: str | None) -> Resolver:
    """botocore's default chain, its environment link reading ``environ``."""

    def resolve() -> Credentials | None:
        import botocore.session
        from botocore.credentials import EnvProvider
        from botocore.exceptions import BotoCoreError

        _quiet_botocore()
        try:
            session = botocore.session.Session(profile=profile)
            resolver = session.get_component("credential_provider")
            if profile is None:
                # An explicit profile disables the environment link, as in botocore.
                rest = [p for p in resolver.providers if p.METHOD != "env"]
                resolver.providers = [EnvProvider(environ=dict(environ)), *rest]
            creds: Credentials | None = resolver.load_credentials()
        except BotoCoreError as exc:  # e.g. the configured profile does not exist
            log.warning("AWS credentials unavailable: %s", type(exc).__name__)
            return None
        return creds

    return resolve


class SigV4Signer:
    """A ``RequestSigner``: signs each request for one AWS service and region."""

    def __init__(self, resolve: Resolver, *, service: str, region: str) -> None:
        self._resolve = resolve
        self._service = service
        self._region = region
        self._credentials: Credentials | None = None
        # The credentials last signed with, for redaction (refreshes replace them).
        self._last: ReadOnlyCredentials | None = None
        self._lock = asyncio.Lock()

    async def headers(self) -> Mapping[str, str]:
        return {}

    def secrets(self) -> Sequence[str]:
        last = self._last
        if last is None:
            return ()
        return tuple(s for s in (last.secret_key, last.token, last.access_key) if s)

    async def _frozen(self) -> ReadOnlyCredentials:
        async with self._lock:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(self._resolve)
        if self._credentials is None:
            raise ProviderNotConfigured(
                "no AWS credentials found: the gateway operator must configure the "
                "standard AWS credential chain (environment, profile or role)",
                code="provider_not_configured",
            )
        # Refreshable credentials may call STS or instance metadata when near expiry.
        frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
        self._last = frozen
        return frozen

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Mapping[str, str]:
        frozen = await self._frozen()
        return await asyncio.to_thread(self._sign, frozen, method, url, headers, body)

    def _sign(
        self,
        frozen: ReadOnlyCredentials,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        _quiet_botocore()
        assert frozen.access_key is not None
        assert frozen.secret_key is not None
        creds = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(creds, self._service, self._region).add_auth(request)
        return dict(request.headers.items())
