"""The state database behind --state.file: one SQLite file holding one JSON record per domain.

Knows nothing about domains (exporter/store.py decides what a record holds): rows are a name and
the bytes of a record. What this module guarantees:

- **Write cost follows the changes.** `write()` upserts and deletes only the rows it is given, in
  one transaction; a save after one domain changed touches one row.
- **Crash safety.** WAL mode with `synchronous=FULL`: a transaction is atomic at any moment of a
  kill -9 or power cut (SQLite replays or drops the WAL tail on the next open), and FULL fsyncs
  the WAL at every commit, so a save that returned is on disk, as the JSON file's fsync+rename
  was. NORMAL would skip that fsync and could lose the last saves on power loss: one fsync per
  save (every 30 s) is not worth that. Each save opens and closes its own connection; the close
  checkpoints the WAL into the database and removes the -wal/-shm files.
- **Privacy.** The file is created 0600 before SQLite opens it (SQLite gives -wal and -shm the
  mode of the database file) and an existing one is chmod-ed to 0600; no process-wide umask.
- **Unreadable files are moved aside, never deleted.** A file that is not a state database (a
  damaged or truncated one, another program's database, garbage) is renamed to
  `PATH.corrupt-<UTC time>` together with its -wal/-shm, logged, and a fresh database starts.
  Busy, locked or I/O errors are not evidence of damage: they raise OSError and touch nothing.
- **A legacy JSON state file** (exporter versions before the database) is converted once:
  `migrate()` builds `PATH.tmp-sqlite`, fsyncs it and renames it over PATH.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from exporter.statefile import StateError, fsync_dir

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_RECORD_BYTES = 1024 * 1024  # a fully populated domain's record is about 1.5 KB
BUSY_TIMEOUT = 5.0  # seconds to wait for another connection's lock (there should be none)
MIGRATION_SUFFIX = ".tmp-sqlite"

_TABLES = {
    "meta": "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
    "domains": (
        "CREATE TABLE domains (name TEXT PRIMARY KEY, data BLOB NOT NULL, updated_at REAL NOT NULL)"
    ),
}
# Exactly what _create_schema makes: anything else (views, triggers, other tables) is not ours.
_SCHEMA = {
    ("table", "meta", _TABLES["meta"]),
    ("table", "domains", _TABLES["domains"]),
    ("index", "sqlite_autoindex_meta_1", None),
    ("index", "sqlite_autoindex_domains_1", None),
}
_UPSERT = (
    "INSERT INTO domains (name, data, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
# typeof()/length() of a blob read its size from the record header, not the payload: a huge row
# in a damaged file costs nothing until it is known to be small enough.
_SELECT = (
    "SELECT name, CASE WHEN typeof(data) = 'blob' AND length(data) <= ? THEN data END FROM domains"
)

Kind = Literal["missing", "sqlite", "json", "other"]


@dataclass(frozen=True)
class Mark:
    """Which database, after which save: a store that wrote (or read) exactly this may save
    incrementally; anything else (a replaced, restored or moved file) needs a full save."""

    db_id: str
    saves: int


@dataclass(frozen=True)
class ReadInfo:
    mark: Mark | None  # None: an empty database (nothing saved yet)
    record_version: int | None


def sniff(path: Path) -> Kind:
    """What PATH holds, by its first bytes. OSError when it cannot be read."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return "missing"
    # An empty file is an empty database to SQLite; its WAL may even hold committed pages.
    if not head or head == SQLITE_MAGIC:
        return "sqlite"
    if head.lstrip(b" \t\r\n").startswith(b"{"):
        return "json"
    return "other"


def remove_leftovers(path: Path) -> list[str]:
    """Delete what a migration killed half-way left (PATH.tmp-sqlite and its journal files).
    Called before anything of ours can be writing. Returns the names removed."""
    removed = []
    base = path.with_name(path.name + MIGRATION_SUFFIX)
    for suffix in ("", "-journal", "-wal", "-shm"):
        candidate = Path(f"{base}{suffix}")
        try:
            candidate.unlink()
        except OSError:  # absent (the usual case), or not ours to remove
            continue
        removed.append(candidate.name)
    return removed


