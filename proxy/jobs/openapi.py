"""The OpenAPI description of async jobs (see ``proxy.openapi``): the ``Prefer`` and
webhook headers and the 202 of the image operations, and the job routes."""

from __future__ import annotations

from typing import Any

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_TEXT = {"type": "string"}
_INT = {"type": "integer"}
_NULLABLE_INT = {"anyOf": [_INT, {"type": "null"}]}
_STATES = ["queued", "in_progress", "succeeded", "failed", "cancelled"]

ACCEPTED = {
    "type": "object",
    "required": ["id", "object", "status", "created_at"],
    "properties": {
        "id": _TEXT,
        "object": {"const": "image.job"},
        "status": {"enum": _STATES},
        "created_at": _INT,
    },
}
JOB = {
    "type": "object",
    "required": ["id", "object", "status", "created_at", "model"],
    "properties": {
        **ACCEPTED["properties"],  # type: ignore[dict-item]
        "model": _TEXT,
        "started_at": _NULLABLE_INT,
        "completed_at": _NULLABLE_INT,
        "attempts": _INT,
        "status_code": _NULLABLE_INT,
        "provider": {"anyOf": [_TEXT, {"type": "null"}]},
        "cost": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "result": {
            "$ref": "#/components/schemas/ImagesResponse",
            "description": "succeeded: the synchronous call's answer, byte for byte",
        },
        "error": {
            "$ref": "#/components/schemas/ErrorDetail",
            "description": "failed: the error envelope's error, status in status_code",
        },
    },
}


def parameters() -> list[dict[str, Any]]:
    """The headers of an edit or generation that may become a job."""
    return [
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "description": "respond-async (RFC 7240): answer 202 with a job to poll "
            "at Location (GET /v3/images/jobs/{id}) instead of waiting",
            "schema": _TEXT,
        },
        {
            "name": "Imagegate-Webhook-Url",
            "in": "header",
            "required": False,
            "description": "With respond-async: where the job's terminal state is "
            "POSTed, signed per Standard Webhooks (also the webhook_url field)",
            "schema": _TEXT,
        },
    ]


def accepted() -> dict[str, Any]:
    return {
        "202": {
            "description": "Accepted as a job (Prefer: respond-async); poll Location",
            "headers": {
                "Location": {"schema": _TEXT},
                "Preference-Applied": {"schema": {"const": "respond-async"}},
            },
            "content": {"application/json": {"schema": ACCEPTED}},
        }
    }


def _answer(schema: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": schema}},
        }
    }
    out.update({str(s): {"description": "error", "content": _ERROR} for s in errors})
    return out


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def job_paths() -> dict[str, Any]:
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": _TEXT}
    listing = {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": JOB},
            "first_id": {"anyOf": [_TEXT, {"type": "null"}]},
            "last_id": {"anyOf": [_TEXT, {"type": "null"}]},
            "has_more": {"type": "boolean"},
        },
    }
    paths: dict[str, Any] = {}
    for prefix in ("/v3", "/v1"):
        paths[f"{prefix}/images/jobs"] = {
            "get": {
                "summary": "The calling key's jobs, newest first (without results)",
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("after", _TEXT),
                ],
                "responses": _answer(listing, 400, 401, 503),
            }
        }
        paths[f"{prefix}/images/jobs/{{job_id}}"] = {
            "get": {
                "summary": "A job: its state, and its result or error once ended",
                "parameters": [job_id],
                "responses": _answer(JOB, 401, 404, 503),
            },
            "delete": {
                "summary": "Cancel a job not ended yet; the job as it is afterwards",
                "parameters": [job_id],
                "responses": _answer(JOB, 401, 404, 503),
            },
        }
    return paths
