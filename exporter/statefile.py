"""The state's record format: a generic dataclass <-> JSON codec, and bounded, typed reads of
untrusted JSON (a database record, or a whole legacy JSON state file). Knows nothing about
domains (exporter/store.py decides what is saved) nor where records live (exporter/statedb.py).

Generic on purpose: a field added to a result dataclass is saved and restored without touching
this code. The rules:
- dataclasses become objects of their fields; a field declared `repr=False` is never written
  (that is how personal data such as a contact's e-mail address is marked), nor is a field
  whose value is its default None or its default empty collection (it reads back as such);
- datetimes are ISO 8601 text (restored as aware UTC), tuples/sets lists, mappings objects;
- on reading, the declared type hints drive the conversion: unknown keys are ignored, a missing
  field takes its default, and anything else that does not fit raises `StateError`.
Readers and writers are compiled once per type (100k domains are ~10M values). A load's
readers share equal values across its records (text, tuples of text, records without
timestamps: see "decoding") and fill slots records without calling __init__ (_builder):
restored records cost ~1.4 KB per domain instead of ~7 KB.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import sys
import tempfile
import threading
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

TEMP_PREFIX = ".domainwatch-"
MAX_STATE_BYTES = 1024 * 1024 * 1024  # ~100x a 10k-domain state; bounds a wrong path's cost


class StateError(ValueError):
    """The state file, or one record in it, cannot be used. `path` says where in the record."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str | int] = []

    def at(self, key: str | int) -> StateError:
        self.path.insert(0, key)
        return self

    def __str__(self) -> str:
        if not self.path:
            return self.message
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.path)
        return f"{where.lstrip('.')}: {self.message}"


# --- encoding ------------------------------------------------------------------------------
# One writer per concrete type, built once: a 10k-domain save walks ~1M values.

Writer = Callable[[Any], Any]
_WRITERS: dict[Any, Writer] = {}  # by type, or (dataclass, skipped fields)


def dump(value: object) -> Any:
    """A JSON-ready copy of `value` (dataclasses, datetimes, tuples, mappings, scalars)."""
    kind = type(value)
    writer = _WRITERS.get(kind)
    if writer is None:
        writer = _WRITERS[kind] = _writer_for(kind)
    return writer(value)


def _same(value: Any) -> Any:
    return value


def _writer_for(kind: type) -> Writer:
    if kind in (type(None), bool, int, str, float):
        return _same
    if issubclass(kind, enum.Enum):
        return lambda v: dump(v.value)
    if issubclass(kind, datetime):
        return lambda v: v.isoformat()
    if dataclasses.is_dataclass(kind):
        return _compile_writer(kind, frozenset())
    if issubclass(kind, Mapping):
        return _write_mapping
    if issubclass(kind, tuple | list):
        return lambda v: [x if type(x) in _ATOMIC else dump(x) for x in v]
    if issubclass(kind, set | frozenset):
        return lambda v: sorted((dump(x) for x in v), key=repr)
    raise StateError(f"cannot save a {kind.__name__}")


_ATOMIC = frozenset({type(None), bool, int, str, float})


def dumper(kind: type, skip: frozenset[str]) -> Writer:
    """dump() for instances of dataclass `kind`, leaving out the `skip` fields."""
    key = (kind, skip)
    writer = _WRITERS.get(key)
    if writer is None:
        writer = _WRITERS[key] = _compile_writer(kind, skip)
    return writer


def _compile_writer(kind: type, skip: frozenset[str]) -> Writer:
    """One function per dataclass: its fields as an object, atomic values inline. A field
    whose value is its default None, or its default empty collection, is left out (it reads
    back as the default): a fully populated domain has ~20 of them, a quarter of its record.
    repr=False marks data that must not leave memory (a contact's e-mail address)."""
    namespace: dict[str, Any] = {"dump": dump, "ATOMIC": _ATOMIC}
    lines = ["def write(v):", "    out = {}"]
    for i, f in enumerate(dataclasses.fields(kind)):
        if not f.repr or f.name in skip:
            continue
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        put = f"out[{f.name!r}] = x if type(x) in ATOMIC else dump(x)"
        lines.append(f"    x = v.{f.name}")
        if default is None:
            lines += ["    if x is not None:", f"        {put}"]
        elif type(default) in (tuple, list, dict) and not default:
            namespace[f"empty{i}"] = type(default)
            lines += [f"    if x or type(x) is not empty{i}:", f"        {put}"]
        else:
            lines.append(f"    {put}")
    lines.append("    return out")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from field names only
    compiled: Writer = namespace["write"]
    return compiled


