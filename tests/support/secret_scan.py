"""Echo secrets found the way an outside secret scanner finds them: by their documented shape.

Implemented here from the format in docs/oidc.md ("Secret formats"), deliberately not imported
from ``echo_identity.crypto.secret_formats``, so a test built on it checks the format itself and
can also run against code from before the format existed.
"""

from __future__ import annotations

import re
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The shape alone (no checksum): a scanner of stored data should flag even a look-alike.
ECHO_SECRET_SHAPE = re.compile(r"echo_(cs|rt|ac|ss)_[0-9A-Za-z]{49}")


def crc32_base62(body: str) -> str:
    """The 6-character checksum of ``body``: its CRC32 in base62, zero-padded."""
    number, digits = zlib.crc32(body.encode()), ""
    while number:
        number, digit = divmod(number, 62)
        digits = BASE62[digit] + digits
    return digits.rjust(6, "0")


def echo_shaped(text: str) -> list[str]:
    """Every substring of ``text`` shaped like an Echo secret, checksum or not."""
    return [match.group(0) for match in ECHO_SECRET_SHAPE.finditer(text)]


def is_well_formed(value: str, kind: str) -> bool:
    """Whether ``value`` is one whole Echo secret of ``kind`` (``rt`` …) with a valid checksum."""
    match = ECHO_SECRET_SHAPE.fullmatch(value)
    return match is not None and match.group(1) == kind and value[-6:] == crc32_base62(value[:-6])
