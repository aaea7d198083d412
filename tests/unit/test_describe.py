"""Describing an exception never fails and gives text every backend can store (issue 10, item 3)."""

from __future__ import annotations

import dataclasses

import pytest

from sayiir.core.codec import JsonCodec
from sayiir.core.describe import describe
from sayiir.errors import DeserializationError


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class ExitingStr(Exception):
    def __str__(self) -> str:
        raise SystemExit(1)


class NotAStr(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (BrokenStr(), "BrokenStr: <exception str() failed>"),
        (ExitingStr(), "ExitingStr: <exception str() failed>"),
        (NotAStr(), "NotAStr: <exception str() failed>"),
        (ValueError("a\x00b"), "ValueError: a\\x00b"),
        (ValueError("x\ud800y"), "ValueError: x\\ud800y"),
        (KeyboardInterrupt(), "KeyboardInterrupt: "),
    ],
)
def test_describe_never_raises_and_is_storable(exc, text):
    assert describe(exc) == text
    describe(exc).encode("utf-8")  # no lone surrogate left


def test_describe_names_a_nested_class_by_its_qualname_as_the_reference():
    def make() -> Exception:
        class Local(Exception):
            pass

        return Local("x")

    assert describe(make()) == (
        "test_describe_names_a_nested_class_by_its_qualname_as_the_reference.<locals>."
        "make.<locals>.Local: x"
    )


@dataclasses.dataclass
class Refuses:
    n: int

    def __post_init__(self) -> None:
        raise BrokenStr()


def test_a_dataclass_whose_constructor_raises_an_undescribable_error_is_a_decode_error():
    codec = JsonCodec()
    data = b'{"__sayiir__": "dataclass", "cls": "tests.unit.test_describe:Refuses", "v": {"n": 1}}'
    with pytest.raises(DeserializationError, match="BrokenStr: <exception str\\(\\) failed>"):
        codec.decode(data)
