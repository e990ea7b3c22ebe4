"""The request fields are defined once (``RequestFields``); the intake structs, the
job and the fields OpenAI-shaped adapters forward all derive from it."""

from __future__ import annotations

import msgspec

from proxy.models import (
    FORWARDED_FIELDS,
    JOB_FIELDS,
    EditForm,
    EditJob,
    EditRequest,
    GenerateRequest,
    RequestFields,
)


def _names(struct: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct)]


def test_every_intake_and_the_job_carry_every_request_field() -> None:
    shared = _names(RequestFields)
    for struct in (EditRequest, EditForm, GenerateRequest, EditJob):
        assert set(shared) <= set(_names(struct)), struct.__name__


def test_a_job_copies_its_request_fields() -> None:
    request = EditRequest(
        model="openai/gpt-image-2.5-sunburst",
        prompt="a cat",
        images=[],
        n=2,
        size="1024x1024",
        quality="high",
        background="transparent",
        output_format="webp",
        output_compression=80,
        input_fidelity="high",
        moderation="low",
        response_format="b64_json",
        partial_images=1,
        stream=None,
        user="u1",
        metadata={"k": "v"},
    )
    job = EditJob.from_request(
        request,
        operation="edit",
        provider="openai",
        model="gpt-image-2.5-sunburst",
        source="json",
        extra={"x": 1},
        extra_headers={},
    )
    for name in JOB_FIELDS:
        assert getattr(job, name) == getattr(request, name), name
    assert (job.model, job.stream, job.extra) == (
        "gpt-image-2.5-sunburst",
        False,
        {"x": 1},
    )


def test_forwarded_fields_are_the_optional_job_fields() -> None:
    assert tuple(n for n in JOB_FIELDS if n != "prompt") == FORWARDED_FIELDS
    assert "model" not in JOB_FIELDS
    assert "stream" not in JOB_FIELDS
