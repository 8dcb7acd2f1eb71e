"""The AES-256-GCM envelope format for secrets at rest (vault tokens, signing keys, wrapped DEKs).

A ciphertext is self-describing::

    +---------+------------+----------------+-----------+-------------------------------+
    | version | key-id len |     key id     |   nonce   |  AES-256-GCM ciphertext + tag |
    | 1 byte  |   1 byte   | 1-64 B, ASCII  |   12 B    |     len(plaintext) + 16 B     |
    +---------+------------+----------------+-----------+-------------------------------+

The GCM associated data is the whole header (version, key id, nonce) followed by the UTF-8
``context``, which names the row and field the ciphertext belongs to (for example
``connection:42:refresh_token``). Editing any header byte, or copying a ciphertext into another
row or field, therefore fails authentication. The header is length-prefixed, so header plus
context cannot be split two ways.

Every failure to decrypt is one exception, never garbage output::

    DecryptionError                 wrong key or context, tampering, truncation, bad header
    ├── crypto.kek.UnknownKekError       no configured KEK has the wrapped key's KEK id
    └── keys.keyring.UnknownDataKeyError    the DEK was destroyed (crypto-shredded)
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_KEY_ID_LENGTH = 64


class DecryptionError(Exception):
    """A ciphertext could not be decrypted. The message is stable and safe to log: it never
    carries key material or any part of the plaintext."""

    code = "decryption_failed"


_AUTHENTICATION_FAILED = (
    "ciphertext failed authentication: wrong key or context, or the ciphertext was altered"
)


def encrypt(key: bytes, key_id: str, plaintext: bytes, context: str) -> bytes:
    """Encrypt ``plaintext`` under ``key`` with a fresh random nonce, bound to ``context``.

    ``key_id`` names ``key`` in the header so the reader can find it again.

    Raises:
        ValueError: ``key`` is not 32 bytes, ``key_id`` is empty, not ASCII or longer than 64
            bytes, or ``context`` cannot be encoded as UTF-8.
    """
    aesgcm = AESGCM(_checked_key(key))
    if not key_id or not key_id.isascii() or len(key_id) > MAX_KEY_ID_LENGTH:
        raise ValueError(f"key id must be 1-{MAX_KEY_ID_LENGTH} ASCII characters")
    raw_id = key_id.encode("ascii")
    header = bytes((FORMAT_VERSION, len(raw_id))) + raw_id + os.urandom(NONCE_SIZE)
    nonce = header[-NONCE_SIZE:]
    return header + aesgcm.encrypt(nonce, plaintext, header + context.encode())


def decrypt(key: bytes, ciphertext: bytes, context: str) -> bytes:
    """The plaintext of ``ciphertext``, which must have been encrypted under ``key`` for
    exactly this ``context``.

    Raises:
        DecryptionError: wrong key, wrong context, any altered or missing byte, an unknown
            format version or a malformed header.
        ValueError: ``key`` is not 32 bytes, or ``context`` cannot be encoded as UTF-8.
    """
    aesgcm = AESGCM(_checked_key(key))
    header_length = _header_length(ciphertext)
    header = ciphertext[:header_length]
    if len(ciphertext) < header_length + TAG_SIZE:
        raise DecryptionError("ciphertext is truncated")
    try:
        return aesgcm.decrypt(
            header[-NONCE_SIZE:], ciphertext[header_length:], header + context.encode()
        )
    except InvalidTag:
        raise DecryptionError(_AUTHENTICATION_FAILED) from None


def key_id_of(ciphertext: bytes) -> str:
    """The key id named in the header of ``ciphertext``.

    The id is read before authentication: use it only to look up the key, whose
    :func:`decrypt` then rejects a ciphertext whose header was edited.

    Raises:
        DecryptionError: an unknown format version or a malformed header.
    """
    _header_length(ciphertext)
    raw_id = ciphertext[2 : 2 + ciphertext[1]]
    try:
        return raw_id.decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("ciphertext header is malformed: key id is not ASCII") from None


def _header_length(ciphertext: bytes) -> int:
    """The length of the header (version, key id, nonce) of ``ciphertext``.

    Raises:
        DecryptionError: the ciphertext is too short to hold a header, has an unknown format
            version, or its key-id length is out of range.
    """
    if len(ciphertext) < 2:
        raise DecryptionError("ciphertext is truncated")
    if ciphertext[0] != FORMAT_VERSION:
        raise DecryptionError(f"ciphertext has unknown format version {ciphertext[0]}")
    key_id_length = ciphertext[1]
    if not 1 <= key_id_length <= MAX_KEY_ID_LENGTH:
        raise DecryptionError("ciphertext header is malformed: key id length out of range")
    header_length = 2 + key_id_length + NONCE_SIZE
    if len(ciphertext) < header_length:
        raise DecryptionError("ciphertext is truncated")
    return header_length


def _checked_key(key: bytes) -> bytes:
    """``key`` itself when it is an AES-256 key.

    Raises:
        ValueError: ``key`` is not exactly 32 bytes (the message never shows the key).
    """
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256-GCM keys are {KEY_SIZE} bytes, got {len(key)}")
    return key