def _write_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise StateError(f"mapping key {k!r} is not text")
        out[k] = v if type(v) in _ATOMIC else dump(v)
    return out


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one, not one per json.dumps call


def encode(document: object) -> bytes:
    """The document's JSON bytes. Raises StateError for a value the codec cannot write."""
    return encode_json(dump(document))


def encode_json(data: object) -> bytes:
    """JSON bytes of what dump() returned. Raises StateError."""
    try:
        return _ENCODER.encode(data).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateError(f"cannot encode state: {exc}") from None


# --- decoding ------------------------------------------------------------------------------
# One reader per type hint, built once from the hint; a reader checks and converts one parsed
# JSON value and raises StateError (located on the way out) for anything that does not fit.
#
# Restoring 100k domains builds ~10M values, most of them repeats (statuses, registrars,
# nameserver names, servers, reasons, a contact's verdict): a reader also gets the `shared`
# dict of the load (a Decoder's), and returns one object for equal values. Only values that
# cannot be told apart from a copy are shared: text, tuples of text, small mappings of text,
# and frozen records whose every field is such a value (or None: a CheckState that never ran
# is shared, one with timestamps is not). The dict is bounded (Decoder.decode clears it when
# full), so a hostile file cannot grow it; its keys never collide across kinds: text is keyed
# by itself, a tuple of text by itself, everything else by a tuple that starts with a class or
# a private marker.

Shared = dict[Any, Any]
Reader = Callable[[Any, Shared], Any]
_READERS: dict[Any, Reader] = {}
SHARE_LIMIT = 1 << 16  # entries of a load's `shared` dict before it starts afresh
_SHARE_MAX_ITEMS = 16  # longer tuples and mappings are not worth a key of their own
_IDS = object()  # key marker: a shared tuple of shared records, by their identities
_T = typing.TypeVar("_T")


def load(hint: Any, raw: object) -> Any:
    """`raw` (parsed JSON) as a value of type `hint`. Raises StateError naming the path."""
    return reader(hint)(raw, {})


def reader(hint: Any) -> Reader:
    found = _READERS.get(hint)
    if found is None:
        with _BUILD_LOCK:
            found = _READERS.get(hint)
            if found is None and hint in _BUILDING:
                # A dataclass that contains itself: its reader is found when it is called.
                return lambda raw, shared: _READERS[hint](raw, shared)
            if found is None:
                _BUILDING.add(hint)
                try:
                    found = _READERS[hint] = _reader_for(hint)
                finally:
                    _BUILDING.discard(hint)
    return found


_BUILD_LOCK = threading.RLock()  # two loads at once (tests) build each reader once
_BUILDING: set[Any] = set()


def load_dataclass(cls: type, raw: object, skip: frozenset[str] = frozenset()) -> Any:
    """A `cls` from a JSON object: unknown keys ignored, missing fields take their defaults
    (StateError when a field without default is missing), as do the `skip` fields."""
    return _variant(cls, skip, "make")(raw, {})


def _variant(cls: type, skip: frozenset[str], mode: str) -> Callable[..., Any]:
    key = (cls, skip, mode)
    found = _VARIANTS.get(key)
    if found is None:
        with _BUILD_LOCK:
            found = _VARIANTS.get(key)
            if found is None:
                found = _VARIANTS[key] = _compile_reader(cls, skip, mode)
    return found


_VARIANTS: dict[tuple[type, frozenset[str], str], Callable[..., Any]] = {}


class Decoder:
    """Parses and restores the records of one load; equal values in its records share one
    object (see above)."""

    def __init__(self) -> None:
        self.shared: Shared = {}
        self._scan: Callable[[str, int], tuple[object, int]] = _PLAIN.scan_once  # type: ignore[attr-defined]

    def decode(self, data: bytes) -> object:
        """decode() of one record."""
        if len(self.shared) > SHARE_LIMIT:
            self.shared.clear()
        # The common case without json.loads' detours: an object in UTF-8 and nothing else
        # (what detect_encoding calls UTF-8: no BOM, no NUL in the first two bytes).
        if data[:1] == b"{" and data[1:2] not in (b"\x00", b"") and data[-1:] == b"}":
            # orjson first: a third of the standard parser's time (100k records: ~2 s of a
            # restart). What it refuses (NaN, 1e400, lone surrogates, depth > 1024, bad
            # UTF-8) goes the way below, as before. The one text both read, differently, is an
            # integer past 64 bits, which orjson reads as a float: the two integer fields of
            # a record (failures, serial_drift) refuse it, and a float field gets the value
            # it would have got anyway (tests/test_state_parser.py compares the two parsers).
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
            try:
                text = data.decode("utf-8", "surrogatepass")
                document, end = self._scan(text, 0)
                if end == len(text):
                    return document
            except (StopIteration, ValueError, RecursionError, MemoryError):
                pass  # the careful way below says what is wrong
        return _parse(data, _PLAIN)

    def share(self, value: _T) -> _T:
        """`value`, or an equal one met before (text or a tuple of text only)."""
        shared: _T = self.shared.setdefault(value, value)
        return shared

    def onto(self, base: _T, raw: object, skip: frozenset[str]) -> _T:
        """A record of `base`'s dataclass with base's `skip` fields and the other fields read
        from `raw` (a JSON object, as load_dataclass reads it)."""
        made: _T = _variant(type(base), skip, "onto")(raw, self.shared, base)
        return made


