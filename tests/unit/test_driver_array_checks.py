"""The writer's shortcut of asyncpg's per-element array checks answers as the ABCs do."""

from __future__ import annotations

import collections
from collections import abc
from datetime import UTC, datetime

from asyncpg.protocol import protocol

from processors.warehouse import writer


class _Custom:
    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


class _Text(str):
    pass


SAMPLES = [None, 0, 1.5, True, "", "x", _Text("y"), b"", bytearray(), [], [1], (), {}, {"a": 1}, set(), frozenset(),
           range(3), collections.deque(), _Custom(), datetime.now(UTC), object(), iter([]), memoryview(b"")]


def test_the_shortcut_is_installed() -> None:
    assert writer.DRIVER_ARRAY_SHORTCUT
    assert protocol.IterableABC == (str, list, abc.Iterable)
    assert protocol.SizedABC == (str, list, abc.Sized)


def test_the_shortcut_answers_as_the_abcs() -> None:
    for value in SAMPLES:
        assert isinstance(value, protocol.IterableABC) == isinstance(value, abc.Iterable), value
        assert isinstance(value, protocol.SizedABC) == isinstance(value, abc.Sized), value
