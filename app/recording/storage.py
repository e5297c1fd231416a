"""Where recordings live, behind one small port: a directory under DATA_DIR, or any S3-compatible store.

Keys are the project's own (``{call_sid}/...``): letters, digits, ``-``, ``_``, ``.`` and ``/``, no ``..``;
anything else is refused before it reaches a path or a bucket.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}$")


class BadKey(ValueError):
    pass


def check_key(key: str) -> str:
    if not KEY.match(key) or ".." in key or "//" in key:
        raise BadKey(f"not a recording key: {key[:80]!r}")
    return key


class RecordingStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def keys(self, prefix: str) -> list[str]: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def aclose(self) -> None: ...


class DirectoryStore:
    """Files under ``root`` (by default DATA_DIR/recordings); written to a temporary name, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)

        await asyncio.to_thread(write)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))

        def walk() -> list[str]:
            if not base.exists():
                return []
            files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
            return sorted(str(p.relative_to(self.root)) for p in files if not p.name.endswith(".part"))

        return await asyncio.to_thread(walk)

    async def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix.rstrip("/"))

        def remove() -> int:
            if base.is_file():
                base.unlink()
                return 1
            if not base.exists():
                return 0
            count = sum(1 for p in base.rglob("*") if p.is_file())
            shutil.rmtree(base)
            return count

        return await asyncio.to_thread(remove)

    async def aclose(self) -> None:
        return None


class S3Store:
    """An S3-compatible bucket through aiobotocore (AWS S3, MinIO, Ceph, R2, moto's server in the tests)."""

    def __init__(
        self, *, bucket: str, endpoint_url: str | None, region: str, access_key: str | None, secret_key: str | None
    ) -> None:
        from aiobotocore.session import get_session

        self.bucket = bucket
        self._session = get_session()
        self._options: dict[str, Any] = {"region_name": region, "endpoint_url": endpoint_url}
        if access_key and secret_key:
            self._options.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._session.create_client("s3", **self._options).__aenter__()
        return self._client

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)

    async def get(self, key: str) -> bytes | None:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=check_key(key))
        except s3.exceptions.NoSuchKey:
            return None
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def keys(self, prefix: str) -> list[str]:
        s3 = await self._s3()
        found: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=check_key(prefix)):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    async def delete_prefix(self, prefix: str) -> int:
        s3 = await self._s3()
        keys = await self.keys(prefix)
        for start in range(0, len(keys), 1000):  # the API's batch limit
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None
