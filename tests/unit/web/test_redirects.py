"""safe_next: only same-site paths survive as redirect targets."""

from __future__ import annotations

import pytest

from echo_identity.web.redirects import safe_next


@pytest.mark.parametrize(
    "target", ["/account", "/authorize?x=1", "/authorize?redirect_uri=https%3A%2F%2Frp.example"]
)
def test_same_site_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "account",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/ok\\x",
        "/\t/evil.example",
        "/account\nSet-Cookie: x=1",
        "/account\r\n",
        "/acc\x00ount",
        "javascript:alert(1)",
        " /account",
    ],
)
def test_unsafe_targets_fall_back_to_the_default(target: str | None) -> None:
    assert safe_next(target) == "/account"
    assert safe_next(target, default="/login") == "/login"


def test_targets_up_to_2048_characters_are_kept() -> None:
    target = "/" + "a" * 2047
    assert safe_next(target) == target


def test_targets_over_2048_characters_fall_back_to_the_default() -> None:
    assert safe_next("/" + "a" * 2048) == "/account"
