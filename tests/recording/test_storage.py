"""The recordings' storage port: a directory, and an S3-compatible server (moto's, over real HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from app.recording.storage import BadKey, DirectoryStore, RecordingStore, S3Store

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["directory", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordingStore]:
    if request.param == "directory":
        yield DirectoryStore(tmp_path / "recordings")
        return
    url = request.getfixturevalue("s3_url")
    bucket = f"rec-{uuid.uuid4().hex[:12]}"
    options = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "test",
               "aws_secret_access_key": "test"}  # fmt: skip
    async with get_session().create_client("s3", **options) as s3:
        await s3.create_bucket(Bucket=bucket)
    s3_store = S3Store(bucket=bucket, endpoint_url=url, region="us-east-1", access_key="test", secret_key="test")
    yield s3_store
    await s3_store.aclose()


async def test_parts_are_written_read_listed_and_deleted_by_call(store: RecordingStore) -> None:
    sid = "CA" + "1" * 32
    await store.put(f"{sid}/part-000001.ogg", b"OggS-one", "audio/ogg")
    await store.put(f"{sid}/part-000002.ogg", b"OggS-two", "audio/ogg")
    await store.put("CA" + "2" * 32 + "/part-000001.ogg", b"other call", "audio/ogg")
    assert await store.get(f"{sid}/part-000002.ogg") == b"OggS-two"
    assert await store.get(f"{sid}/missing.ogg") is None
    assert await store.keys(f"{sid}/") == [f"{sid}/part-000001.ogg", f"{sid}/part-000002.ogg"]
    assert await store.delete_prefix(f"{sid}/") == 2
    assert await store.keys(f"{sid}/") == [] and await store.get(f"{sid}/part-000001.ogg") is None
    assert await store.keys("CA" + "2" * 32 + "/") == ["CA" + "2" * 32 + "/part-000001.ogg"]  # untouched


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", "a//b", "", "a b", "a\x00b"])
async def test_a_key_outside_the_projects_own_shape_is_refused(store: RecordingStore, key: str) -> None:
    with pytest.raises(BadKey):
        await store.put(key, b"x", "audio/ogg")
