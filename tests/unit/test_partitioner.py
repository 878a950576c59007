"""ingest.publish's partitioner: every key lands on the partition aiokafka's default partitioner picks."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from ingest.publish import CachedPartitioner


def test_cached_partitioner_picks_the_default_partition_twice_and_stays_bounded():
    partitioner, default = CachedPartitioner(), DefaultPartitioner()
    keys = [f"course:{i}".encode() for i in range(500)] + [b"", b"caliper", "user:\u00e9".encode()]
    for partitions in ([0], [0, 1, 2, 3, 4, 5], list(range(7))):
        for key in keys + keys:  # the second round is served from the cache
            assert partitioner(key, partitions, partitions) == default(key, partitions, partitions)
    assert partitioner(None, [0, 1], [1]) == 1  # no key: as the default, any available partition
    small = CachedPartitioner()
    small.MAX_KEYS = 10
    for key in keys:
        assert small(key, [0, 1], [0, 1]) == default(key, [0, 1], [0, 1])
    assert 0 < len(small._hashes) <= 10
