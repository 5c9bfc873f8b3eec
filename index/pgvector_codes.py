"""Hamming search inside PostgreSQL, with pgvector: no local files, shared by every process.

On a PostgreSQL database whose server has the pgvector extension (0.7 or later: Hamming
distance ``<~>`` on ``bit(n)`` and the ``bit_hamming_ops`` index operator class), the long
binary codes are searched by the server itself, so any number of application processes
share one collection, and a code written by another process (``semhash add``) is found by
the next query: nothing is built or cached on the machine that searches. Without pgvector,
search falls back to the local derived FAISS files (:mod:`semhash.index.faiss_index`,
:mod:`semhash.index.cells`), and :func:`database_index` warns once per process, naming the
folder they go to.

Storage. The ``codes`` table keeps each code as bytes (the source of truth, unchanged). A
side table ``code_bits(model_id, document_id, bits bit varying)`` holds the binary models'
codes as bit strings (``('x' || encode(code, 'hex'))::bit varying``), kept in step by the
server: triggers on ``codes`` copy every inserted or updated code of a binary model, and a
foreign key to ``codes`` with ``ON DELETE CASCADE`` removes it with its code (a deleted
document, a replaced model, :meth:`~semhash.index.database.Database.clear`). So every
writer, even one that knows nothing of pgvector, keeps it current. :func:`database_index`
creates the extension (``CREATE EXTENSION IF NOT EXISTS vector``: a superuser, or a
database where it already exists), the table and the triggers on first use, and copies
the codes written before. A stored column rather than the bytes cast at query time: the
cast costs more than the distance (70 ms against 27 ms a query over 100,000 codes).

Search, in the :class:`~semhash.index.search.SearchEngine` modes:

* ``exhaustive``: exact, ``ORDER BY bits <~> query, document_id LIMIT k`` over the model's
  rows (index scans are switched off, so the approximate index below is never used);
* ``cells``: an IVFFlat index (pgvector's inverted file, ``bit_hamming_ops``), one partial
  index per model on ``bits::bit(n)``: its lists are k-means cells of the codes, and the
  query visits the ``probes`` nearest (``ivfflat.probes``): exactly the meaning of
  :class:`~semhash.index.search.SearchOptions` ``probes`` in the FAISS cell index, which is
  why IVFFlat rather than HNSW. It builds in about a second for 100,000 codes where HNSW
  takes minutes (bounded time: k-means on a sample of 50 codes a list), and its knob is the
  one the CLI already has: ``--probes`` (more probes: better recall, slower; ``probes`` at
  least the number of lists is exact). It has :func:`default_lists` lists
  (``sqrt(n)``, pgvector's advice, at most :data:`MAX_LISTS`); codes added later go to
  their nearest list at once, and the index is built again (by the next engine that opens
  it) when the collection has grown so much that ``default_lists`` doubled. Results are
  ranked by distance, ties by document id; a query whose visited lists hold fewer than
  ``k`` codes is answered exactly, as in :mod:`semhash.index.cells`.

The address mode keeps its local table (:mod:`semhash.index.address`) for now, and the
real map codes their FAISS index. ``SEMHASH_PGVECTOR=off`` turns all this off (local files
as without pgvector, no warning).
"""

from __future__ import annotations

import os
import warnings
import weakref
from dataclasses import dataclass
from math import isqrt
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from semhash.codes import n_bytes

if TYPE_CHECKING:
    from semhash.index.database import Database

MIN_VERSION = (0, 7, 0)  # the first pgvector with Hamming distance on bit and bit_hamming_ops
BITS_TABLE = "code_bits"
LAYOUT = "semhash code_bits 1"  # the table's comment: what this module set up
MAX_LISTS = 1000  # IVFFlat k-means needs ~200 * lists^2 bytes: 200 MB at 1,000 lists
ENVIRONMENT = "SEMHASH_PGVECTOR"  # "off" (or 0, no, false): never search in the database
_LOCK = 0x5E3A54_0B17  # pg_advisory_xact_lock key: one process sets up or builds at a time

