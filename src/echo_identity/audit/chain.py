"""The audit hash chain and its signed checkpoints (pure: no Flask, no database).

Every sealed event has a chain position ``seq`` (1, 2, ...) and a chain hash::

    hash(seq) = SHA-256(bytes.fromhex(hash(seq - 1)) || canonical(event)), hash(0) = 00...00

where :func:`canonical` is a fixed JSON encoding of every stored field, ``id`` and
``occurred_at`` included. A checkpoint is an Ed25519 signature over ``(seq, head_hash,
sealed_through, created_at, key_id)``; the sealer writes one in the same transaction as every
batch it seals, so each sealed event is covered by a signed checkpoint.

:func:`verify_chain` walks the sealed events in ``seq`` order and returns the *first*
:class:`Problem` (an event modified, deleted or inserted, or a bad checkpoint or anchor), or
``None``.

Retention. Once old events are pruned (:mod:`echo_identity.audit.retention`), the chain starts
at a signed :class:`Anchor` instead of at ``GENESIS``: an Ed25519 signature over "the first kept
event is ``first_kept_id`` at ``first_kept_seq`` and links to ``previous_hash``; the
``pruned_count`` events before it, recorded between ``pruned_from`` and ``pruned_through``, were
pruned at ``created_at``". Verification then starts at that position and hash, so removing or
changing a kept event, or forging the anchor, is detected as before.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The stored fields an event's hash covers, in encoding order. A new column of audit_events
# must be added here (and existing chains re-sealed) to be tamper-evident.
CHAINED_FIELDS = (
    "id",
    "occurred_at",
    "event_type",
    "outcome",
    "severity",
    "actor",
    "subject",
    "client_id",
    "ip",
    "user_agent",
    "request_id",
    "token_fingerprint",
    "details",
)
GENESIS = "0" * 64
CHECKPOINT_DOMAIN = b"echo-identity audit checkpoint v1\n"
ANCHOR_DOMAIN = b"echo-identity audit anchor v1\n"


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime in an audit event")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event: Mapping[str, Any]) -> bytes:
    """The byte encoding of ``event`` that is hashed: sorted-key compact JSON of
    :data:`CHAINED_FIELDS` with UTC microsecond timestamps. Raises ``KeyError`` when a field is
    missing and ``ValueError`` for a naive ``occurred_at``."""
    document = {name: event[name] for name in CHAINED_FIELDS}
    document["occurred_at"] = _timestamp(event["occurred_at"])
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def link(previous_hash: str, event: Mapping[str, Any]) -> str:
    """The chain hash of ``event`` placed after a link whose hash is ``previous_hash``."""
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical(event)).hexdigest()


@dataclass(frozen=True)
class SealedEvent:
    """A stored event with its chain position and stored hash (``fields`` as read back)."""

    seq: int
    hash: str
    fields: Mapping[str, Any]

    @property
    def id(self) -> int:
        return int(self.fields["id"])


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    sealed_through: datetime
    created_at: datetime
    key_id: str
    signature: str = ""


def checkpoint_message(checkpoint: Checkpoint) -> bytes:
    """The bytes a checkpoint signature covers (everything but the signature)."""
    body = {
        "seq": checkpoint.seq,
        "head_hash": checkpoint.head_hash,
        "sealed_through": _timestamp(checkpoint.sealed_through),
        "created_at": _timestamp(checkpoint.created_at),
        "key_id": checkpoint.key_id,
    }
    return CHECKPOINT_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.urlsafe_b64encode(key.sign(message)).rstrip(b"=").decode()


def _signature_valid(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        key.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_checkpoint(key: Ed25519PrivateKey, checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` with its Ed25519 signature (base64url, unpadded)."""
    encoded = _sign(key, checkpoint_message(checkpoint))
    return Checkpoint(
        checkpoint.seq,
        checkpoint.head_hash,
        checkpoint.sealed_through,
        checkpoint.created_at,
        checkpoint.key_id,
        encoded,
    )


