"""Parse published JSON without silently changing its numbers (sans-I/O).

``loads`` is what every publish path parses with (``POST /topics/{topic}``, both
batch forms, the WebSocket ``publish`` command): ``data`` on the streams must be
the value that was published. orjson does the parsing. It keeps every integer
from -2^63 to 2^64-1 exactly and every other number as the nearest 64-bit
float, which is ordinary JSON number behaviour (RFC 8259 §6) for a long decimal
such as ``0.1000000000000000000001``, and is kept. Three cases are not, and
``loads`` refuses them with :class:`~gateway.errors.BadRequest` ``bad_json`` and
a message saying why:

* an integer outside -2^63..2^64-1 (orjson would make it a float:
  18446744073709551616 would become 1.8446744073709552e+19);
* a number too large for a float (orjson refuses it as "infinity"; the
  message here names the number);
* a non-zero number too small for a float (``1e-400`` would become 0.0).

Cost: the hot path is orjson plus one prefilter over the raw bytes
(``bytes.translate`` into digit classes, then a few substring searches): under
1 µs for a small body, 1-2 ns a byte for a large one (``python -m
bench.jsoncost``). Only a body the prefilter flags (a run of 20 digits, a minus
and 19 digits, an exponent of ``-`` and 3 digits, or 100 digits after a point)
is looked at closely: its strings are emptied (a split on quotes, or a regex
when it holds a backslash), the prefilter runs again, and only if it still
fires, which means a number did it, are the numbers tokenized and checked one
by one. This runs on text orjson has already accepted, so strings and numbers
are the only tokens that can hold digits. (The stdlib ``json`` module with
``parse_int``/``parse_float`` hooks would be the obvious precise parser, but
it recurses, and fails with ``RecursionError`` below orjson's 1024 levels of
nesting.)
"""

from __future__ import annotations

import re

import orjson

from .errors import BadRequest

__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "dumps", "loads", "loads_lines", "number_problem"]

MAX_DEPTH = 254
"""The deepest nesting orjson writes (it reads 1024 levels)."""
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1
"""The integers orjson keeps as integers; outside them it makes a float."""


def _class_of(byte: int) -> int:
    """The prefilter's view of a byte: "0" (any digit), "-", ".", "e" (e or E) or
    a space (anything else), so that a few substring searches find the shapes."""
    if byte in b"0123456789":
        return ord("0")
    if byte in b"eE":
        return ord("e")
    return byte if byte in b"-." else ord(" ")


_CLASSES = bytes(_class_of(byte) for byte in range(256))
_BIG = b"0" * 20
"""A run of 20 digits: 2^64 and every larger integer. A number starts the body
or follows whitespace, ``[``, ``,`` or ``:`` (all spaces here), or a minus."""
_RUN = b"0" * 19
"""Every digit shape below holds one; searching for it first is what keeps a
small body cheap (each ``in`` reads its whole needle before it starts)."""
_BIG_AFTER_SPACE = b" " + _BIG
_NEGATIVE_19 = b"-" + b"0" * 19  # -2^63 - 1 already has only 19 digits
_LONG_FRACTION = b"." + b"0" * 100  # a non-zero one that small needs 225 zeros before e-99
_NEGATIVE_EXPONENT = re.compile(rb"e-000")
"""A negative exponent of three digits or more: the only exponents that can
underflow. (A positive one that overflows makes orjson fail, and that path
names the number by itself.) A regex, because its search looks for the rare
first byte and ``in`` for the frequent last one: 3-5x faster here in
number-dense bodies."""

_NUMBER = re.compile(rb"(-?)(\d+)(\.\d+)?([eE][-+]?\d+)?")
_NUMBERS = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def loads(body: bytes | str, *, what: str = "the body") -> object:
    """Parse one JSON document; ``BadRequest(code="bad_json")`` if it is not JSON
    or a number in it would not come out as it went in.

    ``what`` names the input in the not-JSON message (``"command"`` for a
    WebSocket command: "command is not valid JSON: ...").
    """
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _not_json(raw, exc, what) from None
    if _suspicious(raw):
        _check_numbers(raw)
    return value


def loads_lines(body: bytes) -> list[object]:
    """NDJSON: the JSON value of every non-blank line, checked as ``loads`` checks
    one, with the numbers of the whole body checked in one pass."""
    values = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if line.strip():
            try:
                values.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise _not_json(line, exc, f"line {number}") from None
    if _suspicious(body):
        _check_numbers(body)
    return values


