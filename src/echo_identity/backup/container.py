"""The backup file format: a clear header, then zlib-compressed content encrypted with
AES-256-GCM in chunks. Pure: no database, no settings.

::

    +----------+-------------+---------------------+--------------------------------------+
    |  magic   | header len  | header (JSON, UTF-8) | chunk 0 | chunk 1 | … | final chunk   |
    |  8 bytes | 4 bytes, BE |  header len bytes    |                                      |
    +----------+-------------+---------------------+--------------------------------------+

    chunk = final flag (1 byte: 0 or 1) | length (4 bytes, BE) | nonce (12 B) | ciphertext + tag

The content key is random per file, wrapped by the backup key (a
:class:`~echo_identity.crypto.kek.KekProvider`: a local key or AWS KMS) and stored in the header
with the backup key's id, never the key. Each chunk's associated data is the SHA-256 of the
magic, length and header bytes, the chunk's index and its final flag, so an edited header, a
chunk moved, dropped or duplicated, and a file cut after any chunk all fail; bytes after the
final chunk are refused too. The content is streamed: writing and reading hold one chunk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from echo_identity.backup.errors import (
    BackupCorruptError,
    BackupKeyError,
    BackupTruncatedError,
    NotABackupError,
)
from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import KekProvider, UnknownKekError

MAGIC = b"ECHOBKUP"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20  # compressed bytes per chunk
MAX_HEADER_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
_AAD_PREFIX = b"echo-identity backup chunk\x00"
_LENGTH = struct.Struct(">I")
_FRAME = struct.Struct(">BI")  # final flag, length of nonce + ciphertext


@dataclass(frozen=True)
class Header:
    """The clear, authenticated header of a backup file (``fields`` is the whole JSON object)."""

    fields: dict[str, Any]
    digest: bytes  # SHA-256 of magic, length and header bytes: bound into every chunk

    @property
    def kind(self) -> str:
        return str(self.fields.get("kind", ""))

    @property
    def key_id(self) -> str:
        return str(self.fields["key_id"])

    @property
    def schema_revision(self) -> str:
        return str(self.fields.get("schema_revision", ""))

    @property
    def row_counts(self) -> dict[str, int]:
        counts = self.fields.get("tables", {})
        return {str(name): int(count) for name, count in counts.items()}


class ContainerWriter:
    """Writes one backup file to ``out``: the header at once, then :meth:`write` compresses and
    encrypts content chunk by chunk, and :meth:`close` writes the final chunk."""

    def __init__(
        self,
        out: BinaryIO,
        fields: dict[str, Any],
        keys: KekProvider,
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        """Wrap a new content key with ``keys`` and write the header: ``fields`` plus the
        format version, a random backup id, the backup key's id and the wrapped content key.

        Raises:
            KmsWrapError: a KMS backup key refused to wrap (from ``keys``).
        """
        backup_id = secrets.token_hex(16)
        content_key = secrets.token_bytes(aead.KEY_SIZE)
        key_id, wrapped = keys.wrap(content_key, _wrap_context(backup_id))
        header = {
            **fields,
            "format": FORMAT_VERSION,
            "backup_id": backup_id,
            "key_id": key_id,
            "wrapped_key": base64.b64encode(wrapped).decode("ascii"),
            "compression": "zlib",
        }
        raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        prefix = MAGIC + _LENGTH.pack(len(raw))
        out.write(prefix + raw)
        self._out = out
        self.key_id = key_id
        self._aes = AESGCM(content_key)
        self._digest = hashlib.sha256(prefix + raw).digest()
        self._compressor = zlib.compressobj(6)
        self._buffer = bytearray()
        self._chunk_size = chunk_size
        self._index = 0
        self.bytes_written = len(prefix) + len(raw)

    def write(self, data: bytes) -> None:
        """Compress ``data`` and write every chunk that is full."""
        self._buffer += self._compressor.compress(data)
        while len(self._buffer) >= self._chunk_size:
            self._emit(bytes(self._buffer[: self._chunk_size]), final=False)
            del self._buffer[: self._chunk_size]

    def close(self) -> None:
        """Flush the compressor and write the remaining content as the final chunk."""
        self._buffer += self._compressor.flush()
        while len(self._buffer) > self._chunk_size:
            self._emit(bytes(self._buffer[: self._chunk_size]), final=False)
            del self._buffer[: self._chunk_size]
        self._emit(bytes(self._buffer), final=True)
        self._buffer.clear()

    def _emit(self, plaintext: bytes, *, final: bool) -> None:
        nonce = os.urandom(aead.NONCE_SIZE)
        sealed = nonce + self._aes.encrypt(
            nonce, plaintext, _chunk_aad(self._digest, self._index, final)
        )
        frame = _FRAME.pack(int(final), len(sealed)) + sealed
        self._out.write(frame)
        self.bytes_written += len(frame)
        self._index += 1


def read_header(stream: BinaryIO) -> Header:
    """The header of the backup file ``stream`` is positioned at the start of; leaves the
    stream at the first chunk. The header is authenticated only when the chunks are read.

    Raises:
        NotABackupError: no backup magic, or a format version this code does not read.
        BackupTruncatedError: the file ends inside the header.
        BackupCorruptError: the header is not a JSON object with a key id.
    """
    prefix = stream.read(len(MAGIC) + _LENGTH.size)
    if prefix[: len(MAGIC)] != MAGIC[: len(prefix)] or len(prefix) < len(MAGIC):
        raise NotABackupError()
    if len(prefix) < len(MAGIC) + _LENGTH.size:
        raise BackupTruncatedError()
    (length,) = _LENGTH.unpack(prefix[len(MAGIC) :])
    if length > MAX_HEADER_SIZE:
        raise BackupCorruptError("the header length is out of range")
    raw = stream.read(length)
    if len(raw) < length:
        raise BackupTruncatedError()
    try:
        fields = json.loads(raw)
    except ValueError:
        raise BackupCorruptError("the header is not valid JSON") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("key_id"), str):
        raise BackupCorruptError("the header lacks its key id")
    if fields.get("format") != FORMAT_VERSION:
        raise NotABackupError(
            f"the backup has format {fields.get('format')!r}; this version of Echo Identity "
            f"reads format {FORMAT_VERSION}"
        )
    return Header(fields, hashlib.sha256(prefix + raw).digest())


def read_content(stream: BinaryIO, keys: KekProvider) -> tuple[Header, Iterator[bytes]]:
    """The header of backup ``stream`` and an iterator over its decompressed content, each
    chunk authenticated before any of its bytes is handed out.

    Raises (at once, or while iterating):
        NotABackupError, BackupTruncatedError, BackupCorruptError: as :func:`read_header`;
            a chunk failed authentication, was cut short, or bytes follow the final chunk.
        BackupKeyError: the backup key named in the header is not configured.
    """
    header = read_header(stream)
    aes = AESGCM(_content_key(header, keys))
    return header, _chunks(stream, aes, header.digest)


def _chunks(stream: BinaryIO, aes: AESGCM, digest: bytes) -> Iterator[bytes]:
    decompressor = zlib.decompressobj()
    index = 0
    while True:
        frame = stream.read(_FRAME.size)
        if len(frame) < _FRAME.size:
            raise BackupTruncatedError()
        final, length = _FRAME.unpack(frame)
        if final not in (0, 1) or not aead.NONCE_SIZE + aead.TAG_SIZE <= length <= MAX_CHUNK_SIZE:
            raise BackupCorruptError(f"chunk {index} has a malformed frame")
        sealed = stream.read(length)
        if len(sealed) < length:
            raise BackupTruncatedError()
        nonce, body = sealed[: aead.NONCE_SIZE], sealed[aead.NONCE_SIZE :]
        try:
            plaintext = aes.decrypt(nonce, body, _chunk_aad(digest, index, bool(final)))
        except InvalidTag:
            raise BackupCorruptError(
                f"chunk {index} failed authentication (altered, moved, or the header was edited)"
            ) from None
        try:
            data = decompressor.decompress(plaintext)
            if final:
                data += decompressor.flush()
        except zlib.error:
            raise BackupCorruptError(f"chunk {index} does not decompress") from None
        if data:
            yield data
        index += 1
        if final:
            break
    if not decompressor.eof or decompressor.unused_data or stream.read(1):
        raise BackupCorruptError("data follows the end of the content")


def _content_key(header: Header, keys: KekProvider) -> bytes:
    try:
        wrapped = base64.b64decode(str(header.fields.get("wrapped_key", "")), validate=True)
        backup_id = str(header.fields["backup_id"])
    except (ValueError, KeyError):
        raise BackupCorruptError("the header's wrapped key is malformed") from None
    try:
        key = keys.unwrap(header.key_id, wrapped, _wrap_context(backup_id))
    except UnknownKekError:
        raise BackupKeyError(
            f"the backup is encrypted under backup key {header.key_id}, which is not "
            "configured; set ECHO_BACKUP_KEY (or ECHO_BACKUP_KMS_KEY_ID) to that key"
        ) from None
    except DecryptionError as exc:
        if exc.code == "kms_unavailable":  # KMS did not answer: nothing known to be wrong
            raise BackupKeyError(f"{exc}; try again later") from None
        raise BackupCorruptError(
            f"the header's wrapped content key failed authentication ({exc})"
        ) from None
    if len(key) != aead.KEY_SIZE:
        raise BackupCorruptError("the content key has the wrong size")
    return key


def _wrap_context(backup_id: str) -> str:
    return f"backup:{backup_id}"


def _chunk_aad(digest: bytes, index: int, final: bool) -> bytes:
    return _AAD_PREFIX + digest + struct.pack(">QB", index, int(final))
