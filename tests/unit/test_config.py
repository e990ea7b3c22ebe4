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


def test_empty_file_is_all_defaults() -> None:
    assert parse_config("") == Config()


def test_a_key_s_share_of_the_upload_store() -> None:
    files = parse_config("files:\n  max_total_bytes: 1000\n").files
    assert files.key_bytes == 250
    assert parse_config("files:\n  max_bytes_per_key: 7\n").files.key_bytes == 7


def test_body_cap_default_fits_sixteen_images_and_a_mask() -> None:
    limits = parse_config("limits:\n  max_file_bytes: 1000\n").limits
    assert limits.body_cap == 17 * 1000 + 1024 * 1024
    assert parse_config("limits:\n  max_body_bytes: 5\n").limits.body_cap == 5


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("server:\n  port: 70000\n", "$.server.port"),
        ("server:\n  hots: x\n", "hots"),
        ("limits:\n  max_file_bytes: 0\n", "$.limits.max_file_bytes"),
        ("providers:\n  mystery:\n    base_url: x\n", "$.providers.mystery.type"),
        (
            "providers:\n  openai:\n    pool:\n      limit: 0\n",
            "$.providers.openai.pool.limit",
        ),
        ("providers: [1, 2]\n", "$.providers"),
        ("server: [\n", "not valid YAML"),
        ("providers:\n  a/b:\n    type: openai\n", "must not contain '/'"),
        (
            "files:\n  max_total_bytes: 10\n  max_bytes_per_key: 11\n",
            "max_bytes_per_key: above max_total_bytes - at `$.files`",
        ),
        ("files:\n  max_files_per_key: 0\n", "$.files.max_files_per_key"),
    ],
)
def test_invalid_configs_name_the_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="test.yaml")
    message = str(exc.value)
    assert where in message
    assert message.startswith("test.yaml: ")
    assert "\n" not in message


def test_keys_come_from_the_environment_only() -> None:
    config = parse_config(
        "providers:\n  openai: {}\n  other:\n    type: openai\n    api_key_env: OTHER\n"
    )
    assert provider_keys(config, {"OPENAI_API_KEY": "k1", "OTHER": ""}) == {
        "openai": "k1",
        "other": None,
    }
