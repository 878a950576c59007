"""JSON on the hot paths: msgspec where it gives exactly the stdlib's values, the stdlib where it refuses.

Why msgspec (README, "Dependencies beyond the required ones"): it decodes a record in about a
third of ``json.loads``' time, encodes sorted keys in about a quarter of ``json.dumps``' time,
decodes integers of any size exactly (orjson turns those into floats) and can hand back the raw
text of a value (``msgspec.Raw``), which lets a record's payload be stored without being encoded
again.

Where msgspec and the stdlib would differ, the stdlib decides:

* decoding: msgspec refuses lone surrogate escapes and numbers out of float range; those inputs
  are decoded by the stdlib instead. ``NaN``/``Infinity`` (not JSON) are refused by both paths, so
  a non-finite float never enters a payload and msgspec never has to encode one.
* canonical text (event ids): msgspec writes some floats differently from ``repr`` (``1e-5`` for
  ``1e-05``, ``1e16`` for ``1e+16``, ``0.00005`` for ``5e-05``); any output that may hold such a
  number is redone by the stdlib, so the text (and the sha256 of it) is byte-identical to
  ``json.dumps(sort_keys=True, ...)``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_SORTED_ENCODER = msgspec.json.Encoder(order="sorted")
# Where msgspec's float text may differ from repr(): an exponent (``1e-7``, ``1e16``: in compact output
# a number ends at , ] or } or the end of the text) and 1e-5 <= |x| < 1e-4, which msgspec writes as
# ``0.0000..``. The same characters inside a string only send us to the stdlib, which is always right.
# (A literal first character keeps the regex scan fast; the leading digit is left out for that reason.)
_EXPONENT = re.compile(rb"e[-+]?[0-9]+(?:[,\]}]|\Z)")
_SMALL = b"0.0000"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


_STDLIB_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads(data: bytes | str) -> Any:
    """Decode JSON text to the values ``json.loads`` gives; ValueError (never RecursionError) if it is not JSON."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray | memoryview) else data
        return _STDLIB_DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON for values that came out of :func:`loads` (or plain Python values)."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, UnicodeEncodeError, OverflowError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def canonical(value: Any) -> bytes:
    """Exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``,
    about 4x faster (event ids are the sha256 of it, so not one byte may differ)."""
    try:
        text = _SORTED_ENCODER.encode(value)
    except (TypeError, UnicodeEncodeError, OverflowError):
        text = None
    if text is None or _SMALL in text or _EXPONENT.search(text):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return text


class _PayloadText(msgspec.Struct):
    payload: msgspec.Raw


_PAYLOAD_TEXT = msgspec.json.Decoder(_PayloadText)


def member_text(data: bytes, decoder: msgspec.json.Decoder = _PAYLOAD_TEXT) -> Any:
    """Scan ``data`` with a decoder of ``Raw`` members: the members' JSON text, not decoded; None if
    it does not fit (the caller then encodes the decoded value instead)."""
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None


def payload_text(data: bytes) -> bytes | None:
    """The JSON text of a record's ``payload`` member, as it is in ``data``."""
    found = member_text(data)
    return None if found is None else bytes(found.payload)
