"""The backup file format: chunks authenticated against the header, their order and the end of
the file; streamed in constant memory."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest

from echo_identity.backup.container import ContainerWriter, read_content, read_header
from echo_identity.backup.errors import (
    BackupCorruptError,
    BackupError,
    BackupKeyError,
    BackupTruncatedError,
    NotABackupError,
)
from echo_identity.crypto.kek import LocalKekProvider, local_kek_id

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
FIELDS = {"kind": "data", "schema_revision": "0010", "tables": {"users": 3}}


def written(content: bytes, *, chunk_size: int = 64, pieces: int = 7) -> bytes:
    out = io.BytesIO()
    writer = ContainerWriter(out, FIELDS, LocalKekProvider([KEY]), chunk_size=chunk_size)
    step = max(1, len(content) // pieces)
    for start in range(0, len(content), step):
        writer.write(content[start : start + step])
    writer.close()
    return out.getvalue()


def read(data: bytes, key: bytes = KEY) -> bytes:
    _, content = read_content(io.BytesIO(data), LocalKekProvider([key]))
    return b"".join(content)


def chunk_offsets(data: bytes) -> list[int]:
    """Where each chunk's frame starts."""
    position = 12 + int.from_bytes(data[8:12], "big")
    offsets = []
    while position < len(data):
        offsets.append(position)
        position += 5 + int.from_bytes(data[position + 1 : position + 5], "big")
    return offsets


CONTENT = os.urandom(300) + b"compressible " * 50  # several chunks of 64 compressed bytes


def test_content_round_trips_over_several_chunks() -> None:
    data = written(CONTENT)

    assert len(chunk_offsets(data)) > 3
    assert read(data) == CONTENT


def test_the_header_names_the_key_by_its_fingerprint_never_the_key() -> None:
    data = written(CONTENT)
    header = read_header(io.BytesIO(data))

    assert header.key_id == local_kek_id(KEY)
    assert header.fields["schema_revision"] == "0010"
    assert header.row_counts == {"users": 3}
    assert KEY not in data
    assert KEY.hex().encode() not in data


def test_every_single_flipped_bit_anywhere_in_the_file_is_refused() -> None:
    data = written(CONTENT[:200], chunk_size=48)
    for position in range(len(data)):
        for bit in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[position] ^= bit
            with pytest.raises(BackupError):
                read(bytes(damaged))


def test_a_flipped_byte_in_a_chunk_names_that_chunk() -> None:
    data = written(CONTENT)
    third = chunk_offsets(data)[3]
    damaged = bytearray(data)
    damaged[third + 30] ^= 0x01

    with pytest.raises(BackupCorruptError, match="chunk 3 failed authentication"):
        read(bytes(damaged))


def test_every_truncation_is_refused() -> None:
    data = written(CONTENT[:200], chunk_size=48)
    for length in range(len(data)):
        with pytest.raises((BackupTruncatedError, NotABackupError)):
            read(data[:length])


def test_a_file_cut_exactly_between_chunks_is_refused_as_truncated() -> None:
    data = written(CONTENT)

    with pytest.raises(BackupTruncatedError):
        read(data[: chunk_offsets(data)[-1]])


def test_swapped_chunks_are_refused() -> None:
    data = written(CONTENT)
    first, second, third = chunk_offsets(data)[:3]
    swapped = data[:first] + data[second:third] + data[first:second] + data[third:]

    with pytest.raises(BackupCorruptError, match="chunk 0 failed authentication"):
        read(swapped)


def test_a_chunk_from_another_backup_with_the_same_key_is_refused() -> None:
    one, other = written(CONTENT), written(CONTENT)
    offsets_one, offsets_other = chunk_offsets(one), chunk_offsets(other)
    mixed = one[: offsets_one[1]] + other[offsets_other[1] :]

    with pytest.raises(BackupCorruptError, match="chunk 1 failed authentication"):
        read(mixed)


def test_bytes_after_the_final_chunk_are_refused() -> None:
    with pytest.raises(BackupCorruptError, match="follows the end"):
        read(written(CONTENT) + b"\x00")


def test_an_edited_header_that_still_parses_fails_the_first_chunk() -> None:
    data = written(CONTENT)
    edited = data.replace(b'"users":3', b'"users":4')
    assert edited != data

    with pytest.raises(BackupCorruptError, match="chunk 0 failed authentication"):
        read(edited)


def test_another_backup_key_is_named_by_its_id_and_nothing_is_decrypted() -> None:
    with pytest.raises(BackupKeyError, match=local_kek_id(KEY)):
        read(written(CONTENT), key=OTHER_KEY)


def test_a_file_that_is_not_a_backup_is_refused() -> None:
    for data in (b"", b"PK\x03\x04 a zip file", b"\xff\xfe\x80 not utf-8"):
        with pytest.raises(NotABackupError):
            read(data)


def test_writing_and_reading_hold_a_few_chunks_not_the_whole_content(tmp_path: Path) -> None:
    megabyte = os.urandom(1 << 20)  # incompressible: 48 chunks of 1 MiB
    path = tmp_path / "big.backup"
    tracemalloc.start()
    try:
        with path.open("wb") as out:
            writer = ContainerWriter(out, FIELDS, LocalKekProvider([KEY]), chunk_size=1 << 20)
            for _ in range(48):
                writer.write(megabyte)
            writer.close()
        _, peak_writing = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.open("rb") as stream:
            _, content = read_content(stream, LocalKekProvider([KEY]))
            total = sum(len(piece) for piece in content)
        _, peak_reading = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total == 48 << 20
    assert peak_writing < 12 << 20
    assert peak_reading < 12 << 20