def quarantine(path: Path) -> Path | None:
    """Move an unreadable PATH (and its -wal/-shm) aside as PATH.corrupt-<time>; None if there
    was nothing to move or the move failed (then the next save will fail and say why)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        # The WAL first: a kill between the two renames must not leave the old WAL beside
        # the fresh database created at PATH (a WAL does not name its database).
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{path}{suffix}", f"{dest}{suffix}")
        os.rename(path, dest)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot move unreadable state file aside: path=%s error=%s", path, exc)
        return None
    fsync_dir(path.parent)
    return dest


def read(
    path: Path, visit: Callable[[object, bytes | None], None], record_versions: Container[int]
) -> ReadInfo:
    """Call visit(name, record) for every row (name as stored, record None when it is not a
    blob of at most MAX_RECORD_BYTES). PATH must be a database (sniff). Raises StateError when
    it is not a usable state database (or its records are of a version not in
    `record_versions`), OSError when it cannot be read now."""
    _read_ahead(path)
    with _connect(path) as conn:
        try:
            info = _check_schema(conn)
            if info is None:
                return ReadInfo(None, None)
            mark, record_version = info
            if record_version not in record_versions:
                raise StateError(f"unsupported record version {record_version}")
            for name, data in conn.execute(_SELECT, (MAX_RECORD_BYTES,)):
                visit(name, data)
            return ReadInfo(mark, record_version)
        except _ERRORS as exc:
            raise _classify(exc) from None


def _read_ahead(path: Path) -> None:
    """Ask the kernel to read the whole file in, in the background: a cold 400 MB database
    (100k domains) is read in one sequential sweep while the first records are decoded,
    rather than page by page as the b-tree is walked."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def write(
    path: Path,
    rows: Callable[[bool], Iterable[tuple[str, bytes | None]]],
    expect: Mark | None,
    record_version: int,
    now: float,
) -> tuple[Mark, int]:
    """One save in one transaction. `rows(full)` gives (name, record) pairs to upsert, or
    (name, None) to delete; full is True when the database is not the one `expect` describes
    (new, replaced, moved aside): then every row is deleted first and rows(True) must give
    them all. A file that is not a state database is moved aside first (warning).
    Returns the new mark and the number of rows written or deleted. Raises OSError only."""
    kind = sniff(path)
    if kind in ("json", "other"):
        _move_aside(path, "not a state database")
    try:
        return _write(path, rows, expect, record_version, now)
    except StateError as exc:  # damaged: keep it for inspection, save everything afresh
        _move_aside(path, str(exc))
    try:
        return _write(path, rows, expect, record_version, now)
    except StateError as exc:  # could not be moved aside
        raise OSError(str(exc)) from None


def migrate(path: Path, records: Iterable[tuple[str, bytes]], record_version: int) -> int:
    """Replace the legacy JSON file at PATH by a database holding `records`, crash-safely:
    built as PATH.tmp-sqlite, synced, renamed over PATH. Returns the number of rows."""
    tmp = path.with_name(path.name + MIGRATION_SUFFIX)
    remove_leftovers(path)
    _precreate(tmp)
    try:
        conn = _open(tmp)  # rollback journal: the file is renamed, its data must not be in a WAL
        try:
            _create_schema(conn, record_version)
            conn.execute("BEGIN IMMEDIATE")
            now, before = time.time(), conn.total_changes
            conn.executemany(_UPSERT, ((name, data, now) for name, data in records))
            count = conn.total_changes - before
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # A -wal or -shm next to a JSON file belongs to no database: it must not meet ours.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
        os.replace(tmp, path)
    except sqlite3.Error as exc:
        remove_leftovers(path)
        raise OSError(f"cannot write state database: {exc}") from None
    except BaseException:
        remove_leftovers(path)
        raise
    fsync_dir(path.parent)
    return count


# --- internals ---------------------------------------------------------------------------------


def _write(
    path: Path,
    rows: Callable[[bool], Iterable[tuple[str, bytes | None]]],
    expect: Mark | None,
    record_version: int,
    now: float,
) -> tuple[Mark, int]:
    if not path.exists():
        # A WAL without its database (moved or deleted by hand) would be replayed into ours.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
        _precreate(path)
    with _connect(path) as conn:
        try:
            if _check_schema(conn) is None:
                _create_schema(conn, record_version)
            # Only once the file is known to be ours: a foreign file is not modified at all.
            # Where WAL is impossible (no shared memory, e.g. some network file systems)
            # SQLite keeps its rollback journal: slower, equally crash-safe with FULL.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            info = _check_schema(conn)  # again, under the write lock
            assert info is not None
            mark, _version = info
            full = mark != expect
            before = conn.total_changes
            if full:
                conn.execute("DELETE FROM domains")
                before = conn.total_changes
            upserts: list[tuple[str, bytes, float]] = []
            deletes: list[tuple[str]] = []
            for name, data in rows(full):
                if data is None:
                    deletes.append((name,))
                else:
                    upserts.append((name, data, now))
                if len(upserts) >= 1000:  # bounded memory; SQLite runs without the GIL
                    conn.executemany(_UPSERT, upserts)
                    upserts.clear()
            conn.executemany(_UPSERT, upserts)
            conn.executemany("DELETE FROM domains WHERE name = ?", deletes)
            touched = conn.total_changes - before
            new = Mark(mark.db_id, mark.saves + 1)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'record_version'", (record_version,)
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'saves'", (new.saves,))
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            if isinstance(exc, _ERRORS):
                raise _classify(exc) from None
            raise
        _vacuum_if_sparse(conn)
    return new, touched