def evolve(record: _T, **changes: Any) -> _T:
    """dataclasses.replace(), without __init__ for a dataclass that has no __post_init__ and
    stores its fields in slots: a copy with `changes`. Restoring ages ~100k records."""
    cls = type(record)
    copier = _COPIERS.get(cls)
    if copier is None:
        copier = _COPIERS[cls] = _copier(cls)
    made: _T = copier(record, changes)
    return made


_COPIERS: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}


def _copier(cls: type) -> Callable[[Any, dict[str, Any]], Any]:
    builder = _builder(cls)
    if builder is None:
        return lambda record, changes: dataclasses.replace(record, **changes)
    names = [f.name for f in dataclasses.fields(cls)]
    namespace: dict[str, Any] = {"Builder": builder, "cls": cls}
    lines = ["def copy(record, changes):", "    made = Builder()"]
    lines += [f"    made.{n} = changes.pop({n!r}, record.{n})" for n in names]
    lines += [
        "    if changes:",
        "        raise TypeError(f'{cls.__name__} has no field {next(iter(changes))!r}')",
        "    made.__class__ = cls",
        "    return made",
    ]
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from field names only
    copy: Callable[[Any, dict[str, Any]], Any] = namespace["copy"]
    return copy


def _builder(cls: type) -> type | None:
    """A plain class with `cls`'s slots, or None. An instance of a frozen dataclass is filled
    in fastest as one of these (plain attribute stores, no __init__, no frozen __setattr__)
    and then made a `cls` by assigning __class__: a third of the cost of calling each slot's
    setter, and a tenth of __init__. Only for a dataclass whose __init__ would just store the
    fields (no __post_init__) in slots of its own; Python checks that the layouts match."""
    slots = cls.__dict__.get("__slots__")
    names = tuple(f.name for f in dataclasses.fields(cls))
    if _has_post_init(cls) or cls.__bases__ != (object,) or tuple(slots or ()) != names:
        return None
    builder = type(f"{cls.__name__}Builder", (), {"__slots__": names})
    try:
        probe = builder()
        probe.__class__ = cls
    except TypeError:  # a layout Python does not let us convert
        return None
    return builder


def _has_post_init(cls: type) -> bool:
    return hasattr(cls, "__post_init__")


