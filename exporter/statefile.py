"""The state file's mechanics: a generic dataclass <-> JSON codec, crash-safe writes, and bounded,
typed reads. Knows nothing about domains (exporter/store.py decides what is saved).

Generic on purpose: a field added to a result dataclass is saved and restored without touching
this code. The rules:
- dataclasses become objects of their fields; a field declared `repr=False` is never written
  (that is how personal data such as a contact's e-mail address is marked);
- datetimes are ISO 8601 text (restored as aware UTC), tuples/sets lists, mappings objects;
- on reading, the declared type hints drive the conversion: unknown keys are ignored, a missing
  field takes its default, and anything else that does not fit raises `StateError`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".domainwatch-"
MAX_STATE_BYTES = 1024 * 1024 * 1024  # ~100x a 10k-domain state; bounds a wrong path's cost


class StateError(ValueError):
    """The state file, or one record in it, cannot be used."""


# --- encoding ------------------------------------------------------------------------------


def dump(value: object) -> Any:
    """A JSON-ready copy of `value` (dataclasses, datetimes, tuples, mappings, scalars)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return dump(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: dump(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.repr  # repr=False marks data that must not leave memory
        }
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StateError(f"mapping key {k!r} is not text")
            out[k] = dump(v)
        return out
    if isinstance(value, tuple | list):
        return [dump(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((dump(v) for v in value), key=repr)
    raise StateError(f"cannot save a {type(value).__name__}")


def encode(document: object) -> bytes:
    """The whole file's bytes. Raises StateError for a value the codec cannot write."""
    try:
        return json.dumps(dump(document), separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateError(f"cannot encode state: {exc}") from None


# --- decoding ------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def load(hint: Any, raw: object, where: str = "") -> Any:
    """`raw` (parsed JSON) as a value of type `hint`. Raises StateError naming the path."""
    if hint is Any or hint is object:
        return raw
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if raw is None and type(None) in args:
            return None
        problems = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return load(arg, raw, where)
            except StateError as exc:
                problems.append(str(exc))
        raise StateError(
            problems[0] if len(problems) == 1 else f"{where}: no type fits {_show(raw)}"
        )
    if origin is typing.Literal:
        if raw in args:
            return raw
        raise _wrong(where, f"one of {args}", raw)
    if hint is type(None):
        if raw is None:
            return None
        raise _wrong(where, "null", raw)
    if origin in (tuple, list, set, frozenset) or hint in (tuple, list):
        if not isinstance(raw, list):
            raise _wrong(where, "a list", raw)
        container = origin or hint
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(raw) != len(args):
                raise _wrong(where, f"a list of {len(args)}", raw)
            return tuple(
                load(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, raw, strict=True))
            )
        item = args[0] if args else Any
        items = [load(item, v, f"{where}[{i}]") for i, v in enumerate(raw)]
        return container(items)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(raw, dict):
            raise _wrong(where, "an object", raw)
        key_hint, value_hint = args if args else (Any, Any)
        return {
            load(key_hint, k, where): load(value_hint, v, f"{where}.{k}") for k, v in raw.items()
        }
    if isinstance(hint, type):
        return _load_class(hint, raw, where)
    raise StateError(f"{where}: cannot restore type {hint!r}")


def _load_class(cls: type, raw: object, where: str) -> Any:
    if cls is bool:
        if isinstance(raw, bool):
            return raw
        raise _wrong(where, "true or false", raw)
    if cls is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise _wrong(where, "a whole number", raw)
    if cls is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
            return float(raw)
        raise _wrong(where, "a finite number", raw)
    if cls is str:
        if isinstance(raw, str):
            return raw
        raise _wrong(where, "text", raw)
    if cls is datetime:
        if not isinstance(raw, str) or len(raw) > 64:
            raise _wrong(where, "an ISO 8601 time", raw)
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise _wrong(where, "an ISO 8601 time", raw) from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if issubclass(cls, enum.Enum):
        try:
            return cls(raw)
        except (ValueError, TypeError):
            raise _wrong(where, f"a {cls.__name__}", raw) from None
    if dataclasses.is_dataclass(cls):
        return load_dataclass(cls, raw, where)
    raise StateError(f"{where}: cannot restore type {cls.__name__}")


def load_dataclass(
    cls: type, raw: object, where: str = "", skip: frozenset[str] = frozenset()
) -> Any:
    """A `cls` from a JSON object: unknown keys ignored, missing fields take their defaults
    (StateError when a field without default is missing), `skip` fields left to the caller."""
    if not isinstance(raw, dict):
        raise _wrong(where, "an object", raw)
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip or not f.repr:
            continue  # repr=False fields were never written; a file that has one is not trusted
        path = f"{where}.{f.name}" if where else f.name
        if f.name in raw:
            kwargs[f.name] = load(hints[f.name], raw[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise StateError(f"{path}: missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ that validates
        raise StateError(f"{where}: {exc}") from None


def _show(raw: object) -> str:
    text = repr(raw) if not isinstance(raw, dict | list) else type(raw).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(where: str, expected: str, raw: object) -> StateError:
    return StateError(f"{where or 'value'}: expected {expected}, got {_show(raw)}")


# --- files ---------------------------------------------------------------------------------


def read_document(path: Path) -> object | None:
    """The parsed JSON of `path`; None when it does not exist. Raises StateError for anything
    unreadable: I/O errors, size, encoding, syntax, nesting (RecursionError is caught here, at
    the one place untrusted depth meets recursive code)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"larger than {MAX_STATE_BYTES // 2**20} MiB")
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
