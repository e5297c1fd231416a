"""Finding archived calls: filters, full-text search over transcripts, keyset (cursor) pagination.

Full-text search uses what each database does best: PostgreSQL's tsvector (a generated column with a
GIN index, queried with plainto/phraseto_tsquery), and on SQLite an FTS5 table kept by triggers. Both
get the same query language: words must all occur in one line of the call, a "quoted phrase" must
occur as written, and ``-word`` excludes lines with that word.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, Subquery, TextClause, and_, false, func, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.archive.models import Call, TranscriptSegment

SORTS = {
    "started_at": Call.started_at,
    "duration": Call.duration_ms,
    "cost": Call.cost_micros,
}
MAX_QUERY_CHARS = 200


class BadQuery(ValueError):
    """A filter or cursor a caller sent that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class CallFilter:
    started_from: datetime | None = None
    started_to: datetime | None = None
    direction: str | None = None
    number: str | None = None  # the caller's or the callee's number, E.164
    campaign_id: int | None = None
    dispositions: tuple[str, ...] = ()
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    min_cost_micros: int | None = None
    max_cost_micros: int | None = None
    transferred: bool | None = None
    opted_out: bool | None = None
    q: str | None = None  # a phrase said in the call
    results_status: str | None = None  # pending | done | skipped | failed
    extraction: tuple[tuple[str, Any], ...] = ()  # (field, value): the post-call extraction's field equals it

    def as_dict(self) -> dict[str, Any]:
        """The filters set, for an audit entry."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is None or value == ():
                continue
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True, slots=True)
class Page:
    calls: list[Call]
    next_cursor: str | None
    matches: dict[int, list[TranscriptSegment]] = field(default_factory=dict)  # call id -> matching lines


# -- the query language ---------------------------------------------------------------------------

_TOKEN = re.compile(r'(-?)"([^"]*)"|(-?)(\S+)')
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Term:
    words: tuple[str, ...]  # one word, or a phrase
    negated: bool = False


def parse_query(q: str) -> list[Term]:
    """Split a search into terms: words, "quoted phrases", and ``-excluded`` ones. Punctuation inside a
    word splits it (so ``o'clock`` is the phrase "o clock"). Raises BadQuery for nothing to look for."""
    if len(q) > MAX_QUERY_CHARS:
        raise BadQuery(f"the search is {len(q)} characters; at most {MAX_QUERY_CHARS}")
    terms: list[Term] = []
    for match in _TOKEN.finditer(q):
        negated = bool(match.group(1) or match.group(3))
        body = match.group(2) if match.group(2) is not None else match.group(4)
        words = tuple(w.lower() for w in _WORD.findall(body))
        if words:
            terms.append(Term(words, negated))
    if not any(not t.negated for t in terms):
        raise BadQuery("the search has no word to look for")
    return terms


def fts5_query(terms: Sequence[Term]) -> str:
    """The FTS5 MATCH expression: every term quoted (no operator injection), phrases kept whole."""
    positive = [f'"{" ".join(t.words)}"' for t in terms if not t.negated]
    negative = [f'"{" ".join(t.words)}"' for t in terms if t.negated]
    expression = " AND ".join(positive)
    for term in negative:
        expression = f"{expression} NOT {term}"
    return expression


def tsquery_match(terms: Sequence[Term]) -> TextClause:
    """``transcript_segments.tsv @@ <tsquery>`` for PostgreSQL: words through plainto_tsquery, phrases
    through phraseto_tsquery, joined with && and negated with !!, every word a bound parameter (so no
    word of a search is ever read as an operator, "or" included)."""
    parts = []
    params = {}
    for i, t in enumerate(terms):
        maker = "phraseto_tsquery" if len(t.words) > 1 else "plainto_tsquery"
        parts.append(f"{'!!' if t.negated else ''}{maker}('english', :fts_{i})")
        params[f"fts_{i}"] = " ".join(t.words)
    return text(f"transcript_segments.tsv @@ ({' && '.join(parts)})").bindparams(**params)


# -- cursors --------------------------------------------------------------------------------------


def encode_cursor(sort: str, value: Any, call_id: int) -> str:
    raw = orjson.dumps([sort, value.isoformat() if isinstance(value, datetime) else value, call_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_sort, value, call_id = orjson.loads(raw)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadQuery("the cursor is not one this API gave out") from exc
    if got_sort != sort or not isinstance(call_id, int):
        raise BadQuery(f"the cursor belongs to another sort order ({got_sort!r}, not {sort!r})")
    if sort.lstrip("-") == "started_at":
        try:
            value = datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise BadQuery("the cursor is not one this API gave out") from exc
    elif not isinstance(value, int):
        raise BadQuery("the cursor is not one this API gave out")
    return value, call_id


# -- the query ------------------------------------------------------------------------------------


def _sort_column(sort: str) -> tuple[ColumnElement[Any], bool]:
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    if name not in SORTS:
        raise BadQuery(f"unknown sort {name!r}; one of {sorted(SORTS)}, '-' first for descending")
    column: ColumnElement[Any] = SORTS[name]  # type: ignore[assignment]
    # NULL durations and costs (a call still being archived) sort as -1: keyset needs a total order.
    key: ColumnElement[Any] = column if name == "started_at" else func.coalesce(column, -1)
    return key, descending


def _text_match(dialect: str, terms: Sequence[Term]) -> ColumnElement[bool]:
    if dialect == "postgresql":
        matching = select(TranscriptSegment.call_id).where(tsquery_match(terms))
    else:
        matching = select(TranscriptSegment.call_id).where(
            TranscriptSegment.id.in_(
                text("SELECT rowid FROM transcript_fts WHERE transcript_fts MATCH :fq").bindparams(fq=fts5_query(terms))
            )
        )
    return Call.id.in_(matching)


def _filter_conditions(f: CallFilter) -> list[ColumnElement[bool]]:
    """The WHERE conditions of every filter but the text search."""
    where: list[ColumnElement[bool]] = []
    if f.started_from is not None:
        where.append(Call.started_at >= f.started_from)
    if f.started_to is not None:
        where.append(Call.started_at < f.started_to)
    if f.direction is not None:
        where.append(Call.direction == f.direction)
    if f.number is not None:
        where.append(or_(Call.from_number == f.number, Call.to_number == f.number))
    if f.campaign_id is not None:
        where.append(Call.campaign_id == f.campaign_id)
    if f.dispositions:
        where.append(Call.disposition.in_(f.dispositions))
    if f.min_duration_ms is not None:
        where.append(Call.duration_ms >= f.min_duration_ms)
    if f.max_duration_ms is not None:
        where.append(Call.duration_ms <= f.max_duration_ms)
    if f.min_cost_micros is not None:
        where.append(Call.cost_micros >= f.min_cost_micros)
    if f.max_cost_micros is not None:
        where.append(Call.cost_micros <= f.max_cost_micros)
    if f.transferred is not None:
        where.append(Call.transferred == (true() if f.transferred else false()))
    if f.opted_out is not None:
        where.append(Call.opted_out == (true() if f.opted_out else false()))
    if f.results_status is not None:
        where.append(Call.results_status == f.results_status)
    for name, value in f.extraction:
        field_ = Call.extraction[name]
        if value is None:
            where.append(field_.as_string().is_(None))
        elif isinstance(value, bool):
            where.append(field_.as_boolean() == (true() if value else false()))
        elif isinstance(value, int | float):
            where.append(field_.as_float() == float(value))
        else:
            where.append(field_.as_string() == value)
    return where


_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def parse_extraction_filters(items: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    """``field=value`` items: the value is true, false, null, a number, else text. BadQuery otherwise."""
    out: list[tuple[str, Any]] = []
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not _FIELD.match(name):
            raise BadQuery(
                f"extraction filter {item[:80]!r}: expected field=value, the field a name like callback_requested"
            )
        raw = raw.strip()
        value: Any
        if raw in ("true", "false"):
            value = raw == "true"
        elif raw == "null":
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
            if isinstance(value, float) and not math.isfinite(value):
                value = raw
        out.append((name, value))
    return tuple(out)


def _after_cursor(key: ColumnElement[Any], descending: bool, sort: str, cursor: str) -> ColumnElement[bool]:
    """Rows after the cursor's row in page order. The leading ``key <=`` (``>=``) is implied by the rest; it
    lets an index on the key start at the cursor instead of skipping every earlier page's rows."""
    value, call_id = decode_cursor(cursor, sort)
    if descending:
        return and_(key <= value, or_(key < value, and_(key == value, Call.id < call_id)))
    return and_(key >= value, or_(key > value, and_(key == value, Call.id > call_id)))


def _page_order(
    key: ColumnElement[Any], call_id: ColumnElement[Any] | InstrumentedAttribute[int], descending: bool
) -> list[ColumnElement[Any]]:
    return [key.desc(), call_id.desc()] if descending else [key.asc(), call_id.asc()]


def build_query(dialect: str, filters: CallFilter, *, sort: str, cursor: str | None, limit: int) -> Select[Any]:
    """One page (and one row more) of the calls the filters select, in page order: the definition of a page.
    search_calls runs it as is, except for a text search on PostgreSQL (see _postgresql_text_page)."""
    key, descending = _sort_column(sort)
    where = _filter_conditions(filters)
    if filters.q:
        where.append(_text_match(dialect, parse_query(filters.q)))
    if cursor is not None:
        where.append(_after_cursor(key, descending, sort, cursor))
    return select(Call).where(*where).order_by(*_page_order(key, Call.id, descending)).limit(limit + 1)


# A text search on PostgreSQL. build_query's "calls whose id is among those of the matching lines" leaves
# the planner two ways: walk the calls in page order testing each one's lines (quick when many calls
# match), or collect every matching line from the GIN index and sort their calls (quick when few do). It
# picks by its estimate of the matching lines, and it estimates several words or a phrase as if the words
# were independent. On 1M lines (docs/PERFORMANCE.md) "goodbye help", which no line says, walked all 50,000
# calls (0.5-1.4 s), and "charged twice" sorted 14,477 calls (~100 ms) where the walk needs 2 ms. So the
# way is chosen from what a short walk actually finds, not from the estimate:
#   1. walk the first PROBE_PAGES[0] pages' worth of calls that the other filters and the cursor select, in
#      page order, each tested with one LIMIT 1 lookup of its lines (by call_id); the same statement counts
#      the selected calls up to PROBE_PAGES[1] pages' worth. A full page found is the page.
#   2. if the short walk found matches densely enough for a walk of PROBE_PAGES[1] pages' worth to fill the
#      page, walk that far (a full page, or every selected call seen, is the page).
#   3. otherwise matches are sparse: take the matching lines from the GIN index (a MATERIALIZED CTE, which
#      the planner cannot turn back into a walk), then look their calls up by id, filter and sort them.
# Every way returns build_query's rows in its order. Each step's work is bounded by the walk's length or by
# the lines that match, whichever it picked. The price: a rare word takes two statements instead of one
# (~+5 ms); the slow case left is a common word that the filtered calls seldom say ("goodbye" on transferred
# calls: 21k lines, 0.1-0.2 s on the loaded benchmark machine, a little slower than the walk was).
PROBE_PAGES = (2, 20)


async def _postgresql_text_page(
    session: AsyncSession, filters: CallFilter, terms: Sequence[Term], *, sort: str, cursor: str | None, limit: int
) -> list[Call]:
    key, descending = _sort_column(sort)
    where = _filter_conditions(filters)
    if cursor is not None:
        where.append(_after_cursor(key, descending, sort, cursor))
    page = limit + 1
    short, long = PROBE_PAGES[0] * page, PROBE_PAGES[1] * page

    def walk(calls: int) -> Subquery:
        """(id, key) of up to a page of calls with a matching line among the first ``calls`` selected."""
        window = (
            select(Call.id.label("id"), key.label("key"))
            .where(*where)
            .order_by(*_page_order(key, Call.id, descending))
            .limit(calls)
            .subquery("window")
        )
        hit = (
            select(TranscriptSegment.call_id)
            .where(TranscriptSegment.call_id == window.c.id, tsquery_match(terms))
            .limit(1)
            .lateral("hit")
        )
        return (
            select(window.c.id, window.c.key)
            .join(hit, true())
            .order_by(*_page_order(window.c.key, window.c.id, descending))
            .limit(page)
            .subquery("found")
        )

    # The short walk, and how many calls the filters select (counted up to a long walk's worth), in one
    # statement: an outer join from the count keeps its row when the walk finds nothing.
    counted = (
        select(func.count().label("n")).select_from(select(Call.id).where(*where).limit(long).subquery()).subquery()
    )
    found = walk(short)
    first = (
        select(counted.c.n, Call)
        .select_from(counted)
        .outerjoin(found, true())
        .outerjoin(Call, Call.id == found.c.id)
        .order_by(*_page_order(found.c.key, found.c.id, descending))
    )
    result = (await session.execute(first)).all()
    n = result[0].n
    rows = [call for _, call in result if call is not None]
    if len(rows) == page or n <= short:
        return rows  # a full page, or the short walk saw every call the filters select
    if len(rows) * long >= page * short:  # dense enough for the long walk to fill the page
        found = walk(long)
        query = (
            select(Call).join(found, Call.id == found.c.id).order_by(*_page_order(found.c.key, found.c.id, descending))
        )
        rows = list(await session.scalars(query))
        if len(rows) == page or n < long:
            return rows
    matching = select(TranscriptSegment.call_id).where(tsquery_match(terms)).cte("matching").prefix_with("MATERIALIZED")
    query = (
        select(Call)
        .where(*where, Call.id.in_(select(matching.c.call_id)))
        .order_by(*_page_order(key, Call.id, descending))
        .limit(page)
    )
    return list(await session.scalars(query))


async def search_calls(
    session: AsyncSession, filters: CallFilter, *, sort: str = "-started_at", cursor: str | None = None, limit: int = 50
) -> Page:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and filters.q:
        terms = parse_query(filters.q)
        rows = await _postgresql_text_page(session, filters, terms, sort=sort, cursor=cursor, limit=limit)
    else:
        rows = list(await session.scalars(build_query(dialect, filters, sort=sort, cursor=cursor, limit=limit)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        name = sort.lstrip("-")
        value = last.started_at if name == "started_at" else getattr(last, SORTS[name].key)
        next_cursor = encode_cursor(sort, value if value is not None else -1, last.id)
    matches: dict[int, list[TranscriptSegment]] = {}
    if filters.q and rows:
        matches = await matching_lines(session, dialect, parse_query(filters.q), [r.id for r in rows])
    return Page(rows, next_cursor, matches)


async def matching_lines(
    session: AsyncSession, dialect: str, terms: Sequence[Term], call_ids: list[int], per_call: int = 3
) -> dict[int, list[TranscriptSegment]]:
    """Up to ``per_call`` lines of each call that match the search, in call order."""
    query = select(TranscriptSegment).where(TranscriptSegment.call_id.in_(call_ids))
    if dialect == "postgresql":
        query = query.where(tsquery_match(terms))
    else:
        query = query.where(
            TranscriptSegment.id.in_(
                text("SELECT rowid FROM transcript_fts WHERE transcript_fts MATCH :fq").bindparams(fq=fts5_query(terms))
            )
        )
    out: dict[int, list[TranscriptSegment]] = {}
    for segment in await session.scalars(query.order_by(TranscriptSegment.call_id, TranscriptSegment.seq)):
        lines = out.setdefault(segment.call_id, [])
        if len(lines) < per_call:
            lines.append(segment)
    return out
