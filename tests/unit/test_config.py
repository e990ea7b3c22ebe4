from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, ConfigError, load_config, parse_config, provider_keys
from proxy.providers import openai


def test_default_config_decodes(repo_root: Path) -> None:
    config = load_config(repo_root / "config/imagegate.yaml")
    assert isinstance(config, Config)
    provider = config.providers["openai"]
    assert isinstance(provider, openai.Config)
    assert provider.api_key_env == "OPENAI_API_KEY"
    assert config.server.host == "127.0.0.1"


def test_minimal_provider_shape_from_the_issue() -> None:
    config = parse_config(
        "providers:\n  openai:\n    base_url: https://api.openai.com/v1\n"
        "    api_key_env: OPENAI_API_KEY\n"
    )
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"


def test_second_openai_compatible_provider_by_type() -> None:
    config = parse_config(
        "providers:\n  local:\n    type: openai\n    base_url: http://127.0.0.1:1/v1\n"
        "    api_key_env: LOCAL_KEY\n"
    )
    assert isinstance(config.providers["local"], openai.Config)


OPENAI = "providers:\n  openai: {}\n"


@pytest.mark.parametrize("text", ["", "providers: {}\n", "server:\n  port: 1\n"])
def test_a_config_without_providers_is_refused(text: str) -> None:
    # It could serve nothing: every request would be a 404.
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="test.yaml")
    assert str(exc.value) == (
        "test.yaml: providers: no provider is configured; add one, such as "
        "`providers: {openai: {}}`"
    )


def test_a_key_s_share_of_the_upload_store() -> None:
    files = parse_config(OPENAI + "files:\n  max_total_bytes: 1000\n").files
    assert files.key_bytes == 250
    assert (
        parse_config(OPENAI + "files:\n  max_bytes_per_key: 7\n").files.key_bytes == 7
    )


def test_body_cap_default_fits_sixteen_images_and_a_mask() -> None:
    limits = parse_config(OPENAI + "limits:\n  max_file_bytes: 1000\n").limits
    assert limits.body_cap == 17 * 1000 + 1024 * 1024
    assert parse_config(OPENAI + "limits:\n  max_body_bytes: 5\n").limits.body_cap == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  port: 70000\n", "server.port: expected `int` <= 65535"),
        ("server:\n  hots: x\n", "server: unknown field `hots`"),
        (
            "server:\n  port: 8080\n  health_port: 8080\n",
            "server: health_port: must be a fixed port other than port",
        ),
        (
            "server:\n  health_port: 0\n",
            "server: health_port: must be a fixed port other than port",
        ),
        (
            "limits:\n  max_file_bytes: 0\n",
            "limits.max_file_bytes: expected `int` >= 1",
        ),
        (
            "providers:\n  openai:\n    api_key_envv: X\n",
            "providers.openai: unknown field `api_key_envv`",
        ),
        (
            "providers:\n  vertex:\n    location: us-central1\n",
            "providers.vertex: missing required field `project`",
        ),
        (
            "providers:\n  gemini:\n    api_key_env: K\n",
            "providers.gemini: unknown provider type 'gemini'; set `type:` to one of: "
            "amazon, azure, bfl, google, openai, replicate, stabilityai, vertex, xai",
        ),
        (
            "providers:\n  mine:\n    type: gemini\n",
            "providers.mine.type: unknown provider type 'gemini'; one of: "
            "amazon, azure, bfl, google, openai, replicate, stabilityai, vertex, xai",
        ),
        ("auth: maybe\n", "auth: 'maybe' is not one of: keys, none"),
        (
            "server:\n  log_level: LOUD\n",
            "server.log_level: 'LOUD' is not one of: DEBUG, INFO, WARNING, ERROR",
        ),
        (
            "providers:\n  azure:\n    base_url: https://a.example\n    surface: x\n",
            "providers.azure.surface: 'x' is not one of: deployments, v1",
        ),
        (
            "retry:\n  providers:\n    openai:\n      attempts: 0\n",
            "retry.providers.openai.attempts: expected `int` >= 1",
        ),
        (
            "limits:\n  unpriced_image_usd: 0\n",
            "limits.unpriced_image_usd: expected `float` > 0.0",
        ),
        (
            "limits:\n  max_image_pixels: 0\n",
            "limits.max_image_pixels: expected `int` >= 1",
        ),
        (
            "limits:\n  max_image_pixels: 200000000\n",
            "limits.max_image_pixels: expected `int` <= 178956970",
        ),
        (
            "limits:\n  max_image_decodes: 0\n",
            "limits.max_image_decodes: expected `int` >= 1",
        ),
        (
            "providers:\n  openai:\n    pool:\n      limit: 0\n",
            "providers.openai.pool.limit: expected `int` >= 1",
        ),
        ("fallbacks:\n  a/b: [1]\n", "fallbacks.a/b[0]: expected `str`, got `int`"),
        ("providers: [1, 2]\n", "providers: expected `object`, got `array`"),
        (
            "providers:\n  openai: 3\n",
            "providers.openai: expected a mapping of settings, got `int`",
        ),
        ("server: [\n", "not valid YAML"),
        (
            "providers:\n  a/b:\n    type: openai\n",
            "providers.a/b: a provider name must not contain '/'",
        ),
        (
            "files:\n  max_total_bytes: 10\n  max_bytes_per_key: 11\n",
            "files: max_bytes_per_key must not be above max_total_bytes",
        ),
        (
            "files:\n  max_files_per_key: 0\n",
            "files.max_files_per_key: expected `int` >= 1",
        ),
    ],
)
def test_invalid_configs_name_the_full_path(text: str, message: str) -> None:
    if not text.startswith("providers"):
        text = OPENAI + text
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="test.yaml")
    assert str(exc.value).startswith(f"test.yaml: {message}")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:9911/v1", "localhost:9911/v1", "ftp://h/v1", "https:///v1", "/v1"],
)
def test_base_url_must_be_an_absolute_http_url(url: str) -> None:
    # Without a scheme every edit would end in a 502 at request time.
    with pytest.raises(ConfigError) as exc:
        parse_config(f"providers:\n  openai:\n    base_url: '{url}'\n", source="t")
    assert str(exc.value) == (
        f"t: providers.openai.base_url: {url!r} is not an absolute http(s) URL "
        "(such as https://api.example.com/v1)"
    )


def test_a_provider_section_may_be_empty() -> None:
    assert isinstance(
        parse_config("providers:\n  openai:\n").providers["openai"], openai.Config
    )


def test_keys_come_from_the_environment_only() -> None:
    config = parse_config(
        "providers:\n  openai: {}\n  other:\n    type: openai\n    api_key_env: OTHER\n"
    )
    assert provider_keys(config, {"OPENAI_API_KEY": "k1", "OTHER": ""}) == {
        "openai": "k1",
        "other": None,
    }
