"""The proxy's OpenAPI 3.1 description, generated from the msgspec wire types.

Request and error schemas come from the same Structs that validate requests, so the
description cannot drift from what the proxy enforces. Served at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy import __version__
from proxy.catalog import ModelList
from proxy.jobs import openapi as jobs
from proxy.models import EditForm, EditRequest, ErrorBody, GenerateRequest
from proxy.quote import Quote
from proxy.upload_api import upload_paths
from proxy.usage import UsageReport

_REF = "#/components/schemas/{name}"


class ImageDataItem(msgspec.Struct):
    """One image of an answer: ``b64_json`` or ``url``."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(msgspec.Struct):
    """OpenAI's images answer plus the gateway's ``cost`` (USD) and ``provider``."""

    data: list[ImageDataItem]
    created: int | None = None
    usage: dict[str, Any] | None = None
    cost: float | None = None
    provider: str | None = None


# proxy/idempotency.py: the header, what a repeat gets, and which answers are kept.
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1 to 255 printable ASCII characters, scoped to the client key "
    "(keyless: the client address). A repeat with the same key and the same request "
    "(method, path, canonical body; multipart: fields and file SHA-256s) gets the "
    "kept answer (2xx and 4xx but 408/429, for idempotency.ttl_s) with "
    "Idempotent-Replayed: true, no upstream call and no charge; while the first runs "
    "it waits idempotency.wait_s, then 409 idempotency_key_in_use with Retry-After; "
    "another request with the key: 422 idempotency_key_reused. Not with stream: "
    "true (400).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "true: the answer kept for this Idempotency-Key, replayed",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _errors(*statuses: int) -> dict[str, Any]:
    error = {"application/json": {"schema": _ref("ErrorBody")}}
    return {
        str(status): {"description": "OpenAI-shaped error", "content": error}
        for status in statuses
    }


def _multipart_schema(components: dict[str, Any]) -> dict[str, Any]:
    """The SDK's form: file parts plus EditForm's fields as text."""
    form: dict[str, Any] = components.pop("EditForm")
    binary = {"type": "string", "format": "binary"}
    form["properties"] = {
        "image": {"oneOf": [binary, {"type": "array", "items": binary}]},
        "image[]": {"type": "array", "items": binary},
        "mask": binary,
        **form["properties"],
    }
    form["required"] = sorted({*form.get("required", []), "image"} - {"image[]"})
    # Text parts arrive as strings; the proxy converts them like the JSON types.
    form["description"] = "multipart/form-data as the OpenAI SDKs send it."
    return form


def _images_operation(
    summary: str, json_schema: dict[str, Any], form: dict[str, Any] | None
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if form is not None:
        content["multipart/form-data"] = {"schema": form}
    return {
        "summary": summary,
        # Idempotency-Key; Prefer: respond-async and the webhook (proxy/jobs).
        "parameters": [_IDEMPOTENCY_KEY, *jobs.parameters()],
        "requestBody": {"required": True, "content": content},
        "responses": {
            **jobs.accepted(),
            "200": {
                "description": "The provider's images, with cost and provider; "
                "with stream=true, server-sent events",
                "content": {
                    "application/json": {"schema": _ref("ImagesResponse")},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
                "headers": _REPLAYED,
            },
            **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429),
            **_errors(500, 502, 503, 504),
        },
    }


def _quote_post(
    edit: dict[str, Any], generate: dict[str, Any], form: dict[str, Any]
) -> dict[str, Any]:
    # An edit's or a generation's body; "operation" says which (else: images or not).
    operation = {"type": "string", "enum": ["edit", "generate"]}
    json_schema = {
        "anyOf": [
            {"allOf": [edit, {"properties": {"operation": operation}}]},
            {"allOf": [generate, {"properties": {"operation": operation}}]},
        ]
    }
    content = {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": _ref("EditMultipart")},
    }
    return {
        "post": {
            "summary": "What an edit or generation would cost, from the catalogue, "
            "without sending it or spending budget: min_cost and max_cost in USD "
            "(null with the reason in notes when unpriced); max_cost is what a "
            "budgeted key must have room for",
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": {
                    "description": "The quote",
                    "content": {"application/json": {"schema": _ref("Quote")}},
                },
                **_errors(400, 401, 403, 404, 408, 410, 413, 415, 429),
            },
        }
    }


def _plain_get(summary: str, content_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = (
        {"type": "object"} if "json" in content_type else {"type": "string"}
    )
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {content_type: {"schema": schema}}},
                **({"503": {"description": "Not ready",
                            "content": {content_type: {"schema": schema}}}}
                   if summary.startswith("Readiness") else {}),
            },
        }
    }  # fmt: skip


def _models_get() -> dict[str, Any]:
    return {
        "get": {
            "summary": "The served image models and their capabilities",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": _ref("ModelList")}},
                }
            },
        }
    }


def _usage_get() -> dict[str, Any]:
    return {
        "get": {
            "summary": "The calling key's spend today and this month against its "
            "budgets, and its requests per minute and in flight against its limits; "
            "null where not tracked (see proxy/usage.py)",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": _ref("UsageReport")}},
                },
                **_errors(401, 429, 503),
            },
        }
    }


def build_openapi() -> dict[str, Any]:
    types = [
        EditRequest,
        EditForm,
        GenerateRequest,
        ImagesResponse,
        ErrorBody,
        ModelList,
        UsageReport,
        Quote,
    ]
    (edit, _, generate, *_), components = msgspec.json.schema_components(
        types, ref_template=_REF
    )
    form = _multipart_schema(components)
    components["EditMultipart"] = form
    paths: dict[str, Any] = {}
    for prefix in ("/v3", "/v1"):
        paths[f"{prefix}/images/edits"] = {
            "post": _images_operation("Edit images", edit, form)
        }
        paths[f"{prefix}/images/generations"] = {
            "post": _images_operation("Generate images", generate, None)
        }
        paths[f"{prefix}/images/quote"] = _quote_post(edit, generate, form)
        paths[f"{prefix}/images/models"] = _models_get()
        paths[f"{prefix}/models"] = _models_get()
    paths.update(upload_paths())
    paths.update(jobs.job_paths())
    paths["/v3/usage"] = _usage_get()
    paths["/healthz"] = _plain_get("Liveness", "application/json")
    paths["/readyz"] = _plain_get("Readiness", "application/json")
    paths["/metrics"] = _plain_get("Prometheus metrics", "text/plain")
    return {
        "openapi": "3.1.0",
        "info": {"title": "imagegate", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
