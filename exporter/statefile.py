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
Readers and writers are compiled once per type (100k domains are ~10M values).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import operator
import os
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
        found = _READERS[hint] = _reader_for(hint)
    return found


def load_dataclass(cls: type, raw: object, skip: frozenset[str] = frozenset()) -> Any:
    """A `cls` from a JSON object: unknown keys ignored, missing fields take their defaults
    (StateError when a field without default is missing), `skip` fields left to the caller."""
    key = (cls, skip)
    found = _READERS.get(key)
    if found is None:
        found = _READERS[key] = _compiled(cls, skip, "make")
    return found(raw, {})


def load_fields(cls: type, raw: object, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The checked, converted fields of a `cls` present in a JSON object (not the instance):
    for a caller that builds the instance itself, e.g. with fields of its own."""
    key = ("fields", cls, skip)
    found = _READERS.get(key)
    if found is None:
        found = _READERS[key] = _compiled(cls, skip, "fields")
    result: dict[str, Any] = found(raw, {})
    return result


class Decoder:
    """Parses and restores the records of one load. Equal values in its records share one
    object (see above); so do equal numbers within one record (a check's last attempt and
    last success are one time), parsed once."""

    def __init__(self) -> None:
        self.shared: Shared = {}
        self._numbers = _Numbers()
        self._json = json.JSONDecoder(parse_float=self._numbers.__getitem__)

    def decode(self, data: bytes) -> object:
        """decode() of one record."""
        if self._numbers:
            self._numbers.clear()
        if len(self.shared) > SHARE_LIMIT:
            self.shared.clear()
        return _parse(data, self._json)

    def share(self, value: _T) -> _T:
        """`value`, or an equal one met before (text or a tuple of text only)."""
        shared: _T = self.shared.setdefault(value, value)
        return shared

    def onto(self, base: _T, raw: object, skip: frozenset[str]) -> _T:
        """A record of `base`'s dataclass with base's `skip` fields and the other fields read
        from `raw` (a JSON object, as load_dataclass reads it)."""
        key = (type(base), skip)
        found = _ONTO.get(key)
        if found is None:
            found = _ONTO[key] = _compiled(type(base), skip, "onto")
        made: _T = found(raw, self.shared, base)
        return made


_ONTO: dict[tuple[type, frozenset[str]], Callable[..., Any]] = {}


class _Numbers(dict[str, float]):
    """A record's numbers by their text, parsed once (json's parse_float hook)."""

    def __missing__(self, text: str) -> float:
        value = self[text] = float(text)
        return value


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
    names = [f.name for f in dataclasses.fields(cls)]
    found = [_slot_setter(cls, name) for name in names]
    setters = [s for s in found if s is not None]
    if _has_post_init(cls) or len(setters) != len(names) or len(names) < 2:
        return lambda record, changes: dataclasses.replace(record, **changes)
    getter = operator.attrgetter(*names)

    def copy(record: Any, changes: dict[str, Any]) -> Any:
        made: Any = object.__new__(cls)
        for name, value, setter in zip(names, getter(record), setters, strict=True):
            setter(made, changes.pop(name) if name in changes else value)
        if changes:
            raise TypeError(f"{cls.__name__} has no field {next(iter(changes))!r}")
        return made

    return copy


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None] | None:
    """The slot's own setter (a frozen dataclass's __setattr__ refuses), or None."""
    slot = getattr(cls, name, None)
    if isinstance(slot, types.MemberDescriptorType):
        setter: Callable[[Any, Any], None] = slot.__set__
        return setter
    return None


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
        return _compiled(hint, frozenset(), "make")
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
        if valid(raw):
            if not texts or len(raw) > _SHARE_MAX_ITEMS:
                return container(raw)
            found = shared.get(items := tuple(raw))
            if found is None:
                keep = shared.setdefault
                found = shared[items] = tuple([keep(x, x) for x in raw])
            return found
        try:
            values = [item(x, shared) for x in raw]
        except StateError:  # again, one by one, to say where
            return container(_each([item] * len(raw), raw, shared))
        if not records or len(values) > _SHARE_MAX_ITEMS:
            return container(values)
        # Shared records are one object per value: their identities are the tuple's value
        # (the tuple keeps them alive as long as its key is in `shared`).
        key = (_IDS, *map(id, values))
        found = shared.get(key)
        if found is None:
            found = shared[key] = tuple(values)
        return found

    return read


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
    marker = object()

    def read(raw: Any, shared: Shared) -> Any:
        if type(raw) is not dict:
            raise _wrong("an object", raw)
        if valid(raw):
            keep = shared.setdefault
            if not whole or len(raw) > _SHARE_MAX_ITEMS:
                return {keep(k, k): v for k, v in raw.items()}
            key = (marker, *raw.items())
            found = shared.get(key)
            if found is None:
                found = shared[key] = {
                    keep(k, k): keep(v, v) if type(v) is str else v for k, v in raw.items()
                }
            return found
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
    if hint in _PLANS:
        return _PLANS[hint]
    _PLANS[hint] = None  # a record that contains itself is not shared
    plan = _make_plan(hint)
    _PLANS[hint] = plan
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
        elif len(options) == 1 and (
            _memo_plan(options[0]) is not None
            or (
                typing.get_origin(options[0]) is tuple
                and typing.get_args(options[0])[1:] == (Ellipsis,)
                and _memo_plan(typing.get_args(options[0])[0]) is not None
            )
        ):
            plan.append((f.name, "id"))
        elif len(options) < len(_options(hint)):
            plan.append((f.name, "none"))
        else:
            return None
    return plan


def _options(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _is_text_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, Ellipsis)


def _compiled(cls: type, skip: frozenset[str], mode: str) -> Callable[..., Any]:
    """Compiled into one function per dataclass on first use (not at creation: a dataclass may
    refer to itself), with the common checks inline: restoring 100k domains walks ~10M values,
    and a function call per value was most of the time. `mode`: "make" an instance, "onto" a
    base (read(raw, shared, base): the `skip` fields are base's), or the "fields" present."""
    compiled: Any = None

    def read(raw: Any, shared: Shared, base: Any = None) -> Any:
        nonlocal compiled
        if compiled is None:
            compiled = _compile_reader(cls, skip, mode)
        return compiled(raw, shared, base)

    return read


def _compile_reader(cls: type, skip: frozenset[str], mode: str) -> Callable[..., Any]:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    setters = {f.name: _slot_setter(cls, f.name) for f in fields}
    # Filled in without __init__ (a frozen dataclass's __init__ costs a call per field) when
    # it would only store the fields: no __post_init__, and slots to store them in.
    direct = not _has_post_init(cls) and None not in setters.values()
    namespace: dict[str, Any] = {
        "StateError": StateError,
        "_wrong": _wrong,
        "cls": cls,
        "new": object.__new__,
    }
    lines = [
        "def read(raw, shared, base):",
        "    if type(raw) is not dict:",
        "        raise _wrong('an object', raw)",
        "    keep = shared.setdefault",
    ]
    if mode == "fields":
        lines.append("    out = {}")
    for i, f in enumerate(fields):
        name = repr(f.name)
        if f.default is not dataclasses.MISSING:
            namespace[f"default{i}"] = f.default
            default = f"default{i}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"factory{i}"] = f.default_factory
            default = f"factory{i}()"
        else:
            default = ""
        if f.name in skip:
            if mode == "onto":
                lines.append(f"    f{i} = base.{f.name}")
            continue
        # repr=False fields were never written; a file that has one is not trusted with it
        if not f.init or not f.repr:
            if mode != "fields":
                lines.append(f"    f{i} = {default}")
            continue
        hint = hints[f.name]
        namespace[f"read{i}"] = reader(hint)
        convert = [
            "            try:",
            f"                v = read{i}(v, shared)",
            "            except StateError as exc:",
            f"                raise exc.at({name}) from None",
        ]
        lines += [f"    if {name} in raw:", f"        v = raw[{name}]"]
        options = _options(hint)
        if str in options:  # text is shared; the rest as below
            others = [_fast_check(a) for a in options if a is not str]
            rest = " or ".join(c for c in others if c is not None)
            lines += ["        if type(v) is str:", "            v = keep(v, v)"]
            if rest and None not in others:
                lines += [f"        elif not ({rest}):", *convert]
            else:
                lines += ["        else:", *convert]
        else:
            fast = _fast_check(hint)
            if fast is None:
                lines += [line[4:] for line in convert]
            else:  # already the right value as it is: no call; otherwise the reader decides
                lines += [f"        if not ({fast}):", *convert]
        if mode == "fields":
            lines.append(f"        out[{name}] = v")
            if not default:
                lines += ["    else:", f"        raise StateError('missing').at({name})"]
            continue
        lines.append(f"        f{i} = v")
        lines += ["    else:"]
        if default:
            lines.append(f"        f{i} = {default}")
        else:
            lines.append(f"        raise StateError('missing').at({name})")
    if mode == "fields":
        lines.append("    return out")
    else:
        plan = _memo_plan(cls) if mode == "make" else None
        index = {f.name: i for i, f in enumerate(fields)}
        if plan is not None:
            nulls = [f"f{index[n]} is None" for n, how in plan if how == "none"]
            parts = ["cls"] + [
                f"f{index[n]}" if how == "value" else f"id(f{index[n]})"
                for n, how in plan
                if how != "none"
            ]
            lines.append(f"    key = ({', '.join(parts)},)")
            if nulls:
                lines[-1] += f" if {' and '.join(nulls)} else None"
                lines += ["    if key is not None:", "        made = shared.get(key)"]
                lines += ["        if made is not None:", "            return made"]
            else:
                lines += ["    made = shared.get(key)", "    if made is not None:"]
                lines += ["        return made"]
        if direct:
            lines.append("    made = new(cls)")
            for i, f in enumerate(fields):
                namespace[f"set{i}"] = setters[f.name]
                lines.append(f"    set{i}(made, f{i})")
        else:
            args = ", ".join(f"{f.name}=f{i}" for i, f in enumerate(fields) if f.init)
            lines += [
                "    try:",
                f"        made = cls({args})",
                "    except (TypeError, ValueError) as exc:  # a __post_init__ that validates",
                "        raise StateError(str(exc)[:120]) from None",
            ]
        if plan is not None:
            if any(how == "none" for _n, how in plan):
                lines += ["    if key is not None:", "        shared[key] = made"]
            else:
                lines.append("    shared[key] = made")
        lines.append("    return made")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from field names only
    compiled: Callable[..., Any] = namespace["read"]
    return compiled


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
