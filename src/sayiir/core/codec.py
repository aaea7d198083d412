"""Codecs turn values into stored bytes and back.

Every value that crosses a step boundary goes through a codec, on the in-memory path too.

``JsonCodec`` (the default)
    Plain JSON values behave exactly like ``json.loads(json.dumps(value))``, as in the
    reference (spec/api.md §2): tuples arrive as lists, ``int``/``float``/``bool``/``None``
    dict keys as strings, ``NaN``/``Infinity`` pass through, and anything else (a ``set``,
    an arbitrary object) raises ``TypeError: Object of type set is not JSON serializable``.
    The stored text is the one ``json.dumps`` writes, and plain values cost what bare
    ``json.dumps``/``json.loads`` cost.

    Beyond the reference, these values come back as the same type with the same value:
    ``datetime`` (naive or aware; a ``zoneinfo.ZoneInfo`` zone is kept by key, other
    ``tzinfo`` classes come back as a fixed-offset ``datetime.timezone``), ``date``,
    ``time``, ``timedelta``, ``Decimal``, ``UUID``, ``bytes`` (``bytearray`` comes back as
    ``bytes``), dataclass instances (nested ones too) and pydantic v2 models. Subclasses of
    the standard types come back as the base type, as ``json`` does for ``str`` subclasses.

    Such a value is written as a tagged JSON object::

        {"__sayiir__": "datetime", "v": "2024-05-01T12:00:00+00:00"}
        {"__sayiir__": "dataclass", "cls": "shop.models:Order", "v": {"id": 7, "lines": []}}

    A user dict that happens to hold the ``"__sayiir__"`` key is escaped as
    ``{"__sayiir__": "dict", "v": [[key, value], ...]}``, so it comes back unchanged.

    Dataclasses and models are named by ``"module:qualname"``. When decoding, the class is
    looked up only in modules that are already imported (``sys.modules``) and only accepted
    if it is a dataclass (for a ``"dataclass"`` tag) or a ``pydantic.BaseModel`` subclass
    (for a ``"model"`` tag): stored data never makes sayiir import a module, and there is
    no pickle. Classes must therefore be defined at module level (a class defined inside a
    function is refused when encoding). A dataclass is rebuilt by calling the class with
    its ``init`` fields (as cattrs or dacite do) and then setting its ``init=False``
    fields; a missing field falls back to its default. A model is stored as
    ``model_dump(mode="json", round_trip=True)`` and rebuilt with ``model_validate_json``:
    it round-trips exactly as well as through pydantic's own JSON.

    Stored bytes that are not UTF-8, not JSON or carry a malformed tag raise
    :class:`~sayiir.errors.DeserializationError`; values that cannot be encoded raise
    ``TypeError`` naming their type. The engine adds which task it was, e.g. with
    ``exc.add_note(f"while encoding the output of task {task_id!r}")``, so the message
    itself stays the reference one.

Writing your own codec
    Any object with a stable ``name`` and ``encode``/``decode`` methods satisfies
    :class:`Codec`. To compress or encrypt stored values, wrap ``JsonCodec`` and transform
    its bytes; give the result its own ``name`` because the name is stored beside the
    payloads (a bytes-to-bytes layer could become its own protocol later, as temporal's
    payload codecs are)::

        import zlib

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

    ``decode`` must raise ``DeserializationError`` for data it cannot read and ``encode``
    should raise ``TypeError`` for values it cannot store.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Protocol, runtime_checkable
from uuid import UUID
from zoneinfo import ZoneInfo

from sayiir.core.describe import describe
from sayiir.errors import DeserializationError

__all__ = ["Codec", "JsonCodec"]

_TAG: Final = "__sayiir__"
# How the tag key appears in ``json.dumps`` text. Any text that holds a tag contains it;
# text without it is decoded with no object hook (the fast path).
_MARK: Final = '"__sayiir__"'
# The tag key followed by the default key separator: it only appears where an object
# key ends in ``"__sayiir__`` (see ``_dumps``).
_MARK_KEY: Final = '"__sayiir__":'

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})

_UNSUPPORTED_HINT: Final = (
    "sayiir's JsonCodec also accepts datetime, date, time, timedelta, Decimal, UUID, bytes, "
    "dataclasses and pydantic models"
)


@runtime_checkable
class Codec(Protocol):
    """Value <-> bytes. ``name`` is stored beside payloads that need to know it.

    ``encode`` raises ``TypeError`` for a value it cannot store; ``decode`` raises
    :class:`~sayiir.errors.DeserializationError` for bytes it cannot read. See the module
    docstring for how to write one.

    >>> codec = JsonCodec()
    >>> codec.decode(codec.encode((1, 2)))
    [1, 2]
    """

    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


class JsonCodec:
    """The default codec: ``json.dumps`` text, UTF-8 encoded, plus tagged extra types.

    >>> from datetime import date
    >>> codec = JsonCodec()
    >>> codec.encode({1: (2, 3)})
    b'{"1": [2, 3]}'
    >>> codec.roundtrip({"day": date(2024, 5, 1)})
    {'day': datetime.date(2024, 5, 1)}
    """

    name = "json"

    def encode(self, value: Any) -> bytes:
        kind = type(value)
        if kind is int:  # the common step output: skip the encoder machinery
            return int.__repr__(value).encode()
        if kind is str:
            return _encode_str(value).encode()
        return _dumps(value).encode()

    def decode(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Decode stored bytes (a ``str`` of JSON text is accepted too)."""
        if isinstance(data, str):
            return _loads(data)
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise DeserializationError(f"stored value is not UTF-8 text: {exc}") from exc
        return _loads(text)

    def roundtrip(self, value: Any) -> Any:
        """``decode(encode(value))`` without the bytes; a scalar is returned as is."""
        if type(value) in _SCALARS:
            return value
        text = _dumps(value)
        if _MARK in text:
            return _loads(text)
        # Our own output is one complete JSON document: the scanner reads all of it.
        return _scan_plain(text, 0)[0]

    def __repr__(self) -> str:
        return "JsonCodec()"


