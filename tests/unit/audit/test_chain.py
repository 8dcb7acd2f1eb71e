"""The pure hash chain: canonical encoding, links, checkpoint signatures, and verify_chain
naming the first event that was modified, deleted or inserted."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from echo_identity.audit import chain
from echo_identity.audit.chain import (
    GENESIS,
    Checkpoint,
    ProblemKind,
    SealedEvent,
    UnsealedEvent,
    verify_chain,
)

KEY = Ed25519PrivateKey.generate()
KID = "audit-test"
PUBLIC = {KID: KEY.public_key()}
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def event(event_id: int, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": event_id,
        "occurred_at": T0 + timedelta(seconds=event_id),
        "event_type": "auth.login.success",
        "outcome": "success",
        "severity": "info",
        "actor": None,
        "subject": f"u_{event_id:032x}",
        "client_id": "client-a",
        "ip": "203.0.113.7",
        "user_agent": "probe/1.0",
        "request_id": f"req-{event_id}",
        "token_fingerprint": None,
        "details": {"n": event_id},
    }
    fields.update(overrides)
    return fields


def seal(fields: Sequence[dict[str, Any]], start_hash: str = GENESIS) -> list[SealedEvent]:
    sealed, head = [], start_hash
    for seq, item in enumerate(fields, start=1):
        head = chain.link(head, item)
        sealed.append(SealedEvent(seq, head, item))
    return sealed


def checkpoint(sealed: Sequence[SealedEvent], seq: int | None = None) -> Checkpoint:
    seq = sealed[-1].seq if seq is None else seq
    head = next(e.hash for e in sealed if e.seq == seq)
    return chain.sign_checkpoint(KEY, Checkpoint(seq, head, T0 + timedelta(hours=1), T0, KID))


def verify(sealed: Sequence[SealedEvent], checkpoints: Sequence[Checkpoint]) -> chain.ChainReport:
    return verify_chain(sealed, checkpoints, PUBLIC)


def test_canonical_encoding_is_deterministic_and_covers_id_and_time() -> None:
    assert chain.canonical(event(1)) == chain.canonical(dict(reversed(list(event(1).items()))))
    assert chain.canonical(event(1)) != chain.canonical(event(1, id=2))
    later = event(1, occurred_at=T0 + timedelta(seconds=1, microseconds=1))
    assert chain.canonical(event(1)) != chain.canonical(later)


def test_canonical_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        chain.canonical(event(1, occurred_at=datetime(2026, 1, 1)))


def test_link_depends_on_the_previous_hash() -> None:
    assert chain.link(GENESIS, event(1)) != chain.link("11" * 32, event(1))


def test_intact_chain_verifies_and_reports_its_head() -> None:
    sealed = seal([event(i) for i in range(1, 6)])
    report = verify(sealed, [checkpoint(sealed, 3), checkpoint(sealed)])
    assert report.problem is None
    assert (report.sealed, report.head_seq, report.head_hash) == (5, 5, sealed[-1].hash)


def test_empty_trail_is_intact() -> None:
    assert verify([], []).problem is None


@settings(max_examples=60, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=5),
    field=st.sampled_from(chain.CHAINED_FIELDS[2:]),
    value=st.text(max_size=8),
)
def test_any_modified_field_of_any_event_is_named_modified(
    position: int, field: str, value: str
) -> None:
    sealed = seal([event(i) for i in range(1, 7)])
    cp = checkpoint(sealed)
    target = sealed[position]
    changed = {**target.fields, field: value}
    if changed == target.fields:
        return
    sealed[position] = dataclasses.replace(target, fields=changed)
    problem = verify(sealed, [cp]).problem
    assert problem is not None
    assert (problem.kind, problem.event_id, problem.seq) == (
        ProblemKind.MODIFIED,
        target.id,
        target.seq,
    )


@settings(max_examples=30, deadline=None)
@given(position=st.integers(min_value=0, max_value=5))
def test_any_deleted_event_is_named_deleted(position: int) -> None:
    sealed = seal([event(i) for i in range(1, 7)])
    cp = checkpoint(sealed)
    removed = sealed.pop(position)
    problem = verify(sealed, [cp]).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, removed.seq)
    if position < 5:  # between two sealed neighbours the id is known exactly
        assert problem.event_id == removed.id
        assert f"event {removed.id}" in problem.message
    else:  # the last one: only the signed checkpoint knows it existed
        assert "after event 5" in problem.message


def test_deleting_the_trailing_events_is_caught_by_the_checkpoint() -> None:
    sealed = seal([event(i) for i in range(1, 6)])
    cp = checkpoint(sealed)
    problem = verify(sealed[:3], [cp]).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 4)
    assert "after event 3" in problem.message


def _renumbered_with(sealed: list[SealedEvent], position: int, forged: SealedEvent) -> list[Any]:
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in sealed[position:]]
    return [*sealed[:position], forged, *shifted]


@settings(max_examples=30, deadline=None)
@given(position=st.integers(min_value=0, max_value=4), forge_hash=st.booleans())
def test_an_event_inserted_in_the_middle_is_named_inserted(position: int, forge_hash: bool) -> None:
    sealed = seal([event(i) for i in range(1, 7)])
    cp = checkpoint(sealed)
    previous_hash = sealed[position - 1].hash if position else GENESIS
    fields = event(100, subject="u_forged")
    stored_hash = chain.link(previous_hash, fields) if forge_hash else "ab" * 32
    tampered = _renumbered_with(sealed, position, SealedEvent(position + 1, stored_hash, fields))
    problem = verify(tampered, [cp]).problem
    assert problem is not None
    assert (problem.kind, problem.event_id) == (ProblemKind.INSERTED, 100)


def test_an_event_claiming_a_taken_position_is_named_inserted() -> None:
    sealed = seal([event(i) for i in range(1, 5)])
    cp = checkpoint(sealed)
    forged = SealedEvent(2, chain.link(sealed[0].hash, event(50)), event(50))
    problem = verify([*sealed[:2], forged, *sealed[2:]], [cp]).problem
    assert problem is not None
    assert (problem.kind, problem.event_id) == (ProblemKind.INSERTED, 50)


def test_an_event_appended_after_the_last_checkpoint_with_a_valid_hash_is_inserted() -> None:
    sealed = seal([event(i) for i in range(1, 4)])
    cp = checkpoint(sealed)
    forged = SealedEvent(4, chain.link(sealed[-1].hash, event(4)), event(4))
    problem = verify([*sealed, forged], [cp]).problem
    assert problem is not None
    assert (problem.kind, problem.event_id, problem.seq) == (ProblemKind.INSERTED, 4, 4)


def test_a_rehashed_rewrite_is_caught_by_the_signed_checkpoint() -> None:
    original = [event(i) for i in range(1, 6)]
    cp = checkpoint(seal(original))
    rewritten = seal([*original[:2], event(3, outcome="failure"), *original[3:]])
    problem = verify(rewritten, [cp]).problem
    assert problem is not None
    assert problem.kind == ProblemKind.MODIFIED
    assert "checkpoint" in problem.message


def test_a_tampered_checkpoint_signature_fails() -> None:
    sealed = seal([event(i) for i in range(1, 4)])
    cp = checkpoint(sealed)
    flipped = ("A" if cp.signature[0] != "A" else "B") + cp.signature[1:]
    problem = verify(sealed, [dataclasses.replace(cp, signature=flipped)]).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.CHECKPOINT, 3)


def test_a_checkpoint_with_a_changed_head_or_unknown_key_fails() -> None:
    sealed = seal([event(i) for i in range(1, 4)])
    cp = checkpoint(sealed)
    moved = dataclasses.replace(cp, seq=2)  # signature covered seq 3
    assert verify(sealed, [moved]).problem is not None
    problem = verify_chain(sealed, [cp], {}).problem
    assert problem is not None
    assert problem.kind == ProblemKind.CHECKPOINT
    assert "unknown audit key" in problem.message


def test_a_checkpoint_signed_by_another_key_fails() -> None:
    sealed = seal([event(i) for i in range(1, 3)])
    other = Ed25519PrivateKey.generate()
    cp = Checkpoint(2, sealed[-1].hash, T0, T0, KID)
    forged = chain.sign_checkpoint(other, cp)
    problem = verify(sealed, [forged]).problem
    assert problem is not None
    assert problem.kind == ProblemKind.CHECKPOINT


def test_an_unsealed_event_older_than_the_last_seal_is_named_inserted() -> None:
    sealed = seal([event(i) for i in range(1, 4)])
    cp = checkpoint(sealed)
    old = UnsealedEvent(7, cp.sealed_through - timedelta(seconds=1))
    assert chain.is_misplaced(old, cp.sealed_through)
    assert not chain.is_misplaced(
        UnsealedEvent(8, cp.sealed_through + timedelta(1)), cp.sealed_through
    )
    problem = verify_chain(sealed, [cp], PUBLIC, first_misplaced_unsealed=old).problem
    assert problem is not None
    assert (problem.kind, problem.event_id) == (ProblemKind.INSERTED, 7)