def _reader_for(hint: Any) -> Reader:
    if hint is Any or hint is object:
        return _read_any
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _union_reader(args)
    if origin is typing.Literal:
        return _literal_reader(args)
    if origin in (tuple, list, set, frozenset) or hint in (tuple, list):
        return _sequence_reader(origin or hint, args)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return _mapping_reader(*(args or (Any, Any)))
    if hint is type(None):
        return _read_none
    if hint in _SCALARS:
        return _SCALARS[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_reader(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        compiled: Reader = _compile_reader(hint, frozenset(), "make")
        return compiled
    raise StateError(f"cannot restore type {hint!r}")


def _read_any(raw: Any, shared: Shared) -> Any:
    return raw


def _union_reader(args: tuple[Any, ...]) -> Reader:
    options = [a for a in args if a is not type(None)]
    nullable = len(options) < len(args)
    if len(options) == 1:
        only = reader(options[0])
        if not nullable:
            return only
        return lambda raw, shared: None if raw is None else only(raw, shared)
    readers = [reader(a) for a in options]

    def read(raw: Any, shared: Shared) -> Any:
        if raw is None and nullable:
            return None
        for option in readers:
            try:
                return option(raw, shared)
            except StateError:
                continue
        raise _wrong("a value of one of the declared types", raw)

    return read


def _literal_reader(args: tuple[Any, ...]) -> Reader:
    def read(raw: Any, shared: Shared) -> Any:
        if raw in args and type(raw) in {type(a) for a in args}:
            return raw
        raise _wrong(f"one of {args}", raw)

    return read


def _sequence_reader(container: Any, args: tuple[Any, ...]) -> Reader:
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        fixed = [reader(a) for a in args]

        def read_fixed(raw: Any, shared: Shared) -> Any:
            if type(raw) is not list or len(raw) != len(fixed):
                raise _wrong(f"a list of {len(fixed)}", raw)
            return tuple(_each(fixed, raw, shared))

        return read_fixed
    item = reader(args[0]) if args else _read_any
    fast = _fast_check(args[0]) if args else "True"
    valid: Callable[[list[Any]], bool] = (
        eval(f"lambda raw: all({fast} for v in raw)")  # noqa: S307 - built from type hints only
        if fast is not None
        else lambda raw: False
    )
    texts = container is tuple and args[:1] == (str,)
    records = container is tuple and bool(args) and _memo_plan(args[0]) is not None

    def read(raw: Any, shared: Shared) -> Any:
        if type(raw) is not list:
            raise _wrong("a list", raw)
        if texts and len(raw) <= _SHARE_MAX_ITEMS:
            # Equal to a tuple of text met before: text too (only text equals text).
            try:
                found = shared.get(items := tuple(raw))
            except TypeError:  # a list or an object in it
                found = None
            if found is not None:
                return found
            if valid(raw):
                keep = shared.setdefault
                found = shared[items] = tuple([keep(x, x) for x in raw])
                return found
        elif valid(raw):
            return container(raw)
        try:
            values = [item(x, shared) for x in raw]
        except StateError:  # again, one by one, to say where
            return container(_each([item] * len(raw), raw, shared))
        if not records or len(values) > _SHARE_MAX_ITEMS:
            return container(values)
        return _shared_tuple(values, shared)

    return read


def _shared_tuple(values: list[Any], shared: Shared) -> tuple[Any, ...]:
    # Shared records are one object per value: their identities are the tuple's value (the
    # tuple keeps them alive as long as its key is in `shared`).
    key = (_IDS, *map(id, values))
    found: tuple[Any, ...] | None = shared.get(key)
    if found is None:
        found = shared[key] = tuple(values)
    return found


def _each(readers: list[Reader], raw: list[Any], shared: Shared) -> list[Any]:
    out = []
    for i, (read, value) in enumerate(zip(readers, raw, strict=True)):
        try:
            out.append(read(value, shared))
        except StateError as exc:
            raise exc.at(i) from None
    return out


def _mapping_reader(key_hint: Any, value_hint: Any) -> Reader:
    read_key, read_value = reader(key_hint), reader(value_hint)
    fast = _fast_check(value_hint) if key_hint is str else None
    valid: Callable[[dict[Any, Any]], bool] = (
        eval(f"lambda raw: all(type(k) is str and {fast} for k, v in raw.items())")  # noqa: S307
        if fast is not None
        else lambda raw: False
    )
    # A mapping of text to text, flags or None (DnsResult.lame) is one object per value;
    # keyed with a marker of its own type ({"a": True} and {"a": 1} are equal mappings).
    whole = key_hint is str and _key_safe(value_hint)
    # Equal to a mapping met before means valid too when its values can only be text or None.
    early = whole and (_scalar_types(value_hint) or {bool}) <= {str, type(None)}
    marker = object()

    def read(raw: Any, shared: Shared) -> Any:
        if type(raw) is not dict:
            raise _wrong("an object", raw)
        if whole and len(raw) <= _SHARE_MAX_ITEMS:
            key = (marker, *raw.items())
            if early:
                try:
                    found = shared.get(key)
                except TypeError:  # a list or an object in it
                    found = None
                if found is not None:
                    return found
            if valid(raw):
                found = shared.get(key)
                if found is None:
                    keep = shared.setdefault
                    found = shared[key] = {
                        keep(k, k): keep(v, v) if type(v) is str else v for k, v in raw.items()
                    }
                return found
        elif valid(raw):
            keep = shared.setdefault
            return {keep(k, k): v for k, v in raw.items()}
        out = {}
        for k, v in raw.items():
            try:
                out[read_key(k, shared)] = read_value(v, shared)
            except StateError as exc:
                raise exc.at(k[:40] if k.isprintable() else repr(k)[:40]) from None
        return out

    return read


def _scalar_types(hint: Any) -> frozenset[Any] | None:
    """The types of `hint`'s values when it admits text, flags, whole numbers and None only."""
    if hint in (str, bool, int, type(None)):
        return frozenset({hint})
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        out: set[Any] = set()
        for arg in typing.get_args(hint):
            found = _scalar_types(arg)
            if found is None:
                return None
            out |= found
        return frozenset(out)
    return None


def _key_safe(hint: Any) -> bool:
    """Whether values of `hint` can stand for themselves in a key: equal means the same
    (True == 1 would make a flag and a number one key)."""
    found = _scalar_types(hint)
    return found is not None and not {bool, int} <= found


_PLANS: dict[Any, list[tuple[str, str]] | None] = {}


def _memo_plan(hint: Any) -> list[tuple[str, str]] | None:
    """How a record of dataclass `hint` is keyed for sharing: (field, how) per field read from
    the file, `how` being "value" (text, flags, numbers, a tuple of text: the value itself),
    "id" (a shared record or tuple of them: its identity) or "none" (anything else that may
    be None: shared only while it is None). None: never shared (not a frozen dataclass, or a
    field of another kind, such as a mapping that is not optional)."""
    with _BUILD_LOCK:
        if hint in _PLANS:
            return _PLANS[hint]
        _PLANS[hint] = None  # a record that contains itself is not shared
        plan = _PLANS[hint] = _make_plan(hint)
        return plan


def _make_plan(cls: Any) -> list[tuple[str, str]] | None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return None
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        return None
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        if not f.init or not f.repr:
            continue  # never read: always its default
        hint = hints[f.name]
        options = [a for a in _options(hint) if a is not type(None)]
        if _key_safe(hint) or all(_is_text_tuple(a) for a in options):
            plan.append((f.name, "value"))
        elif len(options) == 1 and _memo_plan(_records_of(options[0])) is not None:
            plan.append((f.name, "id"))
        elif len(options) < len(_options(hint)):
            plan.append((f.name, "none"))
        else:
            return None
    return plan


def _records_of(hint: Any) -> Any:
    """The dataclass of a tuple[Record, ...], or the hint itself."""
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,):
        return typing.get_args(hint)[0]
    return hint


def _options(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _is_text_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, Ellipsis)


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _compile_reader(cls: type, skip: frozenset[str], mode: str) -> Callable[..., Any]:
    """One function per dataclass, built on first use (not at creation: a dataclass may refer
    to itself), with the common cases inline: restoring 100k domains walks ~10M values, and a
    function call per value was most of the time. Each field is read the fast way first (a
    nested record by its own compiled reader, text shared, a tuple of text looked up whole);
    whatever that refuses goes to the field's full reader, which refuses it too and says
    where. `mode`: "make" an instance, or "onto" a base (read(raw, shared, base): the `skip`
    fields are base's)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    # Filled in without __init__ (a frozen dataclass's __init__ costs a call per field) when
    # it would only store the fields: see _builder. Otherwise the fields are collected for it.
    builder = _builder(cls)
    namespace: dict[str, Any] = {
        "StateError": StateError,
        "_wrong": _wrong,
        "cls": cls,
        "Builder": builder,
        "EMPTY": _EMPTY,
        "ABSENT": _EMPTY,
        "MAX_ITEMS": _SHARE_MAX_ITEMS,
        "shared_tuple": _shared_tuple,
    }
    start = ["    if type(raw) is not dict:", "        raise _wrong('an object', raw)"]
    start += _early_lines(cls, hints, namespace) if mode == "make" else []
    blocks = [
        _field_lines(i, f, hints, skip, mode, builder, namespace) for i, f in enumerate(fields)
    ]
    # A time next to an equal one (a check's last attempt and last success) is one float.
    previous = None
    for i, f in enumerate(fields):
        timed = f.name not in skip and f.init and f.repr
        if not (timed and [a for a in _options(hints[f.name]) if a is not type(None)] == [float]):
            previous = None
            continue
        here = f"made.{f.name}" if builder is not None else f"f{i}"
        if previous is not None:  # (0.0 == -0.0: zeros stay as they are)
            blocks[i] += [
                f"    if {here} and {here} == {previous}:",
                f"        {here} = {previous}",
            ]
        previous = here
    end = _make_lines(cls, fields, builder, mode, namespace)
    if "    early = None" in start:  # also under the key of its JSON object, as it came
        end[-1:] = ["    if early is not None:", "        shared[early] = made", end[-1]]
    made = ["    made = Builder()"] if builder is not None else []
    body = [*start, *made, *chain.from_iterable(blocks), *end]
    return _define("read", body, cls, mode, namespace)


def _define(
    name: str, body: list[str], cls: type, mode: str, namespace: dict[str, Any]
) -> Callable[..., Any]:
    source = "\n".join([f"def {name}(raw, shared, base=None):", *body])
    # Named after the class and mode, so that profiles and tracebacks say which reader ran.
    code = compile(source, f"<state reader: {mode} {cls.__qualname__}>", "exec")
    exec(code, namespace)  # noqa: S102 - source built from field names only
    defined: Callable[..., Any] = namespace[name]
    return defined


def _field_lines(
    i: int,
    f: dataclasses.Field[Any],
    hints: dict[str, Any],
    skip: frozenset[str],
    mode: str,
    builder: type | None,
    namespace: dict[str, Any],
) -> list[str]:
    """The careful reader's statements for field `f` (number i)."""
    name = repr(f.name)
    to = f"made.{f.name}" if builder is not None else f"f{i}"
    if f.default is not dataclasses.MISSING:
        namespace[f"default{i}"] = f.default
        default = [f"{to} = default{i}"]
    elif f.default_factory is dict:  # an empty mapping, shared like any other
        default = ["v = shared.get(EMPTY)", "if v is None:", "    v = shared[EMPTY] = {}"]
        default.append(f"{to} = v")
    elif f.default_factory is not dataclasses.MISSING:
        namespace[f"factory{i}"] = f.default_factory
        default = [f"{to} = factory{i}()"]
    else:
        default = [f"raise StateError('missing').at({name})"]
    if f.name in skip and mode == "onto":
        return [f"    {to} = base.{f.name}"]
    # repr=False fields were never written; a file that has one is not trusted with it
    if f.name in skip or not f.init or not f.repr:
        return [f"    {line}" for line in default]
    hint = hints[f.name]
    namespace[f"full{i}"] = reader(hint)
    if f.default is None and type(None) in _options(hint):
        # Absent and null are both None, which needs no check (a dict.get is the cheapest
        # lookup there is: half of `in` and [] together).
        return [
            f"    v = raw.get({name})",
            *(f"    {line}" for line in _value_lines(i, f.name, hint, namespace, "None")),
            f"    {to} = v",
        ]
    lines = [f"    v = raw.get({name}, ABSENT)", "    if v is ABSENT:"]
    lines += [f"        {line}" for line in default]
    lines.append("    else:")
    lines += [f"        {line}" for line in _value_lines(i, f.name, hint, namespace, "")]
    lines.append(f"        {to} = v")
    return lines


_EMPTY = object()  # key of a load's one empty mapping; a field absent from a JSON object


def _value_lines(i: int, name: str, hint: Any, namespace: dict[str, Any], none: str) -> list[str]:
    """Statements that turn `v` (the field's JSON value; `none`: "None" when None is to be
    kept as it is) into the field's value, or raise StateError located at the field. The
    fast way first; whatever it refuses goes to the field's full reader (full{i}), which
    refuses it too and says where."""
    full = [
        "    try:",
        f"        v = full{i}(v, shared)",
        "    except StateError as exc:",
        f"        raise exc.at({name!r}) from None",
    ]
    options = [a for a in _options(hint) if a is not type(None)]
    only = options[0] if len(options) == 1 else None
    unless_none = " and v is not None" if none else ""
    if_not_none = "if v is not None:" if none else "if True:"
    if str in options:  # text is shared
        rest = [_fast_check(a) for a in options if a is not str]
        ok = " or ".join(c for c in rest if c) if rest and None not in rest else ""
        lines = ["if type(v) is str:", "    v = shared.setdefault(v, v)"]
        if ok:
            return [*lines, f"elif not ({ok}){unless_none}:", *full]
        return [*lines, "elif v is not None:" if none else "else:", *full]
    fast = _fast_check(typing.Union[tuple(options)]) if options else None  # noqa: UP007
    if fast is not None:
        return [f"if not ({fast}){unless_none}:", *full]
    if only in _SCALARS:  # a datetime: its own reader, without the union's
        namespace[f"scalar{i}"] = _SCALARS[only]
        convert = f"v = scalar{i}(v, shared)"
    elif only is not None and _is_record(only):
        namespace[f"record{i}"] = reader(only)
        convert = f"v = record{i}(v, shared) if type(v) is dict else full{i}(v, shared)"
    elif only is not None and _is_text_tuple(only):
        # Equal to a tuple of text met before: text too (only text equals text). A list
        # or an object in it cannot be a key: TypeError, and the full reader says why.
        convert = (
            f"v = (shared.get(tuple(v)) or full{i}(v, shared)) if type(v) is list "
            f"and len(v) <= MAX_ITEMS else full{i}(v, shared)"
        )
    elif only is not None and _is_record(_records_of(only)):  # tuple[Record, ...]
        namespace[f"record{i}"] = reader(_records_of(only))
        share = "shared_tuple(v, shared)" if _memo_plan(_records_of(only)) else "tuple(v)"
        convert = (
            f"v = [record{i}(x, shared) for x in v] if type(v) is list else full{i}(v, shared)"
            f"\nv = {share} if type(v) is list and len(v) <= MAX_ITEMS else tuple(v)"
        )
    elif (
        typing.get_origin(only) in (dict, Mapping)
        and typing.get_args(only)[0] is str
        and _is_record(typing.get_args(only)[1])
    ):  # Mapping[str, Record]: JSON's keys are text
        namespace[f"record{i}"] = reader(typing.get_args(only)[1])
        convert = (
            f"v = {{shared.setdefault(k, k): record{i}(x, shared) for k, x in v.items()}}"
            f" if type(v) is dict else full{i}(v, shared)"
        )
    else:
        return [if_not_none, *full]
    return [
        if_not_none,
        "    try:",
        *(f"        {line}" for line in convert.split("\n")),
        "    except (StateError, TypeError):  # said again by the full reader, with where",
        *(f"    {line}" for line in full),
    ]


def _early_lines(cls: type, hints: dict[str, Any], namespace: dict[str, Any]) -> list[str]:
    """A shared record of flat fields (text, flags, numbers: a contact, a verdict, a check
    that never ran) is looked up by its JSON object's items first, before any field is read:
    equal items mean an equal record, once the flags and numbers are checked to be of their
    types (True == 1). The object's items and the fields' values are two keys of one record."""
    plan = _memo_plan(cls)
    if plan is None:
        return []
    namespace["EARLY"] = object()
    if any(how == "id" or _is_text_tuple_field(hints[n]) for n, how in plan):
        # Lists in it: only an empty object ({}: every field its default) is looked up.
        return [
            "    early = None",
            "    if not raw:",
            "        made = shared.get(early := (EARLY,))",
            "        if made is not None:",
            "            return made",
        ]
    absent = [f"raw.get({n!r}) is None" for n, how in plan if how == "none"]
    exact = []
    for n, how in plan:
        types_ = _scalar_types(hints[n]) if how == "value" else None
        if types_ and types_ & {bool, int}:
            checks = " or ".join(_FAST[t].replace("v", "x") for t in sorted(types_, key=str))
            exact.append(f"((x := raw.get({n!r})) is None or {checks})")
    return [
        "    early = None",
        f"    if {' and '.join(absent) or 'True'}:",
        "        try:",
        "            made = shared.get(early := (EARLY, *raw, *raw.values()))",
        "        except TypeError:  # a list or an object in it: read it field by field",
        "            made = early = None",
        f"        if made is not None and {' and '.join(exact) or 'True'}:",
        "            return made",
    ]


def _is_text_tuple_field(hint: Any) -> bool:
    return any(_is_text_tuple(a) for a in _options(hint))


def _make_lines(
    cls: type,
    fields: tuple[dataclasses.Field[Any], ...],
    builder: type | None,
    mode: str,
    namespace: dict[str, Any],
) -> list[str]:
    """The end of a compiled reader: the instance (shared if it can be)."""
    lines = []
    plan = _memo_plan(cls) if mode == "make" else None
    index = {f.name: i for i, f in enumerate(fields)}

    def value(name: str) -> str:
        return f"made.{name}" if builder is not None else f"f{index[name]}"

    if plan is not None:
        nulls = [f"{value(n)} is None" for n, how in plan if how == "none"]
        parts = ["cls"] + [
            value(n) if how == "value" else f"id({value(n)})" for n, how in plan if how != "none"
        ]
        condition = f" if {' and '.join(nulls)} else None" if nulls else ""
        lines += [
            f"    key = ({', '.join(parts)},){condition}",
            "    if key is not None:",
            "        found = shared.get(key)",
            "        if found is not None:",
            "            return found",
        ]
    if builder is not None:
        lines.append("    made.__class__ = cls")
    else:
        args = ", ".join(f"{f.name}=f{i}" for i, f in enumerate(fields) if f.init)
        lines += [
            "    try:",
            f"        made = cls({args})",
            "    except (TypeError, ValueError) as exc:  # a __post_init__ that validates",
            "        raise StateError(str(exc)[:120]) from None",
        ]
    if plan is not None:
        lines += ["    if key is not None:", "        shared[key] = made"]
    lines.append("    return made")
    return lines


# Python expressions true exactly when `v` is already a valid value of the type, as parsed
# from JSON, needing no conversion (a float field given an int still goes through its reader).
_FAST = {
    str: "type(v) is str",
    bool: "type(v) is bool",
    int: "type(v) is int",
    float: "(type(v) is float and v - v == 0.0)",  # finite: inf - inf and nan - nan are nan
    type(None): "v is None",
}


def _fast_check(hint: Any) -> str | None:
    if hint is Any or hint is object:
        return "True"
    if hint in _FAST:
        return _FAST[hint]
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        checks = [_fast_check(a) for a in typing.get_args(hint)]
        if all(c is not None for c in checks):
            return "(" + " or ".join(c for c in checks if c is not None) + ")"
    return None


def _read_none(raw: Any, shared: Shared) -> None:
    if raw is not None:
        raise _wrong("null", raw)


def _read_bool(raw: Any, shared: Shared) -> bool:
    if type(raw) is not bool:
        raise _wrong("true or false", raw)
    return raw


def _read_int(raw: Any, shared: Shared) -> int:
    if type(raw) is not int:
        raise _wrong("a whole number", raw)
    return raw


def _read_float(raw: Any, shared: Shared) -> float:
    if type(raw) is float and math.isfinite(raw):
        return raw
    if type(raw) is int and -_FLOAT_MAX <= raw <= _FLOAT_MAX:  # a 400-digit int: OverflowError
        return float(raw)
    raise _wrong("a finite number", raw)


_FLOAT_MAX = int(sys.float_info.max)


def _read_str(raw: Any, shared: Shared) -> str:
    if type(raw) is not str:
        raise _wrong("text", raw)
    text: str = shared.setdefault(raw, raw)
    return text


def _read_datetime(raw: Any, shared: Shared) -> datetime:
    if type(raw) is not str or len(raw) > 64:
        raise _wrong("an ISO 8601 time", raw)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _wrong("an ISO 8601 time", raw) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_SCALARS: dict[Any, Reader] = {
    bool: _read_bool,
    int: _read_int,
    float: _read_float,
    str: _read_str,
    datetime: _read_datetime,
}


def _enum_reader(cls: type[enum.Enum]) -> Reader:
    def read(raw: Any, shared: Shared) -> Any:
        try:
            return cls(raw)
        except (ValueError, TypeError):
            raise _wrong(f"a {cls.__name__}", raw) from None

    return read


def _show(raw: object) -> str:
    text = repr(raw) if not isinstance(raw, dict | list) else type(raw).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(expected: str, raw: object) -> StateError:
    return StateError(f"expected {expected}, got {_show(raw)}")


# --- files ---------------------------------------------------------------------------------


def read_document(path: Path) -> object | None:
    """The parsed JSON of `path`; None when it does not exist. Raises StateError for anything
    unreadable: I/O errors, size, and whatever decode() refuses."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"larger than {MAX_STATE_BYTES // 2**20} MiB")
    return decode(data)


def decode(data: bytes) -> object:
    """Parsed JSON of untrusted bytes (a whole legacy file or one database record). Raises
    StateError for encoding, syntax and nesting problems (RecursionError is caught here, at the
    one place untrusted depth meets recursive code)."""
    return _parse(data, _PLAIN)


_PLAIN = json.JSONDecoder()


def _parse(data: bytes, decoder: json.JSONDecoder) -> object:
    try:
        # What json.loads does with bytes (UTF-8, -16 or -32, by the first bytes).
        document: object = decoder.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except RecursionError:
        raise StateError("nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise StateError(f"not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over Python's digit limit
        raise StateError(f"not JSON: {str(exc).splitlines()[0][:120]}") from None
    except MemoryError:
        raise StateError("too large to parse") from None
    return document


def write_atomic(path: Path, data: bytes) -> None:
    # Used by the JSON-file state before the database; bench/state.py still measures that.
    """Replace `path` with `data` so that a crash at any moment leaves the old or the new file,
    complete: temp file in the same directory, fsync, rename, fsync of the directory (which makes
    the rename itself durable). Mode 0600: the file holds registration data."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # not all platforms open directories; the data itself is already synced
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory (EINVAL): best effort
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: Path) -> list[str]:
    """Delete `.domainwatch-*` files a killed process left in the state directory. Called once
    at start, before any save of ours can be in flight; the directory is ours (one exporter per
    state directory). Returns the names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed
