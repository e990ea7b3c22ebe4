"""The served OpenAPI description, and schemathesis run against it: no 5xx, and every
response matches the description."""

from __future__ import annotations

import http.client
from typing import Any

import msgspec
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from proxy.openapi import build_openapi
from tests.fuzz.conftest import Served


def test_served_description_is_the_generated_one(served: Served) -> None:
    conn = http.client.HTTPConnection(served.host, served.port, timeout=10)
    conn.request("GET", "/openapi.json")
    resp = conn.getresponse()
    assert resp.status == 200
    doc = msgspec.json.decode(resp.read())
    conn.close()
    assert doc == msgspec.json.decode(msgspec.json.encode(build_openapi()))
    assert doc["openapi"] == "3.1.0"
    for path in ("/v3/images/edits", "/v1/images/edits", "/v3/images/generations",
                 "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert path in doc["paths"]
    ref = doc["components"]["schemas"]["ImageRef"]
    assert ref["additionalProperties"] is False
    edit = doc["components"]["schemas"]["EditRequest"]
    assert edit["properties"]["n"]["anyOf"][0] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
    }


def test_api_conforms(served: Served) -> None:
    # schemathesis's pytest plugin does not load under pytest 9; drive its strategies
    # with hypothesis directly, one operation at a time.
    schema = schemathesis.openapi.from_dict(build_openapi())
    base_url = f"http://{served.host}:{served.port}"
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 7
    for operation in operations:

        @given(operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case[Any]) -> None:
            # Acceptance checks are left out: the description cannot say "exactly one
            # of file_id/image_url" or which bytes are images; the proxy is stricter.
            case.call_and_validate(
                base_url=base_url,
                excluded_checks=[positive_data_acceptance, negative_data_rejection],
            )

        check()
