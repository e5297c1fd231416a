"""Cutting a streamed answer into clauses for speech: plain values, no event loop."""

from __future__ import annotations

import random

import pytest

from app.core.clauses import ClauseSplitter

ANSWER = (
    "Sure, I can help with that. Dr. Patel has openings on Tuesday at 10:30 a.m. and at 3.45 pm. "
    'She said "bring your card!" Would either work? The visit takes about forty minutes...'
)
CLAUSES = [
    "Sure, I can help with that.",
    "Dr. Patel has openings on Tuesday at 10:30 a.m. and at 3.45 pm.",
    'She said "bring your card!"',
    "Would either work?",
    "The visit takes about forty minutes...",
]


def split(deltas: list[str], splitter: ClauseSplitter | None = None) -> list[str]:
    splitter = splitter or ClauseSplitter()
    out = [clause for delta in deltas for clause in splitter.feed(delta)]
    return out + splitter.flush()


def test_sentences_are_clauses_and_numbers_abbreviations_and_quotes_do_not_cut_them() -> None:
    assert split([ANSWER]) == CLAUSES


@pytest.mark.parametrize("seed", range(20))
def test_however_the_answer_is_streamed_the_clauses_are_the_same(seed: int) -> None:
    rng = random.Random(seed)
    deltas, i = [], 0
    while i < len(ANSWER):
        step = rng.randint(1, 7)
        deltas.append(ANSWER[i : i + step])
        i += step
    assert split(deltas) == CLAUSES


def test_a_clause_is_given_as_soon_as_the_next_character_shows_it_is_whole() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("It costs 3.") == []  # "3." could be "3.5"
    assert splitter.feed("5 dollars. T") == ["It costs 3.5 dollars."]
    assert splitter.pending == "T"


def test_the_first_clause_may_end_at_a_pause_once_it_can_be_said_on_its_own() -> None:
    splitter = ClauseSplitter(first_min_chars=16)
    assert splitter.feed("Yes, ") == []  # too short to say alone: it waits for more
    assert splitter.feed("we are open until six tonight, and ") == ["Yes, we are open until six tonight,"]
    # later clauses end at sentences only: speech keeps its prosody
    assert splitter.feed("tomorrow, from nine. ") == ["and tomorrow, from nine."]
    assert splitter.flush() == []
    # the next answer starts afresh
    assert splitter.feed("Of course, my pleasure: ") == ["Of course, my pleasure:"]


def test_a_line_break_ends_a_clause_and_a_long_run_is_cut_at_a_space() -> None:
    assert split(["First item\nsecond item"]) == ["First item", "second item"]
    words = " ".join(["word"] * 80)  # 399 characters, no punctuation
    clauses = split([words], ClauseSplitter(max_chars=100))
    assert all(len(c) <= 100 for c in clauses) and " ".join(clauses) == words


def test_a_cancelled_answer_leaves_nothing_behind() -> None:
    splitter = ClauseSplitter()
    splitter.feed("Let me check the")
    splitter.reset()
    assert splitter.pending == "" and splitter.flush() == []
