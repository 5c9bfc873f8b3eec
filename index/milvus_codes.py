"""The codes kept and searched in Milvus: ``--codes milvus://HOST:PORT`` or a milvus-lite file.

When ``SEMHASH_CODES`` (the CLI's ``--codes``) names a Milvus server (``milvus://HOST:PORT``,
optionally ``milvus://USER:PASSWORD@HOST:PORT``; the port defaults to 19530) or a milvus-lite
file (a path ending in ``.db``), :class:`~semhash.index.search.SearchEngine` searches the
collection's codes in Milvus instead of local FAISS files:

* the long binary codes (``hasher``): a ``BINARY_VECTOR`` collection, metric ``HAMMING``,
  index ``BIN_FLAT`` (exact);
* the map codes: a ``FLOAT_VECTOR`` collection, metric ``L2``, index ``FLAT`` (exact; Milvus
  reports squared distances, given back here as Euclidean ones, as the FAISS index does);
* the address codes: a ``BINARY_VECTOR`` collection (``BIN_FLAT``); an address search is a
  *range search* there (the documents whose address lies within ``radius`` bits, nearest
  addresses first, at most ``max_candidates`` of them), and the candidates are ranked by
  their long codes with a filtered search (``id in [...]``) on the long codes' collection.
  When the ball holds fewer than ``k`` documents the search is exhaustive, as in
  :mod:`semhash.index.address`. ``max_candidates=None`` (the whole ball) is capped at
  :data:`MAX_TOPK`, the most Milvus returns for one query;
* cells (``mode="cells"``), on a server: a second collection of the long codes with a
  ``BIN_IVF_FLAT`` index of ``sqrt(n)`` lists for ``n`` codes, searched with
  ``nprobe = probes``; rebuilt when the collection has outgrown it (twice the lists). A
  query whose visited lists hold fewer than ``k`` codes is answered exactly. milvus-lite
  has no ``BIN_IVF_FLAT``: there cells searches are exact (a warning says so, once).

One collection per model, named ``semhash_<hash of the database's location>_<model name>``,
whose primary keys are the document ids. The database stays the source of truth: a
collection is a copy, kept in step when a search structure is opened (``SearchEngine``'s
first use of a model): a small state record per collection (the database's
:meth:`~semhash.index.code_store.CodeStore.code_fingerprint` of the model when the copy was
last brought up to date; in the side collection :data:`STATE_COLLECTION`) tells whether
anything changed. If nothing did, opening costs a few small reads (none of the state
record when this process made that state itself). Otherwise:

* a replaced model (new id or creation time), another code size, or no copy yet: the
  collection is dropped and filled again from the database;
* else the document ids of both are compared: the codes of documents not yet in Milvus are
  upserted (in batches of :data:`BATCH`), documents no longer in the database are deleted by
  id. Codes written again under the same model for documents already copied (semhash's own
  commands never do: new weights are a new model) are noticed only when a write added no new
  document; then every code is upserted again.

A bulk write (at least :data:`MIN_INDEXED` codes and a tenth of the collection) is flushed,
so that the server seals and indexes it, and the writing command waits until the server
reports every sealed row indexed (at most :data:`INDEX_WAIT_SECONDS`): until then it
searches those rows by brute force, several times slower, while it spends the same cores
on the build.

The reads that bring a collection up to date, and the first search of each index, ask for
``consistency_level="Strong"`` (they see every write made before them); later searches ask
for ``"Session"`` (this process's own writes at once, others' within the server's time
tick, well under a second): a Strong read waits for that tick, ~200 ms a query on a
standalone server, where a Session one takes a few ms. Every call has a timeout
(:data:`CALL_SECONDS`; connecting: :data:`CONNECT_SECONDS`), and a Milvus failure
(unreachable server, malformed URI, a missing client package) raises :class:`MilvusError`,
a :class:`~semhash.index.schema.DatabaseError` with a one-line message. Two processes that
bring the same collection up to date at once write the same rows (upserts: harmless). A
collection made anew is filled by inserts, whose cost does not grow with the collection as
an upsert's does (each one also deletes its id from every segment): two processes filling
the same new collection at once would store some ids twice, so a filled collection's row
count is checked, and its rows written again by upserts (one row an id) when it is off. A
rebuild racing another process's search can make that search fail once. A milvus-lite file
is open in one process at a time (milvus-lite locks it: another process gets a
:class:`MilvusError` saying so); processes that share codes need a server. Collections of
databases or models that no longer exist are left in Milvus (drop them there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from math import isqrt
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import unquote, urlsplit

import numpy as np
from sqlalchemy import select

from semhash.codes import n_bytes
from semhash.index.address import DEFAULT_MAX_CANDIDATES, AddressResult
from semhash.index.cells import default_cells
from semhash.index.schema import DatabaseError, _codes

if TYPE_CHECKING:
    from semhash.index.database import Database

ENVIRONMENT = "SEMHASH_CODES"
DEFAULT_PORT = 19530
MAX_TOPK = 16384  # Milvus answers at most this many hits a query (and offset + limit in a query)
BATCH = 5000  # rows a write
ID_WINDOW = 15000  # database ids whose Milvus ids one query lists (at most MAX_TOPK come back)
CONNECT_SECONDS = 10.0
LITE_START_SECONDS = 60.0
CALL_SECONDS = 120.0
STATE_COLLECTION = "semhash_state"
STATE_FORMAT = 1
MAX_NLIST = 65536  # Milvus's bound on IVF lists and nprobe
MIN_INDEXED = 1024  # a server indexes no segment of fewer rows (searched exactly)
INDEX_WAIT_SECONDS = 600.0  # the longest a bulk write waits for the server to index it
INDEX_POLL_SECONDS = 0.5
ID_FIELD, CODE_FIELD = "id", "code"
STRONG, SESSION = "Strong", "Session"

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()
_warned_lite_cells = False
# (uri, collection) -> (fingerprint, nlist) of the syncs this process made
_synced_here: dict[tuple[str, str], tuple[str, int | None]] = {}


class MilvusError(DatabaseError):
    """Milvus cannot be used as asked: a malformed URI, an unreachable server, a missing
    client package, or a failed call. The message is one line."""


class MilvusLimitError(ValueError):
    """A query Milvus cannot answer: more than :data:`MAX_TOPK` hits."""


# --------------------------------------------------------------------------- where
@dataclass(frozen=True)
class Target:
    """A parsed ``SEMHASH_CODES``: where the codes live."""

    uri: str  # what pymilvus connects to: http://host:port, or the lite file's absolute path
    lite: bool
    shown: str  # for messages: the URI without a password
    token: str = ""  # user:password, for a server with authentication


def configured() -> str | None:
    """``SEMHASH_CODES``, or None when unset or empty (then the codes are searched locally)."""
    value = os.environ.get(ENVIRONMENT, "").strip()
    return value or None


def parse(value: str) -> Target:
    """The Milvus a ``SEMHASH_CODES`` value names; :class:`MilvusError` for anything else."""
    text = value.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() != "milvus":
            raise MilvusError(f"--codes/{ENVIRONMENT} {_redact(text)!r} is not a Milvus URI: use milvus://HOST:PORT "
                              "or a milvus-lite file (a path ending in .db)")
        try:
            host, port = parts.hostname, parts.port or DEFAULT_PORT
        except ValueError:  # a port that is not a number, or out of range
            host, port = None, None
        if not host or port is None or parts.path not in ("", "/") or parts.query:
            raise MilvusError(f"--codes/{ENVIRONMENT} {_redact(text)!r} is malformed: use milvus://HOST:PORT")
        token = ""
        if parts.username:
            token = unquote(parts.username) + (":" + unquote(parts.password) if parts.password else "")
        netloc = f"[{host}]" if ":" in host else host
        return Target(f"http://{netloc}:{port}", False, f"milvus://{netloc}:{port}", token)
    if text.endswith(".db"):
        path = Path(text).expanduser().resolve()
        if path.is_dir():
            raise MilvusError(f"--codes/{ENVIRONMENT} {path} is a directory, not a milvus-lite file")
        return Target(str(path), True, str(path))
    raise MilvusError(f"--codes/{ENVIRONMENT} {text!r} names no Milvus: use milvus://HOST:PORT "
                      "or a milvus-lite file (a path ending in .db)")


def _redact(text: str) -> str:
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", text)


def client(target: Target):
    """The process's client of ``target`` (one a URI, shared; pymilvus clients are thread-safe)."""
    with _clients_lock:
        found = _clients.get(target.uri)
        if found is None:
            found = _clients[target.uri] = _connect(target)
        return found


