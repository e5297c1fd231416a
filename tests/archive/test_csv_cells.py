"""Exports never hand a spreadsheet a formula that someone on a call (or a model) wrote."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

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
