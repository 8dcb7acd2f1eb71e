"""Detection rules: pure functions from audit events to findings (no Flask, no database).

Every rule takes events sorted by time (``EventRecord``) plus what it needs from settings or
history, and returns :class:`Finding` objects. A finding names its rule, a severity, a *key*
(what it is about: an account, an IP, a client) used to de-duplicate alerts, a summary and the
ids of the events that prove it. ``docs/audit.md`` ("Detection rules") explains each default.

Rules that count events count their :func:`weight`: repeated identical refusals are stored as
one event per window plus a summary with a count (``audit.refusals``), and aggregation must
never hide an attack from a threshold.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.records import EventRecord
from echo_identity.business_hours import BusinessHours

MAX_EVIDENCE = 100
_ACCESS_EVENTS = {str(EventType.LOGIN_SUCCESS), str(EventType.VAULT_TOKEN_READ)}


class Rule:
    """The stable rule names stored on alerts."""

    LOGIN_FAILURES = "login_failures"
    PASSWORD_SPRAYING = "password_spraying"  # noqa: S105 - a rule name
    VAULT_DENIALS = "vault_denials"
    NEW_IP_PREFIX = "vault_new_ip_prefix"
    OUTSIDE_BUSINESS_HOURS = "outside_business_hours"
    VAULT_READ_SPIKE = "vault_read_spike"
    REFRESH_TOKEN_REUSE = "refresh_token_reuse"  # noqa: S105 - a rule name
    CODE_REUSE = "authorization_code_reuse"
    VAULT_REFRESH_REVOKED = "vault_refresh_invalid_grant"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    key: str
    summary: str
    evidence: tuple[int, ...]


@dataclass(frozen=True)
class Thresholds:
    login_failures: int = 5
    login_window: timedelta = timedelta(minutes=15)
    spray_accounts: int = 10
    spray_window: timedelta = timedelta(minutes=15)
    vault_denials: int = 5
    vault_denial_window: timedelta = timedelta(minutes=15)
    rate_factor: float = 10.0
    rate_min_reads: int = 50
    rate_window: timedelta = timedelta(hours=1)

    @property
    def lookback(self) -> timedelta:
        """How far before new events the sliding-window rules need to look."""
        return max(self.login_window, self.spray_window, self.vault_denial_window)


def ip_prefix(ip: str | None) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) network of ``ip``; ``None`` when it is not an address."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def weight(event: EventRecord) -> int:
    """How many occurrences ``event`` stands for: the summary of an aggregated refusal window
    stands for the ``details.repeated`` refusals that followed the window's first event (an
    event of its own, counted 1); every other event counts 1."""
    repeated = event.details.get("repeated")
    if isinstance(repeated, int) and not isinstance(repeated, bool) and repeated > 0:
        return repeated
    return 1


def _weighed(events: Iterable[EventRecord]) -> int:
    return sum(weight(event) for event in events)


def _evidence(events: Iterable[EventRecord]) -> tuple[int, ...]:
    ids = sorted({event.id for event in events})
    return tuple(ids[-MAX_EVIDENCE:])


def _of_type(events: Iterable[EventRecord], *types: EventType) -> list[EventRecord]:
    wanted = {str(t) for t in types}
    return [event for event in events if event.event_type in wanted]


def _group(
    events: Iterable[EventRecord], key: Callable[[EventRecord], str | None]
) -> dict[str, list[EventRecord]]:
    groups: dict[str, list[EventRecord]] = defaultdict(list)
    for event in events:
        value = key(event)
        if value:
            groups[value].append(event)
    return groups


def _latest_window(
    events: Sequence[EventRecord],
    window: timedelta,
    enough: Callable[[Sequence[EventRecord]], bool],
) -> Sequence[EventRecord] | None:
    """The last run of ``events`` spanning at most ``window`` for which ``enough`` holds."""
    found: Sequence[EventRecord] | None = None
    start = 0
    for end in range(len(events)):
        while events[end].occurred_at - events[start].occurred_at > window:
            start += 1
        span = events[start : end + 1]
        if enough(span):
            found = span
    return found


def account_of(event: EventRecord) -> str | None:
    """The account a login event is about: its subject (a pseudonym), else the keyed digest of
    a name that matches no account; ``None`` for a window summary that names none (the
    aggregated refusals may each have been about another account)."""
    typed = event.details.get("typed_name")
    if event.subject or typed:
        return event.subject or str(typed)
    return None if "repeated" in event.details else event.actor


def _minutes(window: timedelta) -> int:
    return int(window.total_seconds() // 60)


def login_failures(events: Sequence[EventRecord], limits: Thresholds) -> list[Finding]:
    """Repeated failed sign-ins for one account within the window."""
    findings = []
    failures = _of_type(events, EventType.LOGIN_FAILURE)
    for account, group in _group(failures, account_of).items():
        span = _latest_window(group, limits.login_window, _at_least(limits.login_failures))
        if span is not None:
            findings.append(
                Finding(
                    Rule.LOGIN_FAILURES,
                    str(Severity.WARNING),
                    f"account:{account}",
                    f"{_weighed(span)} failed sign-ins for account {account} "
                    f"within {_minutes(limits.login_window)} minutes",
                    _evidence(span),
                )
            )
    return findings


def password_spraying(events: Sequence[EventRecord], limits: Thresholds) -> list[Finding]:
    """One IP address failing to sign in to many different accounts within the window."""
    findings = []
    failures = _of_type(events, EventType.LOGIN_FAILURE)

    def enough(span: Sequence[EventRecord]) -> bool:
        return len({account_of(e) for e in span} - {None}) >= limits.spray_accounts

    for ip, group in _group(failures, lambda e: e.ip).items():
        span = _latest_window(group, limits.spray_window, enough)
        if span is not None:
            accounts = len({account_of(e) for e in span} - {None})
            findings.append(
                Finding(
                    Rule.PASSWORD_SPRAYING,
                    str(Severity.HIGH),
                    f"ip:{ip}",
                    f"IP {ip} failed to sign in to {accounts} accounts "
                    f"within {_minutes(limits.spray_window)} minutes",
                    _evidence(span),
                )
            )
    return findings


def vault_denials(events: Sequence[EventRecord], limits: Thresholds) -> list[Finding]:
    """Repeated refused vault reads by one client, or from one IP address."""
    findings = []
    denied = _of_type(events, EventType.VAULT_TOKEN_DENIED)
    by_client = _group(denied, lambda e: f"client:{e.client_id}" if e.client_id else None)
    by_ip = _group(denied, lambda e: f"ip:{e.ip}" if e.ip else None)
    for key, group in [*by_client.items(), *by_ip.items()]:
        span = _latest_window(group, limits.vault_denial_window, _at_least(limits.vault_denials))
        if span is not None:
            kind, _, who = key.partition(":")
            findings.append(
                Finding(
                    Rule.VAULT_DENIALS,
                    str(Severity.WARNING),
                    key,
                    f"{_weighed(span)} refused vault reads by {kind} {who} "
                    f"within {_minutes(limits.vault_denial_window)} minutes",
                    _evidence(span),
                )
            )
    return findings


def new_ip_prefix(
    events: Sequence[EventRecord], known_prefixes: Mapping[str, set[str]]
) -> list[Finding]:
    """A vault read from an IP prefix the client has not read from in the look-back period.

    ``known_prefixes`` maps each client *that has history* to the prefixes it used; a client
    with no history at all is still learning and never fires.
    """
    findings: dict[str, Finding] = {}
    for event in _of_type(events, EventType.VAULT_TOKEN_READ):
        prefix = ip_prefix(event.ip)
        client = event.client_id
        if client is None or prefix is None or client not in known_prefixes:
            continue
        if prefix in known_prefixes[client]:
            continue
        key = f"{client}:{prefix}"
        if key not in findings:
            findings[key] = Finding(
                Rule.NEW_IP_PREFIX,
                str(Severity.WARNING),
                key,
                f"client {client} read a vault token from {prefix}, "
                "a network it has not used recently",
                (event.id,),
            )
    return list(findings.values())


def outside_business_hours(
    events: Sequence[EventRecord], hours: BusinessHours | None
) -> list[Finding]:
    """Sign-ins and vault reads outside the configured business hours (disabled when unset)."""
    if hours is None:
        return []
    outside = [
        e for e in events if e.event_type in _ACCESS_EVENTS and not hours.contains(e.occurred_at)
    ]
    findings = []
    for who, group in _group(outside, lambda e: e.subject or e.client_id or e.actor).items():
        findings.append(
            Finding(
                Rule.OUTSIDE_BUSINESS_HOURS,
                str(Severity.WARNING),
                f"who:{who}",
                f"{len(group)} sign-ins or vault reads by {who} outside business hours",
                _evidence(group),
            )
        )
    return findings


def vault_read_spike(
    events: Sequence[EventRecord], hourly_baseline: Mapping[str, float], limits: Thresholds
) -> list[Finding]:
    """A client reading vault tokens far faster than its own hourly average.

    ``hourly_baseline`` maps each client with history to its average reads per hour; clients
    without a baseline never fire (nothing to compare against).
    """
    findings = []
    reads = _of_type(events, EventType.VAULT_TOKEN_READ)
    for client, group in _group(reads, lambda e: e.client_id).items():
        baseline = hourly_baseline.get(client, 0.0)
        if baseline <= 0:
            continue
        threshold = max(float(limits.rate_min_reads), limits.rate_factor * baseline)
        span = _latest_window(group, limits.rate_window, _at_least(threshold))
        if span is not None:
            findings.append(
                Finding(
                    Rule.VAULT_READ_SPIKE,
                    str(Severity.WARNING),
                    f"client:{client}",
                    f"client {client} read {_weighed(span)} vault tokens within "
                    f"{_minutes(limits.rate_window)} minutes (its average is "
                    f"{baseline:.1f} per hour)",
                    _evidence(span),
                )
            )
    return findings


def _at_least(count: float) -> Callable[[Sequence[EventRecord]], bool]:
    return lambda span: _weighed(span) >= count


def _each_event(
    events: Sequence[EventRecord],
    event_type: EventType,
    rule: str,
    describe: Callable[[EventRecord], tuple[str, str]],
    accept: Callable[[EventRecord], bool] = lambda _e: True,
) -> list[Finding]:
    findings = []
    for event in _of_type(events, event_type):
        if accept(event):
            key, summary = describe(event)
            findings.append(Finding(rule, str(Severity.HIGH), key, summary, (event.id,)))
    return findings


def _replayed(
    events: Sequence[EventRecord],
    event_type: EventType,
    rule: str,
    credential: str,
    replay: str,
    consequence: str,
) -> list[Finding]:
    """A finding per replay of a one-time credential, keyed by the token family it revoked."""
    return _each_event(
        events,
        event_type,
        rule,
        lambda e: (
            f"family:{e.details.get('family_id') or e.id}",
            f"{credential} of client {e.client_id} {replay} "
            f"(from {e.ip or 'unknown IP'}); {consequence}",
        ),
    )


def refresh_token_reuse(events: Sequence[EventRecord]) -> list[Finding]:
    """A rotated refresh token was presented again (its family is already revoked)."""
    return _replayed(
        events,
        EventType.TOKEN_REUSE_DETECTED,
        Rule.REFRESH_TOKEN_REUSE,
        "a used refresh token",
        "was presented again",
        "its token family was revoked",
    )


def code_reuse(events: Sequence[EventRecord]) -> list[Finding]:
    """An authorization code was redeemed twice (RFC 6749 §4.1.2)."""
    return _replayed(
        events,
        EventType.CODE_REUSE_DETECTED,
        Rule.CODE_REUSE,
        "an authorization code",
        "was redeemed twice",
        "the tokens it produced were revoked",
    )


def vault_refresh_revoked(events: Sequence[EventRecord]) -> list[Finding]:
    """The upstream provider answered ``invalid_grant`` to a vault refresh: the grant is gone."""
    return _each_event(
        events,
        EventType.VAULT_REFRESH_FAILED,
        Rule.VAULT_REFRESH_REVOKED,
        lambda e: (
            f"connection:{e.subject}:{e.details.get('provider') or e.details.get('connection_id')}",
            f"the provider refused to refresh a vault connection of {e.subject} "
            f"(invalid_grant); the user must reconnect",
        ),
        accept=lambda e: e.details.get("error") == "invalid_grant",
    )


@dataclass(frozen=True)
class History:
    """What the stateful rules need from before the events under evaluation."""

    known_prefixes: Mapping[str, set[str]]
    hourly_baseline: Mapping[str, float]


def evaluate(
    events: Sequence[EventRecord],
    limits: Thresholds,
    history: History,
    hours: BusinessHours | None,
) -> list[Finding]:
    """Every rule over ``events`` (sorted by time)."""
    return [
        *login_failures(events, limits),
        *password_spraying(events, limits),
        *vault_denials(events, limits),
        *new_ip_prefix(events, history.known_prefixes),
        *outside_business_hours(events, hours),
        *vault_read_spike(events, history.hourly_baseline, limits),
        *refresh_token_reuse(events),
        *code_reuse(events),
        *vault_refresh_revoked(events),
    ]
