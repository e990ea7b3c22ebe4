"""The proxy's configuration: frozen msgspec Structs decoded once from YAML.

Secrets never live here: a provider names the environment variable that holds its key
(``api_key_env``) and the key is read from the environment mapping passed to the app.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from proxy import controls
from proxy.providers import ProviderConfig
from proxy.providers.base import ConfigBase

MiB = 1024 * 1024
_DEFAULT_MAX_FILE = 50 * MiB
_MAX_IMAGES = 16

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
AliasTarget = Annotated[str, msgspec.Meta(pattern=r"^[^/\s]+/\S+$", max_length=256)]
ModelPattern = Annotated[str, msgspec.Meta(pattern=r"^\S+$", max_length=256)]


class Server(ConfigBase, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Below Kubernetes' default terminationGracePeriodSeconds (30 s) minus a preStop sleep.
    shutdown_timeout_s: Seconds = 25.0
    # Idle keep-alive connections close after this; it also bounds a client that
    # trickles its request headers (aiohttp arms it when the connection opens).
    keepalive_timeout_s: Seconds = 75.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
    # Prompts are the clients' data: off unless the operator opts in.
    log_prompts: bool = False
    # Worker processes sharing the port (SO_REUSEPORT); --workers overrides.
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1


class Limits(ConfigBase, frozen=True, forbid_unknown_fields=True):
    max_file_bytes: PositiveInt = _DEFAULT_MAX_FILE
    # None: room for 16 images and a mask at the per-file limit, plus text fields.
    max_body_bytes: PositiveInt | None = None
    max_json_bytes: PositiveInt = 64 * MiB
    max_files: PositiveInt = _MAX_IMAGES + 1
    max_fields: PositiveInt = 64
    max_field_bytes: PositiveInt = 256 * 1024
    # File parts stay in memory while the request's parts total at most spool_bytes
    # and all requests' together at most spool_total_bytes; past either they stream to
    # temp files. Typical edits then skip the disk round trip (about 1 ms of CPU per
    # MiB), and memory stays bounded under any load. 0 sends all to disk.
    spool_bytes: Annotated[int, msgspec.Meta(ge=0)] = 4 * MiB
    spool_total_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 * MiB
    max_response_bytes: PositiveInt = 256 * MiB
    # The longest wait for the next bytes of a request body (slow clients get a 408).
    client_idle_timeout_s: Seconds = 30.0
    temp_dir: str | None = None

    @property
    def body_cap(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return (_MAX_IMAGES + 1) * self.max_file_bytes + MiB


class Files(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """The embedded upload store behind ``/v3/upload`` and ``file_id``."""

    # None: a private directory under the temp dir, removed at shutdown.
    dir: str | None = None
    max_file_bytes: PositiveInt = 100 * MiB
    max_total_bytes: PositiveInt = 10 * 1024 * MiB
    # One client key's share, so no key can fill the store for the others (507).
    # None: a quarter of max_total_bytes. Without client keys there is one owner.
    max_bytes_per_key: PositiveInt | None = None
    max_files_per_key: PositiveInt = 10_000
    retention_s: Seconds = 7 * 24 * 3600.0
    sweep_interval_s: Seconds = 60.0

    def __post_init__(self) -> None:
        if self.key_bytes > self.max_total_bytes:
            raise ValueError("max_bytes_per_key: above max_total_bytes")

    @property
    def key_bytes(self) -> int:
        if self.max_bytes_per_key is not None:
            return self.max_bytes_per_key
        return max(1, self.max_total_bytes // 4)


class Fetch(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Fetching client ``image_url``s for providers that need bytes."""

    allow_http: bool = False
    # Hosts and networks that may be private on purpose (a company's image store).
    allow_hosts: list[str] = msgspec.field(default_factory=list)
    allow_networks: list[str] = msgspec.field(default_factory=list)
    max_bytes: PositiveInt = _DEFAULT_MAX_FILE
    timeout_s: Seconds = 30.0
    connect_timeout_s: Seconds = 10.0
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    # Extra CA certificates (PEM) trusted besides the system store.
    ca_file: str | None = None

    def __post_init__(self) -> None:
        for net in self.allow_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allow_networks: {net!r} is not a network") from None


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True):
    server: Server = Server()
    limits: Limits = Limits()
    files: Files = Files()
    fetch: Fetch = Fetch()
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    # Aliases: a name clients may send as `model`, standing for "<provider>/<model>".
    models: dict[str, AliasTarget] = msgspec.field(default_factory=dict)
    # Shell-style patterns over "<provider>/<model>"; null serves every model.
    allowed_models: list[ModelPattern] | None = None
    # Gateway controls (proxy/controls.py): client keys, limits, retries, fallbacks.
    auth: Literal["keys", "none"] = "keys"
    keys: dict[controls.KeyName, controls.ClientKey] = msgspec.field(
        default_factory=dict
    )
    redis_url: str | None = None
    redis: controls.RedisSettings = controls.RedisSettings()
    retry: controls.Retry = controls.Retry()
    breaker: controls.Breaker = controls.Breaker()
    fallbacks: dict[str, list[str]] = msgspec.field(default_factory=dict)
    backpressure: controls.Backpressure = controls.Backpressure()