def close_clients() -> None:
    """Close the process's Milvus clients, and stop the milvus-lite files' server processes;
    the next use connects again."""
    with _clients_lock:
        clients = list(_clients.items())
        _clients.clear()
        _synced_here.clear()
    for uri, found in clients:
        try:
            found.close()
            if uri.endswith(".db"):  # pymilvus leaves the file's server process running
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(uri)
        except Exception:  # noqa: BLE001 - closing what may already be gone
            pass


def _connect(target: Target):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusError(f"--codes/{ENVIRONMENT} names Milvus ({target.shown}) but the Milvus client is not "
                          "installed: pip install 'semhash[milvus]'") from None
    _quiet_pymilvus()
    if target.lite:
        try:
            with warnings.catch_warnings():  # milvus-lite 2.5 imports the deprecated pkg_resources
                warnings.simplefilter("ignore", UserWarning)
                import milvus_lite  # noqa: F401
        except ImportError as err:
            raise MilvusError(f"--codes/{ENVIRONMENT} names a milvus-lite file ({target.shown}) but milvus-lite "
                              f"cannot be loaded ({err}): pip install milvus-lite==2.5.1 'setuptools<81'") from None
        try:
            Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MilvusError(f"cannot make the folder of the milvus-lite file {target.shown}: {err}") from None
    said: list[str] = []  # what milvus-lite logs (on the root logger) when it cannot open the file

    def hold_back(record: logging.LogRecord) -> bool:
        if "milvus_lite" in (record.pathname or ""):
            said.append(record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addFilter(hold_back)
    try:
        # A milvus-lite file is served by a process started here, which may take a while to
        # open its collections on a busy machine: wait longer than for a running server.
        return MilvusClient(uri=target.uri, token=target.token,
                            timeout=LITE_START_SECONDS if target.lite else CONNECT_SECONDS)
    except Exception as err:  # noqa: BLE001 - pymilvus raises several kinds; all mean "cannot use it"
        what = "open the milvus-lite file" if target.lite else "reach the Milvus server at"
        detail = said[-1] if said else _message(err)
        raise MilvusError(f"cannot {what} {target.shown} (--codes/{ENVIRONMENT}): {detail}") from None
    finally:
        root.removeFilter(hold_back)


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed call with its traceback on its own console handler; semhash
    reports them itself, in one line."""
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.decorators"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _message(err: BaseException) -> str:
    text = str(getattr(err, "message", None) or err).strip()
    return (text.splitlines() or [type(err).__name__])[0]


@contextmanager
def _calls(target: Target, doing: str) -> Iterator[None]:
    """Milvus failures inside as :class:`MilvusError` (one line)."""
    try:
        yield
    except (MilvusError, MilvusLimitError):
        raise
    except Exception as err:  # noqa: BLE001
        if not _is_milvus_error(err):
            raise
        raise MilvusError(f"Milvus at {target.shown} failed to {doing}: {_message(err)}") from err


def _is_milvus_error(err: BaseException) -> bool:
    module = type(err).__module__ or ""
    return module.startswith(("pymilvus", "grpc"))


# --------------------------------------------------------------------------- entry point
def milvus_index(db: Database, what: str, *, long: str, address: str):
    """The search structure ``what`` ("address", "cells" or a model's name) in Milvus when
    ``SEMHASH_CODES`` is set, brought up to date with the database; None when it is not set."""
    value = configured()
    if value is None:
        return None
    target = parse(value)
    if what == "address":
        return MilvusAddressIndex(db, address, long, target=target)
    if what == "cells":
        return MilvusCodeIndex(db, long, cells=True, target=target)
    return MilvusCodeIndex(db, what, target=target)


def collection_name(db: Database, model_name: str, suffix: str = "") -> str:
    """``semhash_<12 hex of the database's location>_<model name>[_suffix]``, in the letters Milvus allows."""
    location = str(db.path.resolve()) if db.path is not None else db.location
    digest = hashlib.sha256(location.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_]", "_", model_name)
    if stem != model_name or not stem:
        stem = f"{stem[:40]}_{hashlib.sha256(model_name.encode()).hexdigest()[:8]}"
    return f"semhash_{digest}_{stem[:150]}" + (f"_{suffix}" if suffix else "")


# --------------------------------------------------------------------------- the index
class MilvusCodeIndex:
    """A model's codes in a Milvus collection, searched there.

    Same ``search(codes, k) -> (distances, ids)`` and ``ntotal`` as the FAISS indexes
    (:class:`~semhash.index.faiss_index.BinaryCodeIndex`: Hamming distances, int32;
    :class:`~semhash.index.faiss_index.RealCodeIndex`: Euclidean, float32); with
    ``cells=True``, ``search(codes, k, n_probe)`` as :class:`~semhash.index.cells.CellIndex`.
    Results are nearest first, ties by document id. Brought up to date with the database
    when made; it then sees what is written to Milvus, not what is written to the database
    (a new index, e.g. a new SearchEngine, syncs again).
    """

    def __init__(self, db: Database, model: str | int, *, cells: bool = False, target: Target | None = None) -> None:
        self.target = target or parse(configured() or "")
        self.client = client(self.target)
        row = db.get_model(model, with_weights=False)
        self.db, self.model_id, self.name, self.kind = db, int(row.id), row.name, row.kind
        if cells and row.kind != "binary":
            raise ValueError(f"cells search needs a binary model; {row.name!r} is {row.kind}")
        self.binary = row.kind == "binary"
        self.dims = 8 * n_bytes(row.n_dims) if self.binary else int(row.n_dims)  # packed codes: whole bytes
        self.width = self.dims // 8 if self.binary else self.dims
        self.metric = "HAMMING" if self.binary else "L2"
        if cells and self.target.lite:
            _warn_lite_cells(self.target)
            cells = False  # milvus-lite has BIN_FLAT only: exact
        self.cells = cells
        self.collection = collection_name(db, row.name, "cells" if cells else "")
        self.nlist: int | None = None
        self.synced: dict = {}  # what the last sync did, for reports and tests
        # The first search is Strong (it sees every write before it), later ones Session
        # (this process's writes at once): a Strong read waits for the server's next time
        # tick, ~200 ms on a standalone server, where a Session read takes a few ms.
        self._seen_all = False
        self._sync()

    # ----------------------------------------------------------------- facts
    @property
    def ntotal(self) -> int:
        """Number of codes in the collection, now."""
        with _calls(self.target, f"count the codes of {self.collection}"):
            rows = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                     consistency_level=STRONG, timeout=CALL_SECONDS)
        return int(rows[0]["count(*)"]) if rows else 0

    def __len__(self) -> int:
        return self.ntotal

    @property
    def index_type(self) -> str:
        if self.cells:
            return "BIN_IVF_FLAT"
        return "BIN_FLAT" if self.binary else "FLAT"

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.dims}:{self.metric}:{self.index_type}"

    def __repr__(self) -> str:
        return (f"MilvusCodeIndex(model={self.name!r}, collection={self.collection!r}, {self.index_type}, "
                f"at={self.target.shown!r}" + (f", nlist={self.nlist}" if self.cells else "") + ")")

    # ----------------------------------------------------------------- search
    def search(self, codes: np.ndarray, k: int, n_probe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored codes to each query: ``(distances, ids int64)`` of shape
        ``(n_queries, min(k, ntotal))``, nearest first, ties by document id.

        Exact unless this is a cells index: then the ``n_probe`` nearest IVF lists (default
        16) are visited, and a query they give fewer than ``k`` codes is answered exactly.
        """
        k = _check_k(k)
        if n_probe is not None and (isinstance(n_probe, bool) or not isinstance(n_probe, (int, np.integer))
                                    or n_probe < 1):
            raise ValueError(f"n_probe must be a positive integer, got {n_probe!r}")
        queries = self._check_codes(codes)
        if len(queries) == 0:
            return self._empty(0, 0)
        if self.cells:
            probes = min(16 if n_probe is None else int(n_probe), self.nlist or 1, MAX_NLIST)
            results = self._search(queries, k, {"nprobe": probes})
            short = [i for i, hits in enumerate(results) if len(hits) < k]
            if short:  # fewer than k in the visited lists, or fewer codes than k: exact
                exact = self._search(queries[short], k, {"nprobe": min(self.nlist or 1, MAX_NLIST)})
                for i, hits in zip(short, exact):
                    results[i] = hits
        else:
            results = self._search(queries, k)
        return self._arrays(results)

    def _search(self, queries: np.ndarray, limit: int, params: dict | None = None, *,
                filter: str = "") -> list[list[tuple[float, int]]]:
        """Milvus's hits of each query, sorted by (distance, id)."""
        search_params = {"metric_type": self.metric, "params": params or {}}
        with _calls(self.target, f"search {self.collection}"):
            found = self.client.search(self.collection, data=self._query_data(queries), limit=int(limit),
                                       filter=filter, search_params=search_params, output_fields=[ID_FIELD],
                                       consistency_level=SESSION if self._seen_all else STRONG, timeout=CALL_SECONDS)
        self._seen_all = True
        return [sorted((float(hit["distance"]), int(hit["id"])) for hit in hits) for hits in found]

    def _arrays(self, results: list[list[tuple[float, int]]]) -> tuple[np.ndarray, np.ndarray]:
        width = min((len(hits) for hits in results), default=0)
        distances = np.array([[d for d, _ in hits[:width]] for hits in results], dtype=np.float64)
        ids = np.array([[i for _, i in hits[:width]] for hits in results], dtype=np.int64).reshape(len(results), width)
        distances = distances.reshape(len(results), width)
        if self.binary:
            return np.rint(distances).astype(np.int32), ids
        return np.sqrt(np.maximum(distances, 0.0)).astype(np.float32), ids  # Milvus's L2 is squared

    def _empty(self, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.empty((n, k), dtype=np.int32 if self.binary else np.float32), np.empty((n, k), dtype=np.int64)

    def _query_data(self, queries: np.ndarray) -> list:
        return [row.tobytes() for row in queries] if self.binary else [row.tolist() for row in queries]

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim == 1:
            codes = codes.reshape(1, -1)
        if self.binary:
            if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.width:
                raise ValueError(f"query codes must be packed uint8 of shape (n, {self.width}) for {self.dims} bits, "
                                 f"got {codes.dtype} of shape {codes.shape}")
        else:
            if codes.dtype != np.float32 or codes.ndim != 2 or codes.shape[1] != self.dims:
                raise ValueError(f"query codes must be float32 of shape (n, {self.dims}), "
                                 f"got {codes.dtype} of shape {codes.shape}")
            if not np.isfinite(codes).all():
                raise ValueError("query codes contain NaN or infinity")
        return np.ascontiguousarray(codes)

    # ----------------------------------------------------------------- upkeep
    def _sync(self) -> None:
        """Bring the collection up to date with the database's codes of the model."""
        fingerprint = self.db.code_fingerprint(self.model_id)  # before reading codes: a write meanwhile shows next time
        identity = fingerprint.split(";revision=")[0]  # model id and creation time
        with _calls(self.target, f"open {self.collection}"):
            exists = self.client.has_collection(self.collection, timeout=CALL_SECONDS)
        memo = (self.target.uri, self.collection)
        if exists and _synced_here.get(memo, (None,))[0] == fingerprint:
            # this process brought it to this state, and the database has not changed since:
            # no Strong read of the state record needed
            self.nlist = _synced_here[memo][1]
            self._load()
            self.synced = {"rebuilt": False, "copied": 0, "deleted": 0}
            return
        state = _State(self.target, self.client)
        saved = state.get(self.collection)
        if (not exists or saved is None or saved.get("identity") != identity or saved.get("spec") != self.spec
                or saved.get("format") != STATE_FORMAT):
            database_ids = self._database_ids()
            self._rebuild(exists, len(database_ids))
            self.synced = {"rebuilt": True, "copied": self._fill(database_ids), "deleted": 0}
        elif saved.get("fingerprint") == fingerprint:
            self.nlist = saved.get("nlist")
            self._load()
            self.synced = {"rebuilt": False, "copied": 0, "deleted": 0}
            _synced_here[memo] = (fingerprint, self.nlist)
            return
        else:
            self.nlist = saved.get("nlist")
            self._load()
            database_ids = self._database_ids()
            milvus_ids = self._milvus_ids(database_ids)
            missing = np.setdiff1d(database_ids, milvus_ids, assume_unique=True)
            gone = np.setdiff1d(milvus_ids, database_ids, assume_unique=True)
            if len(missing) == 0 and _revision(fingerprint) != _revision(saved.get("fingerprint", "")):
                missing = database_ids  # codes written again in place: copy them all again
            copied = self._copy(missing)
            self._delete(gone)
            self.synced = {"rebuilt": False, "copied": copied, "deleted": int(len(gone))}
        n = len(database_ids)
        if n >= MIN_INDEXED and (self.synced["copied"] >= max(MIN_INDEXED, n // 10)
                                 or (self.cells and _nlist(n) >= 2 * (self.nlist or 1))):
            self._seal(n)
        state.put(self.collection, {"format": STATE_FORMAT, "identity": identity, "fingerprint": fingerprint,
                                    "spec": self.spec, "nlist": self.nlist})
        _synced_here[memo] = (fingerprint, self.nlist)

    def _rebuild(self, exists: bool, n: int) -> None:
        from pymilvus import DataType, MilvusClient

        with _calls(self.target, f"create {self.collection}"):
            if exists:
                self.client.drop_collection(self.collection, timeout=CALL_SECONDS)
            about = f"semhash codes of model {self.name!r} of {self.db.location}"[:250]
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=about)
            schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
            vector = DataType.BINARY_VECTOR if self.binary else DataType.FLOAT_VECTOR
            schema.add_field(CODE_FIELD, vector, dim=self.dims)
            self.nlist = _nlist(n) if self.cells else None
            self.client.create_collection(self.collection, schema=schema, index_params=self._index_params(),
                                          consistency_level=STRONG, timeout=CALL_SECONDS)
        self._load()

    def _index_params(self):
        params = self.client.prepare_index_params()
        extra = {"nlist": self.nlist} if self.cells else {}
        params.add_index(field_name=CODE_FIELD, index_name=CODE_FIELD, index_type=self.index_type,
                         metric_type=self.metric, params=extra)
        return params

    def _load(self) -> None:
        with _calls(self.target, f"load {self.collection}"):
            state = self.client.get_load_state(self.collection, timeout=CALL_SECONDS).get("state")
            if str(state).rsplit(".", 1)[-1] != "Loaded":
                self.client.load_collection(self.collection, timeout=CALL_SECONDS)

    def _database_ids(self) -> np.ndarray:
        query = select(_codes.c.document_id).where(_codes.c.model_id == self.model_id).order_by(_codes.c.document_id)
        with self.db._engine.connect() as conn:
            return np.fromiter(conn.execute(query).scalars(), dtype=np.int64)

    def _milvus_ids(self, database_ids: np.ndarray) -> np.ndarray:
        """Every id in the collection: one query per window of :data:`ID_WINDOW` database ids
        (a window that comes back full is split), so no query returns more than Milvus allows."""
        bounds = [int(v) for v in database_ids[ID_WINDOW::ID_WINDOW]]
        edges = [-(2**63 - 1)] + bounds + [2**63 - 1]  # the server parses -(2**63) as out of range
        found: list[np.ndarray] = []
        windows = [(edges[i], edges[i + 1], i == len(edges) - 2) for i in range(len(edges) - 1)]
        # The first query Strong (waits for the server's time tick), the others Session (served
        # at once, from a state at least as new). A write by another process in between that
        # they miss is only written again, or deleted already: the database says what to do.
        level = STRONG
        while windows:
            low, high, last = windows.pop()
            upper = f"{ID_FIELD} <= {high}" if last else f"{ID_FIELD} < {high}"
            with _calls(self.target, f"list the ids of {self.collection}"):
                rows = self.client.query(self.collection, filter=f"{ID_FIELD} >= {low} and {upper}",
                                         output_fields=[ID_FIELD], limit=MAX_TOPK, consistency_level=level,
                                         timeout=CALL_SECONDS)
            level = SESSION
            if len(rows) >= MAX_TOPK and high - low > 1:
                middle = low + (high - low) // 2
                windows += [(low, middle, False), (middle, high, last)]
                continue
            found.append(np.fromiter((row[ID_FIELD] for row in rows), dtype=np.int64, count=len(rows)))
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)

    def _fill(self, ids: np.ndarray) -> int:
        """Copy every code into the collection just made: inserts, then a count of its rows;
        if another process filled it at the same time (ids stored twice, or rows of a
        collection it dropped missing), every code is upserted again."""
        copied = self._copy(ids, insert=True)
        if self._row_count() != copied:
            copied = self._copy(ids)
        return copied

    def _row_count(self) -> int:
        """Rows in the collection, an id stored twice counted twice (a Strong read)."""
        with _calls(self.target, f"count the rows of {self.collection}"):
            rows = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                     consistency_level=STRONG, timeout=CALL_SECONDS)
        return int(rows[0]["count(*)"])

    def _copy(self, ids: np.ndarray, insert: bool = False) -> int:
        """Upsert (or insert) the database's codes of ``ids`` (ascending), :data:`BATCH` at a time."""
        write = self.client.insert if insert else self.client.upsert
        copied = 0
        for start in range(0, len(ids), BATCH):
            chunk_ids, codes = self.db.get_codes(self.model_id, ids[start:start + BATCH].tolist())
            if not len(chunk_ids):
                continue
            if self.binary:
                rows = [{ID_FIELD: int(i), CODE_FIELD: code.tobytes()} for i, code in zip(chunk_ids.tolist(), codes)]
            else:
                rows = [{ID_FIELD: int(i), CODE_FIELD: code} for i, code in zip(chunk_ids.tolist(), codes.tolist())]
            with _calls(self.target, f"write codes to {self.collection}"):
                write(self.collection, rows, timeout=CALL_SECONDS)
            copied += len(rows)
        return copied

    def _delete(self, ids: np.ndarray) -> None:
        for start in range(0, len(ids), BATCH):
            with _calls(self.target, f"delete codes from {self.collection}"):
                self.client.delete(self.collection, ids=ids[start:start + BATCH].tolist(), timeout=CALL_SECONDS)

    def _seal(self, n: int) -> None:
        """After a bulk write: seal the written segments, which the server then indexes in
        the background (growing segments are searched by brute force, several times slower;
        the server seals them itself in time, so small writes are not worth the wait), and
        for cells rebuild the IVF index when the collection has outgrown it. The query node
        switches to the indexed segments some seconds later: cells searches are exact
        until then."""
        with _calls(self.target, f"index {self.collection}"):
            self.client.flush(self.collection, timeout=CALL_SECONDS)
            if self.cells and (self.nlist is None or _nlist(n) >= 2 * self.nlist):
                self.nlist = _nlist(n)
                self.client.release_collection(self.collection, timeout=CALL_SECONDS)
                self.client.drop_index(self.collection, CODE_FIELD, timeout=CALL_SECONDS)
                self.client.create_index(self.collection, self._index_params(), timeout=CALL_SECONDS)
                self.client.load_collection(self.collection, timeout=CALL_SECONDS)
        self._wait_for_index()

    def _wait_for_index(self) -> None:
        """Until the server has indexed every sealed row, at most :data:`INDEX_WAIT_SECONDS`:
        until then it searches those rows by brute force, on cores it is also spending on
        the build, so the command that wrote them (``index``, ``add``, a first search) waits
        rather than every query after it. Past the bound, searches stay exact meanwhile."""
        deadline = time.monotonic() + INDEX_WAIT_SECONDS
        while True:
            with _calls(self.target, f"index {self.collection}"):
                about = self.client.describe_index(self.collection, CODE_FIELD, timeout=CALL_SECONDS) or {}
            if int(about.get("pending_index_rows") or 0) == 0 or time.monotonic() >= deadline:
                return
            time.sleep(INDEX_POLL_SECONDS)