def dumps(value: object) -> bytes:
    """The compact JSON of a value ``loads`` returned: what a message carries.

    ``BadRequest(code="bad_json")`` for nesting deeper than ``MAX_DEPTH``, which
    orjson reads but cannot write.
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # "Recursion limit reached": nothing else fails on parsed JSON
        raise BadRequest(
            f"the value is nested more than {MAX_DEPTH} levels deep; the gateway does not "
            "carry deeper values",
            code="bad_json",
        ) from None


def _not_json(raw: bytes, exc: orjson.JSONDecodeError, what: str) -> BadRequest:
    """The 400 for a document orjson refused: the number that overflowed to
    infinity when that is why, else orjson's own message."""
    problem = _problem_at(raw, exc.pos)
    return BadRequest(problem or f"{what} is not valid JSON: {exc}", code="bad_json")


def _check_numbers(raw: bytes) -> None:
    """Raise if a number of ``raw`` (JSON orjson accepted) would not be kept."""
    problem = _first_problem(raw)
    if problem is not None:
        raise BadRequest(problem, code="bad_json")


def number_problem(token: bytes) -> str | None:
    """Why the JSON number ``token`` would not be kept as written, or ``None``."""
    match = _NUMBER.fullmatch(token)
    if match is None:
        raise ValueError(f"not a JSON number: {token!r}")
    _, digits, fraction, exponent = match.groups()
    if fraction is None and exponent is None:
        if len(digits) < 19:
            return None
        # int() of a 20-digit string is cheap; longer ones are out of range anyway
        # (and int() refuses more than 4300 digits).
        if len(digits) <= 20 and INT_MIN <= int(token) <= INT_MAX:
            return None
        return (
            f"integer {_show(token)} does not fit in 64 bits (integers from -2^63 to "
            "2^64-1 are kept exactly); send it as a string"
        )
    value = float(token)
    if value in (float("inf"), float("-inf")):
        return (
            f"number {_show(token)} is too large for a 64-bit float (it would be "
            "infinity); send it as a string"
        )
    if value == 0.0 and (digits + (fraction or b"")).strip(b"0."):
        return (
            f"number {_show(token)} is too small for a 64-bit float (it would become 0); "
            "send it as a string"
        )
    return None


def _suspicious(raw: bytes) -> bool:
    # find(), not ``in``: ``bytes in bytes`` first tries its operand as an
    # integer, and the TypeError it makes and drops costs more than the search
    # itself on a small body (155 ns against find()'s 76 here; callgrind: the
    # two were 1.4 % of a publish's instructions).
    classes = raw.translate(_CLASSES)
    if classes.find(_RUN) >= 0 and (
        _BIG_AFTER_SPACE in classes
        or _NEGATIVE_19 in classes
        or _LONG_FRACTION in classes
        or classes.startswith(_BIG)
    ):
        return True
    # "e-" first: a plain search, far cheaper than the regex call on a small body.
    return classes.find(b"e-") >= 0 and _NEGATIVE_EXPONENT.search(classes) is not None


def _first_problem(raw: bytes) -> str | None:
    """The first number of a valid JSON document that would not be kept."""
    outside = _without_strings(raw)
    if not _suspicious(outside):  # the digits were in strings
        return None
    for token in _NUMBERS.findall(outside):
        # Shorter numbers without an exponent are always kept.
        if len(token) >= 19 or b"e" in token or b"E" in token:
            problem = number_problem(token)
            if problem is not None:
                return problem
    return None


def _without_strings(raw: bytes) -> bytes:
    """A valid JSON document with every string emptied, so that the only digits
    left are numbers'. Without a backslash every quote opens or closes a string,
    and splitting on quotes is several times faster than the regex."""
    if b"\\" in raw:
        return _STRING.sub(b'""', raw)
    return b'""'.join(raw.split(b'"')[::2])


def _problem_at(raw: bytes, pos: int) -> str | None:
    """Why orjson refused ``raw`` at character ``pos``, if a number there is the cause
    (orjson refuses a number that overflows to infinity)."""
    offset = len(raw.decode("utf-8", "surrogateescape")[:pos].encode("utf-8", "surrogateescape"))
    match = _NUMBER.match(raw, offset)
    return number_problem(match.group()) if match is not None else None


def _show(token: bytes) -> str:
    text = token.decode("ascii")
    if len(text) <= 48:
        return text
    return f"{text[:24]}…{text[-8:]} ({len(text)} characters)"
