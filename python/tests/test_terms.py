"""Round trips of the term mapping (PROTOCOL.md §2)."""

from __future__ import annotations

import datetime as dt
import threading

import msgpack
import pytest

from symbiont import Atom, OpaqueTerm, Pid, Ref
from symbiont._terms import packb, unpackb

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


def test_sets_encode_as_lists() -> None:
    assert sorted(unpackb(packb({1, 2}))) == [1, 2]


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(TypeError, match="naive datetime"):
        packb(dt.datetime(2024, 1, 1))


def test_unencodable_value_names_the_type() -> None:
    with pytest.raises(TypeError, match="cannot encode object"):
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