def checkpoint_signature_valid(key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    """True when ``checkpoint.signature`` is ``key``'s signature over its fields."""
    return _signature_valid(key, checkpoint.signature, checkpoint_message(checkpoint))


@dataclass(frozen=True)
class Anchor:
    """Where the chain starts once the events before ``first_kept_seq`` are pruned: the first
    kept event and the chain hash it links to, and what was pruned (all prunes together)."""

    first_kept_seq: int
    first_kept_id: int
    previous_hash: str
    pruned_count: int
    pruned_from: datetime
    pruned_through: datetime
    created_at: datetime
    key_id: str
    signature: str = ""


def anchor_message(anchor: Anchor) -> bytes:
    """The bytes an anchor signature covers (everything but the signature)."""
    body = {
        "first_kept_seq": anchor.first_kept_seq,
        "first_kept_id": anchor.first_kept_id,
        "previous_hash": anchor.previous_hash,
        "pruned_count": anchor.pruned_count,
        "pruned_from": _timestamp(anchor.pruned_from),
        "pruned_through": _timestamp(anchor.pruned_through),
        "created_at": _timestamp(anchor.created_at),
        "key_id": anchor.key_id,
    }
    return ANCHOR_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_anchor(key: Ed25519PrivateKey, anchor: Anchor) -> Anchor:
    """``anchor`` with its Ed25519 signature (base64url, unpadded). Raises ``ValueError`` for a
    naive datetime."""
    return replace(anchor, signature=_sign(key, anchor_message(anchor)))


def anchor_signature_valid(key: Ed25519PublicKey, anchor: Anchor) -> bool:
    """True when ``anchor.signature`` is ``key``'s signature over its fields."""
    return _signature_valid(key, anchor.signature, anchor_message(anchor))


class ProblemKind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    CHECKPOINT = "checkpoint"
    ANCHOR = "anchor"


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with the trail. ``event_id`` is ``None`` when the event is gone
    and its id cannot be told (``message`` then names the neighbours)."""

    kind: ProblemKind
    event_id: int | None
    seq: int | None
    message: str
    hint: str


@dataclass(frozen=True)
class UnsealedEvent:
    id: int
    occurred_at: datetime


@dataclass
class ChainReport:
    sealed: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0
    anchor: Anchor | None = None  # where verification started, when events were pruned
    problem: Problem | None = field(default=None)


_RESEAL_HINT = (
    "restore the audit tables from a backup taken before the change, or keep this database "
    "as evidence; do not re-seal over it"
)


def verify_checkpoints(
    checkpoints: Sequence[Checkpoint], public_keys: Mapping[str, Ed25519PublicKey]
) -> Problem | None:
    """The first checkpoint (by ``seq``) with an unknown key or a bad signature, else ``None``."""
    for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
        key = public_keys.get(checkpoint.key_id)
        if key is None or not checkpoint_signature_valid(key, checkpoint):
            reason = "an unknown audit key" if key is None else "a signature that does not verify"
            return Problem(
                ProblemKind.CHECKPOINT,
                None,
                checkpoint.seq,
                f"the checkpoint at seq {checkpoint.seq} has {reason}",
                "the checkpoint table was altered; " + _RESEAL_HINT,
            )
    return None


def _pairs(events: Iterable[SealedEvent]) -> Iterator[tuple[SealedEvent, SealedEvent | None]]:
    """Each event with the one after it (one-event look-ahead, so the chain can stream)."""
    iterator = iter(events)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following
        current = following


def verify_chain(
    events: Iterable[SealedEvent],
    checkpoints: Sequence[Checkpoint],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    first_misplaced_unsealed: UnsealedEvent | None = None,
    anchor: Anchor | None = None,
) -> ChainReport:
    """Recompute the chain over ``events`` (sorted by ``(seq, id)``) and check it against the
    signed ``checkpoints``; the report's ``problem`` is the first problem found, or ``None``.

    ``first_misplaced_unsealed`` is the lowest-id unsealed event that was already old enough to
    be sealed by the last checkpoint's pass (see :func:`is_misplaced`); it is reported as
    inserted when the chain itself is intact.

    ``anchor``, when events were pruned, is where the chain starts: ``events`` must then begin
    at its ``first_kept_seq`` (events before it, not yet deleted, are left out by the caller)
    with the event it names, linked to its ``previous_hash``.
    """
    report = ChainReport(checkpoints=len(checkpoints), anchor=anchor)
    problem = verify_checkpoints(checkpoints, public_keys)
    if problem is None and anchor is not None:
        problem = verify_anchor(anchor, checkpoints, public_keys)
    if problem is not None:
        report.problem = problem
        return report
    expected_heads = {c.seq: c.head_hash for c in checkpoints}
    covered_seq = max(expected_heads, default=0)
    previous_hash = before_previous = GENESIS
    if anchor is not None:
        report.head_seq, report.head_hash = anchor.first_kept_seq - 1, anchor.previous_hash
        previous_hash = before_previous = anchor.previous_hash
        covered_seq = max(covered_seq, anchor.first_kept_seq)  # the anchor names a kept event
    previous: SealedEvent | None = None
    for event, following in _pairs(events):
        problem = _check_link(
            event, following, previous, previous_hash, before_previous, report.head_seq + 1
        )
        if (
            problem is None
            and anchor is not None
            and event.seq == anchor.first_kept_seq
            and event.id != anchor.first_kept_id
        ):
            problem = _anchor_problem(
                anchor,
                f"it names event {anchor.first_kept_id} as the first kept event, but event "
                f"{event.id} is at seq {event.seq}",
            )
        if (
            problem is None
            and event.seq in expected_heads
            and expected_heads[event.seq] != event.hash
        ):
            problem = _rewritten(event, checkpoints)
        if problem is None and event.seq > covered_seq:
            problem = Problem(
                ProblemKind.INSERTED,
                event.id,
                event.seq,
                f"event {event.id} (seq {event.seq}) is inserted: it is after the last signed "
                f"checkpoint (seq {covered_seq}), which every sealed event must be covered by",
                "the row was added with a forged seal; " + _RESEAL_HINT,
            )
        if problem is not None:
            report.problem = _name_first_kept(problem, anchor)
            return report
        before_previous, previous_hash, previous = previous_hash, event.hash, event
        report.sealed += 1
        report.head_seq, report.head_hash = event.seq, event.hash
    if covered_seq > report.head_seq:
        missing = _deleted(report.head_seq + 1, covered_seq, previous, None)
        report.problem = _name_first_kept(missing, anchor)
    elif first_misplaced_unsealed is not None:
        report.problem = Problem(
            ProblemKind.INSERTED,
            first_misplaced_unsealed.id,
            None,
            f"event {first_misplaced_unsealed.id} is inserted: it is not in the chain although "
            "it is older than the last seal pass",
            "inspect the row before the next seal pass; if it is genuine it committed later than "
            "ECHO_AUDIT_SEAL_GRACE after it was recorded (raise the setting)",
        )
    return report


def verify_anchor(
    anchor: Anchor, checkpoints: Sequence[Checkpoint], public_keys: Mapping[str, Ed25519PublicKey]
) -> Problem | None:
    """Why ``anchor`` cannot be trusted (unknown key, bad signature, a pruned count that is not
    the number of positions before it, or a previous hash other than the one the checkpoint at
    that position signed), else ``None``."""
    key = public_keys.get(anchor.key_id)
    if key is None:
        return _anchor_problem(anchor, "it is signed with an unknown audit key")
    if not anchor_signature_valid(key, anchor):
        return _anchor_problem(anchor, "its signature does not verify")
    if anchor.pruned_count != anchor.first_kept_seq - 1 or anchor.first_kept_seq < 1:
        return _anchor_problem(
            anchor,
            f"it counts {anchor.pruned_count} pruned events before seq {anchor.first_kept_seq}",
        )
    boundary = {c.seq: c.head_hash for c in checkpoints}.get(anchor.first_kept_seq - 1)
    if boundary is not None and boundary != anchor.previous_hash:
        return _anchor_problem(
            anchor, "its previous hash differs from the checkpoint signed at that position"
        )
    return None


def _name_first_kept(problem: Problem, anchor: Anchor | None) -> Problem:
    """``problem``, naming the anchor's first kept event when that is the one found deleted."""
    if (
        anchor is None
        or problem.kind != ProblemKind.DELETED
        or problem.seq != anchor.first_kept_seq
        or problem.event_id is not None
    ):
        return problem
    named = problem.message.removeprefix("the event(s) ")
    return replace(
        problem,
        event_id=anchor.first_kept_id,
        message=f"event {anchor.first_kept_id} (the first kept, named by the retention anchor) "
        + named,
    )


def _anchor_problem(anchor: Anchor, why: str) -> Problem:
    return Problem(
        ProblemKind.ANCHOR,
        anchor.first_kept_id,
        anchor.first_kept_seq,
        f"the retention anchor at seq {anchor.first_kept_seq} does not verify: {why}",
        "the anchor table was altered; " + _RESEAL_HINT,
    )


def is_misplaced(event: UnsealedEvent, last_sealed_through: datetime | None) -> bool:
    """An unsealed event that the last seal pass should have sealed (recorded before its cutoff)."""
    return last_sealed_through is not None and event.occurred_at <= last_sealed_through


def _check_link(
    event: SealedEvent,
    following: SealedEvent | None,
    previous: SealedEvent | None,
    previous_hash: str,
    before_previous: str,
    expected_seq: int,
) -> Problem | None:
    """Why ``event`` does not continue the chain at ``expected_seq``, or ``None`` if it does."""
    if event.seq == expected_seq and link(previous_hash, event.fields) == event.hash:
        return None
    if event.seq < expected_seq:  # a second event claims a position already taken
        return _inserted(event, "it claims a chain position another event holds")
    if (
        previous is not None
        and event.seq == expected_seq
        and link(before_previous, event.fields) == event.hash
    ):  # this event links past the previous one, so that one was slipped in
        return _inserted(previous, "the next event's hash skips over it")
    if following is not None and link(previous_hash, following.fields) == following.hash:
        return _inserted(event, "the next event's hash skips over it")
    if event.seq > expected_seq:
        return _deleted(expected_seq, event.seq - 1, previous, event)
    return Problem(
        ProblemKind.MODIFIED,
        event.id,
        event.seq,
        f"event {event.id} (seq {event.seq}) was modified: its stored fields no longer hash "
        "to its chain hash",
        "compare the row with a backup; if only its seal columns look wrong, the event before "
        "it may have been deleted and the chain renumbered. " + _RESEAL_HINT,
    )


def _inserted(event: SealedEvent, why: str) -> Problem:
    return Problem(
        ProblemKind.INSERTED,
        event.id,
        event.seq,
        f"event {event.id} (seq {event.seq}) was inserted: {why}",
        "delete the forged row only after keeping a copy as evidence; " + _RESEAL_HINT,
    )


def _deleted(
    first: int, last: int, before: SealedEvent | None, after: SealedEvent | None
) -> Problem:
    positions = f"seq {first}" if first == last else f"seq {first}-{last}"
    low = before.id if before is not None else 0
    event_id: int | None = None
    if after is not None and first == last and after.id - low == 2:
        event_id = low + 1  # ids are sealed in order, so the gap names the missing id
    between = (
        f"between event {low} and event {after.id}" if after is not None else f"after event {low}"
    )
    if before is None and first > 1:  # the kept chain's start, after a retention anchor
        event_id = None
        between = f"before event {after.id}" if after is not None else "after the anchor"
    named = f"event {event_id} " if event_id is not None else "the event(s) "
    return Problem(
        ProblemKind.DELETED,
        event_id,
        first,
        f"{named}at {positions} ({between}) was deleted",
        "restore the missing row(s) from a backup; " + _RESEAL_HINT,
    )


def _rewritten(event: SealedEvent, checkpoints: Sequence[Checkpoint]) -> Problem:
    earlier = [c.seq for c in checkpoints if c.seq < event.seq]
    start = max(earlier, default=0) + 1
    return Problem(
        ProblemKind.MODIFIED,
        event.id,
        event.seq,
        f"the chain between seq {start} and seq {event.seq} (event {event.id}) was modified and "
        "re-hashed: it disagrees with the signed checkpoint at that position",
        "an event in that range was changed, added or removed and the hashes recomputed; "
        + _RESEAL_HINT,
    )
