"""``Prefer: respond-async`` (RFC 7240) and the requests the quotas leave to the job.

A leaf module (aiohttp only): the guard asks it, before the body is read, whether a
request is counted now or when its job runs.
"""

from __future__ import annotations

from aiohttp import web

# Set (True) by the jobs' cleanup context once jobs run in this process: until then,
# and when they do not (disabled, or several workers without Redis), a request
# preferring respond-async is answered synchronously and counted like any other.
ACTIVE = web.AppKey("jobs_active", bool)
_ASYNC_ROUTES = ("/images/edits", "/images/generations")
_JOB_ROUTES = ("/v1/images/jobs", "/v3/images/jobs")


def preferences(header: str) -> set[str]:
    """The preference names of a ``Prefer`` header (RFC 7240 section 2), lowercased;
    values and parameters are not needed here."""
    names = set()
    for item in header.split(","):
        token = item.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if token:
            names.add(token)
    return names


def wants_async(request: web.Request) -> bool:
    values = request.headers.getall("Prefer", ())
    return bool(values) and any("respond-async" in preferences(v) for v in values)


def uncounted(request: web.Request) -> bool:
    """Requests the quotas do not count while jobs run here (``ACTIVE``): an edit or
    generation that asks to become a job (the job is counted once, when it runs) and
    the job routes themselves (polling must not spend a key's rate)."""
    if not request.app.get(ACTIVE, False):
        return False
    path = request.path
    if path.startswith(_JOB_ROUTES):
        return True
    return (
        request.method == "POST"
        and path.endswith(_ASYNC_ROUTES)
        and wants_async(request)
    )
