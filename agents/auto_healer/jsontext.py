"""Strict JSON in, canonical JSON out: what every payload of the bloodstream is read and hashed by.

`loads` refuses NaN, Infinity and numbers past a float (Python accepts them by default) and
reads with orjson only where orjson gives the very value the standard library gives;
`canonical_json` is one byte string per JSON value (sorted keys, no spaces), the input of an
injury's id, written by orjson only where its bytes are provably those of `json.dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf, which no JSON can carry back out
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# orjson reads an integer past 64 bits as a float, and a long mantissa may round otherwise:
# a body with a run of 19 digits anywhere goes to the standard library. Found as `0` * 19 in
# the body with every digit made `0` and every other byte `.` (a regex search for `[0-9]{19}`
# tries each position and costs five times as much on an injury).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_RUN = b"0" * 19


def _long_digits(data: bytes) -> bool:
    """Whether `data` holds a run of 19 or more ASCII digits."""
    return _LONG_RUN in data.translate(_DIGITS_AS_ZERO)


def loads(data: str | bytes) -> Any:
    """Strict JSON: NaN and Infinity, which Python accepts by default, are errors, and so is a
    number too large for a float (it would become Infinity).

    Bytes are read by orjson when it gives the same value; whatever it refuses (a lone surrogate,
    a byte-order mark, UTF-16, bad JSON) is read again by the standard library, whose answer or
    error stands.
    """
    if isinstance(data, bytes) and not _long_digits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)


def canonical_json(payload: Any) -> bytes:
    """One byte string per JSON value, whatever the key order or spacing it arrived with.

    A lone surrogate (legal in JSON as an escape) passes through as its surrogate bytes, so
    such a payload still has a stable id instead of being refused. orjson writes it when its
    bytes are provably those of the standard library (`_orjson_same`), which stays the reference.
    """
    if _orjson_same(payload, 0):
        try:
            return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):  # a lone surrogate, a 65-bit integer
            pass
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8", "surrogatepass")


def _orjson_same(value: Any, depth: int) -> bool:
    """Whether orjson writes `value` as `json.dumps` does: plain JSON types, string keys, floats
    printed without an exponent (`1e-5` vs `1e-05`); other strings and integers make it raise."""
    kind = type(value)
    if kind in _SAME_AS_IS:  # what JSON decodes to, exactly: the common answer at once
        return True
    if isinstance(value, float):
        return value == 0.0 or 1e-4 <= abs(value) < 1e16
    if value is None or isinstance(value, str | int):  # bool is an int
        return True
    if depth > 64:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            if type(item) not in _SAME_AS_IS and not _orjson_same(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_orjson_same(v, depth + 1) for v in value)
    return False


_SAME_AS_IS = frozenset({str, int, bool, type(None)})
