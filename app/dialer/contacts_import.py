"""Contact imports: parse and validate a CSV file or a JSON list into contact rows and per-row errors.

Pure: bytes or plain values in, an ``ImportReport`` out; no I/O, no clock (``now`` is an argument),
no geocoding (location is computed later, once per stored contact). Deterministic: the same input
gives the same report. Idempotent re-import is the caller's job (upsert by campaign + phone).

Every data row is either accepted (one ``ContactRow``) or rejected with exactly one ``RowError``: the
first problem found, checked in column order (phone, zip, state, timezone, consent, consent_at,
existing_customer), then duplicates. A file-level problem (empty, no phone column, malformed quoting,
too many rows) is one error whose code starts ``file.`` (at line 0, or at the malformed row) and no rows
at all: the API answers it with a 4xx.

A file arrives the way a spreadsheet saved it: the encoding is detected (UTF-8 with or without a BOM,
UTF-16 with a BOM or without one, else Windows-1252, which Excel's "CSV" writes, and Latin-1 for the few
bytes cp1252 leaves undefined) and so is the delimiter (comma, semicolon, tab or pipe: the one of the header
row that gives a phone column, the most frequent first). Both are said in the report.

Line numbers are the spreadsheet's row numbers: the header row is row 1 (when it is the first), the first
data row is row 2; blank rows keep their number but are not counted in ``total``; a quoted cell spanning
several lines is one row. JSON items are numbered index + 1.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

import phonenumbers

from app.dialer.policy import Consent
from app.dialer.rules import STATE_NAMES, STATE_ZONES

__all__ = [
    "COLUMN_ALIASES",
    "ContactRow",
    "ImportReport",
    "RowError",
    "parse_contacts_csv",
    "parse_contacts_json",
]


@dataclass(frozen=True, slots=True)
class ContactRow:
    line: int
    phone: str  # E.164
    name: str | None
    zip: str | None  # 5 digits
    state: str | None  # USPS code
    timezone: str | None  # IANA name
    consent: Consent | None
    consent_at: datetime | None  # timezone-aware, not after `now`
    consent_source: str | None
    existing_customer: bool
    external_id: str | None


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str | None
    code: str
    message: str
    raw: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    rows: tuple[ContactRow, ...]
    errors: tuple[RowError, ...]
    total: int  # non-blank data rows in the input
    encoding: str | None = None  # CSV: as detected
    delimiter: str | None = None  # CSV: as detected

    @property
    def file_error(self) -> RowError | None:
        """The whole file was refused (nothing imported): its one error."""
        return next((e for e in self.errors if e.code.startswith("file.")), None)

    @property
    def accepted(self) -> int:
        return len(self.rows)

    @property
    def rejected(self) -> int:
        return self.total - len(self.rows)


FIELDS = (
    "phone",
    "name",
    "zip",
    "state",
    "timezone",
    "consent",
    "consent_at",
    "consent_source",
    "existing_customer",
    "external_id",
)

# Column name (after _column_key) -> field.
COLUMN_ALIASES: dict[str, str] = {
    "phone": "phone",
    "phone_number": "phone",
    "number": "phone",
    "mobile": "phone",
    "name": "name",
    "full_name": "name",
    "zip": "zip",
    "zip_code": "zip",
    "postal_code": "zip",
    "state": "state",
    "timezone": "timezone",
    "time_zone": "timezone",
    "tz": "timezone",
    "consent": "consent",
    "consent_type": "consent",
    "consent_at": "consent_at",
    "consent_timestamp": "consent_at",
    "consented_at": "consent_at",
    "consent_source": "consent_source",
    "source": "consent_source",
    "existing_customer": "existing_customer",
    "customer": "existing_customer",
    "external_id": "external_id",
    "id": "external_id",
}

_CONSENT_WORDS: dict[str, Consent] = {
    "written": Consent.written,
    "prior express written consent": Consent.written,
    "pewc": Consent.written,
    "express": Consent.express,
    "prior express consent": Consent.express,
}

_BOOLEANS: dict[str, bool] = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}

_ZIP = re.compile(r"(\d{5})(?:-?\d{4})?")
_SPACES = re.compile(r"[\s_-]+")

# The code a value of the wrong type (JSON) is reported under.
_INVALID_CODE: dict[str, str] = {
    "phone": "phone.invalid",
    "zip": "zip.invalid",
    "state": "state.unknown",
    "timezone": "timezone.unknown",
    "consent": "consent.unknown",
    "consent_at": "consent_at.invalid",
    "existing_customer": "existing_customer.invalid",
    "name": "name.invalid",
    "consent_source": "consent_source.invalid",
    "external_id": "external_id.invalid",
}


def _column_key(name: str) -> str:
    return _SPACES.sub("_", name.strip().lstrip("\ufeff").strip().casefold())


@lru_cache(maxsize=1)
def _state_lookup() -> dict[str, str]:
    table = {code.casefold(): code for code in STATE_ZONES}
    for name, code in STATE_NAMES.items():
        if code in STATE_ZONES:
            table[" ".join(name.casefold().split())] = code
    return table


@lru_cache(maxsize=1)
def _zone_lookup() -> dict[str, str]:
    return {name.casefold(): name for name in available_timezones()}


class _Reject(Exception):
    """One row's one error (internal control flow)."""

    def __init__(self, field: str | None, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message


def _phone(raw: str) -> str:
    if not raw:
        raise _Reject("phone", "phone.missing", "no phone number")
    try:
        parsed = phonenumbers.parse(raw, "US")
    except phonenumbers.NumberParseException:
        raise _Reject("phone", "phone.invalid", f"not a phone number: {raw!r}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise _Reject("phone", "phone.invalid", f"not a valid phone number: {raw!r}")
    if parsed.extension:
        raise _Reject("phone", "phone.invalid", f"numbers with an extension cannot be dialed: {raw!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _zip(raw: str) -> str | None:
    if not raw:
        return None
    match = _ZIP.fullmatch(raw)
    if match is None:
        hint = " (a leading zero lost to a spreadsheet?)" if raw.isdigit() and len(raw) in (3, 4) else ""
        raise _Reject("zip", "zip.invalid", f"not a 5-digit ZIP or ZIP+4: {raw!r}{hint}")
    return match.group(1)


def _state(raw: str) -> str | None:
    if not raw:
        return None
    code = _state_lookup().get(" ".join(raw.casefold().split()))
    if code is None:
        raise _Reject("state", "state.unknown", f"not a US state code or name: {raw!r}")
    return code


def _timezone(raw: str) -> str | None:
    if not raw:
        return None
    name = _zone_lookup().get(raw.casefold())
    if name is None:
        raise _Reject("timezone", "timezone.unknown", f"not an IANA time zone name: {raw!r}")
    return name


def _consent(raw: str) -> Consent | None:
    if not raw:
        return None
    consent = _CONSENT_WORDS.get(_SPACES.sub(" ", raw.casefold()).strip())
    if consent is None:
        raise _Reject("consent", "consent.unknown", f"consent must be 'written' or 'express', not {raw!r}")
    return consent


def _consent_at(raw: str, now: datetime) -> datetime | None:
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise _Reject("consent_at", "consent_at.invalid", f"not an ISO 8601 timestamp: {raw!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise _Reject(
            "consent_at", "consent_at.naive", f"timestamp has no time zone or offset (add Z or +HH:MM): {raw!r}"
        )
    if at > now:
        raise _Reject("consent_at", "consent_at.future", f"consent timestamp {raw} is after the import time")
    return at


def _existing_customer(raw: str) -> bool:
    value = _BOOLEANS.get(raw.casefold())
    if value is None:
        raise _Reject("existing_customer", "existing_customer.invalid", f"expected true/false/yes/no/1/0, not {raw!r}")
    return value


class _Validator:
    """Validates rows in order; remembers the first accepted line of every number."""

    __slots__ = ("now", "seen")

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        self.now = now
        self.seen: dict[str, int] = {}

    def row(self, line: int, values: Mapping[str, str]) -> ContactRow:
        """``values``: field -> stripped string ('' when absent). Raises _Reject."""
        for field, value in values.items():
            if "\x00" in value:  # no database keeps it as text; the row is reported, the others imported
                raise _Reject(field, "cell.nul", f"the {field} holds a NUL character")
        get = values.get
        phone = _phone(get("phone", ""))
        contact = ContactRow(
            line=line,
            phone=phone,
            name=get("name") or None,
            zip=_zip(get("zip", "")),
            state=_state(get("state", "")),
            timezone=_timezone(get("timezone", "")),
            consent=_consent(get("consent", "")),
            consent_at=_consent_at(get("consent_at", ""), self.now),
            consent_source=get("consent_source") or None,
            existing_customer=_existing_customer(get("existing_customer", "")),
            external_id=get("external_id") or None,
        )
        first = self.seen.get(phone)
        if first is not None:
            raise _Reject("phone", "row.duplicate", f"{phone} already imported from row {first}")
        self.seen[phone] = line
        return contact


# --- CSV -------------------------------------------------------------------------------------------


DELIMITERS = (",", ";", "\t", "|")
_SEP_LINE = re.compile(r"^sep=(.)\r?\n")


def decode_file(data: bytes) -> tuple[str, str]:
    """The file's text and the encoding it was read in. UnicodeDecodeError only for a UTF-16 file that is
    not whole (an odd number of bytes, a lone surrogate)."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            pass  # a BOM, then bytes from elsewhere: read as the rest would be
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "utf-16"
    head = data[:400]
    if len(head) >= 4 and len(data) % 2 == 0:
        odd, even = head[1::2].count(0), head[0::2].count(0)
        if odd >= len(head) // 4 and even == 0:  # ASCII text as UTF-16LE: every other byte NUL
            return data.decode("utf-16-le"), "utf-16-le"
        if even >= len(head) // 4 and odd == 0:
            return data.decode("utf-16-be"), "utf-16-be"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _delimiter_counts(line: str) -> dict[str, int]:
    """How often each candidate delimiter appears in a line, outside double quotes."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return counts


def _header_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip(" \t,;|"):
            return line
    return ""


def delimiter_candidates(text: str) -> list[str]:
    """The delimiters to try, most frequent in the header row first (a comma when none is there)."""
    counts = _delimiter_counts(_header_line(text))
    found = sorted((d for d in DELIMITERS if counts[d]), key=lambda d: -counts[d])
    return found + [d for d in DELIMITERS if d not in found]


def _unique_keys(header: Sequence[str]) -> list[str]:
    keys: list[str] = []
    used: set[str] = set()
    for i, name in enumerate(header):
        key = name.strip() or f"column_{i + 1}"
        n = 2
        candidate = key
        while candidate in used:
            candidate = f"{key}#{n}"
            n += 1
        used.add(candidate)
        keys.append(candidate)
    return keys


def _raw(keys: Sequence[str], record: Sequence[str]) -> dict[str, str]:
    return {keys[i] if i < len(keys) else f"extra_{i + 1}": value for i, value in enumerate(record)}


def _blank(record: Sequence[str]) -> bool:
    return all(not value.strip() for value in record)


def _file_error(code: str, message: str, total: int, line: int = 0) -> ImportReport:
    return ImportReport((), (RowError(line, None, code, message, None),), total)


def _count_rest(records: Iterator[list[str]]) -> int:
    count = 0
    try:
        for record in records:
            if not _blank(record):
                count += 1
    except csv.Error:
        pass  # the count is a courtesy; the file is rejected anyway
    return count


def parse_contacts_csv(data: bytes, *, now: datetime, max_rows: int = 1_000_000) -> ImportReport:
    _Validator(now)  # a naive ``now`` is refused before anything is read
    try:
        text, encoding = decode_file(data)
    except UnicodeDecodeError:
        return _file_error("file.encoding", "the file says it is UTF-16 but is not whole; save it again as CSV", 0)
    if not text.strip(" \t\r\n,;|"):
        return _file_error("file.empty", "the file is empty: a header row (with a phone column) and data rows", 0)
    candidates = delimiter_candidates(text)
    said = _SEP_LINE.match(text)
    if said is not None:  # Excel's "sep=;" first line: the delimiter, said; the line itself is not shown
        text, candidates = text[said.end() :], [said.group(1)]
    first: ImportReport | None = None
    for delimiter in candidates:
        report = _parse_text(text, validator=_Validator(now), delimiter=delimiter, max_rows=max_rows)
        report = ImportReport(report.rows, report.errors, report.total, encoding, delimiter)
        if first is None:
            first = report
        file_error = report.file_error
        if file_error is None or file_error.code != "file.no_phone_column":
            return report
    assert first is not None
    return first


def _parse_text(text: str, *, validator: _Validator, delimiter: str, max_rows: int) -> ImportReport:
    records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    row_no = 0  # the spreadsheet's row number of the record just read
    try:
        header = next(records, None)
        row_no += 1
        while header is not None and _blank(header):
            header = next(records, None)
            row_no += 1
    except csv.Error as exc:
        return _file_error("file.malformed", f"cannot read the header row: {exc}", 0)
    if header is None:
        return _file_error("file.empty", "the file has no header row", 0)

    columns: list[str | None] = []
    used: dict[str, str] = {}
    for name in header:
        field = COLUMN_ALIASES.get(_column_key(name))
        if field is not None and field in used:
            return _file_error(
                "file.duplicate_column",
                f"columns {used[field]!r} and {name!r} both give the {field}",
                _count_rest(records),
            )
        if field is not None:
            used[field] = name
        columns.append(field)
    if "phone" not in used:
        found = ", ".join(repr(name) for name in header)
        return _file_error(
            "file.no_phone_column",
            f"no phone column (phone, phone_number, number or mobile) in the header row: {found}",
            _count_rest(records),
        )
    keys = _unique_keys(header)
    width = len(header)
    targets = [(i, field) for i, field in enumerate(columns) if field is not None]

    rows: list[ContactRow] = []
    errors: list[RowError] = []
    total = 0
    while True:
        try:
            record = next(records, None)
        except csv.Error as exc:
            total += 1 + _count_rest(records)
            return _file_error(
                "file.malformed",
                f"row {row_no + 1}: {exc} (a stray or unclosed quote?); nothing was imported",
                total,
                row_no + 1,
            )
        if record is None:
            break
        row_no += 1
        if _blank(record):
            continue
        total += 1
        if total > max_rows:
            total += _count_rest(records)
            return _file_error("file.too_many_rows", f"{total} data rows; at most {max_rows} per file", total)
        if len(record) != width and not (len(record) > width and _blank(record[width:])):
            errors.append(
                RowError(
                    row_no, None, "row.columns", f"{len(record)} fields, the header has {width}", _raw(keys, record)
                )
            )
            continue
        values = {field: record[i].strip() for i, field in targets}
        try:
            rows.append(validator.row(row_no, values))
        except _Reject as bad:
            errors.append(RowError(row_no, bad.field, bad.code, bad.message, _raw(keys, record)))
    if total == 0:
        return _file_error("file.no_rows", "the file has a header row but no data rows", 0)
    return ImportReport(tuple(rows), tuple(errors), total)


# --- JSON ------------------------------------------------------------------------------------------


def _json_text(value: object) -> str | None:
    """A JSON value as the text a CSV cell would hold, or None for a type that cannot be one."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return None


def _json_raw(item: Mapping[Any, object]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else ("" if v is None else str(v)) for k, v in item.items()}


def _json_values(item: Mapping[Any, object]) -> dict[str, str]:
    """field -> text; raises _Reject for two keys naming one field or a value of the wrong type."""
    values: dict[str, str] = {}
    source: dict[str, str] = {}
    for key, value in item.items():
        field = COLUMN_ALIASES.get(_column_key(key)) if isinstance(key, str) else None
        if field is None:
            continue
        if field in source:
            raise _Reject(field, "row.columns", f"keys {source[field]!r} and {key!r} both give the {field}")
        source[field] = str(key)
        text = _json_text(value)
        if text is None or (field != "existing_customer" and isinstance(value, bool)):
            raise _Reject(field, _INVALID_CODE[field], f"{key!r} has a value of type {type(value).__name__}")
        values[field] = text
    return values


def parse_contacts_json(items: Sequence[Mapping[str, object]], *, now: datetime) -> ImportReport:
    validator = _Validator(now)
    rows: list[ContactRow] = []
    errors: list[RowError] = []
    for index, item in enumerate(items):
        line = index + 1
        if not isinstance(item, Mapping):
            errors.append(RowError(line, None, "row.invalid", f"expected an object, got {type(item).__name__}", None))
            continue
        try:
            rows.append(validator.row(line, _json_values(item)))
        except _Reject as bad:
            errors.append(RowError(line, bad.field, bad.code, bad.message, _json_raw(item)))
    return ImportReport(tuple(rows), tuple(errors), len(items))
