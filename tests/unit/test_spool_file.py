"""The ingress spool file format: durable appends, bounded size, corruption tolerance, restart (no servers)."""

from __future__ import annotations

import os

import pytest
from structlog.testing import capture_logs

from ingest.spool import HEADER_SIZE, SUFFIX, Spool, SpoolFull, decode_records, encode_record


def records(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f'{{"n":{i}}}'.encode()) for i in range(start, start + n)]


def read_all(spool: Spool) -> list[tuple[bytes, bytes]]:
    spool.seal()
    return [r for segment in spool.sealed() for r in spool.read(segment)]


def test_appends_are_read_back_in_order_and_survive_a_restart(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    for key, value in records(5):
        spool.append(key, value)
    assert spool.pending == 5
    spool.close()  # the process goes away; nothing else is flushed later

    again = Spool(tmp_path, 1 << 20)
    assert again.pending == 5
    again.append(b"k5", b'{"n":5}')  # a new segment after the old ones
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 2
    assert read_all(again) == records(6)


def test_segments_rotate_and_are_removed_only_when_acknowledged(tmp_path):
    spool = Spool(tmp_path, 1 << 20, segment_bytes=200)
    for key, value in records(20):
        spool.append(key, value)
    segments = spool.sealed()
    assert len(segments) >= 2
    first = segments[0]
    count = len(spool.read(first))
    spool.acknowledge(first, 1)
    assert spool.pending == 19
    spool.remove(first)
    assert not first.path.exists()
    assert spool.pending == 20 - count
    assert read_all(spool) == records(20)[count:]


def test_a_full_spool_refuses_with_spoolfull(tmp_path):
    frame = len(encode_record(b"k0", b'{"n":0}'))
    spool = Spool(tmp_path, frame * 3 + 1)
    results = spool.append_many(records(5))
    assert [r is None for r in results] == [True, True, True, False, False]
    assert all(isinstance(r, SpoolFull) for r in results[3:])
    with pytest.raises(SpoolFull):
        spool.append(b"k", b"v")
    assert spool.pending == 3


def test_torn_tail_is_skipped_with_a_log_line(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    for key, value in records(3):
        spool.append(key, value)
    spool.close()
    (path,) = tmp_path.glob(f"*{SUFFIX}")
    with path.open("r+b") as fh:  # a crash in the middle of the third append
        fh.truncate(path.stat().st_size - 3)
    with capture_logs() as logs:
        again = Spool(tmp_path, 1 << 20)
        assert again.pending == 2
        assert read_all(again) == records(2)
    assert any(e["event"].startswith("spool: corrupt or torn record") for e in logs)


@pytest.mark.parametrize("where", ["body", "header", "magic"])
def test_a_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept(tmp_path, where):
    spool = Spool(tmp_path, 1 << 20)
    for key, value in records(3):
        spool.append(key, value)
    spool.close()
    (path,) = tmp_path.glob(f"*{SUFFIX}")
    frame = len(encode_record(b"k0", b'{"n":0}'))
    offset = {"body": frame + HEADER_SIZE + 5, "header": frame + 5, "magic": frame}[where]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with capture_logs() as logs:
        assert list(decode_records(bytes(data))) == [records(3)[0], records(3)[2]]
    assert [e["reason"] for e in logs if "reason" in e]
    assert Spool(tmp_path, 1 << 20).pending == 2


def test_garbage_files_never_crash(tmp_path):
    (tmp_path / f"{1:020d}{SUFFIX}").write_bytes(os.urandom(3000))
    (tmp_path / f"{2:020d}{SUFFIX}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a segment")
    spool = Spool(tmp_path, 1 << 20)
    assert spool.pending == 0
    spool.append(b"k", b"v")
    assert read_all(spool) == [(b"k", b"v")]
