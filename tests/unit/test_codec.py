"""``JsonCodec``: the reference JSON round trip (spec/api.md §2) and the extra types."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import json
import math
import subprocess
import sys
import textwrap
import threading
import uuid
import zlib
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sayiir.core.codec import Codec, JsonCodec
from sayiir.errors import DeserializationError

codec = JsonCodec()
TAG = "__sayiir__"
HAVE_PYDANTIC = importlib.util.find_spec("pydantic") is not None
needs_pydantic = pytest.mark.skipif(not HAVE_PYDANTIC, reason="pydantic is not installed")


def ref(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def tagged(obj: dict[str, Any]) -> bytes:
    """Stored bytes for a hand-written (possibly corrupt) tagged object."""
    return json.dumps(obj).encode()


def same_json(actual: Any, expected: Any) -> bool:
    """Equal as JSON values: same structure, key order and types (NaN-safe, unlike ==)."""
    return json.dumps(actual) == json.dumps(expected)


# --- module-level classes (dataclasses and models must be importable by name) ---------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    start: Point
    end: Point
    label: str = "line"


@dataclasses.dataclass
class Event:
    when: datetime
    amount: Decimal
    id: uuid.UUID
    payload: bytes
    tags: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class WithDerived:
    base: int
    double: int = dataclasses.field(init=False)
    calls: int = dataclasses.field(default=0, init=False)

    def __post_init__(self) -> None:
        self.double = self.base * 2


@dataclasses.dataclass
class Outer:
    @dataclasses.dataclass
    class Inner:
        value: int

    inner: Inner


@dataclasses.dataclass
class Versioned:
    name: str
    added_later: int = 5


@dataclasses.dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be > 0")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class NotADataclass:
    pass


if HAVE_PYDANTIC:
    from pydantic import BaseModel, ConfigDict

    class Address(BaseModel):
        street: str
        city: str

    class Customer(BaseModel):
        name: str
        address: Address
        since: datetime
        balance: Decimal
        colors: set[Color]
        pair: tuple[int, str]
        ratio: float = 1.0

    class StrictItem(BaseModel):
        model_config = ConfigDict(strict=True)

        sku: uuid.UUID
        at: datetime
        qty: int

    class Blob(BaseModel):
        data: bytes  # dumped to JSON as UTF-8 text by default

    class Holder(BaseModel):
        data: dict[str, Any]


# --- §2: the reference round-trip table ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, 2), [1, 2]),
        ({"t": (1, (2, 3))}, {"t": [1, [2, 3]]}),
        ({1: "a"}, {"1": "a"}),
        (
            {1.5: "a", True: "b", False: "c", None: "d"},
            {"1.5": "a", "true": "b", "false": "c", "null": "d"},
        ),
        ({1: "a", "1": "b"}, {"1": "b"}),
        (None, None),
        ([None, True, 0, -1.25, "é"], [None, True, 0, -1.25, "é"]),
        ({"nested": [{"a": []}, {}]}, {"nested": [{"a": []}, {}]}),
    ],
)
def test_reference_round_trip_table(value: Any, expected: Any) -> None:
    assert codec.decode(codec.encode(value)) == expected
    assert codec.roundtrip(value) == expected
    assert codec.encode(value) == json.dumps(value).encode()


def test_nan_and_infinity_pass_through() -> None:
    value = [math.nan, math.inf, -math.inf]
    assert codec.encode(value) == b"[NaN, Infinity, -Infinity]"
    for result in (codec.decode(codec.encode(value)), codec.roundtrip(value)):
        assert math.isnan(result[0])
        assert result[1:] == [math.inf, -math.inf]
    assert math.isnan(codec.roundtrip(math.nan))


def test_set_fails_like_the_reference() -> None:
    with pytest.raises(TypeError) as info:
        codec.encode({"s": {1, 2}})
    assert str(info.value).startswith("Object of type set is not JSON serializable")
    with pytest.raises(TypeError, match=r"^Object of type set is not JSON serializable"):
        codec.roundtrip([{1}])


def test_arbitrary_object_fails_naming_its_type() -> None:
    with pytest.raises(TypeError, match=r"^Object of type NotADataclass is not JSON serializable"):
        codec.encode(NotADataclass())
    with pytest.raises(TypeError, match=r"^Object of type Color is not JSON serializable"):
        codec.encode([Color.RED])


def test_circular_reference_fails_like_json() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        codec.encode(loop)


def test_scalars_round_trip_to_the_same_object() -> None:
    for value in ("text", 10**30, 1.5, True, None, math.nan):
        assert codec.roundtrip(value) is value


def test_containers_round_trip_to_a_copy() -> None:
    value = {"a": [1, 2]}
    result = codec.roundtrip(value)
    assert result == value
    assert result is not value
    assert result["a"] is not value["a"]


def test_decode_accepts_bytes_like_and_str() -> None:
    data = b'{"a": [1, 2]}'
    for form in (data, bytearray(data), memoryview(data), data.decode()):
        assert codec.decode(form) == {"a": [1, 2]}


def test_decode_follows_json_loads_for_surrounding_whitespace() -> None:
    assert codec.decode(b" \n[1, 2]\t ") == [1, 2]
    assert codec.decode(b' {"__sayiir__": "date", "v": "2024-05-01"} ') == date(2024, 5, 1)


def test_codec_protocol_and_repr() -> None:
    assert isinstance(codec, Codec)
    assert codec.name == "json"
    assert repr(codec) == "JsonCodec()"


# --- extra types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 5, 1, 12, 30, 15, 123456),
        datetime(2024, 5, 1, tzinfo=UTC),
        datetime(2024, 5, 1, 8, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        datetime(2024, 5, 1, 8, tzinfo=timezone(timedelta(hours=5, seconds=7, microseconds=3))),
        datetime(2024, 7, 1, 9, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
        datetime(2021, 11, 7, 1, 30, fold=0, tzinfo=ZoneInfo("America/New_York")),
        datetime(2021, 3, 14, 2, 30, tzinfo=ZoneInfo("America/New_York")),  # imaginary time
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        date(2024, 2, 29),
        time(0, 0),
        time(23, 59, 59, 999999),
        time(8, 15, tzinfo=timezone(timedelta(hours=2))),
        time(8, 15, tzinfo=ZoneInfo("Asia/Tokyo")),
        time(1, 30, fold=1),
        timedelta(0),
        timedelta(days=-3, seconds=5, microseconds=7),
        timedelta(days=999999999, seconds=86399, microseconds=999999),
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("1E+3"),
        Decimal("123456789012345678901234567890.000000000000001"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        b"",
        b"\x00\xff\xfe binary",
        bytes(range(256)),
    ],
    ids=repr,
)
def test_extra_types_round_trip_to_the_same_type_and_value(value: Any) -> None:
    for result in (codec.decode(codec.encode(value)), codec.roundtrip(value)):
        assert type(result) is type(value)
        assert result == value
        if isinstance(value, datetime | time):
            assert result.tzinfo == value.tzinfo
            assert result.fold == value.fold
            assert result.replace(tzinfo=None) == value.replace(tzinfo=None)  # same wall time


def test_zoneinfo_zone_is_kept_by_key() -> None:
    paris = ZoneInfo("Europe/Paris")
    result = codec.roundtrip(datetime(2024, 1, 1, tzinfo=paris))
    assert result.tzinfo is paris


def test_special_decimals_round_trip() -> None:
    for text in ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "0E-30"):
        result = codec.roundtrip(Decimal(text))
        assert type(result) is Decimal
        assert str(result) == text


def test_bytearray_comes_back_as_bytes() -> None:
    assert codec.roundtrip(bytearray(b"\x01\x02")) == b"\x01\x02"
    assert type(codec.roundtrip(bytearray(b"\x01"))) is bytes


def test_subclasses_of_standard_types_come_back_as_the_base_type() -> None:
    class Stamp(datetime):
        pass

    result = codec.roundtrip(Stamp(2024, 5, 1))
    assert type(result) is datetime
    assert result == datetime(2024, 5, 1)


def test_extra_types_nested_in_json_containers() -> None:
    value = {
        "when": [datetime(2024, 5, 1), (date(2024, 5, 2),)],
        "money": {"eur": Decimal("9.99")},
        7: uuid.UUID(int=7),
    }
    assert codec.roundtrip(value) == {
        "when": [datetime(2024, 5, 1), [date(2024, 5, 2)]],
        "money": {"eur": Decimal("9.99")},
        "7": uuid.UUID(int=7),
    }


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (
            datetime(2024, 5, 1, 12, tzinfo=UTC),
            {TAG: "datetime", "v": "2024-05-01T12:00:00+00:00"},
        ),
        (
            datetime(2024, 5, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
            {TAG: "datetime", "v": "2024-05-01T12:00:00+02:00", "tz": "Europe/Paris"},
        ),
        (time(1, 30, fold=1), {TAG: "time", "v": "01:30:00", "fold": 1}),
        (date(2024, 5, 1), {TAG: "date", "v": "2024-05-01"}),
        (timedelta(days=1, seconds=2, microseconds=3), {TAG: "timedelta", "v": [1, 2, 3]}),
        (Decimal("1.10"), {TAG: "decimal", "v": "1.10"}),
        (uuid.UUID(int=1), {TAG: "uuid", "v": "00000000-0000-0000-0000-000000000001"}),
        (b"hi\xff", {TAG: "bytes", "v": "aGn/"}),
        (Point(1, 2), {TAG: "dataclass", "cls": ref(Point), "v": {"x": 1, "y": 2}}),
        ({TAG: 1}, {TAG: "dict", "v": [[TAG, 1]]}),
    ],
    ids=repr,
)
def test_stored_format_is_pinned(value: Any, stored: dict[str, Any]) -> None:
    """The stored text is persisted: changing it breaks existing checkpoints."""
    assert codec.encode(value) == json.dumps(stored).encode()


# --- dataclasses ----------------------------------------------------------------------------


def test_dataclass_round_trips() -> None:
    assert codec.roundtrip(Point(1, 2)) == Point(1, 2)
    assert type(codec.roundtrip(Point(1, 2))) is Point


def test_nested_frozen_slotted_dataclasses_round_trip() -> None:
    line = Line(Point(0, 0), Point(3, 4), "diagonal")
    result = codec.decode(codec.encode([line, {"line": line}]))
    assert result == [line, {"line": line}]
    assert type(result[0].start) is Point


def test_dataclass_with_extra_type_fields_round_trips() -> None:
    event = Event(
        when=datetime(2024, 5, 1, tzinfo=UTC),
        amount=Decimal("12.50"),
        id=uuid.UUID(int=3),
        payload=b"\x00\x01",
        tags=["a", "b"],
        meta={"attempt": (1, 2), TAG: "not a tag", "at": date(2024, 1, 1)},
    )
    result = codec.roundtrip(event)
    assert result == dataclasses.replace(
        event, meta={"attempt": [1, 2], TAG: "not a tag", "at": date(2024, 1, 1)}
    )


def test_dataclass_init_false_fields_are_restored_after_init() -> None:
    value = WithDerived(base=2)
    value.double = 99  # changed after __init__: the stored value wins
    value.calls = 3
    result = codec.roundtrip(value)
    assert (result.base, result.double, result.calls) == (2, 99, 3)


def test_nested_class_is_found_by_qualname() -> None:
    value = Outer(Outer.Inner(5))
    assert codec.roundtrip(value) == value
    assert ref(Outer.Inner).endswith(":Outer.Inner")


def test_dataclass_defined_in_a_function_is_refused_when_encoding() -> None:
    @dataclasses.dataclass
    class Local:
        a: int

    with pytest.raises(TypeError, match=r"Object of type Local cannot be encoded.*<locals>"):
        codec.encode(Local(1))


def test_dataclass_class_is_not_encoded_as_an_instance() -> None:
    with pytest.raises(TypeError, match="Object of type type is not JSON serializable"):
        codec.encode(Point)


def test_dataclass_field_missing_from_storage_takes_its_default() -> None:
    data = tagged({TAG: "dataclass", "cls": ref(Versioned), "v": {"name": "n"}})
    assert codec.decode(data) == Versioned("n", 5)


def test_dataclass_field_missing_without_default_fails() -> None:
    data = tagged({TAG: "dataclass", "cls": ref(Point), "v": {"x": 1}})
    with pytest.raises(DeserializationError, match=r"Point: field 'y' is missing"):
        codec.decode(data)


def test_dataclass_unknown_stored_field_fails() -> None:
    data = tagged({TAG: "dataclass", "cls": ref(Point), "v": {"x": 1, "y": 2, "z": 3}})
    with pytest.raises(DeserializationError, match="has no field z"):
        codec.decode(data)


def test_dataclass_is_rebuilt_through_its_init() -> None:
    data = tagged({TAG: "dataclass", "cls": ref(WithDerived), "v": {"base": "x"}})
    assert codec.decode(data).double == "xx"  # __post_init__ ran on the stored value


def test_dataclass_whose_init_rejects_the_stored_values_fails_clearly() -> None:
    data = tagged({TAG: "dataclass", "cls": ref(Positive), "v": {"n": -1}})
    with pytest.raises(
        DeserializationError, match=r"Positive: calling it failed with ValueError: n must be > 0"
    ):
        codec.decode(data)


# --- class lookup: only already-imported modules, only the right kind of class -------------


def test_class_of_a_module_that_is_not_imported_is_not_imported() -> None:
    assert "this" not in sys.modules  # importing `this` would print the Zen of Python
    data = tagged({TAG: "dataclass", "cls": "this:Zen", "v": {}})
    with pytest.raises(DeserializationError) as info:
        codec.decode(data)
    message = str(info.value)
    assert "this:Zen" in message
    assert "module 'this' is not imported" in message
    assert "this" not in sys.modules


def test_unknown_class_in_an_imported_module() -> None:
    data = tagged({TAG: "dataclass", "cls": f"{__name__}:Nope", "v": {}})
    with pytest.raises(DeserializationError, match=r"has no class 'Nope'"):
        codec.decode(data)


@pytest.mark.parametrize(
    "cls_ref",
    [
        f"{__name__}:NotADataclass",
        "os:system",
        "collections:OrderedDict",
        f"{__name__}:Point.x",
        f"{__name__}:<locals>.Local",
    ],
)
def test_class_that_is_not_a_dataclass_is_refused(cls_ref: str) -> None:
    data = tagged({TAG: "dataclass", "cls": cls_ref, "v": {}})
    with pytest.raises(DeserializationError, match="cannot decode dataclass"):
        codec.decode(data)


def test_class_ref_must_be_module_colon_qualname() -> None:
    data = tagged({TAG: "dataclass", "cls": "no_colon", "v": {}})
    with pytest.raises(DeserializationError, match="not 'module:qualname'"):
        codec.decode(data)


@needs_pydantic
def test_model_tag_refuses_a_dataclass() -> None:
    data = tagged({TAG: "model", "cls": ref(Point), "v": {"x": 1, "y": 2}})
    with pytest.raises(DeserializationError, match="is not a pydantic model class"):
        codec.decode(data)


# --- pydantic models ------------------------------------------------------------------------


@needs_pydantic
def test_pydantic_model_round_trips() -> None:
    customer = Customer(
        name="Ada",
        address=Address(street="1 Loop St", city="Paris"),
        since=datetime(2020, 1, 1, tzinfo=UTC),
        balance=Decimal("10.50"),
        colors={Color.RED, Color.BLUE},
        pair=(1, "x"),
        ratio=math.inf,
    )
    result = codec.decode(codec.encode({"who": customer, "list": [customer]}))
    assert result == {"who": customer, "list": [customer]}
    assert type(result["who"].address) is Address


@needs_pydantic
def test_strict_pydantic_model_round_trips() -> None:
    item = StrictItem(sku=uuid.UUID(int=9), at=datetime(2024, 5, 1), qty=2)
    assert codec.roundtrip(item) == item


@needs_pydantic
def test_pydantic_model_stored_format() -> None:
    stored = json.loads(codec.encode(Address(street="s", city="c")))
    assert stored == {TAG: "model", "cls": ref(Address), "v": {"street": "s", "city": "c"}}


@needs_pydantic
def test_pydantic_model_that_no_longer_validates() -> None:
    data = tagged({TAG: "model", "cls": ref(Address), "v": {"street": "s"}})
    with pytest.raises(DeserializationError, match=r"Address: the stored value does not validate"):
        codec.decode(data)


@needs_pydantic
def test_pydantic_model_that_cannot_dump_fails_naming_it() -> None:
    with pytest.raises(TypeError, match=r"pydantic model .*:Blob failed to dump to JSON"):
        codec.encode(Blob(data=b"\xff"))


def test_works_without_pydantic() -> None:
    script = textwrap.dedent(
        """
        import dataclasses, sys
        from datetime import date
        sys.modules["pydantic"] = None  # any `import pydantic` now fails
        from sayiir.core.codec import JsonCodec

        @dataclasses.dataclass
        class P:
            a: date

        codec = JsonCodec()
        assert codec.roundtrip({"p": P(date(2024, 1, 1)), "t": (1,)}) == {
            "p": P(date(2024, 1, 1)), "t": [1]
        }
        try:
            codec.encode(object())
        except TypeError as exc:
            assert str(exc).startswith("Object of type object is not JSON serializable")
        else:
            raise AssertionError("no TypeError")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# --- user dicts holding the tag key are escaped ---------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {TAG: "datetime", "v": "2024-05-01T00:00:00"},
        {TAG: "dict", "v": [["a", 1]]},
        {TAG: "unknown"},
        {TAG: None},
        [{"inner": {TAG: {TAG: 1}}}],
        {
            "x": 1,
            TAG: (1, 2),
            2: "b",
            None: "n",
            True: "t",
            1.5: "f",
            math.inf: "i",
            -math.inf: "-i",
            math.nan: "n",
        },
        {TAG: datetime(2024, 1, 1), "d": {TAG: Decimal("1")}},
        {'x"__sayiir__': 1, "k": '"__sayiir__": 1'},
        TAG,
        ['{"__sayiir__": "date", "v": "2024-05-01"}'],
    ],
    ids=repr,
)
def test_user_values_that_look_like_tags_round_trip_unchanged(value: Any) -> None:
    plain = json.loads(json.dumps(value, default=lambda o: f"<{type(o).__name__}>"))
    for result in (codec.decode(codec.encode(value)), codec.roundtrip(value)):
        assert json.dumps(result, default=lambda o: f"<{type(o).__name__}>") == json.dumps(plain)
    if not any(isinstance(v, datetime | Decimal) for v in _walk(value)):
        assert same_json(codec.roundtrip(value), json.loads(json.dumps(value)))


