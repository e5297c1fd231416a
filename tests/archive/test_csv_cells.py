"""Exports never hand a spreadsheet a formula that someone on a call (or a model) wrote."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.archive.review import _csv_row, csv_cell


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("http://evil","click")', '\'=HYPERLINK("http://evil","click")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("+12125550123", "+12125550123"),  # a phone number is a number, not a formula
        ("-3", "-3"),
        ("I'd like =this", "I'd like =this"),
        ("", ""),
        (None, ""),
        (42, 42),
        (datetime(2026, 12, 2, 8, 0, tzinfo=UTC), "2026-12-02T08:00:00+00:00"),
    ],
)
def test_a_cell_that_would_run_as_a_formula_is_shown_as_text(value: object, shown: object) -> None:
    assert csv_cell(value) == shown


def test_a_row_reads_back_with_the_neutralised_cells() -> None:
    row = _csv_row(["CA1", "caller", "=1+2", "+12125550123"])
    assert next(csv.reader(io.StringIO(row))) == ["CA1", "caller", "'=1+2", "+12125550123"]


async def test_every_csv_export_shows_formula_cells_as_text(tmp_path: Path) -> None:
    """The API's call export, its search export and the console's call export all neutralise them."""
    import httpx

    from app.archive.service import CallRecord, archive_call
    from app.auth.keys import Role
    from app.core.bridge import TranscriptLine
    from app.db import make_engine, make_sessionmaker
    from tests.console.support import console_settings, sign_in
    from tests.support import key_for, serve

    settings = console_settings(tmp_path)
    sid = "CA" + "f" * 32
    formula = '=HYPERLINK("http://evil.example","click")'
    engine = make_engine(settings.effective_database_url)
    lines = [TranscriptLine(1, "caller", formula, 0), TranscriptLine(2, "agent", "+1 per call, @ noon", 900)]
    await archive_call(make_sessionmaker(engine), CallRecord(call_sid=sid, direction="inbound",
                                                             started_at=datetime.now(UTC), lines=lines))  # fmt: skip
    await engine.dispose()
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
            exports = [
                (await api.get(f"/api/v1/calls/{sid}/export", params={"format": "csv"})).text,
                (await api.get("/api/v1/calls/export", params={"format": "csv", "lines": "true"})).text,
            ]
        async with httpx.AsyncClient(base_url=base) as console:
            await sign_in(console, key)
            exports.append((await console.get(f"/console/calls/{sid}/export", params={"format": "csv"})).text)
    for text in exports:
        cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
        assert "'" + formula in cells and "'+1 per call, @ noon" in cells, text
        assert formula not in cells