def _nlist(n: int) -> int:
    """IVF lists of a cells collection of ``n`` codes: ``sqrt(n)`` (within what k-means can
    train). Not the local cells' ``4 sqrt(n)``: the server trains an IVF for each sealed
    segment in the background, on the same cores as the searches, and at a million codes
    4,096 lists were still training minutes later (searches exact and slower all along)
    where 1,024 were ready in about 15 s."""
    return max(1, min(isqrt(max(n, 0)), default_cells(n), MAX_NLIST))


def _revision(fingerprint: str) -> str:
    found = re.search(r";revision=([^;]*)", fingerprint)
    return found.group(1) if found else ""


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > MAX_TOPK:
        raise MilvusLimitError(f"Milvus returns at most {MAX_TOPK} hits a query; {k} were asked for")
    return int(k)


def _warn_lite_cells(target: Target) -> None:
    global _warned_lite_cells
    if not _warned_lite_cells:
        _warned_lite_cells = True
        warnings.warn(f"{target.shown}: milvus-lite has no BIN_IVF_FLAT index, so cells searches are exact "
                      "there (use a Milvus server for cells)", RuntimeWarning, stacklevel=4)


# --------------------------------------------------------------------------- address
class MilvusAddressIndex:
    """Semantic hashing in Milvus: a range search over the address codes' collection (the
    Hamming ball of ``radius``, nearest addresses first, at most ``max_candidates``
    documents), the candidates ranked by long code with a filtered search over the long
    codes' collection. Same ``search(...) -> AddressResult`` as
    :class:`~semhash.index.address.AddressIndex`."""

    def __init__(self, db: Database, address_model: str, long_model: str, *, target: Target | None = None) -> None:
        self.addresses = MilvusCodeIndex(db, address_model, target=target)
        self.long = MilvusCodeIndex(db, long_model, target=self.addresses.target)
        if not (self.addresses.binary and self.long.binary):
            raise ValueError("address search needs two binary models")

    def __repr__(self) -> str:
        return f"MilvusAddressIndex(addresses={self.addresses!r}, long={self.long!r})"

    def search(self, address_code: np.ndarray, long_code: np.ndarray, k: int, radius: int = 2, *,
               fallback: bool = True, max_candidates: int | None = DEFAULT_MAX_CANDIDATES) -> AddressResult:
        """The ``k`` documents nearest by long-code Hamming distance among those whose address
        lies within ``radius`` of the query's; exhaustive when the ball holds fewer than ``k``."""
        k = _check_k(k)
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        if max_candidates is not None and (isinstance(max_candidates, bool)
                                           or not isinstance(max_candidates, (int, np.integer)) or max_candidates < 1):
            raise ValueError(f"max_candidates must be a positive integer or None, got {max_candidates!r}")
        budget = MAX_TOPK if max_candidates is None else min(max(int(max_candidates), k), MAX_TOPK)
        address = self.addresses._check_codes(address_code)[:1]
        long = self.long._check_codes(long_code)[:1]
        # HAMMING range search: range_filter <= distance < radius
        ball = self.addresses._search(address, budget, {"radius": int(radius) + 1, "range_filter": 0})[0]
        candidates = [doc_id for _, doc_id in ball]
        if len(candidates) < k and fallback:
            distances, ids = self.long.search(long, k)
            return AddressResult(distances[0], ids[0], len(candidates), True)
        if not candidates:
            return AddressResult(np.empty(0, np.int32), np.empty(0, np.int64), 0, False)
        ranked = self.long._search(long, k, filter=f"{ID_FIELD} in {candidates}")
        distances, ids = self.long._arrays(ranked)
        return AddressResult(distances[0], ids[0], len(candidates), False)


