"""Contact import parsing and validation (app.dialer.contacts_import)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.dialer.contacts_import import (
    ContactRow,
    ImportReport,
    RowError,
    parse_contacts_csv,
    parse_contacts_json,
)
from app.dialer.policy import Consent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def csv_bytes(rows: list[list[str]], *, bom: bool = False, newline: str = "\r\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode()


def parse(text: str) -> ImportReport:
    return parse_contacts_csv(text.encode(), now=NOW)


def only_error(report: ImportReport) -> RowError:
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


# --- good rows ---------------------------------------------------------------------------------------


def test_full_row_every_column() -> None:
    report = parse(
        "phone,name,zip,state,timezone,consent,consent_at,consent_source,existing_customer,external_id\n"
        "(212) 555-0123,Jane Doe,10001,NY,America/New_York,written,2025-06-01T09:30:00-04:00,web form,yes,c-17\n"
    )
    assert report.errors == ()
    assert report.rows == (
        ContactRow(
            line=2,  # the spreadsheet's row: the header is row 1
            phone="+12125550123",
            name="Jane Doe",
            zip="10001",
            state="NY",
            timezone="America/New_York",
            consent=Consent.written,
            consent_at=datetime(2025, 6, 1, 9, 30, tzinfo=timezone(timedelta(hours=-4))),
            consent_source="web form",
            existing_customer=True,
            external_id="c-17",
        ),
    )
    assert (report.total, report.accepted, report.rejected) == (1, 1, 0)


@pytest.mark.parametrize(
    "raw",
    [
        "(212) 555-0123",
        "212-555-0123",
        "+1 212 555 0123",
        "2125550123",
        "1-212-555-0123",
        "212.555.0123",
        " 212 555 0123 ",
    ],
)
def test_phone_formats_normalise_to_e164(raw: str) -> None:
    report = parse_contacts_csv(csv_bytes([["phone"], [raw]]), now=NOW)
    assert report.errors == ()
    assert report.rows[0].phone == "+12125550123"


def test_phone_only_file_defaults() -> None:
    report = parse("Phone\n212-555-0123\n")
    row = report.rows[0]
    assert (row.name, row.zip, row.state, row.timezone, row.consent, row.consent_at) == (None,) * 6
    assert (row.consent_source, row.existing_customer, row.external_id) == (None, False, None)


@pytest.mark.parametrize(
    "header",
    [
        "phone_number,full_name,zip_code,state,time_zone,consent_type,consent_timestamp,source,customer,id",
        "Number,Name,Postal_Code,STATE,TZ,Consent,Consented_At,Source,Customer,ID",
        "Mobile,Full Name,Zip Code,State,Time Zone,Consent Type,Consent Timestamp,Consent Source,Existing Customer,External ID",
    ],
)
def test_column_aliases_case_insensitive(header: str) -> None:
    report = parse(f"{header}\n212-555-0123,Ann,10001,NY,America/New_York,express,2025-01-01T00:00:00Z,app,1,x9\n")
    assert report.errors == ()
    row = report.rows[0]
    assert row.name == "Ann"
    assert row.zip == "10001"
    assert row.timezone == "America/New_York"
    assert row.consent is Consent.express
    assert row.consent_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert row.consent_source == "app"
    assert row.existing_customer is True
    assert row.external_id == "x9"


def test_non_geographic_and_foreign_numbers_are_accepted() -> None:
    # The compliance engine holds these for review; the import records them.
    report = parse("phone\n800-555-0123\n900-555-0123\n+44 20 7946 0958\n1-800-FLOWERS\n")
    assert report.errors == ()
    assert [r.phone for r in report.rows] == ["+18005550123", "+19005550123", "+442079460958", "+18003569377"]


def test_bom_and_crlf() -> None:
    data = csv_bytes([["Phone", "Name"], ["212-555-0123", "Zoë"]], bom=True)
    report = parse_contacts_csv(data, now=NOW)
    assert report.errors == ()
    assert report.rows[0].name == "Zoë"


def test_quoted_fields_with_commas_quotes_and_newlines() -> None:
    data = csv_bytes(
        [
            ["phone", "name", "consent_source"],
            ["212-555-0123", 'Doe, Jane "JD"', "signup form, page 2\nsecond line"],
            ["212-555-0124", "Roe, Rick", ""],
        ]
    )
    report = parse_contacts_csv(data, now=NOW)
    assert report.errors == ()
    assert report.rows[0].name == 'Doe, Jane "JD"'
    assert report.rows[0].consent_source == "signup form, page 2\nsecond line"
    assert [r.line for r in report.rows] == [2, 3]  # spreadsheet rows, not physical lines


def test_zip_plus_four_stored_as_five_digits() -> None:
    report = parse("phone,zip\n212-555-0123,10001-1234\n212-555-0124,100011234\n212-555-0125, 02134 \n")
    assert report.errors == ()
    assert [r.zip for r in report.rows] == ["10001", "10001", "02134"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("New York", "NY"),
        ("new york", "NY"),
        ("  North   Carolina ", "NC"),
        ("District of Columbia", "DC"),
        ("Washington D.C.", "DC"),
        ("Puerto Rico", "PR"),
        ("tx", "TX"),
        ("CA", "CA"),
    ],
)
def test_state_codes_and_full_names(raw: str, code: str) -> None:
    report = parse_contacts_csv(csv_bytes([["phone", "state"], ["212-555-0123", raw]]), now=NOW)
    assert report.errors == ()
    assert report.rows[0].state == code


@pytest.mark.parametrize(
    ("raw", "consent"),
    [
        ("written", Consent.written),
        ("WRITTEN", Consent.written),
        ("Prior Express Written Consent", Consent.written),
        ("prior_express_written_consent", Consent.written),
        ("PEWC", Consent.written),
        ("express", Consent.express),
        ("Prior express consent", Consent.express),
        ("", None),
    ],
)
def test_consent_aliases(raw: str, consent: Consent | None) -> None:
    report = parse_contacts_csv(csv_bytes([["phone", "consent"], ["212-555-0123", raw]]), now=NOW)
    assert report.errors == ()
    assert report.rows[0].consent is consent


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("Yes", True), ("1", True), ("FALSE", False), ("no", False), ("0", False), ("", False)],
)
def test_existing_customer_values(raw: str, value: bool) -> None:
    report = parse_contacts_csv(csv_bytes([["phone", "customer"], ["212-555-0123", raw]]), now=NOW)
    assert report.rows[0].existing_customer is value


def test_timezone_case_insensitive_and_canonical() -> None:
    report = parse("phone,tz\n212-555-0123,america/chicago\n")
    assert report.rows[0].timezone == "America/Chicago"


def test_consent_at_equal_to_now_is_accepted() -> None:
    report = parse("phone,consent_at\n212-555-0123,2026-03-01T12:00:00Z\n")
    assert report.errors == ()
    assert report.rows[0].consent_at == NOW


def test_unknown_columns_ignored_but_kept_in_raw() -> None:
    report = parse("phone,favourite colour,consent\n212-555-0123,blue,sometimes\n")
    error = only_error(report)
    assert error.raw == {"phone": "212-555-0123", "favourite colour": "blue", "consent": "sometimes"}


def test_blank_rows_skipped_but_keep_their_number() -> None:
    report = parse("phone,name\n212-555-0123,a\n\n,\n212-555-0124,b\n")
    assert report.total == 2
    assert [r.line for r in report.rows] == [2, 5]


# --- row errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "field", "code"),
    [
        ("phone", "", "phone", "phone.missing"),
        ("phone", "hello", "phone", "phone.invalid"),
        ("phone", "123", "phone", "phone.invalid"),
        ("phone", "212-555-01234", "phone", "phone.invalid"),
        ("phone", "212-555-0123 ext 5", "phone", "phone.invalid"),
        ("zip", "1000", "zip", "zip.invalid"),
        ("zip", "10001-12", "zip", "zip.invalid"),
        ("zip", "ABCDE", "zip", "zip.invalid"),
        ("state", "ZZ", "state", "state.unknown"),
        ("state", "Ontario", "state", "state.unknown"),
        ("timezone", "Mars/Olympus", "timezone", "timezone.unknown"),
        ("timezone", "EST-ish", "timezone", "timezone.unknown"),
        ("consent", "maybe", "consent", "consent.unknown"),
        ("consent_at", "yesterday", "consent_at", "consent_at.invalid"),
        ("consent_at", "2025-13-01T00:00:00Z", "consent_at", "consent_at.invalid"),
        ("consent_at", "2025-06-01T10:00:00", "consent_at", "consent_at.naive"),
        ("consent_at", "2025-06-01", "consent_at", "consent_at.naive"),
        ("consent_at", "2026-03-01T12:00:01Z", "consent_at", "consent_at.future"),
        ("consent_at", "2026-03-01T08:00:01-04:00", "consent_at", "consent_at.future"),
        ("existing_customer", "perhaps", "existing_customer", "existing_customer.invalid"),
    ],
)
def test_each_field_error_with_line_and_field(column: str, value: str, field: str, code: str) -> None:
    good = ["212-555-0100", "10001", "NY", "America/New_York", "written", "2025-01-01T00:00:00Z", "no"]
    header = ["phone", "zip", "state", "timezone", "consent", "consent_at", "existing_customer"]
    bad = list(good)
    bad[header.index(column)] = value
    if column != "phone":
        bad[0] = "212-555-0101"
    data = csv_bytes([header, good, bad, ["212-555-0102", *good[1:]]])
    report = parse_contacts_csv(data, now=NOW)
    error = only_error(report)
    assert (error.line, error.field, error.code) == (3, field, code)
    assert error.raw is not None and error.raw[column] == value
    assert [r.line for r in report.rows] == [2, 4]
    assert (report.total, report.accepted, report.rejected) == (3, 2, 1)


def test_one_error_per_row_first_in_column_order() -> None:
    report = parse("phone,zip,state,consent\nnope,1,ZZ,maybe\n212-555-0123,1,ZZ,maybe\n")
    assert [(e.line, e.code) for e in report.errors] == [(2, "phone.invalid"), (3, "zip.invalid")]


def test_duplicates_keep_the_first() -> None:
    report = parse("phone,name\n(212) 555-0123,first\n212-555-0124,other\n+1 212 555 0123,second\n2125550123,third\n")
    assert [(r.line, r.name) for r in report.rows] == [(2, "first"), (3, "other")]
    assert [(e.line, e.field, e.code) for e in report.errors] == [
        (4, "phone", "row.duplicate"),
        (5, "phone", "row.duplicate"),
    ]
    assert all("row 2" in e.message and "+12125550123" in e.message for e in report.errors)


def test_duplicate_of_a_rejected_row_is_not_a_duplicate() -> None:
    # Only accepted rows are kept, so the first acceptable row for a number wins.
    report = parse("phone,consent\n212-555-0123,maybe\n212-555-0123,written\n")
    assert [(e.line, e.code) for e in report.errors] == [(2, "consent.unknown")]
    assert [r.line for r in report.rows] == [3]


def test_wrong_column_count() -> None:
    report = parse("phone,name\n212-555-0123,a\n212-555-0124\n212-555-0125,c,extra\n212-555-0126,d\n212-555-0127,e,,\n")
    assert [(e.line, e.field, e.code) for e in report.errors] == [(3, None, "row.columns"), (4, None, "row.columns")]
    assert report.errors[1].raw == {"phone": "212-555-0125", "name": "c", "extra_3": "extra"}
    assert [r.line for r in report.rows] == [2, 5, 6]  # empty cells past the last column: a spreadsheet's habit


def test_a_windows_1252_file_is_read_as_such_not_rejected_row_by_row() -> None:
    data = b"phone,name\n212-555-0123,ok\n212-555-0124,Jos\xe9 \x93Pepe\x94\n212-555-0125,fine\n"
    report = parse_contacts_csv(data, now=NOW)
    assert report.errors == () and report.encoding == "cp1252"
    assert [r.name for r in report.rows] == ["ok", "Jos\u00e9 \u201cPepe\u201d", "fine"]
    # bytes cp1252 leaves undefined (0x81): Latin-1, which reads every byte
    latin = parse_contacts_csv(b"phone,name\n212-555-0123,A\x81\xe9\n", now=NOW)
    assert (latin.encoding, latin.rows[0].name) == ("latin-1", "A\x81\u00e9")


# --- file errors ---------------------------------------------------------------------------------------


def test_missing_phone_column() -> None:
    report = parse("name,zip\nJane,10001\nJohn,10002\n")
    error = only_error(report)
    assert (error.line, error.field, error.code) == (0, None, "file.no_phone_column")
    assert report.file_error == error
    assert report.rows == ()
    assert (report.total, report.accepted, report.rejected) == (2, 0, 2)


def test_header_required() -> None:
    # A file whose first row is data has no phone column.
    assert only_error(parse("212-555-0123,Jane\n")).code == "file.no_phone_column"
    assert only_error(parse("")).code == "file.empty"
    assert only_error(parse("\n\n")).code == "file.empty"


def test_two_columns_for_one_field() -> None:
    report = parse("phone,mobile\n212-555-0123,212-555-0124\n")
    assert only_error(report).code == "file.duplicate_column"
    assert report.rows == ()


def test_a_truncated_utf16_file_is_refused_as_a_file() -> None:
    whole = "phone\n212-555-0123\n".encode("utf-16")
    assert only_error(parse_contacts_csv(whole[:-1], now=NOW)).code == "file.encoding"


def test_malformed_quoting_rejects_the_file() -> None:
    report = parse('phone,name\n212-555-0123,ok\n212-555-0124,"unclosed\n212-555-0125,x\n')
    error = only_error(report)
    assert error.code == "file.malformed"
    assert error.line == 3
    assert report.rows == ()
    stray = parse('phone,name\n212-555-0123,"a"b\n')
    assert (only_error(stray).code, only_error(stray).line) == ("file.malformed", 2)


def test_max_rows() -> None:
    data = csv_bytes([["phone"]] + [[f"212-555-{i:04d}"] for i in range(5)])
    assert parse_contacts_csv(data, now=NOW, max_rows=5).accepted == 5
    report = parse_contacts_csv(data, now=NOW, max_rows=4)
    assert only_error(report).code == "file.too_many_rows"
    assert (report.rows, report.total) == ((), 5)


def test_naive_now_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_contacts_csv(b"phone\n212-555-0123\n", now=datetime(2026, 1, 1))


def test_deterministic() -> None:
    data = b"phone,consent,zip\n212-555-0123,pewc,1\n212-555-0124,express,10001\n212-555-0124,,\n"
    assert parse_contacts_csv(data, now=NOW) == parse_contacts_csv(data, now=NOW)


# --- JSON ----------------------------------------------------------------------------------------------


def test_json_same_validation() -> None:
    items: list[dict[str, object]] = [
        {
            "Phone_Number": "(212) 555-0123",
            "full_name": "Jane",
            "zip": "10001-1234",
            "state": "new york",
            "tz": "America/New_York",
            "consent": "PEWC",
            "consent_at": "2025-01-01T00:00:00Z",
            "source": "web",
            "existing_customer": True,
            "id": 17,
            "unrelated": [1, 2],
        },
        {"phone": 2125550124, "consent_at": "2025-01-01T00:00:00"},
        {"mobile": "212-555-0123"},
        {"name": "no phone"},
        {"phone": "212-555-0125", "consent": "maybe"},
        {"phone": "212-555-0126", "zip": 10001.0},
        {"phone": True},
        {"phone": "212-555-0127", "mobile": "212-555-0128"},
        {"phone": "212-555-0129", "customer": 1, "consent_at": datetime(2025, 1, 1, tzinfo=UTC)},
    ]
    report = parse_contacts_json(items, now=NOW)
    assert report.rows[0] == ContactRow(
        1, "+12125550123", "Jane", "10001", "NY", "America/New_York", Consent.written,
        datetime(2025, 1, 1, tzinfo=UTC), "web", True, "17",
    )  # fmt: skip
    assert report.rows[1].line == 9
    assert report.rows[1].existing_customer is True
    assert [(e.line, e.field, e.code) for e in report.errors] == [
        (2, "consent_at", "consent_at.naive"),
        (3, "phone", "row.duplicate"),
        (4, "phone", "phone.missing"),
        (5, "consent", "consent.unknown"),
        (6, "zip", "zip.invalid"),
        (7, "phone", "phone.invalid"),
        (8, "phone", "row.columns"),
    ]
    assert report.errors[0].raw == {"phone": "2125550124", "consent_at": "2025-01-01T00:00:00"}
    assert (report.total, report.accepted, report.rejected) == (9, 2, 7)


def test_json_non_object_item() -> None:
    report = parse_contacts_json(["212-555-0123"], now=NOW)  # type: ignore[list-item]
    assert (only_error(report).line, only_error(report).code) == (1, "row.invalid")


# --- property ------------------------------------------------------------------------------------------

PHONES = st.sampled_from(
    [
        "(212) 555-0123",
        "212-555-0124",
        "+1 415 555 0199",
        "3125550100",
        "800-555-0123",
        "+44 20 7946 0958",
        "",
        "12",
        "phone",
    ]
)
ZIPS = st.sampled_from(["", "10001", "02134-1234", "123", "abcde"])
STATES = st.sampled_from(["", "NY", "tx", "New York", "Washington D.C.", "ZZ"])
ZONES = st.sampled_from(["", "America/New_York", "america/chicago", "Pacific/Honolulu", "Nowhere/Town"])
CONSENTS = st.sampled_from(["", "written", "Express", "PEWC", "prior express consent", "maybe"])
CONSENT_ATS = st.sampled_from(
    ["", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00+05:30", "2025-01-01T00:00:00", "2030-01-01T00:00:00Z", "soon"]
)
CUSTOMERS = st.sampled_from(["", "yes", "0", "TRUE", "sure"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
ROWS = st.lists(st.tuples(PHONES, TEXT, ZIPS, STATES, ZONES, CONSENTS, CONSENT_ATS, TEXT, CUSTOMERS, TEXT), max_size=25)
HEADER = ["phone", "name", "zip", "state", "timezone", "consent", "consent_at", "source", "customer", "id"]


@settings(max_examples=150, deadline=None)
@given(ROWS, st.booleans())
def test_every_row_accepted_or_exactly_one_error(rows: list[tuple[str, ...]], bom: bool) -> None:
    data = csv_bytes([HEADER, *[list(r) for r in rows]], bom=bom)
    report = parse_contacts_csv(data, now=NOW)
    counted = [i + 2 for i, r in enumerate(rows) if any(v.strip() for v in r)]  # the header is row 1; blanks skipped
    if not counted:  # a header and no data: the file is refused as a whole
        assert only_error(report).code == "file.no_rows"
        return
    assert report.total == len(counted)
    assert report.accepted + report.rejected == report.total
    accepted = [r.line for r in report.rows]
    rejected = [e.line for e in report.errors]
    assert sorted(accepted + rejected) == counted  # each row once: accepted, or exactly one error
    assert len(set(r.phone for r in report.rows)) == report.accepted  # no duplicate numbers kept
    assert parse_contacts_csv(data, now=NOW) == report  # deterministic
    # The JSON path validates the same way (JSON counts blank items too, so compare the non-blank ones).
    items = [dict(zip(HEADER, r, strict=True)) for r in rows]
    from_json = parse_contacts_json(items, now=NOW)
    assert [(r.line + 1, r.phone, r.consent, r.consent_at) for r in from_json.rows] == [
        (r.line, r.phone, r.consent, r.consent_at) for r in report.rows
    ]  # a JSON item's number is its index + 1; the CSV row's, its spreadsheet row
    assert [(e.line + 1, e.code) for e in from_json.errors if e.line + 1 in counted] == [
        (e.line, e.code) for e in report.errors
    ]


def test_a_nul_character_in_a_cell_rejects_that_row_only() -> None:
    data = b"phone,name\n+12125550123,Ada\n+12125550124,Bo\x00b\n+12125550125,Cy\n"
    report = parse_contacts_csv(data, now=NOW)
    assert [r.phone for r in report.rows] == ["+12125550123", "+12125550125"]
    assert [(e.line, e.field, e.code) for e in report.errors] == [(3, "name", "cell.nul")]
    json_report = parse_contacts_json([{"phone": "+12125550123", "name": "x\x00"}, {"phone": "+12125550124"}], now=NOW)
    assert [(e.line, e.code) for e in json_report.errors] == [(1, "cell.nul")] and len(json_report.rows) == 1


# --- files as spreadsheets save them (issue 16) ----------------------------------------------------------

SHEET = [["Phone", "Name", "State"], ["(212) 555-0123", "Zoë Ström", "NY"], ["212 555 0124", "Renée", "new york"]]


def sheet_text(delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(SHEET)
    return out.getvalue()


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [
        (sheet_text().encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + sheet_text().encode("utf-8"), "utf-8-sig"),  # Excel's "CSV UTF-8"
        (sheet_text().encode("utf-16"), "utf-16"),  # Excel's "Unicode text" (a BOM, little-endian)
        (b"\xfe\xff" + sheet_text().encode("utf-16-be"), "utf-16"),
        (sheet_text().encode("utf-16-le"), "utf-16-le"),  # no BOM
        (sheet_text().encode("utf-16-be"), "utf-16-be"),
        (sheet_text().encode("cp1252"), "cp1252"),  # Excel's plain "CSV" on Windows
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-bom", "utf-16-be-bom", "utf-16-le", "utf-16-be", "cp1252"],
)
def test_every_encoding_a_spreadsheet_saves_in_reads_the_same_rows(encoded: bytes, encoding: str) -> None:
    report = parse_contacts_csv(encoded, now=NOW)
    assert report.errors == () and report.encoding == encoding
    assert [(r.line, r.phone, r.name, r.state) for r in report.rows] == [
        (2, "+12125550123", "Zoë Ström", "NY"),
        (3, "+12125550124", "Renée", "NY"),
    ]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
def test_the_delimiter_is_found_from_the_header_row(delimiter: str) -> None:
    report = parse_contacts_csv(sheet_text(delimiter).encode(), now=NOW)
    assert report.errors == () and report.delimiter == delimiter
    assert [r.name for r in report.rows] == ["Zoë Ström", "Renée"]


def test_semicolons_with_commas_in_the_values_and_excels_sep_line() -> None:
    european = "phone;name\n+1 212 555 0123;Müller, Hans\n"
    report = parse_contacts_csv(european.encode(), now=NOW)
    assert report.delimiter == ";" and report.rows[0].name == "Müller, Hans"
    said = parse_contacts_csv(b"sep=;\r\nphone;name\r\n212-555-0123;Ada, Lovelace\r\n", now=NOW)
    assert (said.delimiter, said.rows[0].name, said.rows[0].line) == (";", "Ada, Lovelace", 2)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "file.empty"),
        (b"\r\n \r\n", "file.empty"),
        (b"\xef\xbb\xbf", "file.empty"),
        ("".encode("utf-16"), "file.empty"),
        (b"phone,name\r\n", "file.no_rows"),
        (b"name,zip\r\nAda,10001\r\n", "file.no_phone_column"),
        ("Name;Zip\r\nAda;10001\r\n".encode("utf-16"), "file.no_phone_column"),
        ("phone\n212-555-0123\n".encode("utf-16")[:-1], "file.encoding"),
        (b'phone,name\r\n212-555-0123,"unclosed\r\n', "file.malformed"),
        (b"phone,mobile\r\n212-555-0123,212-555-0124\r\n", "file.duplicate_column"),
    ],
    ids=["empty", "blank-lines", "bom-only", "utf-16-empty", "header-only", "no-phone-column", "utf-16-no-phone",
         "utf-16-truncated", "unclosed-quote", "two-phone-columns"],
)  # fmt: skip
def test_a_file_that_cannot_be_imported_is_one_file_error_and_no_rows(data: bytes, code: str) -> None:
    report = parse_contacts_csv(data, now=NOW)
    error = only_error(report)
    assert error.code == code and report.file_error == error and report.rows == ()
