"""The proxy's configuration: frozen msgspec Structs decoded once from YAML.

Secrets never live here: a provider names the environment variable that holds its key
(``api_key_env``) and the key is read from the environment mapping passed to the app.
"""

from __future__ import annotations

import ipaddress
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from proxy import controls, pixels, resilience
from proxy.catalogue.schema import Entry as CatalogueEntry
from proxy.config_base import ConfigBase, PositiveInt, Seconds
from proxy.config_errors import describe
from proxy.config_idempotency import IdempotencyConfig
from proxy.config_storage import Results, UploadStoreConfig, check_storage
from proxy.jobs.config import Jobs
from proxy.providers.registry import ProviderConfig

MiB = 1024 * 1024
_DEFAULT_MAX_FILE = 50 * MiB
_MAX_IMAGES = 16

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
AliasTarget = Annotated[str, msgspec.Meta(pattern=r"^[^/\s]+/\S+$", max_length=256)]
ModelPattern = Annotated[str, msgspec.Meta(pattern=r"^\S+$", max_length=256)]
EnvName = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
]
# A DNS name or IP address as a Host header names it, or "*".
HostName = Annotated[
    str,
    msgspec.Meta(pattern=r"^(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$", max_length=253),
]
# scheme://host[:port], as browsers send Origin; no path.
Origin = Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s?#]+$", max_length=300)]


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
    # Connections the kernel queues for accept() (per worker): a burst of clients
    # beyond it is dropped or reset. The kernel caps it at net.core.somaxconn, which
    # the gateway reads and warns about at start when lower (README "Sizing").
    backlog: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 4096
    # A second port, on the same host, answering only /healthz, /readyz and /metrics
    # (they stay on `port` too): a probe there is not queued behind a burst's
    # connections waiting for accept() on `port` (README "Sizing"). None: none.
    health_port: Port | None = None
    # Without client keys, the Host names served besides localhost, loopback and the
    # connection's own address ("*": any), and the browser origins allowed to call
    # (proxy/origins.py). Unused with keys.
    allowed_hosts: list[HostName] = msgspec.field(default_factory=list)
    allowed_origins: list[Origin] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.health_port is not None and self.health_port in (0, self.port):
            raise ValueError("health_port: must be a fixed port other than port")


