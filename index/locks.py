"""One writer at a time per database file, and the clean-up after an interrupted one.

SQLite serialises single transactions, but indexing or adding documents is many of them
(batches, then the derived search files), and a second writer arriving in between would
either fail on a busy database or interleave its batches. So every writing command holds
an exclusive lock on ``<db>.lock`` for its whole run; a second one waits for it (with a
timeout and a clear message) and then does its own work. The lock is an OS file lock
(``flock``): a process that dies releases it, so a lock is never left behind.

The same lock tells whether leftovers beside a database (the ``.<db>.building`` file of an
interrupted ``index``, and its journal) belong to a run still going: when the lock can be
taken, nobody is writing, and they are removed.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

DEFAULT_WAIT_SECONDS = 600.0
_POLL_SECONDS = 0.2
_held: set[Path] = set()  # lock files this process holds (flock would block on a second handle)


class LockTimeout(RuntimeError):
    """Another writer held the database for longer than we were willing to wait."""


def database_file(url_or_path: str | os.PathLike) -> Path | None:
    """The file a database path or SQLAlchemy URL names (None: a server, or in memory)."""
    if isinstance(url_or_path, str) and "://" in url_or_path:
        url = make_url(url_or_path)
        name = url.database
        is_file = url.get_backend_name() == "sqlite" and bool(name) and name != ":memory:" and not name.startswith("file:")
        return Path(name) if is_file else None
    return Path(url_or_path).expanduser()


def writes_database(argument: str = "database"):
    """Decorator: hold the writer lock of the database named by the function's ``argument``
    (a path, a URL, or an open Database) for the whole call."""

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            target = signature.bind_partial(*args, **kwargs).arguments[argument]
            path = target.path if hasattr(target, "path") else database_file(target)
            with writer_lock(path):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def building_path(database: Path) -> Path:
    """Where a new database is written before it replaces ``database``."""
    return database.with_name(f".{database.name}.building")


@contextmanager
def writer_lock(database: str | os.PathLike | None, timeout: float = DEFAULT_WAIT_SECONDS) -> Iterator[None]:
    """Hold the database's writer lock within the block, waiting up to ``timeout`` seconds.

    ``database`` is the database file (None, or a server URL, takes no file lock: a
    server serialises its writers itself)."""
    if database is None:
        yield
        return
    path = lock_path(Path(database)).resolve()
    if path in _held:  # a writer calling another writer of the same database
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        _acquire(handle, path, timeout)
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, path: Path, timeout: float) -> None:
    deadline, told = time.monotonic() + timeout, False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not told:
                log.warning(f"another semhash command is writing to {path.with_suffix('')}: waiting for it")
                told = True
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another semhash command has been writing to {path.with_suffix('')} for over "
                    f"{timeout:.0f}s; try again when it has finished (or remove {path} if no semhash runs)"
                ) from None
            time.sleep(_POLL_SECONDS)


def remove_leftovers(database: Path) -> list[Path]:
    """Remove what an interrupted ``index`` left beside ``database``, unless a writer is at work.

    Returns the files removed."""
    building = building_path(database)
    leftovers = [p for p in (building, building.with_name(building.name + "-journal"),
                             building.with_name(building.name + "-wal"), building.with_name(building.name + "-shm"))
                 if p.exists()]
    if not leftovers or not lock_path(database).parent.is_dir():
        return []
    try:
        handle = lock_path(database).open("a+b")
    except OSError:  # a read-only folder: nothing can be cleaned, nothing is harmed
        return []
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # a run is still building: its files are not leftovers
        try:
            for path in leftovers:
                path.unlink(missing_ok=True)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    warnings.warn(f"removed {', '.join(p.name for p in leftovers)} beside {database.name}: "
                  "left by an interrupted run", RuntimeWarning, stacklevel=3)
    return leftovers
