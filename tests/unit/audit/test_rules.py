"""Each detection rule fires on the pattern it describes and stays silent on normal traffic."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from echo_identity.audit import rules
from echo_identity.audit.events import EventType
from echo_identity.audit.records import EventRecord
from echo_identity.audit.rules import History, Rule, Thresholds
from echo_identity.business_hours import BusinessHours

T0 = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)  # a Wednesday, 10:00 UTC
LIMITS = Thresholds()
_ids = itertools.count(1)


def event(event_type: EventType, minute: float = 0, **fields: Any) -> EventRecord:
    return EventRecord(
        id=next(_ids),
        occurred_at=T0 + timedelta(minutes=minute),
        event_type=str(event_type),
        **fields,
    )


def failure(minute: float, account: str, ip: str = "198.51.100.7") -> EventRecord:
    return event(
        EventType.LOGIN_FAILURE,
        minute,
        outcome="failure",
        ip=ip,
        details={"typed_name": account},
    )


def read(minute: float, client: str = "billing", ip: str = "203.0.113.5") -> EventRecord:
    return event(EventType.VAULT_TOKEN_READ, minute, client_id=client, ip=ip, subject="u_alice")


def normal_traffic() -> list[EventRecord]:
    """A day of ordinary use: a few typos, sign-ins, reads from the usual network."""
    events = [
        failure(0, "u_alice"),
        event(EventType.LOGIN_SUCCESS, 1, subject="u_alice", ip="198.51.100.7"),
        failure(30, "u_bob", ip="198.51.100.8"),
        failure(31, "u_bob", ip="198.51.100.8"),
        event(EventType.LOGIN_SUCCESS, 32, subject="u_bob", ip="198.51.100.8"),
        event(EventType.TOKEN_ISSUED, 33, client_id="web"),
        event(EventType.TOKEN_REFRESHED, 60, client_id="web"),
        event(EventType.VAULT_TOKEN_DENIED, 61, client_id="billing", outcome="failure"),
        event(
            EventType.VAULT_REFRESH_FAILED,
            62,
            subject="u_alice",
            outcome="failure",
            details={"provider": "github", "error": "upstream_unavailable"},
        ),
    ]
    events += [read(90 + i, ip=f"203.0.113.{i % 200}") for i in range(20)]
    return sorted(events, key=lambda e: (e.occurred_at, e.id))


def history() -> History:
    return History({"billing": {"203.0.113.0/24"}}, {"billing": 20.0})


def all_rules(events: list[EventRecord], hours: BusinessHours | None = None) -> list[str]:
    return [f.rule for f in rules.evaluate(events, LIMITS, history(), hours)]


def test_normal_traffic_raises_nothing_with_every_rule_enabled() -> None:
    hours = BusinessHours.parse("08:00-18:00", "mon-fri", "UTC")
    assert all_rules(normal_traffic(), hours) == []


def test_five_failures_for_one_account_within_fifteen_minutes_fire() -> None:
    events = [failure(i * 2, "u_carol", ip=f"198.51.100.{i}") for i in range(5)]
    [finding] = rules.login_failures(events, LIMITS)
    assert finding.rule == Rule.LOGIN_FAILURES
    assert finding.key == "account:u_carol"
    assert finding.evidence == tuple(e.id for e in events)


def test_failures_spread_beyond_the_window_or_below_the_threshold_are_silent() -> None:
    spread = [failure(i * 5, "u_carol") for i in range(5)]  # 20 minutes end to end
    assert rules.login_failures(spread, LIMITS) == []
    assert rules.login_failures([failure(i, "u_carol") for i in range(4)], LIMITS) == []


def test_login_failures_count_the_subject_when_the_event_has_one() -> None:
    events = [event(EventType.LOGIN_FAILURE, i, subject="u_dave") for i in range(5)]
    assert [f.key for f in rules.login_failures(events, LIMITS)] == ["account:u_dave"]


def test_one_ip_failing_against_ten_accounts_is_spraying() -> None:
    events = [failure(i, f"u_{i}", ip="192.0.2.66") for i in range(10)]
    [finding] = rules.password_spraying(events, LIMITS)
    assert finding.rule == Rule.PASSWORD_SPRAYING
    assert finding.key == "ip:192.0.2.66"
    assert finding.severity == "high"


def test_many_failures_on_few_accounts_or_many_ips_are_not_spraying() -> None:
    same_accounts = [failure(i, f"u_{i % 3}", ip="192.0.2.66") for i in range(12)]
    many_ips = [failure(i, f"u_{i}", ip=f"192.0.2.{i}") for i in range(12)]
    assert rules.password_spraying(same_accounts, LIMITS) == []
    assert rules.password_spraying(many_ips, LIMITS) == []


def test_repeated_vault_denials_fire_per_client_and_per_ip() -> None:
    events = [
        event(EventType.VAULT_TOKEN_DENIED, i, client_id="billing", ip="192.0.2.9")
        for i in range(5)
    ]
    keys = sorted(f.key for f in rules.vault_denials(events, LIMITS))
    assert keys == ["client:billing", "ip:192.0.2.9"]


def test_occasional_vault_denials_are_silent() -> None:
    events = [
        event(EventType.VAULT_TOKEN_DENIED, i * 10, client_id="billing", ip="192.0.2.9")
        for i in range(5)
    ]
    assert rules.vault_denials(events, LIMITS) == []


def aggregated_denials(repeated: int, ip: str = "192.0.2.9") -> list[EventRecord]:
    """A burst stored the ``audit.refusals`` way: the window's first event, then its summary."""
    first = event(
        EventType.VAULT_TOKEN_DENIED,
        0,
        outcome="failure",
        client_id="billing",
        ip=ip,
        details={"error": "invalid_token", "aggregated": {"window": 60, "key": "k1"}},
    )
    summary = event(
        EventType.VAULT_TOKEN_DENIED,
        1.5,
        outcome="failure",
        actor="worker",
        client_id="billing",
        ip=ip,
        details={"repeated": repeated, "aggregated": {"key": "k1"}},
    )
    return [first, summary]