def _vacuum_if_sparse(conn: sqlite3.Connection) -> None:
    # After many domains left the config, give the space back (auto_vacuum=INCREMENTAL).
    with contextlib.suppress(sqlite3.Error):
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free > 256 and free * 4 > pages:
            conn.execute("PRAGMA incremental_vacuum")


def _move_aside(path: Path, reason: str) -> None:
    moved = quarantine(path)
    log.warning(
        "moved unreadable state file aside: path=%s moved_to=%s error=%s",
        path,
        moved,
        " ".join(reason.split())[:200],
    )


def _precreate(path: Path) -> None:
    """Create PATH 0600 (only if absent) so that SQLite's files inherit the mode."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    fsync_dir(path.parent)


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        conn = _open(path)
    except _ERRORS as exc:
        raise _classify(exc) from None
    try:
        yield conn
    finally:
        conn.close()  # the last close checkpoints and removes -wal/-shm


def _open(path: Path) -> sqlite3.Connection:
    """A connection to PATH configured for us; changes nothing in the file itself."""
    # mode=rw: SQLite never creates the file itself (we do, with mode 0600).
    uri = Path(os.path.abspath(path)).as_uri() + "?mode=rw"
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    conn = sqlite3.connect(
        uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    # Damaged text (a name, the schema) must not raise UnicodeDecodeError mid-read: it comes
    # through with surrogate escapes and fails the checks made on it.
    conn.text_factory = _text
    try:
        # A damaged or foreign file must not run its own SQL (views, triggers) with functions.
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA cell_size_check = ON")
        conn.execute("PRAGMA secure_delete = FAST")  # removed domains' bytes do not linger
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _create_schema(conn: sqlite3.Connection, record_version: int) -> None:
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            for sql in _TABLES.values():
                conn.execute(sql)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema", SCHEMA_VERSION),
                    ("record_version", record_version),
                    ("db_id", uuid.uuid4().hex),
                    ("saves", 0),
                ],
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _check_schema(conn: sqlite3.Connection) -> tuple[Mark, int] | None:
    """The database's mark and record version; None for an empty database; StateError for a
    database that is not (or no longer) ours."""
    objects = {tuple(row) for row in conn.execute("SELECT type, name, sql FROM sqlite_master")}
    if not objects:
        return None
    if objects != _SCHEMA:
        names = sorted(ascii(o[1])[:40] for o in objects)[:5]
        raise StateError(f"not a domainwatch state database (tables {', '.join(names)})")
    meta = dict(
        conn.execute(
            "SELECT key, value FROM meta WHERE key IN "
            "('schema', 'record_version', 'db_id', 'saves')"
        ).fetchall()
    )
    schema, version = meta.get("schema"), meta.get("record_version")
    db_id, saves = meta.get("db_id"), meta.get("saves")
    if schema != SCHEMA_VERSION or type(schema) is not int:
        raise StateError(f"unsupported database schema {str(schema)[:20]!r}")
    if type(version) is not int or type(db_id) is not str or type(saves) is not int:
        raise StateError("damaged meta table")
    return Mark(db_id, saves), version


# SQLite's own errors, and a damaged file's message that is not even UTF-8 (Python fails to
# decode the error text itself).
_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _classify(exc: sqlite3.Error | UnicodeDecodeError) -> Exception:
    """Damage (the file is not a database, or a malformed one) is a StateError: the file is
    moved aside. Everything else (busy, locked, I/O, full disk, read-only) is an OSError: the
    file may be fine, so it is left alone and the caller tries again later."""
    if isinstance(exc, UnicodeDecodeError):
        return StateError("damaged database: text that is not UTF-8")
    code = getattr(exc, "sqlite_errorname", "") or ""
    text = " ".join(str(exc).split())[:160]
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StateError(f"damaged database: {text}")
    return OSError(f"{code or type(exc).__name__}: {text}")
