"""What the identity provider contributes to the security report (``echo_identity.reports``):
the age and state of every OIDC signing key, measured against the rotation policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.idp.models import SigningKey


@dataclass(frozen=True)
class SigningKeyAge:
    kid: str
    alg: str
    created_at: str
    age_days: int
    state: str  # pending | signing | retiring
    rotation_due: bool  # the signing key of this algorithm is older than the policy


def signing_key_ages(session: Session, now: datetime, max_age_days: int) -> list[SigningKeyAge]:
    """Every signing key (ordered by algorithm, then age): ``signing`` is the newest active
    key of its algorithm, ``rotation_due`` says that one is older than ``max_age_days``."""
    keys = list(session.scalars(select(SigningKey).order_by(SigningKey.alg)))
    limit = timedelta(days=max_age_days)
    signing: dict[str, SigningKey] = {}
    for key in keys:
        current = signing.get(key.alg)
        if key.activates_at <= now and (
            current is None
            or (key.activates_at, key.created_at) > (current.activates_at, current.created_at)
        ):
            signing[key.alg] = key
    result = []
    for key in keys:
        active = signing.get(key.alg)
        state = "pending" if key.activates_at > now else "signing" if key is active else "retiring"
        result.append(
            SigningKeyAge(
                kid=key.kid,
                alg=key.alg,
                created_at=key.created_at.astimezone(UTC).isoformat(timespec="seconds"),
                age_days=max(0, (now - key.created_at).days),
                state=state,
                rotation_due=active is not None and now - active.created_at > limit,
            )
        )
    return sorted(result, key=lambda k: (k.alg, k.created_at))
