"""The hot-path JSON codec gives exactly the stdlib's values and canonical text, and refuses what is not JSON."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canvas_stream import json_codec


def stdlib_canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Every magnitude where repr() and msgspec may write a float differently: exponents both ways and 1e-5..1e-4.
awkward_floats = st.one_of(
    finite_floats,
    st.builds(lambda m, e: m * 10.0**e, st.floats(-10, 10, allow_nan=False), st.integers(-30, 30)),
    st.sampled_from([1e16, 1e-5, 5e-05, 9.999e-05, 1e-4, 0.0001, 1e15, 9999999999999998.0, -0.0, 0.0, 1e-7, 2e20]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), awkward_floats,
                    st.text(), st.sampled_from(["3e5,", "1e-7}", "0.00001", "x1e16]"]))  # number-like text
json_values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_text_is_byte_identical_to_json_dumps_sorted(value):
    assert json_codec.canonical(value) == stdlib_canonical(value)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_loads_gives_the_values_json_loads_gives(value):
    text = json.dumps(value, ensure_ascii=False)
    decoded = json_codec.loads(text.encode())
    assert decoded == json.loads(text)
    assert stdlib_canonical(decoded) == stdlib_canonical(json.loads(text))  # floats and big ints exactly


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_dumps_round_trips(value):
    assert json.loads(json_codec.dumps(value)) == value


@pytest.mark.parametrize("text", [b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b"[1,", b"\xff",
                                  b"[" * 3000 + b"]" * 3000])
def test_what_is_not_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        json_codec.loads(text)


def test_what_msgspec_refuses_but_json_allows_is_decoded_by_the_stdlib():
    big = 123456789012345678901234567890
    assert json_codec.loads(b'["\\ud800", 123456789012345678901234567890]') == ["\ud800", big]


def test_a_lone_surrogate_cannot_become_canonical_utf8_as_before():
    with pytest.raises(UnicodeEncodeError):
        json_codec.canonical({"s": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        stdlib_canonical({"s": "\ud800"})


def test_member_text_is_the_value_as_written_and_none_when_it_does_not_fit():
    data = b'{"v":1,"payload": {"b": 1.50, "a":"\\u00e9"} ,"x":[1]}'
    assert json_codec.payload_text(data) == b'{"b": 1.50, "a":"\\u00e9"}'
    assert json_codec.payload_text(b'{"v":1}') is None
    assert json_codec.payload_text(b"[1]") is None
    assert json_codec.payload_text(b'{"payload": 1, "payload": {"last": true}}') == b'{"last": true}'  # as json


def test_infinite_values_never_come_out_of_loads():
    value = json_codec.loads(b'[1.7976931348623157e308, -1e308, 5e-324]')
    assert all(math.isfinite(v) for v in value)
