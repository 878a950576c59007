"""A durable local spool for verified records the broker did not acknowledge in time.

Why: a 2xx to Canvas is a promise (Canvas gives up after ~20 minutes and never retries an LTI
notice). When Kafka is down the ingress appends the record to an append-only segment file and
fsyncs it before answering; a background drainer (``ingest.publish``) publishes the spooled
records to Kafka in order once the broker is back, and deletes a segment only after every record
in it was acknowledged. The spool is bounded (``max_bytes``): once full, callers get
:class:`SpoolFull` and the ingress answers 503, so Canvas retries later.

On-disk format (one directory, segment files ``<seq>.spool``, ``seq`` zero-padded so names sort)::

    record := MAGIC(4) | length(u32 BE) | crc32(u32 BE, of length+body) | body(length)
    body   := key_length(u32 BE) | key | value

A torn tail (a crash in the middle of an append that was never acknowledged) or a corrupt record
fails its checksum: it is skipped with a warning and reading resumes at the next ``MAGIC``; a
damaged spool never crashes the ingress. File I/O only: no asyncio, no Kafka.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from canvas_stream.errors import CanvasStreamError

log = structlog.get_logger(__name__)

MAGIC = b"CSr1"
_HEADER = struct.Struct(">4sII")
_KEYLEN = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
SUFFIX = ".spool"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
MAX_RECORD_BYTES = 64 * 1024 * 1024
REFUSED_DIR = "refused"  # records the broker refuses for good (``Spool.set_aside``)


class SpoolFull(CanvasStreamError):
    """Appending would exceed the spool's size bound."""


def encode_record(key: bytes, value: bytes) -> bytes:
    body = _KEYLEN.pack(len(key)) + key + value
    length = struct.pack(">I", len(body))
    crc = zlib.crc32(length + body)
    return MAGIC + length + struct.pack(">I", crc) + body


