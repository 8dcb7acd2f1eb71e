"""Recognisable secrets: prefix, 256 random bits, CRC32; found only when the checksum holds."""

from __future__ import annotations

import base64
import json
import math
import secrets
import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo_identity.crypto.secret_formats import (
    ALPHABET,
    RANDOM_LENGTH,
    SecretKind,
    find_secrets,
    is_echo_secret,
    mint,
    replace_secrets,
)
from tests.support.secret_scan import BASE62, crc32_base62

PREFIXES = {
    SecretKind.CLIENT_SECRET: "echo_cs_",
    SecretKind.REFRESH_TOKEN: "echo_rt_",
    SecretKind.AUTHORIZATION_CODE: "echo_ac_",
    SecretKind.SESSION_ID: "echo_ss_",
}
kinds = st.sampled_from(list(SecretKind))


def fake_jwt() -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return ".".join(
        (part({"alg": "ES256"}), part({"sub": str(uuid.uuid4())}), secrets.token_urlsafe(64))
    )


@pytest.mark.parametrize("kind", list(SecretKind))
def test_minted_secret_is_prefix_random_base62_and_crc32_of_the_rest(kind: SecretKind) -> None:
    value = mint(kind)

    assert value.startswith(PREFIXES[kind])
    body, check = value[:-6], value[-6:]
    random_part = body[len(PREFIXES[kind]) :]
    assert len(random_part) == 43
    assert set(random_part) <= set(BASE62)
    assert check == crc32_base62(body)
    assert is_echo_secret(value)
    assert [(found.kind, found.value) for found in find_secrets(value)] == [(kind, value)]


def test_random_part_carries_at_least_256_bits() -> None:
    assert ALPHABET == BASE62
    assert RANDOM_LENGTH * math.log2(62) >= 256


def test_random_part_uses_the_whole_alphabet_evenly() -> None:
    # 2,000 secrets: each character is expected ~1,387 times (sd ~37); a skewed or truncated
    # alphabet (digits only, a modulo bias of base64 bytes) falls far outside this band.
    counts = Counter("".join(mint(SecretKind.REFRESH_TOKEN)[8:-6] for _ in range(2000)))
    assert set(counts) == set(BASE62)
    assert all(1100 < count < 1700 for count in counts.values())


def test_minted_secrets_differ() -> None:
    assert len({mint(SecretKind.SESSION_ID) for _ in range(1000)}) == 1000


@given(kind=kinds, data=st.data())
def test_any_single_changed_character_invalidates_the_secret(
    kind: SecretKind, data: st.DataObject
) -> None:
    value = mint(kind)
    index = data.draw(st.integers(min_value=8, max_value=len(value) - 1))
    other = data.draw(st.sampled_from(BASE62.replace(value[index], "")))
    changed = value[:index] + other + value[index + 1 :]

    assert not is_echo_secret(changed)
    assert find_secrets(changed) == []


@pytest.mark.parametrize(("kind", "other"), [("rt", "cs"), ("ac", "ss"), ("ss", "rt")])
def test_secret_relabelled_as_another_kind_is_invalid(kind: str, other: str) -> None:
    # The checksum covers the prefix: a refresh token cannot pass for a client secret.
    value = mint(SecretKind(kind))

    assert not is_echo_secret(value.replace(f"echo_{kind}_", f"echo_{other}_", 1))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "echo_rt_",
        "x",
        " {s}",
        "{s} ",
        "{s}0",
        "x{s}",
        "{s}{s}",
        "ECHO_RT_{tail}",
        "echo_xx_{tail}",
    ],
)
def test_is_echo_secret_wants_exactly_one_whole_secret(value: str) -> None:
    secret = mint(SecretKind.REFRESH_TOKEN)
    assert not is_echo_secret(value.format(s=secret, tail=secret[8:]))


@given(
    kinds=st.lists(kinds, min_size=1, max_size=4),
    gaps=st.lists(st.text(max_size=40), min_size=5, max_size=5),
)
def test_find_secrets_finds_every_minted_secret_in_any_text(
    kinds: list[SecretKind], gaps: list[str]
) -> None:
    values = [mint(kind) for kind in kinds]
    text = gaps[0] + "".join(value + gap for value, gap in zip(values, gaps[1:], strict=False))

    found = find_secrets(text)

    assert [f.value for f in found] == values
    assert [f.kind for f in found] == kinds
    assert all(text[f.start : f.end] == f.value for f in found)


@given(kind=kinds, run=st.text(alphabet=BASE62, min_size=45, max_size=45))
def test_a_look_alike_glued_before_a_secret_does_not_hide_it(kind: SecretKind, run: str) -> None:
    # "echo_rt_" + 45 letters + a real secret: "echo_rt_" + the 45 letters + "echo" has the
    # right shape and a wrong checksum; the real secret starting inside it must still be found.
    value = mint(kind)
    text = "echo_rt_" + run + value

    assert value in [found.value for found in find_secrets(text)]
    assert value not in replace_secrets(text, lambda _s: "[masked]")


@given(text=st.text(max_size=500))
def test_find_secrets_reports_nothing_in_random_text(text: str) -> None:
    assert find_secrets(text) == []


@given(
    kind=kinds,
    body=st.text(alphabet=BASE62, min_size=49, max_size=49),
)
def test_right_shape_with_a_wrong_checksum_is_not_a_secret(kind: SecretKind, body: str) -> None:
    candidate = PREFIXES[kind] + body
    is_valid = candidate[-6:] == crc32_base62(candidate[:-6])

    assert is_echo_secret(candidate) is is_valid
    assert bool(find_secrets(f"saw {candidate} here")) is is_valid


def test_no_false_positives_in_uuids_jwts_and_old_format_tokens() -> None:
    text = " ".join(
        [str(uuid.uuid4()) for _ in range(200)]
        + [fake_jwt() for _ in range(200)]
        + [secrets.token_urlsafe(32) for _ in range(200)]
        + ["echo_rt_" + secrets.token_urlsafe(40) for _ in range(200)]
        + ["echo_cs_" + "".join(secrets.choice(BASE62) for _ in range(49)) for _ in range(200)]
    )

    assert find_secrets(text) == []


def test_replace_secrets_replaces_only_valid_secrets_and_keeps_the_rest() -> None:
    good, bad = mint(SecretKind.CLIENT_SECRET), mint(SecretKind.CLIENT_SECRET)
    bad = bad[:-1] + ("A" if bad[-1] != "A" else "B")
    text = f"a {good}, b {bad}; c={good}"

    assert replace_secrets(text, lambda s: f"<{len(s)}>") == f"a <57>, b {bad}; c=<57>"
    assert replace_secrets("nothing here", lambda s: "x") == "nothing here"