_SETUP = [
    f"""CREATE TABLE IF NOT EXISTS {BITS_TABLE} (
        model_id INTEGER NOT NULL,
        document_id INTEGER NOT NULL,
        bits BIT VARYING NOT NULL,
        PRIMARY KEY (model_id, document_id),
        FOREIGN KEY (model_id, document_id) REFERENCES codes (model_id, document_id) ON DELETE CASCADE)""",
    f"""CREATE OR REPLACE FUNCTION {BITS_TABLE}_copy() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO {BITS_TABLE} (model_id, document_id, bits)
        SELECT changed.model_id, changed.document_id, ('x' || encode(changed.code, 'hex'))::bit varying
        FROM changed JOIN models ON models.id = changed.model_id AND models.kind = 'binary'
        ON CONFLICT (model_id, document_id) DO UPDATE SET bits = EXCLUDED.bits;
        RETURN NULL;
    END $$""",
    # One trigger per event: a trigger with a transition table has only one.
    f"DROP TRIGGER IF EXISTS {BITS_TABLE}_inserted ON codes",
    f"""CREATE TRIGGER {BITS_TABLE}_inserted AFTER INSERT ON codes REFERENCING NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION {BITS_TABLE}_copy()""",
    f"DROP TRIGGER IF EXISTS {BITS_TABLE}_updated ON codes",
    f"""CREATE TRIGGER {BITS_TABLE}_updated AFTER UPDATE ON codes REFERENCING NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION {BITS_TABLE}_copy()""",
    f"COMMENT ON TABLE {BITS_TABLE} IS '{LAYOUT}'",
]
# The codes of binary models written before the triggers (or while they were missing).
_COPY_MISSING = f"""INSERT INTO {BITS_TABLE} (model_id, document_id, bits)
    SELECT codes.model_id, codes.document_id, ('x' || encode(codes.code, 'hex'))::bit varying
    FROM codes JOIN models ON models.id = codes.model_id AND models.kind = 'binary'
    {{where}} ON CONFLICT (model_id, document_id) DO NOTHING"""


@dataclass(frozen=True)
class Support:
    """Whether a database's binary codes are searched in the database, and why not."""

    available: bool
    reason: str  # the pgvector version when available; else why not, for a message


_support: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Database -> Support, checked once
_warned = False  # the fallback warning, once per process


def is_postgresql(db: Database) -> bool:
    return db._engine.dialect.name == "postgresql"


def _turned_off() -> bool:
    return os.environ.get(ENVIRONMENT, "").strip().lower() in ("0", "off", "no", "false")


def support(db: Database) -> Support:
    """Whether ``db``'s binary codes are searched in the database, set up on first call.

    Only on PostgreSQL with pgvector 0.7 or later enabled in the database (this creates
    it when the server has it and the user may), and the ``code_bits`` table set up (this
    creates it when missing). Checked once per :class:`Database` object.
    """
    if db not in _support:
        _support[db] = _check(db)
    return _support[db]


def _check(db: Database) -> Support:
    if not is_postgresql(db):
        return Support(False, f"{db._engine.dialect.name} has no pgvector")
    if _turned_off():
        return Support(False, f"{ENVIRONMENT} is off")
    engine = db._engine
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
            offered = conn.execute(text("SELECT default_version FROM pg_available_extensions "
                                        "WHERE name = 'vector'")).scalar()
        if version is None and offered is None:
            return Support(False, "the server lacks pgvector")
        if version is None:
            if _version(offered) < MIN_VERSION:
                return Support(False, f"the server's pgvector {offered} is too old (Hamming search needs 0.7)")
            try:
                with engine.begin() as conn:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                    conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
                    version = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
            except sa_exc.DBAPIError as err:
                return Support(False, f"pgvector is not enabled in this database and this user cannot enable it "
                                      f"({_first_line(err)}; a superuser can: CREATE EXTENSION vector)")
        if _version(version) < MIN_VERSION:
            return Support(False, f"the database's pgvector {version} is too old (Hamming search needs 0.7: "
                                  "ALTER EXTENSION vector UPDATE)")
        _set_up(db)
    except sa_exc.DBAPIError as err:
        return Support(False, f"the search in the database could not be set up ({_first_line(err)})")
    return Support(True, f"pgvector {version}")


def _set_up(db: Database) -> None:
    """The ``code_bits`` table and its triggers, unless they are there; the codes written before."""
    with db._engine.connect() as conn:
        layout = conn.execute(text(f"SELECT obj_description(to_regclass('{BITS_TABLE}'), 'pg_class')")).scalar()
    if layout == LAYOUT:
        return
    with db._engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
        layout = conn.execute(text(f"SELECT obj_description(to_regclass('{BITS_TABLE}'), 'pg_class')")).scalar()
        if layout == LAYOUT:  # another process did it while this one waited
            return
        for statement in _SETUP:
            conn.execute(text(statement))
        conn.execute(text(_COPY_MISSING.format(where="")))


def _version(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(".")[:3] if part.isdigit())


def _first_line(err: Exception) -> str:
    return str(getattr(err, "orig", err)).strip().splitlines()[0]


