"""The pure chain once old events are pruned: verification starts at a signed anchor, states
it, and still names a kept event that was modified or deleted, or an anchor that was forged."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from echo_identity.audit import chain
from echo_identity.audit.chain import Anchor, Checkpoint, ProblemKind, SealedEvent, verify_chain
from tests.unit.audit.test_chain import KEY, KID, PUBLIC, T0, checkpoint, event, seal

PRUNED = 4  # events 1-4 (seq 1-4) pruned, the chain kept from seq 5


def anchor_for(sealed: Sequence[SealedEvent], first_kept_seq: int = PRUNED + 1) -> Anchor:
    kept = sealed[first_kept_seq - 1]
    return chain.sign_anchor(
        KEY,
        Anchor(
            first_kept_seq=first_kept_seq,
            first_kept_id=kept.id,
            previous_hash=sealed[first_kept_seq - 2].hash,
            pruned_count=first_kept_seq - 1,
            pruned_from=T0,
            pruned_through=T0 + timedelta(seconds=first_kept_seq - 1),
            created_at=T0 + timedelta(days=400),
            key_id=KID,
        ),
    )


def pruned_trail() -> tuple[list[SealedEvent], list[Checkpoint], Anchor]:
    """Eight sealed events with checkpoints at 4 and 8; seq 1-4 pruned behind an anchor."""
    sealed = seal([event(i) for i in range(1, 9)])
    checkpoints = [checkpoint(sealed, PRUNED), checkpoint(sealed)]
    return sealed[PRUNED:], checkpoints, anchor_for(sealed)


def test_a_pruned_trail_verifies_from_its_anchor_and_reports_it() -> None:
    kept, checkpoints, anchor = pruned_trail()
    report = verify_chain(kept, checkpoints, PUBLIC, anchor=anchor)
    assert report.problem is None
    assert report.anchor == anchor
    assert (report.sealed, report.head_seq, report.head_hash) == (4, 8, kept[-1].hash)


def test_without_the_anchor_the_pruned_trail_is_reported_deleted() -> None:
    kept, checkpoints, _ = pruned_trail()
    problem = verify_chain(kept, checkpoints, PUBLIC).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, 1)


@pytest.mark.parametrize("position", range(4))
def test_a_modified_kept_event_is_named(position: int) -> None:
    kept, checkpoints, anchor = pruned_trail()
    changed = dict(kept[position].fields, ip="198.51.100.9")
    kept[position] = SealedEvent(kept[position].seq, kept[position].hash, changed)
    problem = verify_chain(kept, checkpoints, PUBLIC, anchor=anchor).problem
    assert problem is not None
    assert (problem.kind, problem.event_id) == (ProblemKind.MODIFIED, kept[position].id)


@pytest.mark.parametrize("position", range(3))
def test_a_kept_event_deleted_after_the_anchor_is_named(position: int) -> None:
    kept, checkpoints, anchor = pruned_trail()
    gone = kept.pop(position)
    problem = verify_chain(kept, checkpoints, PUBLIC, anchor=anchor).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.event_id) == (ProblemKind.DELETED, gone.seq, gone.id)
    assert f"event {gone.id} " in problem.message


def test_every_kept_event_deleted_is_caught() -> None:
    _, checkpoints, anchor = pruned_trail()
    problem = verify_chain([], checkpoints, PUBLIC, anchor=anchor).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, PRUNED + 1)
    assert problem.message == (
        f"event {anchor.first_kept_id} (the first kept, named by the retention anchor) "
        "at seq 5-8 (after the anchor) was deleted"
    )
    # even with the checkpoints after the anchor gone too: the anchor names a kept event
    problem = verify_chain([], checkpoints[:1], PUBLIC, anchor=anchor).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, PRUNED + 1)


def test_a_further_kept_event_pruned_without_a_new_anchor_is_caught() -> None:
    kept, checkpoints, anchor = pruned_trail()
    problem = verify_chain(kept[1:], checkpoints, PUBLIC, anchor=anchor).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.DELETED, PRUNED + 1)


@pytest.mark.parametrize(
    "forged",
    [
        {"pruned_count": PRUNED - 1},
        {"previous_hash": "11" * 32},
        {"first_kept_id": 6},
        {"pruned_from": T0 + timedelta(days=1)},
        {"pruned_through": T0 + timedelta(days=1)},
        {"created_at": T0},
        {"signature": "A" * 86},
        {"signature": "not base64 !"},
    ],
)
def test_a_forged_anchor_is_named(forged: dict[str, object]) -> None:
    kept, checkpoints, anchor = pruned_trail()
    forgery = dataclasses.replace(anchor, **forged)  # type: ignore[arg-type]
    problem = verify_chain(kept, checkpoints, PUBLIC, anchor=forgery).problem
    assert problem is not None
    assert problem.kind == ProblemKind.ANCHOR
    assert "does not verify" in problem.message


def test_an_anchor_signed_by_another_or_an_unknown_key_is_named() -> None:
    kept, checkpoints, anchor = pruned_trail()
    other = chain.sign_anchor(Ed25519PrivateKey.generate(), dataclasses.replace(anchor))
    for forgery in (other, dataclasses.replace(anchor, key_id="elsewhere")):
        problem = verify_chain(kept, checkpoints, PUBLIC, anchor=forgery).problem
        assert problem is not None
        assert problem.kind == ProblemKind.ANCHOR


def test_a_re_signed_anchor_moved_past_kept_events_is_caught() -> None:
    """Even the holder of the key cannot move the anchor past events that are still there:
    its count must match its position, and the kept chain must start at it."""
    sealed = seal([event(i) for i in range(1, 9)])
    checkpoints = [checkpoint(sealed, PRUNED), checkpoint(sealed)]
    honest = anchor_for(sealed, PRUNED + 1)
    miscounted = chain.sign_anchor(KEY, dataclasses.replace(honest, pruned_count=PRUNED + 2))
    problem = verify_chain(sealed[PRUNED:], checkpoints, PUBLIC, anchor=miscounted).problem
    assert problem is not None
    assert problem.kind == ProblemKind.ANCHOR
    wrong_head = chain.sign_anchor(KEY, dataclasses.replace(honest, previous_hash="22" * 32))
    problem = verify_chain(sealed[PRUNED:], checkpoints, PUBLIC, anchor=wrong_head).problem
    assert problem is not None
    assert problem.kind == ProblemKind.ANCHOR


def test_a_re_signed_anchor_naming_another_first_event_is_caught() -> None:
    sealed = seal([event(i) for i in range(1, 9)])
    checkpoints = [checkpoint(sealed, PRUNED), checkpoint(sealed)]
    renamed = chain.sign_anchor(KEY, dataclasses.replace(anchor_for(sealed), first_kept_id=99))
    problem = verify_chain(sealed[PRUNED:], checkpoints, PUBLIC, anchor=renamed).problem
    assert problem is not None
    assert (problem.kind, problem.event_id) == (ProblemKind.ANCHOR, 99)


def test_anchor_signatures_are_not_checkpoint_signatures() -> None:
    """The two statements are signed under different domains: one never passes for the other."""
    _, _, anchor = pruned_trail()
    as_checkpoint = Checkpoint(1, anchor.previous_hash, T0, T0, KID, anchor.signature)
    assert not chain.checkpoint_signature_valid(KEY.public_key(), as_checkpoint)
    assert chain.anchor_signature_valid(KEY.public_key(), anchor)


def test_signing_an_anchor_with_a_naive_time_is_refused() -> None:
    _, _, anchor = pruned_trail()
    with pytest.raises(ValueError, match="naive"):
        chain.sign_anchor(KEY, dataclasses.replace(anchor, created_at=T0.replace(tzinfo=None)))
