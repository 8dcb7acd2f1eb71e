"""Recognisable secrets: a type prefix and a checksum on every opaque secret Echo Identity mints.

The format follows GitHub's 2021 token format (``ghp_`` + random + CRC32)::

    echo_rt_ 7Qh0…(43 base62 characters: 256 random bits)… 1fZ9aB
    └prefix┘ └──────────────── random ─────────────────┘ └CRC32┘

- the prefix ``echo_<kind>_`` says what leaked (``cs`` client secret, ``rt`` refresh token,
  ``ac`` authorization code, ``ss`` browser session id) and lets a scanner find the value;
- the last 6 base62 characters are the CRC32 of everything before them (prefix included), so
  a scanner or our own log redaction can tell a real secret from a look-alike offline, and a
  value whose prefix was changed is no longer valid.

The checksum is not a MAC: it proves nothing about who minted a value. Lookup stays by digest
of the whole presented string, so values minted before this format keep working until they
expire. Pure: no Flask, no database.
"""

from __future__ import annotations

import re
import secrets
import string
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_LENGTH = 43  # 62**43 > 2**256: at least 256 bits of entropy
CHECKSUM_LENGTH = 6  # 62**6 > 2**32: room for any CRC32


class SecretKind(StrEnum):
    """The kinds of secret Echo mints; the value is the two letters of the prefix."""

    CLIENT_SECRET = "cs"  # noqa: S105 - a prefix, not a secret
    REFRESH_TOKEN = "rt"  # noqa: S105 - a prefix, not a token
    AUTHORIZATION_CODE = "ac"
    SESSION_ID = "ss"


def prefix(kind: SecretKind) -> str:
    return f"echo_{kind.value}_"


SECRET_LENGTH = len(prefix(SecretKind.CLIENT_SECRET)) + RANDOM_LENGTH + CHECKSUM_LENGTH
# The shape alone; a match is an Echo secret only if its checksum is valid. No word boundary
# on either side: a secret glued to other text (``tokenecho_rt_…``) must still be found, and the
# checksum, not the surroundings, keeps look-alikes out.
PATTERN = re.compile(
    "echo_(" + "|".join(kind.value for kind in SecretKind) + ")_"
    f"[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}"
)
_MARKER = "echo_"


@dataclass(frozen=True)
class FoundSecret:
    """A checksum-valid Echo secret inside a text, at ``text[start:end]``."""

    kind: SecretKind
    value: str
    start: int
    end: int


def _checksum(body: str) -> str:
    number = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def mint(kind: SecretKind) -> str:
    """A new secret of ``kind``: prefix, 256 random bits in base62, CRC32 checksum."""
    body = prefix(kind) + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + _checksum(body)


def _valid(candidate: str) -> bool:
    body, check = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]
    return _checksum(body) == check


def _valid_matches(text: str) -> Iterator[re.Match[str]]:
    # A look-alike must not hide a real secret that starts inside it ("echo_rt_" + 45 letters
    # glued to a secret): after a match whose checksum fails, search again one character on.
    if _MARKER not in text:  # the common case, and much cheaper than the regex
        return
    position = 0
    while (match := PATTERN.search(text, position)) is not None:
        if _valid(match.group(0)):
            yield match
            position = match.end()
        else:
            position = match.start() + 1


def find_secrets(text: str) -> list[FoundSecret]:
    """Every checksum-valid Echo secret in ``text``, in order; ``[]`` when there is none."""
    return [
        FoundSecret(SecretKind(match.group(1)), match.group(0), match.start(), match.end())
        for match in _valid_matches(text)
    ]


def is_echo_secret(value: str) -> bool:
    """Whether ``value`` is exactly one checksum-valid Echo secret (of any kind)."""
    return PATTERN.fullmatch(value) is not None and _valid(value)


def replace_secrets(text: str, replacement: Callable[[str], str]) -> str:
    """``text`` with every checksum-valid Echo secret replaced by ``replacement(secret)``."""
    parts: list[str] = []
    position = 0
    for match in _valid_matches(text):
        parts += (text[position : match.start()], replacement(match.group(0)))
        position = match.end()
    if not parts:
        return text
    parts.append(text[position:])
    return "".join(parts)
