"""Round trips of the term mapping (PROTOCOL.md §2)."""

from __future__ import annotations

import datetime as dt
import enum
import math
import threading
from collections import OrderedDict, defaultdict
from decimal import Decimal
from typing import Any, NamedTuple

import msgpack
import pytest

from symbiont import Atom, OpaqueTerm, Pid, Ref
from symbiont._terms import encode_error, packb, unpackb


class Color(enum.IntEnum):
    RED = 1


class Point(NamedTuple):
    x: int
    y: int


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    "héllo",
    b"\x00\xff",
    [1, [2, [3]]],
    {"a": 1, 2: "b", (1, 2): [None]},
    (),
    (1, "two", (3.0, Atom("four"))),
    Atom("ok"),
    Pid(b"\x83X\x00"),
    Ref(b"\x83Z\x00"),
    OpaqueTerm(b"\x83p"),
    msgpack.ExtType(42, b"raw"),
    dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip(value: object) -> None:
    decoded = unpackb(packb(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_atom_is_a_str() -> None:
    assert Atom("ok") == "ok" and {Atom("ok"): 1}["ok"] == 1
    assert repr(Atom("ok")) == "Atom('ok')"
    assert packb(Atom("ok")) == packb(msgpack.ExtType(1, b"ok"))


def test_bytes_like_encode_as_bin() -> None:
    assert unpackb(packb(bytearray(b"ab"))) == b"ab"
    assert unpackb(packb(memoryview(b"ab"))) == b"ab"


@pytest.mark.parametrize(
    ("value", "where", "why"),
    [
        # What msgpack would change on the way is refused, naming where (PROTOCOL.md §2).
        ({"items": [1, 2, 3, {4}]}, "state['items'][3]", "a set is not a msgpack type; use a list"),
        ({"a": [(1, frozenset())]}, "state['a'][0][1]", "a frozenset is not a msgpack type"),
        ({frozenset({1}): 2}, "state[key frozenset({1})]", "a frozenset is not"),
        ({"d": defaultdict(int)}, "state['d']", "a defaultdict (a subclass of dict) would arrive"),
        ({"o": OrderedDict()}, "state['o']", "convert it with dict(...)"),
        ([Color.RED], "state[0]", "a Color (a subclass of int) would arrive as a plain int"),
        ({"n": 1 << 64}, "state['n']", "the int 18446744073709551616 is out of msgpack's range"),
        ({"s": "\udc80"}, "state['s']", "a str with lone surrogates is not UTF-8"),
        ({"t": dt.datetime(2024, 1, 1)}, "state['t']", "a naive datetime cannot be encoded"),
        ({"x": Decimal(1)}, "state['x']", "a decimal.Decimal is not a msgpack type"),
        ({"x": object()}, "state['x']", "an object is not a msgpack type"),
    ],
)
def test_what_msgpack_would_change_is_refused_naming_where(
    value: Any, where: str, why: str
) -> None:
    with pytest.raises((TypeError, ValueError, OverflowError)) as raised:
        packb(value)
    error = encode_error(value, "state", raised.value)
    assert isinstance(error, TypeError)
    assert str(error).startswith(f"{where}: ") and why in str(error), str(error)


def test_what_the_type_table_allows_still_encodes() -> None:
    # PROTOCOL.md §2: these change type on the way, and the table says so.
    point = Point(1, 2)
    assert unpackb(packb(point)) == (1, 2)
    assert unpackb(packb(bytearray(b"a"))) == b"a"
    paris = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2024, 1, 1, 12, tzinfo=paris)
    assert unpackb(packb(moment)) == moment  # the same instant, in UTC
    assert math.isnan(unpackb(packb(math.nan)))


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(TypeError, match="naive datetime"):
        packb(dt.datetime(2024, 1, 1))


def test_unencodable_value_names_the_type() -> None:
    with pytest.raises(TypeError, match="an object is not a msgpack type"):
        packb(object())


def test_opaque_terms_need_bytes() -> None:
    with pytest.raises(TypeError, match="Pid data must be bytes"):
        Pid("nope")  # type: ignore[arg-type]
    assert Pid(b"a") != Ref(b"a") and hash(Pid(b"a")) != hash(Ref(b"a"))


@pytest.mark.parametrize("data", [b"\xc1", b"\x92\x01", b"\x01\x02", b"\xd4\x02\x01"])
def test_bad_input_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        unpackb(data)


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(ValueError):
        unpackb(b"\x91" * 5000 + b"\xc0")


def test_packb_is_thread_safe() -> None:
    # Tuples go through the Python-level default hook, where threads can switch.
    value = [(i, Atom("x"), (i,)) for i in range(200)]
    expected = packb(value)
    errors: list[bytes] = []

    def worker() -> None:
        for _ in range(200):
            out = packb(value)
            if out != expected:
                errors.append(out)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