def database_index(db: Database, model: str, *, cells: bool = False) -> DatabaseCodeIndex | None:
    """The in-database search of a binary model's codes (with an IVFFlat index for ``cells``),
    or None where it is not available: then the caller uses the local files; on PostgreSQL,
    a warning (once per process) says so and why."""
    found = support(db)
    if not found.available:
        if is_postgresql(db) and not _turned_off():
            _warn_once(f"{db.location}: the codes are searched from local derived files in {db.index_dir} "
                       f"because {found.reason}; with pgvector they are searched in the database")
        return None
    return DatabaseCodeIndex(db, model, cells=cells)


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def default_lists(n: int) -> int:
    """IVFFlat lists for ``n`` codes: ``sqrt(n)`` (pgvector's advice), at least 1, at most
    one per 40 codes (k-means needs points) and :data:`MAX_LISTS` (memory)."""
    return max(1, min(isqrt(max(n, 0)), n // 40, MAX_LISTS))


class DatabaseCodeIndex:
    """A binary model's codes, searched by Hamming distance in PostgreSQL (pgvector).

    Same ``search(codes, k) -> (distances, ids)`` and ``ntotal`` as
    :class:`~semhash.index.faiss_index.BinaryCodeIndex`; with ``cells=True``,
    ``search(codes, k, n_probe)`` as :class:`~semhash.index.cells.CellIndex` (IVFFlat lists
    for cells, built here when missing or outgrown). Reads the database on every call, so
    it sees every process's writes. Safe to share between threads.
    """

    def __init__(self, db: Database, model: str | int, *, cells: bool = False) -> None:
        row = db.get_model(model, with_weights=False)
        if row.kind != "binary":
            raise ValueError(f"Hamming search needs a binary model; {row.name!r} is {row.kind}")
        self.db, self.model_id, self.name = db, int(row.id), row.name
        self.n_bits = 8 * n_bytes(row.n_dims)  # packed codes are whole bytes, zero-padded
        self.cells = cells
        self.lists: int | None = None  # IVFFlat lists, once built
        self._copy_missing()
        if cells:
            self.lists = self._ensure_ivfflat()

    # ----------------------------------------------------------------- facts
    @property
    def ntotal(self) -> int:
        """Number of the model's codes, now."""
        with self.db._engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {BITS_TABLE} WHERE model_id = {self.model_id}")).scalar())

    def __len__(self) -> int:
        return self.ntotal

    @property
    def index_name(self) -> str:
        return f"{BITS_TABLE}_ivfflat_{self.model_id}"

    def __repr__(self) -> str:
        return f"DatabaseCodeIndex(model={self.name!r}, n_bits={self.n_bits}, cells={self.cells}, lists={self.lists})"

    # ----------------------------------------------------------------- search
    def search(self, codes: np.ndarray, k: int, n_probe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored codes to each query: ``(distances int32, ids int64)`` of
        shape ``(n_queries, min(k, ntotal))``, nearest first, ties by document id.

        Exact unless this is a cells index: then the ``n_probe`` nearest IVFFlat lists
        (default 16) are visited, and a query they give fewer than ``k`` codes is answered
        exactly.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if n_probe is not None and (isinstance(n_probe, bool) or not isinstance(n_probe, (int, np.integer))
                                    or n_probe < 1):
            raise ValueError(f"n_probe must be a positive integer, got {n_probe!r}")
        queries = self._check_codes(codes)
        results = []
        with self.db._engine.connect() as conn:
            for query in queries:
                rows = self._query(conn, query, int(k), probes=16 if n_probe is None else int(n_probe)) if self.cells else []
                if len(rows) < k:  # exact; fewer than k only when the model has fewer codes
                    rows = self._query(conn, query, int(k), probes=None)
                results.append(sorted((int(distance), int(doc_id)) for doc_id, distance in rows))
        # Every query gets min(k, ntotal) hits.
        width = len(results[0]) if results else 0
        distances = np.array([[d for d, _ in hits] for hits in results], dtype=np.int32).reshape(len(queries), width)
        ids = np.array([[i for _, i in hits] for hits in results], dtype=np.int64).reshape(len(queries), width)
        return distances, ids

    def _query(self, conn, query: np.ndarray, k: int, probes: int | None) -> list:
        """One query, in a transaction of its own (for its SET LOCAL settings)."""
        bits = f"bits::bit({self.n_bits})"  # the IVFFlat index's expression
        with conn.begin():
            if probes is None:  # exact: never the approximate index
                conn.execute(text("SET LOCAL enable_indexscan = off"))
                order = "distance, document_id"
            else:  # cells mean cells: the planner would scan small tables whole
                conn.execute(text("SET LOCAL enable_seqscan = off"))
                conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                conn.execute(text(f"SET LOCAL ivfflat.probes = {min(probes, self.lists or 1, 32768)}"))
                order = "distance"  # what the index orders by; ties are sorted afterwards
            return conn.execute(
                text(f"SELECT document_id, {bits} <~> CAST(:query AS bit({self.n_bits})) AS distance "
                     f"FROM {BITS_TABLE} WHERE model_id = {self.model_id} ORDER BY {order} LIMIT {int(k)}"),
                {"query": "x" + query.tobytes().hex()},
            ).all()

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim == 1:
            codes = codes.reshape(1, -1)
        width = self.n_bits // 8
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
            raise ValueError(f"query codes must be packed uint8 of shape (n, {width}) for {self.n_bits} bits, "
                             f"got {codes.dtype} of shape {codes.shape}")
        return codes

    # ----------------------------------------------------------------- upkeep
    def _copy_missing(self) -> None:
        """Copy the model's codes that ``code_bits`` lacks (written while its triggers were
        missing): a cheap count when there are none, as there should be."""
        where = f"WHERE codes.model_id = {self.model_id}"
        with self.db._engine.connect() as conn:
            codes, bits = conn.execute(text(
                f"SELECT (SELECT count(*) FROM codes {where}), "
                f"(SELECT count(*) FROM {BITS_TABLE} WHERE model_id = {self.model_id})")).one()
        if codes != bits:
            try:
                with self.db._engine.begin() as conn:
                    conn.execute(text(_COPY_MISSING.format(where=where)))
            except sa_exc.DBAPIError as err:
                warnings.warn(f"{self.db.location}: {codes - bits} codes of {self.name!r} are not in "
                              f"{BITS_TABLE} and could not be copied there ({_first_line(err)}); "
                              "searches miss them", RuntimeWarning, stacklevel=4)

    def _ensure_ivfflat(self) -> int | None:
        """The model's IVFFlat index: built when missing or outgrown (``default_lists`` of
        the codes now at least twice its lists). Its lists, or None when there is none
        (no codes yet, or it could not be built: then cells searches are exact)."""
        try:
            lists = self._built_lists()
            n = self.ntotal
            if n == 0:
                return lists
            if lists is not None and default_lists(n) < 2 * lists:
                return lists
            with self.db._engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                lists = self._built_lists(conn)  # another process may have built it while this one waited
                if lists is not None and default_lists(n) < 2 * lists:
                    return lists
                return self._build(conn, n)
        except sa_exc.DBAPIError as err:
            warnings.warn(f"{self.db.location}: could not build the IVFFlat index of {self.name!r} "
                          f"({_first_line(err)}); cells searches are exact", RuntimeWarning, stacklevel=4)
            return None

    def _built_lists(self, conn=None) -> int | None:
        query = text(f"SELECT obj_description(to_regclass('{self.index_name}'), 'pg_class')")
        if conn is None:
            with self.db._engine.connect() as conn:
                comment = conn.execute(query).scalar()
        else:
            comment = conn.execute(query).scalar()
        return int(comment.rsplit("=", 1)[1]) if comment and comment.startswith("lists=") else None

    def _build(self, conn, n: int) -> int:
        """Build the index (under a new name, then swap): writes of codes wait meanwhile."""
        lists = default_lists(n)
        # k-means holds a (samples x lists) float table, samples = 50 a list.
        memory_mb = 64 + (256 * lists * lists) // 2**20
        conn.execute(text(f"SET LOCAL maintenance_work_mem = '{memory_mb}MB'"))
        conn.execute(text("SET LOCAL client_min_messages = warning"))  # "ivfflat index created with little data"
        new = f"{self.index_name}_new"
        conn.execute(text(f"DROP INDEX IF EXISTS {new}"))
        conn.execute(text(
            f"CREATE INDEX {new} ON {BITS_TABLE} USING ivfflat ((bits::bit({self.n_bits})) bit_hamming_ops) "
            f"WITH (lists = {lists}) WHERE model_id = {self.model_id}"))
        conn.execute(text(f"DROP INDEX IF EXISTS {self.index_name}"))
        conn.execute(text(f"ALTER INDEX {new} RENAME TO {self.index_name}"))
        conn.execute(text(f"COMMENT ON INDEX {self.index_name} IS 'lists={lists}'"))
        # The indexes of models that are gone (replaced: new id) index nothing any more.
        stale = conn.execute(text(
            f"SELECT indexname FROM pg_indexes WHERE tablename = '{BITS_TABLE}' "
            f"AND indexname LIKE '{BITS_TABLE}_ivfflat_%' AND indexname NOT LIKE '%_new' "
            f"AND substring(indexname from '[0-9]+$')::int NOT IN (SELECT id FROM models)")).scalars().all()
        for name in stale:
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
        return lists