# --------------------------------------------------------------------------- state
class _State:
    """The state records: one row per collection (key: its name) in :data:`STATE_COLLECTION`,
    a JSON value. Milvus wants a vector in every collection: a constant 2-d one here."""

    def __init__(self, target: Target, milvus) -> None:
        self.target, self.client = target, milvus
        self._ensure()

    def _ensure(self) -> None:
        from pymilvus import DataType, MilvusClient

        with _calls(self.target, f"open {STATE_COLLECTION}"):
            if self.client.has_collection(STATE_COLLECTION, timeout=CALL_SECONDS):
                state = self.client.get_load_state(STATE_COLLECTION, timeout=CALL_SECONDS).get("state")
                if str(state).rsplit(".", 1)[-1] != "Loaded":
                    self.client.load_collection(STATE_COLLECTION, timeout=CALL_SECONDS)
                return
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                description="semhash: what each code collection was last synced to")
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("value", DataType.VARCHAR, max_length=4096)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            params = self.client.prepare_index_params()
            params.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
            try:
                self.client.create_collection(STATE_COLLECTION, schema=schema, index_params=params,
                                              consistency_level=STRONG, timeout=CALL_SECONDS)
            except Exception:  # noqa: BLE001 - another process created it meanwhile
                if not self.client.has_collection(STATE_COLLECTION, timeout=CALL_SECONDS):
                    raise
                self.client.load_collection(STATE_COLLECTION, timeout=CALL_SECONDS)

    def get(self, key: str) -> dict | None:
        with _calls(self.target, f"read {STATE_COLLECTION}"):
            rows = self.client.query(STATE_COLLECTION, filter=f"key == {json.dumps(key)}", output_fields=["value"],
                                     consistency_level=STRONG, timeout=CALL_SECONDS)
        if not rows:
            return None
        try:
            value = json.loads(rows[0]["value"])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict) -> None:
        with _calls(self.target, f"write {STATE_COLLECTION}"):
            self.client.upsert(STATE_COLLECTION, [{"key": key, "value": json.dumps(value), "vector": [0.0, 0.0]}],
                               timeout=CALL_SECONDS)