class ConfigError(Exception):
    """An invalid config; the message is one line naming the key and the reason."""


def _tag_providers(raw: Any) -> Any:
    # The provider's key doubles as its type, so `providers: {openai: {...}}` needs no
    # `type:`; a second OpenAI-compatible upstream says `type: openai` under its own name.
    if isinstance(raw, dict) and isinstance(raw.get("providers"), dict):
        providers = {}
        for name, section in raw["providers"].items():
            if isinstance(section, dict) and "type" not in section:
                section = {"type": name, **section}
            providers[name] = section
        raw = {**raw, "providers": providers}
    return raw


def parse_config(text: str | bytes, *, source: str = "<config>") -> Config:
    try:
        raw = msgspec.yaml.decode(text)
    except msgspec.DecodeError as exc:
        reason = str(exc).replace("\n", " ")
        raise ConfigError(f"{source}: not valid YAML: {reason}") from exc
    if raw is None:
        raw = {}
    raw = _tag_providers(raw)
    if isinstance(raw, dict) and isinstance(raw.get("providers"), dict):
        # One at a time, so an error path names the provider (msgspec prints `[...]`).
        for name, section in raw["providers"].items():
            try:
                msgspec.convert(section, ProviderConfig)
            except msgspec.ValidationError as exc:
                where = str(exc).replace("`$", f"`$.providers.{name}")
                raise ConfigError(f"{source}: {where}") from exc
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    for name in config.providers:
        if not name or "/" in name:
            raise ConfigError(f"{source}: provider name {name!r} must not contain '/'")
    _check_aliases(config, source)
    try:
        controls.validate(
            auth=config.auth,
            keys=config.keys,
            redis_url=config.redis_url,
            providers=list(config.providers),
            fallbacks=config.fallbacks,
            retry=config.retry,
            breaker=config.breaker,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return config


def _check_aliases(config: Config, source: str) -> None:
    for alias, target in config.models.items():
        if not alias or any(c.isspace() for c in alias):
            raise ConfigError(f"{source}: alias {alias!r} must be a non-empty word")
        provider = target.partition("/")[0]
        if provider not in config.providers:
            raise ConfigError(
                f"{source}: alias {alias!r} names provider {provider!r}, which is not "
                "configured - at `$.models`"
            )


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    return parse_config(text, source=str(path))


def provider_keys(config: Config, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Resolve each provider's key from the environment; an unset or empty one is None."""
    return {
        name: (environ.get(cfg.api_key_env) or None)
        for name, cfg in config.providers.items()
    }
