"""JSON logging: one object per line, built with msgspec.

Records carry structured ``fields`` (the access log); secrets and image bytes are never
put into a record in the first place.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, passed to its request handlers.

    A client's malformed HTTP (a line over the size limit, too many headers, bad
    framing, a body its Content-Encoding cannot decode, seen again when aiohttp drains
    it after the answer) becomes one warning line: it is the client's fault, not the
    gateway's, and aiohttp's error-level traceback would copy the client's bytes into
    the log.
    """

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, ConnectionResetError):
            # The client left mid-request; the access line already records it (499).
            self.logger.debug("client went away", extra={"fields": {}})
            return
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            fields = {"reason": type(exc).__name__}
            self.logger.warning("malformed HTTP request", extra={"fields": fields})
            return
        self.logger.exception(msg, *args, **kwargs)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log is replaced by ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # botocore logs canonical requests (session tokens included) at DEBUG.
    logging.getLogger("botocore").setLevel(logging.WARNING)