def test_escaped_values_keep_extra_types() -> None:
    value = {TAG: datetime(2024, 1, 1), "d": [{TAG: Decimal("1")}]}
    assert codec.roundtrip(value) == value


def test_tag_key_inside_dataclass_and_model_payloads() -> None:
    event = Event(
        when=datetime(2024, 5, 1),
        amount=Decimal(1),
        id=uuid.UUID(int=1),
        payload=b"",
        meta={TAG: "model", "cls": "os:system", "v": {}},
    )
    assert codec.roundtrip(event) == event


@needs_pydantic
def test_tag_key_inside_model_payload() -> None:
    holder = Holder(data={TAG: "dataclass", "cls": "os:system"})
    assert codec.roundtrip(holder) == holder


def test_failed_encode_does_not_confuse_the_next_one() -> None:
    """A failed encode after some tags were written must not leave a stale tag count."""
    with pytest.raises(TypeError):
        codec.encode([datetime(2024, 1, 1), date(2024, 1, 1), {1, 2}])
    value = {TAG: 1}
    assert codec.decode(codec.encode(value)) == value


def test_concurrent_encoding_threads() -> None:
    values = [
        {TAG: [1, 2]},
        {"when": datetime(2024, 1, 1), "n": Decimal("2")},
        {TAG: date(2024, 1, 2), "p": Point(1, 2)},
        [1, "two", None],
    ]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                for value in values:
                    assert codec.decode(codec.encode(value)) == value
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _walk(value: Any) -> list[Any]:
    """Every node of a JSON-like value (keys included)."""
    nodes = [value]
    if isinstance(value, dict):
        for k, v in value.items():
            nodes += [k, *_walk(v)]
    elif isinstance(value, list | tuple):
        for item in value:
            nodes += _walk(item)
    return nodes


