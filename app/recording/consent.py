"""Whether a call may be recorded, and whether the agent must say so first: pure, the law as data.

Most US states let one party to a call record it. Some require every party's consent; a caller told at the
start that the call is recorded, who goes on talking, consents (the courts of each state below accept a clear
announcement as notice). A call whose other party may be in one of them (any state the dialer's location
logic names for the number: area code, the contact's recorded state, ZIP) is treated as in it.

``RECORDING``: ``off`` records nothing; ``on`` records without an announcement, so a call that may touch an
all-party state is not recorded; ``announce`` has the agent's first words announce the recording, and records.
A number that cannot be placed (foreign, SIP, withheld) may be anywhere: it is treated as all-party.

Not legal advice: the table is data with its sources so that counsel can review and change it
(``ALL_PARTY_CONSENT_STATES``); every decision records which rule and which states decided it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

RecordingMode = Literal["off", "on", "announce"]

ANNOUNCEMENT = "This call is recorded."
TABLE_VERSION = "2026-12-07"


@dataclass(frozen=True, slots=True)
class AllPartyRule:
    statute: str
    note: str = ""


# Where a telephone call's recording needs every party's consent. Sources: each state's statute as cited; the
# Reporters Committee for Freedom of the Press, "Reporter's Recording Guide" (rcfp.org/reporters-recording-
# guide), and the Digital Media Law Project's state law pages, for the readings noted.
ALL_PARTY_CONSENT_STATES: Mapping[str, AllPartyRule] = {
    "CA": AllPartyRule("Cal. Penal Code §§ 632, 632.7"),
    "CT": AllPartyRule("Conn. Gen. Stat. § 52-570d", "telephone calls: all parties (civil liability)"),
    "DE": AllPartyRule(
        "11 Del. C. § 1335(a)(4); 11 Del. C. § 2402(c)(4)",
        "the two statutes conflict (privacy law all-party, wiretap law one-party): treated as all-party",
    ),
    "FL": AllPartyRule("Fla. Stat. § 934.03"),
    "IL": AllPartyRule("720 ILCS 5/14-2", "private conversations (as amended in 2014)"),
    "MD": AllPartyRule("Md. Code, Cts. & Jud. Proc. § 10-402"),
    "MA": AllPartyRule("Mass. Gen. Laws ch. 272, § 99"),
    "MI": AllPartyRule(
        "Mich. Comp. Laws § 750.539c",
        "a participant may record under Sullivan v. Gray (1982), but the statute reads all-party: treated as all-party",
    ),
    "MT": AllPartyRule("Mont. Code Ann. § 45-8-213"),
    "NV": AllPartyRule("Nev. Rev. Stat. § 200.620", "telephone calls: all parties (Lane v. Allstate, 1998)"),
    "NH": AllPartyRule("N.H. Rev. Stat. § 570-A:2"),
    "PA": AllPartyRule("18 Pa. C.S. §§ 5703, 5704"),
    "WA": AllPartyRule("Rev. Code Wash. § 9.73.030", "an announcement recorded on the call is consent (9.73.030(3))"),
}
# One-party for telephone calls though often listed with the above (not in the table, on purpose):
# Oregon (ORS 165.540: all parties for in-person conversations only), Vermont (no statute).


@dataclass(frozen=True, slots=True)
class RecordingDecision:
    record: bool
    announce: bool
    reason: str
    all_party_states: tuple[str, ...]  # the candidate states that require every party's consent
    table_version: str = TABLE_VERSION

    def as_dict(self) -> dict[str, object]:
        return {"record": self.record, "announce": self.announce, "reason": self.reason,
                "all_party_states": list(self.all_party_states), "table_version": self.table_version}  # fmt: skip


def decide(
    mode: RecordingMode,
    candidate_states: Iterable[str] | None,
    *,
    table: Mapping[str, AllPartyRule] = ALL_PARTY_CONSENT_STATES,
) -> RecordingDecision:
    """``candidate_states``: every state the other party may be in; None when the number cannot be placed."""
    if mode == "off":
        return RecordingDecision(False, False, "RECORDING=off", ())
    if candidate_states is None:
        all_party: tuple[str, ...] = ("unknown",)
        where = "the number cannot be placed (it may be in an all-party-consent state)"
    else:
        all_party = tuple(sorted({s.upper() for s in candidate_states if s.upper() in table}))
        where = f"the other party may be in {', '.join(all_party)} (all-party consent)" if all_party else ""
    if mode == "announce":
        reason = f"RECORDING=announce: announced, then recorded{'; ' + where if where else ''}"
        return RecordingDecision(True, True, reason, all_party)
    if all_party:
        return RecordingDecision(
            False, False, f"RECORDING=on without an announcement: not recorded; {where}", all_party
        )
    return RecordingDecision(True, False, "RECORDING=on: no candidate state requires every party's consent", ())
