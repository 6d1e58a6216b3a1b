"""Recompute a ledger's hash chain and say, by sequence number, what was tampered with.

Works on stored rows from any source (the database, an exported JSON Lines file), so an auditor
can check a copy without access to the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_consent.errors import LedgerTampered
from airflow_consent.ledger.records import GENESIS, LedgerRecord, record_hash

if TYPE_CHECKING:
    from airflow_consent.ledger.keys import LedgerKey

MAX_PROBLEMS = 100


@dataclass(frozen=True)
class VerifyResult:
    """``ok`` when every record is one the gate writes, matches its hash, links to the one before, and
    the head agrees; and, when ``signatures`` names a key, is signed with it."""

    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)
    head_seq: int = 0
    head_hash: str = GENESIS
    signatures: str = "not checked"


@dataclass(frozen=True)
class Head:
    """The last record's sequence number and hash, kept apart from the records (or an anchor)."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """``"SEQ:sha256:HEX"`` → ``Head``; what ``airflow-consent ledger head`` prints."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or not digest.startswith("sha256:") or len(digest) != len(GENESIS):
            raise ValueError(f"{text!r} is not SEQ:sha256:HEX")
        return cls(int(seq), digest)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(message)
        else:
            self.dropped += 1

    def listing(self) -> list[str]:
        return self.items + ([f"... and {self.dropped} more problem(s)"] if self.dropped else [])


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


def verify_chain(
    rows: Iterable[Mapping[str, Any]],
    *,
    head: Head | None,
    find_seq: Callable[[str], int | None],
    anchor: Head | None = None,
    head_required: bool = True,
    key: LedgerKey | None = None,
) -> VerifyResult:
    """Check ``rows`` (in ``seq`` order) against their types, hashes, links, ``head`` and ``anchor``, and
    their signatures against ``key`` when given (an auditor without the secret checks the rest).

    ``find_seq`` maps a record hash to the sequence number of the record that carries it (or None),
    so a broken link can be told apart: reordered, inserted, or edited and re-hashed.
    """
    problems = _Problems()
    moved: set[int] = set()
    if anchor is not None and anchor.seq == 0:  # taken on an empty ledger: every chain extends it
        if anchor.hash != GENESIS:
            problems.add(f"the anchor {anchor} is not an anchor: seq 0 can only carry {GENESIS}")
        anchor = None
    anchor_seen = False
    expected_seq = 1
    prev: Mapping[str, Any] | None = None
    checked = 0
    for row in rows:
        checked += 1
        seq = row["seq"]
        gap = seq > expected_seq
        if gap:
            problems.add(f"{_span(expected_seq, seq - 1)}: deleted (missing from the sequence before seq {seq})")
        try:
            computed = record_hash(row)
        except (KeyError, TypeError, ValueError) as exc:
            computed = f"unhashable: {exc}"
        if computed != row["record_hash"]:
            problems.add(f"seq {seq}: edited (its content no longer matches its record_hash)")
        try:
            LedgerRecord.from_row(row)
        except LedgerTampered as exc:
            problems.add(str(exc))
        if key is not None and (unsigned := key.problem(row["record_hash"], row.get("signature"))):
            problems.add(f"seq {seq}: {unsigned}")
        expected_prev = prev["record_hash"] if prev is not None else GENESIS
        if row["prev_hash"] != expected_prev and not gap:
            problems.add(_broken_link(row, prev, find_seq, moved))
        if anchor is not None and seq == anchor.seq:
            anchor_seen = True
            if row["record_hash"] != anchor.hash:
                problems.add(f"seq {seq}: does not match the anchor {anchor} (the ledger was rewritten since)")
        prev = row
        expected_seq = seq + 1

    last = Head(prev["seq"], prev["record_hash"]) if prev is not None else Head(0, GENESIS)
    if head is None:
        if checked and head_required:
            problems.add(f"the ledger head is missing (deleted); the records end at seq {last.seq}")
    elif head.seq > last.seq:
        problems.add(
            f"{_span(last.seq + 1, head.seq)}: deleted (the records end at seq {last.seq} but the head is "
            f"seq {head.seq}: truncated)"
        )
    elif head.seq < last.seq:
        problems.add(f"{_span(head.seq + 1, last.seq)}: inserted after the head (the head is seq {head.seq})")
    elif head.hash != last.hash:
        problems.add(f"seq {last.seq}: edited and re-hashed (it no longer matches the ledger head)")
    if anchor is not None and not anchor_seen:
        problems.add(f"seq {anchor.seq}: missing, but the anchor {anchor} says it existed (deleted or truncated)")
    listing = problems.listing()
    return VerifyResult(
        ok=not listing,
        checked=checked,
        problems=listing,
        head_seq=last.seq,
        head_hash=last.hash,
        signatures=f"checked with key {key.id} ({key.source})" if key else "not checked (no key)",
    )


def _broken_link(
    row: Mapping[str, Any], prev: Mapping[str, Any] | None, find_seq: Callable[[str], int | None], moved: set[int]
) -> str:
    """Explain why ``row`` does not follow ``prev``: where was it really appended?"""
    seq = row["seq"]
    if prev is not None and row["prev_hash"] == GENESIS:
        return f"seq {seq}: inserted (it claims to be the first record, but follows seq {prev['seq']})"
    target = find_seq(row["prev_hash"])
    if target is None:
        before = f"seq {prev['seq']} was edited and re-hashed, or " if prev is not None else ""
        return (
            f"seq {seq}: chain broken: the record it was appended after is gone ({before}a record was deleted "
            f"and the rest renumbered)"
        )
    if target > seq:
        moved.update({seq, target})
        return f"seq {seq}: reordered (it was appended after seq {target}, which now comes later)"
    if target == seq:
        return f"seq {seq}: edited (it names itself as its predecessor)"
    prev_seq = prev["seq"] if prev is not None else 0
    if seq in moved or any(target < m <= prev_seq for m in moved):
        moved.add(seq)
        return f"seq {seq}: reordered (it was appended right after seq {target}, not after seq {prev_seq})"
    return f"{_span(target + 1, prev_seq)}: inserted (seq {seq} was appended right after seq {target})"