def decode_records(data: bytes, *, name: str = "?") -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, value)`` of every intact record; skip (and log) torn or corrupt ones."""
    pos, end = 0, len(data)
    while pos < end:
        reason = None
        if end - pos < HEADER_SIZE:
            reason = "truncated header"
        else:
            magic, length, crc = _HEADER.unpack_from(data, pos)
            if magic != MAGIC:
                reason = "bad magic"
            elif length < _KEYLEN.size or length > MAX_RECORD_BYTES or pos + HEADER_SIZE + length > end:
                reason = "bad or truncated length"
            else:
                body = data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
                if zlib.crc32(data[pos + 4 : pos + 8] + body) != crc:
                    reason = "checksum mismatch"
                else:
                    (key_len,) = _KEYLEN.unpack_from(body, 0)
                    if _KEYLEN.size + key_len > length:
                        reason = "bad key length"
                    else:
                        yield body[4 : 4 + key_len], body[4 + key_len :]
                        pos += HEADER_SIZE + length
                        continue
        following = data.find(MAGIC, pos + 1)
        skipped = (following if following >= 0 else end) - pos
        log.warning("spool: corrupt or torn record skipped", segment=name, offset=pos, reason=reason,
                    skipped_bytes=skipped)
        if following < 0:
            return
        pos = following


@dataclass(slots=True)
class Segment:
    seq: int
    path: Path
    records: int = 0
    size: int = 0
    acked: int = 0  # records at the start of the segment already acknowledged by the broker


class Spool:
    """Segment files in one directory; thread-safe (appends run in a worker thread).

    ``append`` writes to the active segment and fsyncs before returning. ``sealed()`` lists the
    segments that take no more appends, oldest first (``seal()`` closes the active one); the
    drainer reads one with ``read`` and removes it with ``remove`` once all its records are
    acknowledged. ``pending`` counts records not yet removed.
    """

    def __init__(self, directory: str | Path, max_bytes: int, *,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments: dict[int, Segment] = {}
        self._active: Segment | None = None
        self._fd: int | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._scan()

    # -- state -------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Adopt the segments left by an earlier run (they are all sealed: we never append to them)."""
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                seq = int(path.name[: -len(SUFFIX)])
            except ValueError:
                continue
            data = path.read_bytes()
            segment = Segment(seq, path, size=len(data))
            segment.records = sum(1 for _ in decode_records(data, name=path.name))
            if segment.records == 0:
                log.warning("spool: removing segment without intact records", segment=path.name)
                self._unlink(path)
                continue
            self._segments[seq] = segment
        if self._segments:
            log.info("spool: found records from an earlier run", records=self.pending,
                     segments=len(self._segments))

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(s.records - s.acked for s in self._segments.values())

    @property
    def size(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments.values())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "records": sum(s.records - s.acked for s in self._segments.values()),
                "bytes": sum(s.size for s in self._segments.values()),
                "segments": len(self._segments),
                "max_bytes": self.max_bytes,
            }

    # -- writing -----------------------------------------------------------------------------

    def append(self, key: bytes, value: bytes) -> None:
        """Durably append one record (written and fsynced on return); SpoolFull when over the bound."""
        (result,) = self.append_many([(key, value)])
        if result is not None:
            raise result

    def append_many(self, items: list[tuple[bytes, bytes]]) -> list[BaseException | None]:
        """Append several records with one fsync; per item None (stored) or the error (SpoolFull)."""
        frames = [encode_record(k, v) for k, v in items]
        results: list[BaseException | None] = []
        with self._lock:
            total = sum(s.size for s in self._segments.values())
            accepted: list[bytes] = []
            for frame in frames:
                if total + len(frame) > self.max_bytes:
                    results.append(SpoolFull(f"spool full ({self.max_bytes} bytes)"))
                    continue
                total += len(frame)
                accepted.append(frame)
                results.append(None)
            if accepted:
                self._write(accepted)
        return results

    def _write(self, frames: list[bytes]) -> None:
        if self._active is None or self._fd is None:
            self._open_segment()
        assert self._active is not None and self._fd is not None
        data = b"".join(frames)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            # The segment may now end in a torn record; readers skip it. Start a fresh segment.
            self._close_active()
            raise
        self._active.records += len(frames)
        self._active.size += len(data)
        if self._active.size >= self.segment_bytes:
            self._close_active()

    def _open_segment(self) -> None:
        seq = max(self._segments, default=0) + 1
        path = self.directory / f"{seq:020d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active = Segment(seq, path)
        self._segments[seq] = self._active
        self._fsync_directory()

    def _close_active(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._active = None

    def _fsync_directory(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- draining ----------------------------------------------------------------------------

    def seal(self) -> None:
        """Close the active segment so the drainer can take it; the next append opens a new one."""
        with self._lock:
            if self._active is not None and self._active.records:
                self._close_active()

    def sealed(self) -> list[Segment]:
        with self._lock:
            active = self._active.seq if self._active is not None else None
            return [self._segments[s] for s in sorted(self._segments) if s != active]

    def read(self, segment: Segment) -> list[tuple[bytes, bytes]]:
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            return []
        return list(decode_records(data, name=segment.path.name))

    def acknowledge(self, segment: Segment, count: int) -> None:
        """The first ``count`` records of ``segment`` are in Kafka (kept in memory only: after a
        restart the whole segment is published again, which the idempotent warehouse absorbs)."""
        with self._lock:
            segment.acked = max(segment.acked, min(count, segment.records))

    def set_aside(self, key: bytes, value: bytes) -> Path:
        """Keep a record the broker refuses for good in ``refused/`` (same framing as a segment, so
        ``decode_records`` reads it), out of the drain's way; an operator decides what to do with it."""
        refused = self.directory / REFUSED_DIR
        refused.mkdir(exist_ok=True)
        path = refused / f"{time.time_ns()}.record"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, encode_record(key, value))
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def remove(self, segment: Segment) -> None:
        """Delete a fully acknowledged segment."""
        with self._lock:
            if self._active is not None and self._active.seq == segment.seq:
                raise ValueError("cannot remove the active segment")
            self._segments.pop(segment.seq, None)
            self._unlink(segment.path)

    def _unlink(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._fsync_directory()

    def close(self) -> None:
        with self._lock:
            self._close_active()
