"""resolve_inputs against capabilities other than OpenAI's (no file ids, URL fetching)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proxy.config import Fetch
from proxy.config_storage import UploadStoreConfig
from proxy.errors import InvalidRequest, NotFound
from proxy.fetch import Fetcher, make_ssl_context
from proxy.inputs import resolve_inputs
from proxy.models import EditJob, FileRef, ImageInput, RemoteImage, StoredImage
from proxy.providers.base import Capabilities
from proxy.tempfiles import UploadSet
from proxy.upload_store import UploadStore
from tests.fakes.images_host import MapResolver
from tests.images import png


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def parts(tmp_path: Path) -> tuple[UploadStore, Fetcher, str]:
    store_dir, temp_dir = tmp_path / "store", tmp_path / "tmp"
    store_dir.mkdir()
    temp_dir.mkdir()
    store = UploadStore(UploadStoreConfig(), str(store_dir))
    fetcher = Fetcher(
        Fetch(),
        resolver=MapResolver({}),
        ssl_context=await make_ssl_context(None),
    )
    return store, fetcher, str(temp_dir)


def _job(*images: ImageInput, mask: ImageInput | None = None) -> EditJob:
    return EditJob(
        operation="edit",
        provider="p",
        model="m",
        prompt="x",
        source="json",
        images=images,
        mask=mask,
    )


async def test_unknown_file_id_is_404_without_provider_ids(
    parts: tuple[UploadStore, Fetcher, str],
) -> None:
    store, fetcher, temp = parts
    async with UploadSet(temp) as uploads:
        with pytest.raises(NotFound) as exc:
            await resolve_inputs(
                _job(FileRef("file-abc")), Capabilities(), provider="p",
                files=store, fetcher=fetcher, uploads=uploads,
            )  # fmt: skip
    assert exc.value.param == "images[0].file_id"
    assert exc.value.code == "file_not_found"
    assert "provider 'p' has no file ids" in exc.value.message


async def test_stored_file_is_linked_and_kept_after_delete(
    parts: tuple[UploadStore, Fetcher, str],
) -> None:
    store, fetcher, temp = parts
    image = png(3, 3)
    record = await store.save(
        _one(image), file_name="a.png", mimetype="image/png", purpose=None
    )
    caps = Capabilities(image_urls=True)
    remote = RemoteImage("https://images.example/a.png")
    async with UploadSet(temp) as uploads:
        job = await resolve_inputs(
            _job(FileRef(record.file_id), remote), caps, provider="p",
            files=store, fetcher=fetcher, uploads=uploads,
        )  # fmt: skip
        stored = job.images[0]
        assert isinstance(stored, StoredImage)
        # A provider that fetches URLs gets the URL, unfetched.
        assert job.images[1] == remote
        await store.delete(record.file_id)
        assert await stored.read() == image
    assert stored.path is not None
    assert not await asyncio.to_thread(os.path.exists, stored.path)


async def test_passed_through_urls_still_obey_the_scheme_rule(
    parts: tuple[UploadStore, Fetcher, str],
) -> None:
    store, fetcher, temp = parts
    async with UploadSet(temp) as uploads:
        with pytest.raises(InvalidRequest) as exc:
            await resolve_inputs(
                _job(StoredImage("image/png", 1, "a"),
                     mask=RemoteImage("http://images.example/m.png")),
                Capabilities(image_urls=True), provider="p",
                files=store, fetcher=fetcher, uploads=uploads,
            )  # fmt: skip
    assert exc.value.param == "mask.image_url"
    assert "only https" in exc.value.message


@pytest.fixture
def foreign_file(tmp_path: Path) -> Iterator[Path]:
    """A file on another filesystem than tmp_path (tmpfs at /dev/shm)."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    source = other / f"imagegate-test-{os.getpid()}-{id(tmp_path)}"
    source.write_bytes(b"stored bytes")
    yield source
    source.unlink()


async def test_link_copies_across_filesystems(
    tmp_path: Path, foreign_file: Path
) -> None:
    async with UploadSet(str(tmp_path)) as uploads:
        path = await uploads.link(str(foreign_file))
        assert await asyncio.to_thread(Path(path).read_bytes) == b"stored bytes"
        stat = await asyncio.to_thread(os.stat, path)
        assert stat.st_dev != (await asyncio.to_thread(foreign_file.stat)).st_dev
    assert not await asyncio.to_thread(os.path.exists, path)
