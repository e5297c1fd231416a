"""Contact imports: parse and validate a CSV file or a JSON list into contact rows and per-row errors.

Pure: bytes or plain values in, an ``ImportReport`` out; no I/O, no clock (``now`` is an argument),
no geocoding (location is computed later, once per stored contact). Deterministic: the same input
gives the same report. Idempotent re-import is the caller's job (upsert by campaign + phone).

Every data row is either accepted (one ``ContactRow``) or rejected with exactly one ``RowError``: the
first problem found, checked in column order (phone, zip, state, timezone, consent, consent_at,
existing_customer), then duplicates. A file-level problem (no phone column, undecodable header,
malformed quoting, too many rows) is one error at line 0 (or at the malformed row) and no rows at all.

Line numbers: CSV data rows count from 1 after the header (line 0), so line N is spreadsheet row N+1;
blank rows keep their number but are not counted in ``total``. JSON items are numbered index + 1.
"""

from __future__ import annotations

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
_SURROGATE = re.compile("[\udc80-\udcff]")
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
            raise _Reject("phone", "row.duplicate", f"{phone} already imported from line {first}")
        self.seen[phone] = line
        return contact


# --- CSV -------------------------------------------------------------------------------------------


def _readable(text: str) -> str:
    """Undecodable bytes (kept as surrogates) shown as U+FFFD, so raw values are valid Unicode."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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


def _raw(keys: Sequence[str], record: Sequence[str], readable: bool) -> dict[str, str]:
    raw = {keys[i] if i < len(keys) else f"extra_{i + 1}": value for i, value in enumerate(record)}
    if readable:
        return {_readable(k): _readable(v) for k, v in raw.items()}
    return raw


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
    validator = _Validator(now)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _file_error("file.encoding", "the file is UTF-16; save it as CSV UTF-8", 0)
    try:
        text = data.decode("utf-8-sig")
        clean = True
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", "surrogateescape")
        clean = False
    records = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(records, None)
        while header is not None and _blank(header):
            header = next(records, None)
    except csv.Error as exc:
        return _file_error("file.malformed", f"cannot read the header row: {exc}", 0)
    if header is None:
        return _file_error("file.empty", "the file has no header row", 0)
    if not clean and any(_SURROGATE.search(name) for name in header):
        return _file_error(
            "file.encoding", "the header row is not UTF-8; save the file as CSV UTF-8", _count_rest(records)
        )

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
    line = 0
    while True:
        try:
            record = next(records, None)
        except csv.Error as exc:
            total += 1 + _count_rest(records)
            return _file_error(
                "file.malformed",
                f"data row {line + 1}: {exc} (a stray or unclosed quote?); nothing was imported",
                total,
                line + 1,
            )
        if record is None:
            break
        line += 1
        if _blank(record):
            continue
        total += 1
        if total > max_rows:
            total += _count_rest(records)
            return _file_error("file.too_many_rows", f"{total} data rows; at most {max_rows} per file", total)
        if len(record) != width:
            errors.append(
                RowError(
                    line,
                    None,
                    "row.columns",
                    f"{len(record)} fields, the header has {width}",
                    _raw(keys, record, not clean),
                )
            )
            continue
        if not clean and any(_SURROGATE.search(value) for value in record):
            errors.append(RowError(line, None, "row.encoding", "the row is not valid UTF-8", _raw(keys, record, True)))
            continue
        values = {field: record[i].strip() for i, field in targets}
        try:
            rows.append(validator.row(line, values))
        except _Reject as bad:
            errors.append(RowError(line, bad.field, bad.code, bad.message, _raw(keys, record, False)))
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