def test_an_aggregated_burst_of_vault_denials_fires_per_client_and_per_ip() -> None:
    # Two stored events standing for 500 denials: as loud as 500 separate rows.
    findings = rules.vault_denials(aggregated_denials(repeated=499), LIMITS)
    assert sorted(f.key for f in findings) == ["client:billing", "ip:192.0.2.9"]
    assert all(f.summary.startswith("500 refused vault reads") for f in findings)


def test_an_aggregated_window_counts_exactly_its_refusals() -> None:
    # first + 3 repeats = 4 denials: below the threshold of 5, so silent; 4 repeats fire.
    assert rules.vault_denials(aggregated_denials(repeated=3), LIMITS) == []
    assert len(rules.vault_denials(aggregated_denials(repeated=4), LIMITS)) == 2


def test_aggregated_login_failures_for_one_account_fire() -> None:
    burst = [
        failure(0, "u_erin"),
        event(
            EventType.LOGIN_FAILURE,
            1,
            outcome="failure",
            subject="u_erin",
            details={"repeated": 9, "aggregated": {"key": "k2"}},
        ),
    ]
    [finding] = rules.login_failures(burst, LIMITS)
    assert finding.key == "account:u_erin"
    assert finding.summary.startswith("10 failed sign-ins")


def test_a_summary_that_names_no_account_is_not_pinned_on_its_recorder() -> None:
    summaries = [
        event(
            EventType.LOGIN_FAILURE,
            i,
            outcome="failure",
            actor="worker",
            details={"repeated": 50, "aggregated": {"key": f"k{i}"}},
        )
        for i in range(5)
    ]
    assert rules.login_failures(summaries, LIMITS) == []
    assert rules.password_spraying(summaries, LIMITS) == []


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({}, 1),
        ({"repeated": 7}, 7),
        ({"repeated": 0}, 1),
        ({"repeated": -3}, 1),
        ({"repeated": "9"}, 1),
        ({"repeated": True}, 1),
    ],
)
def test_weight_counts_a_summary_as_its_repeats_and_anything_else_as_one(
    details: dict[str, Any], expected: int
) -> None:
    assert rules.weight(event(EventType.VAULT_TOKEN_DENIED, details=details)) == expected


def test_vault_read_from_an_unseen_prefix_fires_once_per_prefix() -> None:
    events = [read(0, ip="192.0.2.10"), read(1, ip="192.0.2.11"), read(2, ip="203.0.113.9")]
    [finding] = rules.new_ip_prefix(events, {"billing": {"203.0.113.0/24"}})
    assert finding.rule == Rule.NEW_IP_PREFIX
    assert finding.key == "billing:192.0.2.0/24"
    assert finding.evidence == (events[0].id,)


def test_ipv6_reads_are_compared_by_64_prefix() -> None:
    known = {"billing": {"2001:db8:1:2::/64"}}
    assert rules.new_ip_prefix([read(0, ip="2001:db8:1:2::99")], known) == []
    assert len(rules.new_ip_prefix([read(0, ip="2001:db8:1:3::1")], known)) == 1


def test_reads_from_known_prefixes_or_by_clients_without_history_are_silent() -> None:
    assert rules.new_ip_prefix([read(0, ip="203.0.113.200")], {"billing": {"203.0.113.0/24"}}) == []
    assert rules.new_ip_prefix([read(0, ip="192.0.2.1")], {}) == []