# --- corrupt stored bytes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[1, 2] trailing", "not valid JSON: Extra data"),
        (b"{'a': 1}", "not valid JSON"),
        (b'{"__sayiir__": "datetime", "v": "2024-05-01T00:00:00"', "not valid JSON"),
        (b'{"__sayiir__": "nope", "v": 1}', "unknown sayiir tag 'nope'"),
        (b'{"__sayiir__": 3}', "unknown sayiir tag 3"),
        (b'{"__sayiir__": "datetime"}', "malformed 'datetime' tag: missing v"),
        (b'{"__sayiir__": "date", "v": "2024-05-01", "x": 1}', "'date' tag: unexpected x"),
        (b'{"__sayiir__": "datetime", "v": 5}', "malformed 'datetime' tag: TypeError"),
        (b'{"__sayiir__": "datetime", "v": "yesterday"}', "malformed 'datetime' tag"),
        (b'{"__sayiir__": "datetime", "v": "2024-05-01", "fold": 2}', "fold must be 0 or 1"),
        (b'{"__sayiir__": "datetime", "v": "2024-05-01", "tz": "Mars/Base"}', "'datetime' tag"),
        (b'{"__sayiir__": "time", "v": "25:00"}', "malformed 'time' tag"),
        (b'{"__sayiir__": "timedelta", "v": [1, 2]}', "malformed 'timedelta' tag"),
        (b'{"__sayiir__": "timedelta", "v": [1, 2, 3.5]}', "malformed 'timedelta' tag"),
        (b'{"__sayiir__": "decimal", "v": "ten"}', "malformed 'decimal' tag"),
        (b'{"__sayiir__": "uuid", "v": "123"}', "malformed 'uuid' tag"),
        (b'{"__sayiir__": "bytes", "v": "not base64!"}', "malformed 'bytes' tag"),
        (b'{"__sayiir__": "dict", "v": [["a"]]}', "malformed 'dict' tag"),
        (b'{"__sayiir__": "dict", "v": [[1, 2]]}', "malformed 'dict' tag"),
        (b'{"__sayiir__": "dataclass", "cls": 1, "v": {}}', "malformed 'dataclass' tag"),
        (b'[{"ok": 1}, {"__sayiir__": "uuid", "v": "123"}]', "malformed 'uuid' tag"),
    ],
)
def test_corrupt_input_raises_deserialization_error(data: bytes, message: str) -> None:
    with pytest.raises(DeserializationError, match=message) as info:
        codec.decode(data)
    assert not isinstance(info.value, ValueError)  # not a raw JSONDecodeError
    assert str(info.value).startswith(("stored value", "cannot decode"))


