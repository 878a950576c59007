"""``metrics.observe_many`` leaves a histogram as observing each amount would."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from canvas_stream.metrics import AGE_BUCKETS, observe_many


def _samples(histogram: Histogram) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for metric in histogram.collect() for s in metric.samples if not s.name.endswith("_created")}


@given(st.lists(st.one_of(st.floats(min_value=0, max_value=10**7), st.sampled_from([0.0, *AGE_BUCKETS])), max_size=50))
def test_observe_many_counts_like_observe(amounts: list[float]) -> None:
    one_by_one = Histogram("h", "h", buckets=AGE_BUCKETS, registry=CollectorRegistry())
    at_once = Histogram("h", "h", buckets=AGE_BUCKETS, registry=CollectorRegistry())
    for amount in amounts:
        one_by_one.observe(amount)
    observe_many(at_once, amounts)
    expected, got = _samples(one_by_one), _samples(at_once)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9), name
