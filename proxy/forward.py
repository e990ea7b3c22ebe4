"""Multipart edits forwarded to the provider while the client's upload arrives.

The official OpenAI SDKs send the text fields before the files. When every field is
in by the first file part, and what they name can take the client's image bytes as
they are (an adapter with ``forwards_uploads``: OpenAI, Azure OpenAI), the request's
checks that need only the fields run then (key, model, retirements, capabilities, the
budget's worst case), the provider's request is opened with a chunked body, and the
image's bytes go to it as they arrive (``proxy.livebody.Pipe``), once its first
``pixels.HEAD_BYTES`` passed the type sniff and the pixel header check.

The upload is read as it always is meanwhile (``parsing.read_form``, spooled to memory
or temp files, every check in place): the forward is speculative. The provider's body
ends only once the client's whole body has been read and found valid. Anything else
cuts it off without its terminating chunk, so the provider never holds a complete
request (``proxy.livebody``):

- a check fails, the body is malformed, late or too large, or the client leaves: the
  request fails exactly as a spooled one does, and nothing is charged;
- the form is not one forward can send as the client meant it (a second file, a mask,
  a field after the file, an image over the provider's size cap): the rest is read and
  the request runs from the spooled parts, as it did before forwarding existed.

Not forwarded (spooled as before): a body declared under ``limits.forward_min_bytes``,
a list of images (``image[]``), an image whose last byte came with its first
``HEAD_BYTES`` (in whole already: nothing to gain), files before the fields, an ``Idempotency-Key``
(its fingerprint needs the files' digests before the key is claimed), ``stream``,
``Prefer: respond-async``, a model with fallbacks (a second provider needs the bytes
again), providers that need whole or converted images (base64 JSON, mask polarity).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from proxy.config import Limits
from proxy.formreader import Chunks, FormReader, Part
from proxy.images import SNIFF_BYTES, require_image
from proxy.livebody import NotForwarded, Pipe
from proxy.models import StoredImage
from proxy.pixels import HEAD_BYTES
from proxy.tasks import TaskGroup

# What the handler makes of the fields and the first image: the request's pipeline
# on them (run as a task) and the most bytes the image may have on that route, or
# None when this request is not forwarded.
Answer = Coroutine[Any, Any, web.StreamResponse]
Launch = Callable[[dict[str, Any], StoredImage], tuple[Answer, int] | None]


class Forward:
    """Watches ``read_form``'s parts (``part``) and forwards the first image."""

    def __init__(self, limits: Limits, launch: Launch) -> None:
        self._limits = limits
        self._launch = launch
        self._seen_file = False
        self.pipe: Pipe | None = None
        self.task: asyncio.Task[web.StreamResponse] | None = None
        self.cap = 0  # the most bytes the forwarded image may have
        self._tasks = TaskGroup()

    async def part(
        self, fields: dict[str, Any], part: Part, reader: Chunks, *, file: bool
    ) -> Chunks | None:
        """Called for each part once its headers are read: for the first file part,
        the chunks the sink reads (forwarded once its head is in), or None."""
        pipe = self.pipe
        if pipe is not None:
            # Another part after the forwarded one: not one image after the fields.
            pipe.abort(NotForwarded("a part follows the forwarded image"))
            return None
        if not file:
            return None
        first, self._seen_file = not self._seen_file, True
        if not first or part.name != "image":
            # ``image[]`` is how the SDKs send a list: a second image would follow
            # and cut the forward off, so such a form is spooled from the start.
            return None
        return _Tee(self, fields, part, reader)

    def start(self, fields: dict[str, Any], part: Part, head: bytes) -> Pipe | None:
        """The forward of an image part whose first bytes are ``head``: its pipe, or
        None when this request is not forwarded."""
        if not _image_head(head):
            return None  # the sink refuses it, as it always did
        pipe = Pipe(head)
        image = StoredImage(
            content_type=require_image(head[:SNIFF_BYTES], param="image"),
            size=len(head),
            filename=part.filename or "",
            field=part.name or "",
            live=pipe,
        )
        launched = self._launch(fields, image)
        if launched is None:
            return None
        answer, cap = launched
        self.pipe, self.cap = pipe, min(cap, self._limits.max_file_bytes)
        self.task = self._tasks.spawn(answer, name="forwarded-edit")
        self.task.add_done_callback(lambda _: pipe.close())
        return pipe

    async def complete(self, whole: StoredImage) -> web.StreamResponse | None:
        """After the whole body was read and checked (``whole``: the forwarded image
        as spooled): the forwarded request's answer, or None when it is to run from
        the spooled parts."""
        pipe, task = self.pipe, self.task
        if pipe is None or task is None:
            return None
        if pipe.error is None:
            pipe.whole = whole  # before finish: a retry sends it
            pipe.finish()
            return await task
        await _ended(task)  # it ends with the abort's error
        return None

    async def abandon(self, error: BaseException) -> None:
        """The intake failed with ``error``: the provider's body is cut off, and the
        forwarded request's end (that same error) awaited."""
        if self.pipe is None or self.task is None:
            return
        if not isinstance(error, Exception):  # cancelled: the client left
            error = NotForwarded("the client's body ended early")
        self.pipe.abort(error)
        await _ended(self.task)


async def _ended(task: asyncio.Task[web.StreamResponse]) -> None:
    """Waits for ``task`` to end, whatever its outcome (retrieved, so never logged as
    lost); a cancellation of the caller itself still goes through."""
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


def _image_head(head: bytes) -> bool:
    """The first bytes are an image's: the sink refuses them otherwise, as it always
    did. (Their pixel header is checked by the pipeline before any provider call;
    one it cannot read passes, as for a spooled image.)"""
    try:
        require_image(head[:SNIFF_BYTES], param="image")
    except Exception:
        return False
    return True


class _Tee:
    """The part's chunks to the sink as they arrive; its first ``HEAD_BYTES`` (or
    the whole part, if shorter) decide the forward, after which each chunk is handed
    to the provider too, before the sink gets it."""

    def __init__(
        self, forward: Forward, fields: dict[str, Any], part: Part, reader: Chunks
    ) -> None:
        self._forward = forward
        self._fields, self._part = fields, part
        self._reader = reader
        self._turns = reader if isinstance(reader, FormReader) else None
        self._head: list[bytes | memoryview] | None = []  # None: decided
        self._pipe: Pipe | None = None
        self._size = 0

    def ready(self) -> bool:
        return self._reader.ready()

    async def read(self) -> bytes | memoryview:
        chunk = await self._reader.read()
        self._size += len(chunk)
        head = self._head
        if head is not None:
            if chunk:
                head.append(chunk)
            if not chunk or self._size >= HEAD_BYTES:
                self._head = None
                turns = self._turns
                if turns is not None and turns.part_read():
                    # The whole image is in already: sending it on now gains nothing
                    # over the spooled run, and the pipe and task cost a small edit
                    # about a sixth of its CPU.
                    return chunk
                joined = b"".join(head)
                self._pipe = self._forward.start(self._fields, self._part, joined)
            return chunk
        pipe = self._pipe
        if pipe is None or not chunk:
            return chunk
        if self._size > self._forward.cap:
            # The spooled run gives the refusal, in its own words.
            pipe.abort(NotForwarded("the image is over its size cap"))
        if pipe.full and self._turns is not None:
            # Waiting for the provider, not the client: other bodies read meanwhile
            # (a turn held here kept up to 64 uploads waiting on their providers).
            self._turns.give_turn()
        await pipe.put(chunk)
        return chunk
