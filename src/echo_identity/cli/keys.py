"""``echo-identity keys``: JWS signing keys and their staged rotation."""

from __future__ import annotations

import click

from echo_identity.cli.runtime import emit, json_option, services_or_exit, settings_or_exit

# crypto.jwk.ALGORITHMS, repeated so that --help does not import joserfc and cryptography;
# tests/unit/test_cli.py fails when they drift apart.
ALGORITHMS = ("RS256", "ES256", "EdDSA")


@click.group()
def keys() -> None:
    """Signing keys (RS256, ES256, EdDSA) published at /jwks."""


@keys.command()
@click.option(
    "--alg",
    "algorithms",
    multiple=True,
    type=click.Choice(ALGORITHMS),
    help="Rotate only these algorithms (repeatable; default: all).",
)
@click.option(
    "--retire-now",
    is_flag=True,
    help="Suspected compromise: the new keys sign at once and the old keys of these "
    "algorithms are deleted: gone from /jwks, and every token they signed refused.",
)
@json_option
def rotate(algorithms: tuple[str, ...], retire_now: bool, as_json: bool) -> None:
    """Stage new signing keys: published now, signing after ECHO_KEY_PUBLISH_AHEAD seconds.

    Old keys keep signing until then and stay published until their tokens expire; running
    servers pick the change up within seconds, without a restart.

    With --retire-now nothing is staged: the old keys (private halves included) are deleted
    and the new ones sign at once. Within 5 seconds every server stops publishing and
    accepting the old keys, so every token they signed (access and ID tokens) is refused;
    relying parties that cache /jwks must refetch it.
    """
    from echo_identity.audit.events import EventType, Severity  # imported when the command runs
    from echo_identity.idp.keys import KeyInfo, SigningKeyStore

    services = services_or_exit(settings_or_exit())
    chosen = algorithms or ALGORITHMS
    with services.database.session() as session:
        store = SigningKeyStore(
            session, services.keyrings(session), services.provider.keys.schedule
        )
        retired: list[KeyInfo] = []
        if retire_now:
            created, retired = store.replace_now(chosen)
        else:
            created = store.rotate(chosen)
        for row in created:
            services.audit.record(
                session,
                EventType.KEY_ROTATED,
                actor="cli",
                details={
                    "kid": row.kid,
                    "alg": row.alg,
                    "activates_at": row.activates_at.isoformat(),
                },
            )
        for info in retired:
            services.audit.record(
                session,
                EventType.KEY_RETIRED,
                actor="cli",
                severity=Severity.WARNING,
                details={"kid": info.kid, "alg": info.alg},
            )
        session.commit()
        emit(
            {
                "created": [
                    {"kid": r.kid, "alg": r.alg, "activates_at": r.activates_at.isoformat()}
                    for r in created
                ],
                "retired": [{"kid": k.kid, "alg": k.alg} for k in retired],
            },
            "\n".join(
                [
                    *(
                        f"{r.alg}\t{r.kid}\tsigns from {r.activates_at:%Y-%m-%d %H:%M:%S} UTC"
                        for r in created
                    ),
                    *(f"{k.alg}\t{k.kid}\tretired (deleted)" for k in retired),
                ]
            ),
            as_json=as_json,
        )


@keys.command("list")
@json_option
def list_keys(as_json: bool) -> None:
    """Show every stored key and whether it is pending, signing, published or retired."""
    from echo_identity.db import utcnow  # imported when the command runs
    from echo_identity.idp.keys import KeyInfo, SigningKeyStore

    services = services_or_exit(settings_or_exit())
    with services.database.session() as session:
        schedule = services.provider.keys.schedule
        rows = SigningKeyStore(session, services.keyrings(session), schedule).rows()
        infos = [KeyInfo(r.kid, r.alg, r.created_at, r.activates_at) for r in rows]
        now = utcnow()
        published = {k.kid for k in schedule.published(infos, now)}
        signing = {k.kid for alg in ALGORITHMS if (k := schedule.signing(infos, alg, now))}

        def state(info: KeyInfo) -> str:
            if info.kid in signing:
                return "signing"
            if info.activates_at > now:
                return "pending"
            return "published" if info.kid in published else "retired"

        emit(
            {
                "keys": [
                    {
                        "kid": k.kid,
                        "alg": k.alg,
                        "state": state(k),
                        "activates_at": k.activates_at.isoformat(),
                    }
                    for k in infos
                ]
            },
            "\n".join(f"{k.alg}\t{k.kid}\t{state(k)}" for k in infos) or "no keys",
            as_json=as_json,
        )