def test_access_outside_business_hours_fires_in_the_configured_time_zone() -> None:
    hours = BusinessHours.parse("08:00-18:00", "mon-fri", "Europe/Paris")
    # 06:30 UTC is 07:30 in Paris in November (UTC+1): before opening.
    early = event(EventType.LOGIN_SUCCESS, -210, subject="u_alice")
    # 07:30 UTC is 08:30 in Paris: open.
    open_ = event(EventType.LOGIN_SUCCESS, -150, subject="u_bob")
    saturday = EventRecord(
        id=next(_ids),
        occurred_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
        event_type=str(EventType.VAULT_TOKEN_READ),
        client_id="billing",
    )
    findings = rules.outside_business_hours([early, open_, saturday], hours)
    assert sorted(f.key for f in findings) == ["who:billing", "who:u_alice"]
    assert {f.rule for f in findings} == {Rule.OUTSIDE_BUSINESS_HOURS}


def test_business_hours_rule_is_silent_when_unset_or_within_hours() -> None:
    late = event(EventType.LOGIN_SUCCESS, 12 * 60, subject="u_alice")  # 22:00 UTC
    assert rules.outside_business_hours([late], None) == []
    assert BusinessHours.parse("", "mon-fri", "UTC") is None
    hours = BusinessHours.parse("09:00-17:00", "mon-fri", "UTC")
    assert rules.outside_business_hours([event(EventType.LOGIN_SUCCESS, 60)], hours) == []


def test_night_shift_hours_wrap_around_midnight() -> None:
    hours = BusinessHours.parse("22:00-06:00", "mon-sun", "UTC")
    assert hours is not None
    assert hours.contains(datetime(2026, 11, 18, 23, 0, tzinfo=UTC))
    assert not hours.contains(datetime(2026, 11, 18, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("hours", "days", "zone", "problem"),
    [
        ("8-18", "mon-fri", "UTC", "HH:MM-HH:MM"),
        ("08:00-18:00", "funday", "UTC", "unknown day"),
        ("08:00-18:00", "mon", "Mars/Base", "unknown time zone"),
    ],
)
def test_garbled_business_hours_are_refused(hours: str, days: str, zone: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        BusinessHours.parse(hours, days, zone)


def test_vault_reads_far_above_the_clients_baseline_fire() -> None:
    burst = [read(i * 0.5) for i in range(60)]  # 60 reads in 30 minutes
    [finding] = rules.vault_read_spike(burst, {"billing": 2.0}, LIMITS)
    assert finding.rule == Rule.VAULT_READ_SPIKE
    assert finding.key == "client:billing"
    assert len(finding.evidence) == 60


def test_vault_reads_near_baseline_or_without_baseline_are_silent() -> None:
    burst = [read(i * 0.5) for i in range(60)]
    assert rules.vault_read_spike(burst, {"billing": 30.0}, LIMITS) == []  # 60 < 10 x 30
    assert rules.vault_read_spike(burst, {}, LIMITS) == []
    few = [read(i) for i in range(20)]
    assert rules.vault_read_spike(few, {"billing": 0.1}, LIMITS) == []  # below the minimum


def test_refresh_token_reuse_fires_high_with_the_family_as_key() -> None:
    reuse = event(
        EventType.TOKEN_REUSE_DETECTED,
        client_id="web",
        outcome="failure",
        details={"family_id": "f1"},
    )
    [finding] = rules.refresh_token_reuse([reuse])
    assert (finding.rule, finding.severity, finding.key) == (
        Rule.REFRESH_TOKEN_REUSE,
        "high",
        "family:f1",
    )
    assert rules.refresh_token_reuse(normal_traffic()) == []


def test_authorization_code_reuse_fires_high() -> None:
    reuse = event(
        EventType.CODE_REUSE_DETECTED,
        client_id="web",
        outcome="failure",
        details={"family_id": "f2"},
    )
    [finding] = rules.code_reuse([reuse])
    assert (finding.rule, finding.severity) == (Rule.CODE_REUSE, "high")
    assert rules.code_reuse(normal_traffic()) == []


def test_vault_refresh_invalid_grant_fires_and_other_refresh_failures_do_not() -> None:
    revoked = event(
        EventType.VAULT_REFRESH_FAILED,
        subject="u_alice",
        outcome="failure",
        severity="high",
        details={"provider": "github", "error": "invalid_grant"},
    )
    [finding] = rules.vault_refresh_revoked([revoked])
    assert (finding.rule, finding.severity) == (Rule.VAULT_REFRESH_REVOKED, "high")
    assert finding.key == "connection:u_alice:github"
    assert rules.vault_refresh_revoked(normal_traffic()) == []


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),
        ("2001:db8::1", "2001:db8::/64"),
        ("not-an-ip", None),
        (None, None),
    ],
)
def test_ip_prefix(ip: str | None, prefix: str | None) -> None:
    assert rules.ip_prefix(ip) == prefix