class Limits(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Size and pace caps on what clients send. Per-key quotas are ``proxy.quotas``;
    load shedding is ``backpressure``."""

    max_file_bytes: PositiveInt = _DEFAULT_MAX_FILE
    # None: room for 16 images and a mask at the per-file limit, plus text fields.
    max_body_bytes: PositiveInt | None = None
    max_json_bytes: PositiveInt = 64 * MiB
    # Members and elements a JSON body may hold (its commas, braces and brackets
    # outside strings), checked before it is decoded: an edit carries 16 images, 16
    # metadata keys and a few other fields. Nesting is capped by msgspec (about 500).
    max_json_members: PositiveInt = 1000
    max_files: PositiveInt = _MAX_IMAGES + 1
    max_fields: PositiveInt = 64
    max_field_bytes: PositiveInt = 256 * 1024
    # File parts stay in memory while the request's parts total at most spool_bytes
    # and all requests' together at most spool_total_bytes; past either they stream to
    # temp files. Typical edits then skip the disk round trip (about 1 ms of CPU per
    # MiB), and memory stays bounded under any load. 0 sends all to disk.
    spool_bytes: Annotated[int, msgspec.Meta(ge=0)] = 4 * MiB
    spool_total_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 * MiB
    # A multipart edit is forwarded while it arrives (proxy.forward) only when its
    # declared body is at least this large: a mask or second image after the first
    # cuts the forward off and the edit is sent again spooled, which cost an image +
    # mask edit of 2 MiB 45% more CPU; small bodies arrive too fast to gain. A body
    # of unknown length (chunked by its client) may be forwarded. 0: never.
    forward_min_bytes: Annotated[int, msgspec.Meta(ge=0)] = 8 * MiB
    max_response_bytes: PositiveInt = 256 * MiB
    # Decoding costs width x height x bands bytes whatever the file size, so every
    # image the gateway holds is checked from its header against this before use
    # (25 Mpx: a 6000x4000 photo, 3x the largest sizes providers document). A mask
    # conversion peaks at about 7 bytes a pixel: 175 MB at the default. The ceiling is
    # Pillow's own default refusal (2 x 89478485).
    max_image_pixels: Annotated[int, msgspec.Meta(ge=1, le=178_956_970)] = (
        pixels.DEFAULT_MAX_PIXELS
    )
    # Decodes (mask conversions) running at once per process; more wait their turn.
    # Peak decode memory per process is about this x 7 bytes x max_image_pixels.
    max_image_decodes: Annotated[int, msgspec.Meta(ge=1, le=64)] = (
        pixels.DEFAULT_MAX_DECODES
    )
    # The longest wait for the next bytes of a request body (slow clients get a 408).
    client_idle_timeout_s: Seconds = 30.0
    # The pace a body must keep: after client_body_grace_s of waiting for it, the
    # body must have averaged client_min_body_rate_bytes_s (408 otherwise), so a
    # client dripping a byte at a time cannot hold a slot or upload space. Time the
    # gateway spends on its side (disk writes) does not count.
    client_body_grace_s: Seconds = 10.0
    client_min_body_rate_bytes_s: PositiveInt = 32 * 1024
    # A hard limit on the whole body's time, whatever its pace; null: none beyond
    # the pace (client_body_grace_s + body cap / client_min_body_rate_bytes_s).
    client_body_timeout_s: Seconds | None = None
    temp_dir: str | None = None
    # A model missing from the price table, asked for with a budgeted key: None refuses
    # it (403 model_unpriced); a price charges (and reserves) this much per image.
    unpriced_image_usd: Annotated[float, msgspec.Meta(gt=0, le=1000)] | None = None

    @property
    def body_cap(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return (_MAX_IMAGES + 1) * self.max_file_bytes + MiB


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


class MetricsAccess(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Who may read ``/metrics``: open (the default) or with a bearer token."""

    # The environment variable holding the token scrapers send as
    # `Authorization: Bearer <token>`; null leaves /metrics open (key names, spend).
    token_env: EnvName | None = None


class Ui(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """The browser page at ``/ui`` (proxy/ui.py)."""

    # auto: served only when server.host is a loopback address, so a gateway that
    # listens on a network shows a page to nobody unless the operator says so.
    enabled: Literal["auto"] | bool = "auto"


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True):
    server: Server = Server()
    metrics: MetricsAccess = MetricsAccess()
    limits: Limits = Limits()
    files: UploadStoreConfig = UploadStoreConfig()  # key kept: users rely on it
    results: Results = Results()
    fetch: Fetch = Fetch()
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    # Aliases: a name clients may send as `model`, standing for "<provider>/<model>".
    models: dict[str, AliasTarget] = msgspec.field(default_factory=dict)
    # Shell-style patterns over "<provider>/<model>"; null serves every model.
    allowed_models: list[ModelPattern] | None = None
    # Gateway controls (proxy/controls.py): client keys, quotas, retries, fallbacks.
    auth: Literal["keys", "none"] = "keys"
    keys: dict[controls.KeyName, controls.ClientKey] = msgspec.field(
        default_factory=dict
    )
    redis_url: str | None = None
    # Or the environment variable holding it (a Secret: the URL may carry a password).
    redis_url_env: EnvName | None = None
    redis: controls.RedisSettings = controls.RedisSettings()
    retry: resilience.Retry = resilience.Retry()
    breaker: resilience.Breaker = resilience.Breaker()
    fallbacks: dict[str, list[str]] = msgspec.field(default_factory=dict)
    backpressure: controls.Backpressure = controls.Backpressure()
    ui: Ui = Ui()
    # Async jobs (Prefer: respond-async) and their signed webhooks (proxy/jobs).
    jobs: Jobs = Jobs()
    # Catalogue rows (proxy/catalog.yaml's shape) per provider type and model id:
    # negotiated prices, a model released last week, a shutdown date. Each field a row
    # names replaces the packaged row's field; a new id adds a model.
    catalogue: dict[str, dict[str, CatalogueEntry]] = msgspec.field(
        default_factory=dict
    )
    # A request for a model past its shutdown date: `retire` answers 410 model_retired
    # naming the replacement; `remap` sends it to the replacement and says so in the
    # `Imagegate-Model-Remapped` header.
    lifecycle: Literal["retire", "remap"] = "retire"
    # Idempotency-Key answers (proxy/config_idempotency.py).
    idempotency: IdempotencyConfig = IdempotencyConfig()


class ConfigError(Exception):
    """An invalid config; the message is one line naming the key and the reason."""


_PROVIDER_TYPES = {
    cls.__struct_config__.tag: cls for cls in typing.get_args(ProviderConfig)
}


def _check_provider(name: str, section: Any) -> None:
    """Convert one provider section alone, so an error names the provider: msgspec
    gives no path inside a tagged union."""
    where = f"providers.{name}"
    section = {} if section is None else section
    if not isinstance(section, dict):
        kind = type(section).__name__
        raise ValueError(f"{where}: expected a mapping of settings, got `{kind}`")
    kind = section.get("type", name)
    cls = _PROVIDER_TYPES.get(kind)
    if cls is None:
        choices = ", ".join(sorted(str(t) for t in _PROVIDER_TYPES))
        if "type" in section:
            raise ValueError(
                f"{where}.type: unknown provider type {kind!r}; one of: {choices}"
            )
        raise ValueError(
            f"{where}: unknown provider type {name!r}; set `type:` to one of: {choices}"
        )
    fields = {k: v for k, v in section.items() if k != "type"}
    try:
        config = msgspec.convert(fields, cls)
    except msgspec.ValidationError as exc:
        raise ValueError(describe(exc, fields, cls, where)) from None
    base = urlsplit(config.base_url)
    if base.scheme not in ("http", "https") or not base.hostname:
        raise ValueError(
            f"{where}.base_url: {config.base_url!r} is not an absolute http(s) URL "
            "(such as https://api.example.com/v1)"
        )


def _tag_providers(raw: dict[str, Any]) -> dict[str, Any]:
    # The provider's key doubles as its type, so `providers: {openai: {...}}` needs no
    # `type:`; a second OpenAI-compatible upstream says `type: openai` under its own name.
    providers = {}
    for name, section in raw["providers"].items():
        if section is None:
            section = {}
        if isinstance(section, dict) and "type" not in section:
            section = {"type": name, **section}
        providers[name] = section
    return {**raw, "providers": providers}


def parse_config(text: str | bytes, *, source: str = "<config>") -> Config:
    try:
        raw = msgspec.yaml.decode(text)
    except msgspec.DecodeError as exc:
        reason = str(exc).replace("\n", " ")
        raise ConfigError(f"{source}: not valid YAML: {reason}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections, such as providers:"
        )
    if isinstance(raw.get("providers"), dict):
        for name, section in raw["providers"].items():
            try:
                _check_provider(str(name), section)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        raw = _tag_providers(raw)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, raw, Config)}") from exc
    if not config.providers:
        # Nothing could be served: every request would be a 404.
        raise ConfigError(
            f"{source}: providers: no provider is configured; add one, such as "
            "`providers: {openai: {}}`"
        )
    for name in config.providers:
        if not name or "/" in name:
            raise ConfigError(
                f"{source}: providers.{name}: a provider name must not contain '/'"
            )
    _check_aliases(config, source)
    if config.redis_url is not None and config.redis_url_env is not None:
        raise ConfigError(f"{source}: redis_url and redis_url_env: set one of them")
    try:
        check_storage(config.files, config.results)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        controls.validate(
            auth=config.auth,
            keys=config.keys,
            redis_url=config.redis_url,
            providers=list(config.providers),
            fallbacks=config.fallbacks,
            overrides={
                "retry": config.retry.providers,
                "breaker": config.breaker.providers,
            },
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
                f"{source}: models.{alias}: names provider {provider!r}, which is not "
                "configured"
            )


def override_server(server: Server, **flags: str | int | None) -> Server:
    """``server`` with the command line's flags applied, each checked exactly like
    the key it overrides (``--port 70000`` must not wrap to 4464)."""
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return msgspec.convert({**msgspec.structs.asdict(server), **given}, Server)
    except msgspec.ValidationError as exc:
        where = describe(exc, given, Server)
        name, _, reason = where.partition(": ")
        raise ConfigError(f"--{name} (server.{name}): {reason}") from None


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
