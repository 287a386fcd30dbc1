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

Reader = Callable[[Any], Any]
_READERS: dict[Any, Reader] = {}


def load(hint: Any, raw: object) -> Any:
    """`raw` (parsed JSON) as a value of type `hint`. Raises StateError naming the path."""
    return reader(hint)(raw)


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
        found = _READERS[key] = _dataclass_reader(cls, skip)
    return found(raw)


def load_fields(cls: type, raw: object, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The checked, converted fields of a `cls` present in a JSON object (not the instance):
    for a caller that builds the instance itself, e.g. with fields of its own."""
    key = ("fields", cls, skip)
    found = _READERS.get(key)
    if found is None:
        found = _READERS[key] = _fields_reader(cls, skip)
    result: dict[str, Any] = found(raw)
    return result


def _reader_for(hint: Any) -> Reader:
    if hint is Any or hint is object:
        return _same
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
        return _dataclass_reader(hint, frozenset())
    raise StateError(f"cannot restore type {hint!r}")


def _union_reader(args: tuple[Any, ...]) -> Reader:
    options = [a for a in args if a is not type(None)]
    nullable = len(options) < len(args)
    if len(options) == 1:
        only = reader(options[0])
        return (lambda raw: None if raw is None else only(raw)) if nullable else only
    readers = [reader(a) for a in options]

    def read(raw: Any) -> Any:
        if raw is None and nullable:
            return None
        for option in readers:
            try:
                return option(raw)
            except StateError:
                continue
        raise _wrong("a value of one of the declared types", raw)

    return read


def _literal_reader(args: tuple[Any, ...]) -> Reader:
    def read(raw: Any) -> Any:
        if raw in args and type(raw) in {type(a) for a in args}:
            return raw
        raise _wrong(f"one of {args}", raw)

    return read


def _sequence_reader(container: Any, args: tuple[Any, ...]) -> Reader:
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        fixed = [reader(a) for a in args]

        def read_fixed(raw: Any) -> Any:
            if type(raw) is not list or len(raw) != len(fixed):
                raise _wrong(f"a list of {len(fixed)}", raw)
            return tuple(_each(fixed, raw))

        return read_fixed
    item = reader(args[0]) if args else _same
    fast = _fast_check(args[0]) if args else "True"
    valid: Callable[[list[Any]], bool] = (
        eval(f"lambda raw: all({fast} for v in raw)")  # noqa: S307 - built from type hints only
        if fast is not None
        else lambda raw: False
    )

    def read(raw: Any) -> Any:
        if type(raw) is not list:
            raise _wrong("a list", raw)
        if valid(raw):
            return container(raw)
        try:
            return container([item(x) for x in raw])
        except StateError:  # again, one by one, to say where
            return container(_each([item] * len(raw), raw))

    return read


def _each(readers: list[Reader], raw: list[Any]) -> list[Any]:
    out = []
    for i, (read, value) in enumerate(zip(readers, raw, strict=True)):
        try:
            out.append(read(value))
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

    def read(raw: Any) -> Any:
        if type(raw) is not dict:
            raise _wrong("an object", raw)
        if valid(raw):
            return dict(raw)
        out = {}
        for k, v in raw.items():
            try:
                out[read_key(k)] = read_value(v)
            except StateError as exc:
                raise exc.at(k[:40] if k.isprintable() else repr(k)[:40]) from None
        return out

    return read


def _dataclass_reader(cls: type, skip: frozenset[str]) -> Reader:
    if _direct(cls, skip):
        return _compiled(cls, skip, direct=True)
    read_fields = _compiled(cls, skip, direct=False)

    def read(raw: Any) -> Any:
        kwargs = read_fields(raw)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # a __post_init__ that validates
            raise StateError(str(exc)[:120]) from None

    return read


def _fields_reader(cls: type, skip: frozenset[str]) -> Reader:
    return _compiled(cls, skip, direct=False)


def _direct(cls: type, skip: frozenset[str]) -> bool:
    """Whether instances may be built without __init__: it would only store the fields (no
    __post_init__, a plain __dict__), and every field the file may lack has a default."""
    return (
        not skip
        and not hasattr(cls, "__post_init__")
        and "__slots__" not in cls.__dict__
        and all(
            f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING
            or (f.init and f.repr)
            for f in dataclasses.fields(cls)
        )
    )


def _compiled(cls: type, skip: frozenset[str], direct: bool) -> Reader:
    """Compiled into one function per dataclass on first use (not at creation: a dataclass may
    refer to itself), with the common scalar checks inline and, when `direct`, the instance
    filled in without __init__ (a frozen dataclass's __init__ costs a call per field): restoring
    100k domains walks ~10M values, and a function call per value was most of the time.
    Not direct: returns the keyword arguments instead."""
    compiled: Reader | None = None

    def read(raw: Any) -> Any:
        nonlocal compiled
        if compiled is None:
            compiled = _compile_reader(cls, skip, direct)
        return compiled(raw)

    return read


def _compile_reader(cls: type, skip: frozenset[str], direct: bool) -> Reader:
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {"StateError": StateError, "_wrong": _wrong, "cls": cls}
    lines = [
        "def read(raw):",
        "    if type(raw) is not dict:",
        "        raise _wrong('an object', raw)",
    ]
    if direct:
        lines += ["    made = object.__new__(cls)", "    out = made.__dict__"]
    else:
        lines.append("    out = {}")
    for i, f in enumerate(dataclasses.fields(cls)):
        name = repr(f.name)
        if f.default is not dataclasses.MISSING:
            namespace[f"default{i}"] = f.default
            default = f"default{i}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"factory{i}"] = f.default_factory
            default = f"factory{i}()"
        else:
            default = ""
        # repr=False fields were never written; a file that has one is not trusted with it
        if not f.init or not f.repr or f.name in skip:
            if direct:
                lines.append(f"    out[{name}] = {default}")
            continue
        namespace[f"read{i}"] = reader(hints[f.name])
        convert = [
            "            try:",
            f"                v = read{i}(v)",
            "            except StateError as exc:",
            f"                raise exc.at({name}) from None",
        ]
        fast = _fast_check(hints[f.name])
        lines += [f"    if {name} in raw:", f"        v = raw[{name}]"]
        if fast is None:
            lines += [line[4:] for line in convert]
        else:  # already the right value as it is: no call; otherwise the reader decides
            lines += [f"        if not ({fast}):", *convert]
        lines.append(f"        out[{name}] = v")
        if not default:
            lines += ["    else:", f"        raise StateError('missing').at({name})"]
        elif direct:
            lines += ["    else:", f"        out[{name}] = {default}"]
    lines.append("    return made" if direct else "    return out")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from field names only
    compiled: Reader = namespace["read"]
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


def _read_none(raw: Any) -> None:
    if raw is not None:
        raise _wrong("null", raw)


def _read_bool(raw: Any) -> bool:
    if type(raw) is not bool:
        raise _wrong("true or false", raw)
    return raw


def _read_int(raw: Any) -> int:
    if type(raw) is not int:
        raise _wrong("a whole number", raw)
    return raw


def _read_float(raw: Any) -> float:
    if type(raw) is float and math.isfinite(raw):
        return raw
    if type(raw) is int and -_FLOAT_MAX <= raw <= _FLOAT_MAX:  # a 400-digit int: OverflowError
        return float(raw)
    raise _wrong("a finite number", raw)


_FLOAT_MAX = int(sys.float_info.max)


def _read_str(raw: Any) -> str:
    if type(raw) is not str:
        raise _wrong("text", raw)
    return raw


def _read_datetime(raw: Any) -> datetime:
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
    def read(raw: Any) -> Any:
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
    try:
        document: object = json.loads(data)
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
