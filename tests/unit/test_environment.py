"""What the config takes from the environment (proxy/environment.py), the start's
and ``check-config``'s checks of it, and the bucket lifecycle rules
(``imagegate lifecycle-rules``)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proxy.__main__ import main
from proxy.config import ConfigError, parse_config
from proxy.config_storage import S3Settings
from proxy.environment import problems, redis_url, s3_settings
from proxy.lifecycle import RESULTS_RULE, UPLOADS_RULE, rules


def _config(**sections: Any) -> Any:
    raw = {"providers": {"openai": {}}, **sections}
    return parse_config(msgspec.yaml.encode(raw))


def _s3(**settings: Any) -> S3Settings:
    return msgspec.convert({"bucket": "imagegate", **settings}, S3Settings)


def test_the_config_s_endpoint_and_region_win_over_the_environment() -> None:
    env = {"AWS_ENDPOINT_URL_S3": "http://other:9000", "AWS_REGION": "eu-west-1"}
    got = s3_settings(_s3(endpoint_url="http://minio:9000", region="ap-south-1"), env)
    assert (got.endpoint_url, got.region) == ("http://minio:9000", "ap-south-1")
    assert got.addressing_style == "path"


@pytest.mark.parametrize(
    ("env", "endpoint", "region", "style"),
    [
        ({}, None, "us-east-1", "virtual"),
        ({"AWS_DEFAULT_REGION": "eu-west-3"}, None, "eu-west-3", "virtual"),
        (
            {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-3"},
            None, "eu-west-1", "virtual",
        ),
        (
            {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://s3:8333"},
            "http://s3:8333", "us-east-1", "path",
        ),
        ({"AWS_ENDPOINT_URL": "http://a:1"}, "http://a:1", "us-east-1", "path"),
        (
            {"AWS_ENDPOINT_URL_S3": "http://s3:8333",
             "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
            None, "us-east-1", "virtual",
        ),
        (
            {"AWS_ENDPOINT_URL_S3": "https://s3.eu-west-1.amazonaws.com"},
            "https://s3.eu-west-1.amazonaws.com", "us-east-1", "virtual",
        ),
    ],
)  # fmt: skip
def test_endpoint_region_and_addressing_from_the_aws_variables(
    env: dict[str, str], endpoint: str | None, region: str, style: str
) -> None:
    got = s3_settings(_s3(), env)
    assert (got.endpoint_url, got.region, got.addressing_style) == (
        endpoint,
        region,
        style,
    )


def test_an_explicit_addressing_style_is_kept() -> None:
    got = s3_settings(_s3(addressing_style="virtual"), {"AWS_ENDPOINT_URL": "http://x"})
    assert got.addressing_style == "virtual"


def test_redis_url_from_the_variable_redis_url_env_names() -> None:
    config = _config(redis_url_env="REDIS_URL")
    assert redis_url(config, {"REDIS_URL": "redis://r:6379/0"}) == "redis://r:6379/0"
    assert redis_url(config, {}) is None
    assert redis_url(_config(redis_url="redis://x:1/0"), {}) == "redis://x:1/0"


def test_problems_name_the_variable_never_its_value() -> None:
    config = _config(
        redis_url_env="REDIS_URL",
        metrics={"token_env": "SCRAPE"},
        files={"backend": "s3", "s3": {"bucket": "imagegate"}},
    )
    assert problems(config, {}) == [
        "redis_url_env names REDIS_URL, which is empty",
        "metrics.token_env names SCRAPE, which is empty",
    ]
    secret = "http://user:hunter2@redis:6379"
    lines = problems(
        config,
        {"REDIS_URL": secret, "SCRAPE": "t", "AWS_ENDPOINT_URL_S3": "ftp://hunter2"},
    )
    assert lines == [
        "redis_url_env: REDIS_URL must start with redis://, rediss:// or unix://",
        "AWS_ENDPOINT_URL_S3 must be an http(s) URL",
    ]
    assert "hunter2" not in " ".join(lines)
    ok = {"REDIS_URL": "rediss://:pw@r:6380/0", "SCRAPE": "t"}
    assert problems(config, ok) == []


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"redis_url": "redis://a:1/0", "redis_url_env": "R"},
            "redis_url and redis_url_env: set one of them",
        ),
        ({"results": {"keep": True, "retention_days": 30}}, "results.keep: needs files.backend: s3"),
        (
            {"results": {"keep": True},
             "files": {"backend": "s3", "s3": {"bucket": "imagegate"}}},
            "results.retention_days: needed with results.keep: true",
        ),
        ({"results": {"retention_days": 30}}, "results.retention_days: only used with"),
        (
            {"results": {"prefix": "imagegate"},
             "files": {"backend": "s3", "s3": {"bucket": "imagegate"}}},
            "results.prefix: must not overlap files.s3.prefix",
        ),
        (
            {"files": {"backend": "s3", "s3": {"bucket": "imagegate", "prefix": ""}}},
            "results.prefix: must not overlap files.s3.prefix",
        ),
    ],
)  # fmt: skip
def test_config_refuses(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _config(**sections)


def _bucket(**results: Any) -> Any:
    s3 = {"backend": "s3", "s3": {"bucket": "imagegate", "prefix": "ig/up"}}
    return _config(files=s3, results={"prefix": "ig/res/", **results})


@pytest.mark.parametrize(
    ("results", "days"),
    [
        ({}, 1),  # links live an hour
        ({"url_ttl_s": 86401}, 2),
        ({"url_ttl_s": 7 * 86400}, 7),
        ({"keep": True, "retention_days": 90}, 90),
        # A kept result still lives as long as its link.
        ({"keep": True, "retention_days": 1, "url_ttl_s": 3 * 86400}, 3),
    ],
)
def test_lifecycle_rules_expire_results_after_their_links_or_retention(
    results: dict[str, Any], days: int
) -> None:
    found = rules(_bucket(**results))
    by_id = {r["ID"]: r for r in found["Rules"]}
    assert by_id[UPLOADS_RULE]["Filter"] == {"Prefix": "ig/up/"}
    assert "Expiration" not in by_id[UPLOADS_RULE]  # the sweeper expires uploads
    assert by_id[RESULTS_RULE]["Filter"] == {"Prefix": "ig/res/"}
    assert by_id[RESULTS_RULE]["Expiration"] == {"Days": days}


def test_lifecycle_rules_command(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(
        msgspec.yaml.encode(
            {"providers": {"openai": {}},
             "files": {"backend": "s3", "s3": {"bucket": "imagegate"}}}
        )
    )  # fmt: skip
    assert main(["lifecycle-rules", str(path)]) == 0
    printed = msgspec.json.decode(capsys.readouterr().out)
    assert printed == rules(
        _config(files={"backend": "s3", "s3": {"bucket": "imagegate"}})
    )
    path.write_bytes(b"providers: {openai: {}}\n")
    assert main(["lifecycle-rules", str(path)]) == 2
    assert "files.backend is not s3" in capsys.readouterr().err


def test_check_config_and_the_start_need_the_redis_variable(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"providers: {openai: {}}\nredis_url_env: IG_TEST_REDIS\n")
    monkeypatch.delenv("IG_TEST_REDIS", raising=False)
    assert main(["check-config", str(path)]) == 2
    assert (
        "redis_url_env names IG_TEST_REDIS, which is empty" in capsys.readouterr().err
    )
    assert main(["--config", str(path), "--port", "0"]) == 2
    assert "IG_TEST_REDIS" in capsys.readouterr().err
    monkeypatch.setenv("IG_TEST_REDIS", "redis://127.0.0.1:1/0")
    assert main(["check-config", str(path)]) == 0
    assert ": ok (1 provider)" in capsys.readouterr().out


async def test_the_s3_client_addresses_the_store_the_settings_decide() -> None:
    import aiohttp

    from proxy.s3 import S3Client

    aws = "https://imagegate.s3.us-east-1.amazonaws.com/k"
    async with aiohttp.ClientSession() as session:
        for env, url in [
            ({}, aws),
            ({"AWS_REGION": "eu-west-1"}, aws.replace("us-east-1", "eu-west-1")),
            ({"AWS_ENDPOINT_URL_S3": "http://s3:8333"}, "http://s3:8333/imagegate/k"),
        ]:
            client = S3Client(s3_settings(_s3(), env), session, lambda: None)
            assert client.url("k") == url
        # Left undecided ("auto", no endpoint), it is AWS S3: virtual-hosted.
        assert S3Client(_s3(), session, lambda: None).url("k") == aws
