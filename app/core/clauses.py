"""An answer streamed by a chat model, cut into clauses for text-to-speech as it arrives.

The cascaded engine starts speaking on the first complete clause of an answer, not on the whole answer,
and queues each later clause as it completes. A clause ends at the end of a sentence (``. ! ?`` and an
ellipsis, with any closing quotes or brackets) once the next character shows it is one (whitespace, not
the ``5`` of ``3.5``), at a line break, and, for the answer's first clause only (the one the caller waits
for), at a comma, semicolon, colon or dash once it is long enough to be said on its own. A run of text
with no boundary is cut at a space past ``max_chars`` so speech never waits on a long list.

Pure: feed it text, get clauses; ``flush`` at the end of the answer gives the rest. However the text is
split into deltas, the clauses are the same.
"""

from __future__ import annotations

SENTENCE_ENDS = frozenset(".!?…")
PAUSES = frozenset(",;:\u2014\u2013")  # and the em and en dashes
CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019")  # and the closing guillemet and curly quotes
# "Dr. Smith" is one clause: a dot after these (any case) does not end a sentence.
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "no", "approx", "apt",
     "dept", "est", "inc", "ltd", "mt", "ft", "min", "max", "tel", "u.s"}
)  # fmt: skip


class ClauseSplitter:
    """Text deltas in, whole clauses out (stripped, never empty)."""

    __slots__ = ("_buf", "_first", "first_min_chars", "max_chars")

    def __init__(self, *, first_min_chars: int = 16, max_chars: int = 200) -> None:
        self.first_min_chars = first_min_chars
        self.max_chars = max_chars
        self._buf = ""
        self._first = True

    @property
    def pending(self) -> str:
        """Text received that is not yet a whole clause."""
        return self._buf

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._boundary()
            if cut is None:
                break
            clause, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if clause:
                out.append(clause)
                self._first = False
        return out

    def flush(self) -> list[str]:
        """The end of the answer: whatever is left is the last clause."""
        rest, self._buf = self._buf.strip(), ""
        self._first = True  # the next answer starts afresh
        return [rest] if rest else []

    def reset(self) -> None:
        """The answer was cancelled (barge-in): drop what was not yet a clause."""
        self._buf = ""
        self._first = True

    def _boundary(self) -> int | None:
        """Index just past the first complete clause in the buffer, or None."""
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n":
                return i + 1
            if ch in SENTENCE_ENDS or (self._first and ch in PAUSES):
                end = i + 1
                while end < n and (buf[end] in CLOSERS or (ch in SENTENCE_ENDS and buf[end] in SENTENCE_ENDS)):
                    end += 1  # closing quotes, "?!", "..."
                if end >= n:
                    return None  # what follows decides: "3." may be "3.5"
                if buf[end].isspace():
                    if ch in PAUSES:
                        if len(buf[:end].strip()) >= self.first_min_chars:
                            return end
                    elif ch != "." or not _abbreviation(buf, i):
                        return end
                i = end
                continue
            i += 1
        if n > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None


def _abbreviation(buf: str, dot: int) -> bool:
    """Is the word before the dot at ``dot`` an abbreviation (or a single initial, as in "J. Smith")?"""
    start = dot
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    word = buf[start:dot].lower().lstrip("\"'([")
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())
