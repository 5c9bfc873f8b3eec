"""Derived files: caches of the database's codes, saved with a sidecar, rebuilt when stale.

Every search structure saved beside a database -- FAISS indexes, address tables, cell
indexes, recall memories -- is only a cache: the database is the source of truth. They
all live the same way, written once here as :class:`CacheFile`:

* **save**: the file, then a JSON *sidecar* ``<file>.json`` recording its format, the
  database's code fingerprint it was built from (see
  :meth:`semhash.index.database.Database.code_fingerprint`), fields of its own, and the
  file's SHA-256. Each is written atomically (temporary file in the same directory, then
  ``os.replace``), file first and sidecar last, so a crash leaves either the old pair or
  a new file beside the old sidecar, which the checksum exposes. Nothing is pickled.
* **load**: only when the sidecar still records the expected fingerprint (and any other
  expected field), and the bytes still match the checksum, checked before anything
  parses them. A missing or stale file loads as None; a corrupt one raises the file
  kind's error (:class:`IndexFileError` unless it says otherwise).
* **load or build**: a missing or stale file is rebuilt from the database and saved, a
  corrupt one too but with a warning; if saving fails, a warning says so and the rebuilt
  object is used from memory.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from semhash.files import atomic_write_bytes

if TYPE_CHECKING:
    from semhash.index.database import Database

T = TypeVar("T")

REBUILD_ADVICE = "delete it, it will be rebuilt from the database"


class IndexFileError(RuntimeError):
    """A saved index file is corrupt, or does not match its sidecar."""


def sidecar_path(path: Path) -> Path:
    """The JSON metadata file saved with a cache file: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def cache_dir(db: Database, index_dir: Path | None = None) -> Path | None:
    """Where a database's derived files live: ``index_dir``, else the database's own
    (``<db file>.faiss``, or a per-URL cache folder for a server); None: in memory only."""
    return Path(index_dir) if index_dir is not None else db.index_dir


@dataclass(frozen=True)
class CacheFile(Generic[T]):
    """One kind of derived file: how it is named in messages, written and read.

    ``what`` names it in messages (``"index"``: "index file ...", "index sidecar ...").
    ``dump(obj)`` gives the file's bytes and the sidecar fields of its own; ``parse(data,
    meta)`` rebuilds the object from checksum-verified bytes and the sidecar, raising
    ValueError (or KeyError, TypeError, OSError) when they are corrupt or disagree.
    ``required``: sidecar keys, besides fingerprint and checksum, a readable sidecar has.
    ``error``: what a corrupt file raises. ``version``: the sidecar's ``"format"``.
    """

    what: str
    dump: Callable[[T], tuple[bytes, dict]]
    parse: Callable[[bytes, dict], T]
    required: tuple[str, ...] = ()
    error: type[Exception] = IndexFileError
    version: int = 1

    def save(self, obj: T, path: Path, fingerprint: str) -> None:
        """Write the file and its sidecar, each atomically, the file first."""
        path = Path(path)
        data, fields = self.dump(obj)
        meta = {"format": self.version, "fingerprint": fingerprint, **fields,
                "sha256": hashlib.sha256(data).hexdigest()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        atomic_write_bytes(sidecar_path(path), json.dumps(meta, indent=2).encode() + b"\n")

    def load(self, path: Path, fingerprint: str | None = None, **expected: Any) -> T | None:
        """The saved object; None when the file or its sidecar is missing (nothing says what
        the file was built from), or the sidecar records another ``fingerprint`` or another
        value of an ``expected`` field (None: anything goes). A corrupt file or sidecar
        raises :attr:`error`."""
        path = Path(path)
        meta = self._read_sidecar(path)
        if meta is None:
            return None
        expected["fingerprint"] = fingerprint
        if any(value is not None and meta.get(key) != value for key, value in expected.items()):
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise self.error(
                f"{self.what} file {path} does not match its sidecar (checksum differs: damaged, "
                f"truncated or from an interrupted save); {REBUILD_ADVICE}"
            )
        try:
            return self.parse(data, meta)
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise self.error(f"{self.what} file {path} is corrupt ({err}); {REBUILD_ADVICE}") from err

    def load_or_build(self, path: Path | None, fingerprint: str, build: Callable[[], T], *,
                      name: str | None = None, **expected: Any) -> T:
        """:meth:`load` it if up to date (a corrupt file warns), else ``build()`` and
        :meth:`save` it under ``fingerprint``; a failed save warns (naming the object
        ``name``, default :attr:`what`) and the built object is used from memory.
        ``path`` None: build, never save.

        Take ``fingerprint`` before reading the codes that ``build`` uses: if codes change
        in between, the saved fingerprint is the older one and the next load rebuilds.
        """
        if path is not None:
            try:
                loaded = self.load(path, fingerprint, **expected)
            except self.error as err:
                # stacklevel 3: the caller of the load_or_build_* that called us.
                warnings.warn(f"{err} -- rebuilding it now", RuntimeWarning, stacklevel=3)
                loaded = None
            if loaded is not None:
                return loaded
        built = build()
        if path is not None:
            try:
                self.save(built, path, fingerprint)
            except OSError as err:
                warnings.warn(f"could not save the {name or self.what} to {path} ({err}); "
                              "using it from memory, it will be rebuilt next time", RuntimeWarning, stacklevel=3)
        return built

    def _read_sidecar(self, path: Path) -> dict | None:
        meta_path = sidecar_path(path)
        if not path.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            missing = [key for key in ("fingerprint", "sha256", *self.required) if key not in meta]
            if missing:
                raise KeyError(", ".join(missing))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise self.error(f"{self.what} sidecar {meta_path} is unreadable ({err}); {REBUILD_ADVICE}") from err
        return meta