# --- a user codec wrapping JsonCodec (the module docstring's example) ----------------------


class CompressedJsonCodec:
    name = "json+zlib"

    def __init__(self) -> None:
        self._json = JsonCodec()

    def encode(self, value: object) -> bytes:
        return zlib.compress(self._json.encode(value))

    def decode(self, data: bytes) -> object:
        try:
            raw = zlib.decompress(data)
        except zlib.error as exc:
            raise DeserializationError(f"stored value is not zlib data: {exc}") from exc
        return self._json.decode(raw)


def test_a_wrapping_codec_satisfies_the_protocol() -> None:
    wrapped = CompressedJsonCodec()
    assert isinstance(wrapped, Codec)
    value = {"when": date(2024, 5, 1), "t": (1, 2)}
    assert wrapped.decode(wrapped.encode(value)) == {"when": date(2024, 5, 1), "t": [1, 2]}
    with pytest.raises(DeserializationError, match="not zlib data"):
        wrapped.decode(b"plain")


# --- properties -----------------------------------------------------------------------------

_json_keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from([TAG, 'x"__sayiir__', "v", "cls"]),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)
_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.sampled_from([TAG, '"__sayiir__": ', "datetime", "dict"]),
)
json_like = st.recursive(
    _json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(_json_keys, children, max_size=4),
    ),
    max_leaves=24,
)


