"""A streamed export that fails midway must not look like a complete file to whoever receives it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import app.archive.review as review
from app.archive.service import CallRecord, archive_call
from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from tests.support import key_for, make_settings, serve

pytestmark = pytest.mark.asyncio


async def test_an_export_whose_database_fails_midway_ends_as_an_incomplete_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    engine = make_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    for i in range(3):
        await archive_call(make_sessionmaker(engine), CallRecord(call_sid=f"CA{i:032x}", direction="inbound",
                                                                 started_at=now))  # fmt: skip
    await engine.dispose()
    key = await key_for(settings.effective_database_url, Role.supervisor)
    real_search = review.search_calls
    pages = 0

    async def first_page_then_fail(session: Any, filters: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages > 1:
            raise RuntimeError("the database went away")
        return await real_search(session, filters, **{**kwargs, "limit": 1})

    monkeypatch.setattr(review, "search_calls", first_page_then_fail)
    async with (
        serve(settings) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api,
    ):
        for fmt in ("csv", "json"):
            pages = 0
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                await api.get("/api/v1/calls/export", params={"format": fmt})
