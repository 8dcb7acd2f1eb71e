"""accepted_request_id: keep a well-formed incoming X-Request-ID, otherwise mint one."""

from __future__ import annotations

import re

import pytest

from echo_identity.web.request_id import accepted_request_id

FRESH = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "incoming",
    ["abcdefgh", "req-2024.01:01_abc", "0123456789abcdef0123456789abcdef", "a" * 128],
)
def test_well_formed_request_id_is_kept(incoming: str) -> None:
    assert accepted_request_id(incoming) == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        None,
        "",
        "abcdefg",
        "a" * 129,
        "-abcdefgh",
        "abc defgh",
        "abcdefgh\n",
        "abcdefgh\r\nX-Injected: 1",
        'abc"defgh',
        "abc'defgh",
        "abc<defgh>",
    ],
    ids=[
        "none",
        "empty",
        "7-chars",
        "129-chars",
        "leading-dash",
        "space",
        "newline",
        "header-injection",
        "double-quote",
        "single-quote",
        "angle-brackets",
    ],
)
def test_malformed_request_id_is_replaced_by_a_fresh_32_hex_id(incoming: str | None) -> None:
    replaced = accepted_request_id(incoming)

    assert replaced != incoming
    assert FRESH.fullmatch(replaced)


def test_fresh_request_ids_differ() -> None:
    assert len({accepted_request_id(None) for _ in range(100)}) == 100