def _has_tag_key(value: Any) -> bool:
    return any(isinstance(node, dict) and TAG in node for node in _walk(value))


@given(json_like)
def test_json_like_values_round_trip_like_json(value: Any) -> None:
    expected = json.loads(json.dumps(value))
    assert same_json(codec.decode(codec.encode(value)), expected)
    assert same_json(codec.roundtrip(value), expected)
    if not _has_tag_key(value):
        assert codec.encode(value) == json.dumps(value).encode()


_fixed_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
_zones = st.none() | st.timezones() | _fixed_offsets
extra_values = st.one_of(
    st.datetimes(timezones=_zones),
    st.dates(),
    st.times(timezones=_zones),
    st.timedeltas(),
    st.decimals(),
    st.uuids(),
    st.binary(),
)


@given(extra_values)
def test_extra_types_round_trip_property(value: Any) -> None:
    result = codec.decode(codec.encode(value))
    assert type(result) is type(value)
    if isinstance(value, Decimal):
        assert str(result) == str(value)
    else:
        assert result == value
    if isinstance(value, datetime | time):
        assert (result.tzinfo, result.fold) == (value.tzinfo, value.fold)
        assert result.replace(tzinfo=None) == value.replace(tzinfo=None)


@given(st.dictionaries(_json_keys, extra_values | json_like, max_size=5))
def test_mixed_dicts_round_trip_property(value: dict[Any, Any]) -> None:
    result = codec.roundtrip(value)
    expected = {json.loads(json.dumps({k: 0})).popitem()[0]: v for k, v in value.items()}
    assert list(result) == list(expected)
    for key, item in expected.items():
        if isinstance(item, Decimal):
            assert str(result[key]) == str(item)
        elif isinstance(item, datetime | date | time | timedelta | uuid.UUID | bytes):
            assert result[key] == item
        else:
            assert same_json(result[key], json.loads(json.dumps(item)))
