"""ingest.json_guard: the one nesting guard, against a plain reference scan, and in linear time."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.json_guard import MAX_JSON_DEPTH, nested_deeper_than


def reference_depth(text: str) -> int:
    """Deepest bracket nesting outside JSON strings, one character at a time."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='[]{}"\\ a,:', max_size=400), st.integers(0, 12))
def test_agrees_with_the_reference_scan(text: str, limit: int) -> None:
    assert nested_deeper_than(text, limit) == (reference_depth(text) > limit)


def test_real_json() -> None:
    shallow = json.dumps({"a": [[{"b": "[[[[{{{{"}]] * 40, "s": '\\"[' * 100})
    assert not nested_deeper_than(shallow)
    assert nested_deeper_than("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert not nested_deeper_than("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)


def test_unterminated_strings_full_of_escaped_quotes_cost_linear_time() -> None:
    text = "[]" * 100 + '"' + '\\"' * 200_000  # quadratic scanners take minutes here
    started = time.perf_counter()
    assert not nested_deeper_than(text)
    assert time.perf_counter() - started < 2
