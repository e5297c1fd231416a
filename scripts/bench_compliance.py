"""Compliance decisions per second on one core (issue: >= 50,000/s for 1M contacts).

    .venv/bin/python scripts/bench_compliance.py --contacts 1000000

Contacts are spread over every geographic US area code, a quarter with an address state, a third
with call history; each gets one decision at an instant spread over a week (allows, deferrals with a
next-lawful-instant search, and denials all occur). Locating a number (phonenumbers parsing) happens
once per contact at import in the product, so it is timed separately here.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import phonenumbers

from app.dialer import rules
from app.dialer.location import locate
from app.dialer.policy import CampaignRules, Consent, ContactFacts, PastAttempt, Purpose, decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    area_codes = [
        npa
        for npa in range(201, 990)
        if phonenumbers.is_valid_number(phonenumbers.parse(f"+1{npa}5550123"))
        and locate(f"+1{npa}5550123").kind == "geographic"
    ]
    states = sorted(rules.STATE_ZONES)

    t0 = time.perf_counter()
    contacts: list[tuple[ContactFacts, tuple[PastAttempt, ...]]] = []
    start = datetime(2026, 7, 6, tzinfo=UTC)
    for i in range(args.contacts):
        number = f"+1{rng.choice(area_codes)}{rng.randint(2, 9)}{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}"
        state = rng.choice(states) if i % 4 == 0 else None
        location = locate(number, state=state)
        consent = Consent.written if i % 50 else None
        history: tuple[PastAttempt, ...] = ()
        if i % 3 == 0:
            history = tuple(
                PastAttempt(start - timedelta(hours=rng.randint(1, 700)), "reminders", Purpose.informational)
                for _ in range(rng.randint(1, 3))
            )
        contacts.append((ContactFacts(location, consent=consent), history))
    locate_s = time.perf_counter() - t0

    campaign = CampaignRules(Purpose.informational, "reminders")
    instants = [start + timedelta(minutes=rng.randint(0, 7 * 24 * 60)) for _ in range(1024)]
    outcomes: Counter[str] = Counter()
    t1 = time.perf_counter()
    for i, (contact, history) in enumerate(contacts):
        outcomes[decide(contact, campaign, instants[i & 1023], history).outcome.value] += 1
    decide_s = time.perf_counter() - t1

    result = {
        "contacts": args.contacts,
        "decisions_per_s": round(args.contacts / decide_s),
        "decide_us_mean": round(decide_s / args.contacts * 1e6, 2),
        "locate_us_mean": round(locate_s / args.contacts * 1e6, 2),
        "outcomes": dict(outcomes),
    }
    print(json.dumps(result, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