# --- encoding -------------------------------------------------------------------------------


class _TagCount(threading.local):
    """Tags written by ``default=`` hooks in this thread since the last reset."""

    tags = 0


_count: Final = _TagCount()


def _to_tag(o: Any) -> dict[str, Any]:
    """``default=`` hook: the tagged object for a value plain JSON cannot hold."""
    _count.tags += 1
    encode = _TAGGERS.get(type(o))
    if encode is not None:
        return encode(o)
    for base, encode in _TAGGERS.items():  # subclasses; datetime is listed before date
        if isinstance(o, base):
            return encode(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return _tag_dataclass(o)
    pydantic_main = sys.modules.get("pydantic.main")
    if pydantic_main is not None and isinstance(o, pydantic_main.BaseModel):
        return _tag_model(o)
    raise TypeError(
        f"Object of type {type(o).__name__} is not JSON serializable ({_UNSUPPORTED_HINT})"
    )


def _tag_escaped(o: Any) -> dict[str, Any]:
    """``default=`` hook of the escaping pass: also escapes user dicts inside the payload."""
    tag = _to_tag(o)
    tag["v"] = _escape(tag["v"])
    return tag


_ENCODER: Final = json.JSONEncoder(default=_to_tag)
_ESCAPING_ENCODER: Final = json.JSONEncoder(default=_tag_escaped)


def _dumps(value: Any) -> str:
    """``json.dumps(value)``, with extra types tagged and user dicts escaped if needed.

    Plain values cost one C-encoder pass and a substring search. If the text holds the tag
    key, either we wrote tags, or a user dict has the tag key (it must be escaped), or a
    string merely contains it. Each of our tags writes ``"__sayiir__":`` exactly once,
    and nothing else can write that text except an object key ending in ``"__sayiir__``
    (inside a JSON string a quote is always escaped). So if the text holds it exactly as
    many times as we wrote tags, no user dict has the key; otherwise encode again,
    escaping (the slow path, for user data holding our tag key).

    The count is per thread and reset whenever tags were written. A nested encode (from a
    pydantic serializer, say) can only make it too low, which takes the safe slow path.
    """
    try:
        text = _ENCODER.encode(value)
    except BaseException:
        _count.tags = 0
        raise
    if _MARK not in text:
        return text
    tags = _count.tags
    _count.tags = 0
    if text.count(_MARK_KEY) == tags:
        return text
    try:
        return _ESCAPING_ENCODER.encode(_escape(value))
    finally:
        _count.tags = 0


def _escape(x: Any) -> Any:
    """A JSON-equivalent copy of ``x`` where dicts holding the tag key are wrapped.

    Containers are treated as ``json`` treats them (any ``dict``, ``list`` or ``tuple``
    subclass); other objects are left to the ``default=`` hook.
    """
    if isinstance(x, dict):
        if _TAG in x:
            return {_TAG: "dict", "v": [[_json_key(k), _escape(v)] for k, v in x.items()]}
        return {k: _escape(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_escape(item) for item in x]
    return x


def _json_key(key: Any) -> str:
    """The string ``json.dumps`` writes for a dict key (same rules and order as ``_json``)."""
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, float):
        if key != key:
            return "NaN"
        if key in (float("inf"), float("-inf")):
            return "Infinity" if key > 0 else "-Infinity"
        return float.__repr__(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _zone_fields(tag: dict[str, Any], tzinfo: Any, fold: int) -> dict[str, Any]:
    if isinstance(tzinfo, ZoneInfo) and tzinfo.key is not None:
        tag["tz"] = tzinfo.key
    if fold:
        tag["fold"] = 1
    return tag


def _tag_datetime(o: datetime) -> dict[str, Any]:
    return _zone_fields({_TAG: "datetime", "v": datetime.isoformat(o)}, o.tzinfo, o.fold)


def _tag_date(o: date) -> dict[str, Any]:
    return {_TAG: "date", "v": date.isoformat(o)}


def _tag_time(o: time) -> dict[str, Any]:
    return _zone_fields({_TAG: "time", "v": time.isoformat(o)}, o.tzinfo, o.fold)


def _tag_timedelta(o: timedelta) -> dict[str, Any]:
    return {_TAG: "timedelta", "v": [o.days, o.seconds, o.microseconds]}


def _tag_decimal(o: Decimal) -> dict[str, Any]:
    return {_TAG: "decimal", "v": Decimal.__str__(o)}


def _tag_uuid(o: UUID) -> dict[str, Any]:
    return {_TAG: "uuid", "v": UUID.__str__(o)}


def _tag_bytes(o: bytes | bytearray) -> dict[str, Any]:
    return {_TAG: "bytes", "v": base64.b64encode(o).decode("ascii")}


# Exact-type lookup first; the order matters for the isinstance fallback (datetime < date).
_TAGGERS: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    datetime: _tag_datetime,
    date: _tag_date,
    time: _tag_time,
    timedelta: _tag_timedelta,
    Decimal: _tag_decimal,
    UUID: _tag_uuid,
    bytes: _tag_bytes,
    bytearray: _tag_bytes,
}


def _class_ref(cls: type, kind: str) -> str:
    """``"module:qualname"`` for a class that can be found again by that name."""
    ref = f"{cls.__module__}:{cls.__qualname__}"
    if _find_class(cls.__module__, cls.__qualname__) is not cls:
        raise TypeError(
            f"Object of type {cls.__name__} cannot be encoded: {kind} {ref} cannot be found "
            "again by that name when decoding (define it at module level, not inside a "
            "function, and do not rebind its name)"
        )
    return ref


def _tag_dataclass(o: Any) -> dict[str, Any]:
    ref = _class_ref(type(o), "dataclass")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(o):
        try:
            values[field.name] = getattr(o, field.name)
        except AttributeError as exc:
            raise TypeError(
                f"Object of type {type(o).__name__} cannot be encoded: dataclass {ref} has "
                f"no value for field {field.name!r}"
            ) from exc
    return {_TAG: "dataclass", "cls": ref, "v": values}


def _tag_model(o: Any) -> dict[str, Any]:
    ref = _class_ref(type(o), "pydantic model")
    try:
        dumped = o.model_dump(mode="json", round_trip=True)
    except (ValueError, TypeError) as exc:  # PydanticSerializationError, UnicodeDecodeError
        raise TypeError(
            f"Object of type {type(o).__name__} cannot be encoded: pydantic model {ref} "
            f"failed to dump to JSON: {exc}"
        ) from exc
    return {_TAG: "model", "cls": ref, "v": dumped}


# --- decoding -------------------------------------------------------------------------------


def _object_hook(obj: dict[str, Any]) -> Any:
    if _TAG not in obj:
        return obj
    kind = obj[_TAG]
    decode = _UNTAGGERS.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise DeserializationError(f"stored value has an unknown sayiir tag {kind!r}")
    try:
        return decode(obj)
    except DeserializationError:
        raise
    except Exception as exc:
        raise DeserializationError(
            f"stored value has a malformed {kind!r} tag: {describe(exc)}"
        ) from exc


_Scanner = Callable[[str, int], tuple[Any, int]]
_PLAIN_DECODER: Final = json.JSONDecoder()
_TAG_DECODER: Final = json.JSONDecoder(object_hook=_object_hook)
# ``scan_once`` is what ``JSONDecoder.raw_decode`` calls; using it directly skips two
# whitespace regex matches per call. Anything it does not fully consume (surrounding
# whitespace, trailing data, errors) goes through ``decode`` for json.loads' exact rules.
# (An instance attribute that typeshed does not declare: read from the instance's dict.)
_scan_plain: Final[_Scanner] = vars(_PLAIN_DECODER)["scan_once"]
_scan_tagged: Final[_Scanner] = vars(_TAG_DECODER)["scan_once"]


def _loads(text: str) -> Any:
    decoder, scan = (_TAG_DECODER, _scan_tagged) if _MARK in text else (_PLAIN_DECODER, _scan_plain)
    try:
        value, end = scan(text, 0)
    except StopIteration:
        end = -1
    except ValueError as exc:
        raise DeserializationError(f"stored value is not valid JSON: {exc}") from exc
    if end == len(text):
        return value
    try:
        return decoder.decode(text)
    except ValueError as exc:
        raise DeserializationError(f"stored value is not valid JSON: {exc}") from exc


def _fields(obj: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Check that a tagged object has exactly the expected keys."""
    missing = [key for key in required if key not in obj]
    if missing:
        raise DeserializationError(
            f"stored value has a malformed {obj[_TAG]!r} tag: missing {', '.join(missing)}"
        )
    extra = obj.keys() - {_TAG, *required, *optional}
    if extra:
        raise DeserializationError(
            f"stored value has a malformed {obj[_TAG]!r} tag: unexpected {', '.join(sorted(extra))}"
        )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _with_zone(value: Any, obj: dict[str, Any]) -> Any:
    changes: dict[str, Any] = {}
    if "tz" in obj:
        changes["tzinfo"] = ZoneInfo(_str(obj["tz"]))
    if "fold" in obj:
        if obj["fold"] not in (0, 1):
            raise ValueError(f"fold must be 0 or 1, not {obj['fold']!r}")
        changes["fold"] = obj["fold"]
    return value.replace(**changes) if changes else value


def _untag_datetime(obj: dict[str, Any]) -> datetime:
    _fields(obj, ("v",), ("tz", "fold"))
    result: datetime = _with_zone(datetime.fromisoformat(_str(obj["v"])), obj)
    return result


def _untag_date(obj: dict[str, Any]) -> date:
    _fields(obj, ("v",))
    return date.fromisoformat(_str(obj["v"]))


def _untag_time(obj: dict[str, Any]) -> time:
    _fields(obj, ("v",), ("tz", "fold"))
    result: time = _with_zone(time.fromisoformat(_str(obj["v"])), obj)
    return result


def _untag_timedelta(obj: dict[str, Any]) -> timedelta:
    _fields(obj, ("v",))
    parts = obj["v"]
    if not (
        isinstance(parts, list) and len(parts) == 3 and all(type(part) is int for part in parts)
    ):
        raise TypeError(f"expected [days, seconds, microseconds], got {parts!r}")
    return timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])


def _untag_decimal(obj: dict[str, Any]) -> Decimal:
    _fields(obj, ("v",))
    return Decimal(_str(obj["v"]))


def _untag_uuid(obj: dict[str, Any]) -> UUID:
    _fields(obj, ("v",))
    return UUID(_str(obj["v"]))


def _untag_bytes(obj: dict[str, Any]) -> bytes:
    _fields(obj, ("v",))
    return base64.b64decode(_str(obj["v"]), validate=True)


def _untag_dict(obj: dict[str, Any]) -> dict[str, Any]:
    _fields(obj, ("v",))
    pairs = obj["v"]
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in pairs
    ):
        raise TypeError("expected a list of [key, value] pairs")
    return dict(pairs)


def _find_class(module_name: str, qualname: str) -> Any:
    """The object at ``module:qualname`` in an already imported module, or ``None``.

    Only reads namespace entries (module ``__dict__``, then class ``__dict__`` for nested
    classes): no import, no module ``__getattr__``, no descriptor runs.
    """
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        namespace = getattr(obj, "__dict__", None) if obj is not None else None
        if not isinstance(namespace, dict | MappingProxyType):
            return None
        obj = namespace.get(part)
    return obj


def _resolve(obj: dict[str, Any], kind: str, accept: Callable[[type], bool]) -> Any:
    ref = _str(obj["cls"])
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise DeserializationError(
            f"stored value names {kind} class {ref!r}, which is not 'module:qualname'"
        )
    if module_name not in sys.modules:
        raise DeserializationError(
            f"cannot decode {kind} {ref}: module {module_name!r} is not imported. sayiir "
            "never imports modules named in stored data; import it before running or "
            "resuming the workflow"
        )
    cls = _find_class(module_name, qualname)
    if cls is None:
        raise DeserializationError(
            f"cannot decode {kind} {ref}: module {module_name!r} has no class {qualname!r}"
        )
    if not isinstance(cls, type) or not accept(cls):
        raise DeserializationError(f"cannot decode {kind} {ref}: it is not a {kind} class")
    return cls


def _untag_dataclass(obj: dict[str, Any]) -> Any:
    _fields(obj, ("cls", "v"))
    cls = _resolve(obj, "dataclass", dataclasses.is_dataclass)
    ref = obj["cls"]
    values = obj["v"]
    if not isinstance(values, dict):
        raise TypeError(f"expected the fields of {ref} as an object")
    fields = dataclasses.fields(cls)
    unknown = values.keys() - {field.name for field in fields}
    if unknown:
        raise DeserializationError(
            f"cannot decode dataclass {ref}: it has no field {', '.join(sorted(unknown))} "
            "(the class changed since the value was stored)"
        )
    init: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for field in fields:
        if field.name in values:
            value = values[field.name]
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        elif field.init:
            raise DeserializationError(
                f"cannot decode dataclass {ref}: field {field.name!r} is missing and has no "
                "default (the class changed since the value was stored)"
            )
        else:
            continue
        (init if field.init else late)[field.name] = value
    try:
        instance = cls(**init)
    except Exception as exc:
        raise DeserializationError(
            f"cannot decode dataclass {ref}: calling it failed with {describe(exc)}"
        ) from exc
    for name, value in late.items():
        object.__setattr__(instance, name, value)
    return instance


def _is_model_class(cls: type) -> bool:
    pydantic_main = sys.modules.get("pydantic.main")
    return pydantic_main is not None and issubclass(cls, pydantic_main.BaseModel)


def _untag_model(obj: dict[str, Any]) -> Any:
    _fields(obj, ("cls", "v"))
    cls = _resolve(obj, "pydantic model", _is_model_class)
    try:
        return cls.model_validate_json(json.dumps(obj["v"]))
    except ValueError as exc:  # pydantic.ValidationError
        raise DeserializationError(
            f"cannot decode pydantic model {obj['cls']}: the stored value does not validate "
            f"(the model changed since the value was stored?): {exc}"
        ) from exc


_UNTAGGERS: Final[dict[str, Callable[[dict[str, Any]], Any]]] = {
    "datetime": _untag_datetime,
    "date": _untag_date,
    "time": _untag_time,
    "timedelta": _untag_timedelta,
    "decimal": _untag_decimal,
    "uuid": _untag_uuid,
    "bytes": _untag_bytes,
    "dict": _untag_dict,
    "dataclass": _untag_dataclass,
    "model": _untag_model,
}
