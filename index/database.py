"""The semhash database: documents, trained models and their codes, in SQLite.

The database is the source of truth. Search structures (``semhash.index.faiss_index``) are
caches rebuilt from it, so everything a search needs is stored here: the documents,
each model's weights and vocabulary as opaque bytes/JSON, and one code per
(document, model).

Code layout in the ``codes`` table:

* binary models (``kind="binary"``, ``n_dims`` bits): the packed bits of
  :mod:`semhash.codes`, ``n_bytes(n_dims)`` bytes;
* real models (``kind="real"``, ``n_dims`` dimensions): ``n_dims`` float32 values,
  little-endian, ``4 * n_dims`` bytes.

A document's labels: ``label`` holds the first (the one shown and used for colours);
``labels`` holds the JSON list of all of them when there are several, NULL otherwise (then
the labels are just ``label``, or none), so single-label databases read as before.

Every write runs in one transaction, so a failing call leaves the database as it was.
Nothing here pickles: weights are bytes made by the model's own serializer, configs
and vocabularies are JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, delete, event, func, insert, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url

from semhash.index.code_store import CodeStore
from semhash.index.document_store import DocumentStore
from semhash.index.locks import database_file, remove_leftovers
from semhash.index.schema import (  # noqa: F401 - DatabaseError and the rows are imported from here
    _ADDED_COLUMNS,
    _ADDED_FOR,
    _ADDED_TABLES,
    _as_id,
    _code_layout,
    _codes,
    _documents,
    _LEGACY_PIXELS_MODEL,
    _meta,
    _model_row,
    _ModelHeader,
    _models,
    _pixels,
    _preview,
    _to_json,
    _utcnow,
    _VOCABULARY_KEY,
    Base,
    DatabaseError,
    DocumentRow,
    MODEL_KINDS,
    ModelRow,
    SCHEMA_VERSION,
)

SQLITE_BUSY_SECONDS = 60.0

# --------------------------------------------------------------------------- database


class Database(DocumentStore, CodeStore):
    """Documents, models and codes in one SQLite file (or any SQLAlchemy URL).

    ``url_or_path`` is a file path (becomes ``sqlite:///path``) or an SQLAlchemy URL
    (anything containing ``://``). With ``create=False`` a missing file is an error
    instead of a new, empty database. A file that is not a semhash database, or one
    written by a newer semhash (newer schema version), raises :class:`DatabaseError`
    and is left untouched. ``index_dir`` is where the derived search files go
    (:func:`default_index_dir` when not given).
    """

    def __init__(self, url_or_path: str | Path, *, create: bool = True, index_dir: str | Path | None = None) -> None:
        url_text, self.path = self._resolve(url_or_path)
        self.index_dir = Path(index_dir) if index_dir is not None else default_index_dir(url_text, self.path)
        if self.path is not None and self.path.parent.is_dir():
            remove_leftovers(self.path)
        if self.path is not None:
            if self.path.is_dir():
                raise DatabaseError(f"{self.path} is a directory, not a database file")
            if not self.path.exists():
                if not create:
                    raise DatabaseError(f"no database at {self.path}")
                self.path.parent.mkdir(parents=True, exist_ok=True)

        # Wait for another process's write transaction rather than fail at once.
        connect_args = {"timeout": SQLITE_BUSY_SECONDS} if url_text.startswith("sqlite") else {}
        self._engine: Engine = create_engine(url_text, connect_args=connect_args)
        # A Database dropped without close() still closes its pooled connections, rather than
        # leaving the driver to warn about each one when it is collected.
        self._finalizer = weakref.finalize(self, self._engine.dispose)
        self._local = threading.local()  # the open codes_batch transaction of each thread
        if self._engine.dialect.name == "sqlite":
            # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked, per connection.
            event.listen(self._engine, "connect", _enable_sqlite_foreign_keys)
        try:
            self._open_schema(create)
        except BaseException:
            self._finalizer()
            raise

    # ---------------------------------------------------------------- opening

    @staticmethod
    def _resolve(url_or_path: str | Path) -> tuple[str, Path | None]:
        path = database_file(url_or_path)
        if isinstance(url_or_path, str) and "://" in url_or_path:
            return url_or_path, path
        return f"sqlite:///{path}", path

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else self._engine.url.render_as_string()

    @property
    def location(self) -> str:
        """The file, or the URL without its password: what reports show."""
        return str(self.path) if self.path is not None else self._engine.url.render_as_string(hide_password=True)

    def _open_schema(self, create: bool) -> None:
        """Check the schema before any write; create it in a fresh database."""
        try:
            with self._engine.connect() as conn:
                inspector = inspect(conn)
                tables = set(inspector.get_table_names())
                version = self._read_schema_version(conn) if "meta" in tables else None
                columns = {
                    table: {column["name"] for column in inspector.get_columns(table)}
                    for table in _ADDED_COLUMNS if table in tables
                }
        except sa_exc.DatabaseError as err:
            # e.g. sqlite3 "file is not a database" for a text file or random bytes.
            raise DatabaseError(f"{self._name} is not a semhash database: {err.orig}") from err

        ours = set(Base.metadata.tables)
        if not tables:
            if not create:
                raise DatabaseError(f"{self._name} is empty: no semhash tables (open it with create=True)")
            with self._engine.begin() as conn:  # one transaction: all tables or none
                Base.metadata.create_all(conn)
                conn.execute(insert(_meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        if "meta" not in tables:
            raise DatabaseError(
                f"{self._name} is not a semhash database: it has tables "
                f"({_preview(sorted(tables))}) but no 'meta' table"
            )
        if version != SCHEMA_VERSION:
            if isinstance(version, int) and version > SCHEMA_VERSION:
                problem = (
                    f"schema version {version} was written by a newer semhash "
                    f"(this one reads version {SCHEMA_VERSION}); upgrade semhash"
                )
            else:
                problem = f"unknown schema version {version!r} (expected {SCHEMA_VERSION})"
            raise DatabaseError(f"{self._name} is not a semhash database this version can read: {problem}")
        missing = ours - tables - set(_ADDED_TABLES)
        if missing:
            raise DatabaseError(
                f"{self._name} is not a valid semhash database: missing tables {_preview(sorted(missing))}"
            )
        self._add_missing_columns(columns)
        self._add_missing_tables(tables)

    def _add_missing_tables(self, tables: set[str]) -> None:
        """Create the tables of :data:`_ADDED_TABLES` an older database lacks; move legacy pixels."""
        added = [Base.metadata.tables[name] for name in _ADDED_TABLES if name not in tables]
        legacy = None
        with self._engine.connect() as conn:
            legacy = conn.execute(select(_models.c.id).where(_models.c.name == _LEGACY_PIXELS_MODEL)).scalar()
        if not added and legacy is None:
            return
        try:
            with self._engine.begin() as conn:  # one transaction: the move happens whole or not at all
                Base.metadata.create_all(conn, tables=added)
                if legacy is not None:
                    conn.execute(_pixels.insert().from_select(
                        ["document_id", "data"],
                        select(_codes.c.document_id, _codes.c.code).where(_codes.c.model_id == legacy)))
                    conn.execute(delete(_codes).where(_codes.c.model_id == legacy))
                    conn.execute(delete(_models).where(_models.c.id == legacy))
                    conn.execute(delete(_meta).where(_meta.c.key == f"codes_revision/{legacy}"))
        except sa_exc.DatabaseError as err:  # e.g. a read-only file
            raise DatabaseError(
                f"{self._name} predates the pixels table and could not be upgraded ({err.orig}); "
                "open it once with write access"
            ) from err

    def _add_missing_columns(self, columns: dict[str, set[str]]) -> None:
        """Add the columns of :data:`_ADDED_COLUMNS` that an older database lacks, in one transaction."""
        statements = [
            f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"
            for table, added in _ADDED_COLUMNS.items()
            for name, sql_type in added.items()
            if name not in columns[table]
        ]
        if not statements:
            return
        try:
            with self._engine.begin() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        except sa_exc.DatabaseError as err:  # e.g. a read-only file
            added = ", ".join(_ADDED_FOR[statement.split()[5]] for statement in statements)
            raise DatabaseError(
                f"{self._name} predates {added} and could not be upgraded "
                f"({'; '.join(statements)}: {err.orig}); open it once with write access"
            ) from err

    @staticmethod
    def _read_schema_version(conn: Connection) -> int | str | None:
        raw = conn.execute(select(_meta.c.value).where(_meta.c.key == "schema_version")).scalar()
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            return raw

    def close(self) -> None:
        """Release all connections (the object is unusable afterwards)."""
        self._finalizer()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self._name!r})"

    # ---------------------------------------------------------------- models

    def save_model(
        self,
        name: str,
        kind: str,
        n_dims: int,
        config: dict[str, Any],
        weights: bytes,
        vocabulary: dict[str, Any] | None,
        replace: bool = False,
    ) -> int:
        """Store a model and return its id.

        An existing ``name`` is an error unless ``replace=True``; replacing deletes
        the old model and all its codes (they belong to the old weights) and gives
        the new one a fresh id, all in one transaction.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model name must be a non-empty string, got {name!r}")
        if kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
        if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims <= 0:
            raise ValueError(f"n_dims must be a positive integer, got {n_dims!r}")
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if not isinstance(weights, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"weights must be bytes from the model's serializer, got {type(weights).__name__}"
            )
        if vocabulary is not None and not isinstance(vocabulary, dict):
            raise TypeError(f"vocabulary must be a dict or None, got {type(vocabulary).__name__}")
        values = {
            "name": name,
            "kind": kind,
            "n_dims": int(n_dims),
            "config": _to_json(config, "config"),
            "weights": bytes(weights),
            "vocabulary": None if vocabulary is None else _to_json(vocabulary, "vocabulary"),
            "created_at": _utcnow(),
            "weights_sha256": hashlib.sha256(bytes(weights)).hexdigest(),
        }
        try:
            with self._engine.begin() as conn:
                old_id = conn.execute(select(_models.c.id).where(_models.c.name == name)).scalar()
                if old_id is not None:
                    if not replace:
                        raise DatabaseError(
                            f"a model named {name!r} already exists (id {old_id}); "
                            "pass replace=True to overwrite it and drop its codes"
                        )
                    # ON DELETE CASCADE removes the old model's codes in this transaction.
                    conn.execute(delete(_models).where(_models.c.id == old_id))
                    conn.execute(delete(_meta).where(_meta.c.key == f"codes_revision/{old_id}"))
                return int(conn.execute(insert(_models).values(values)).inserted_primary_key[0])
        except sa_exc.IntegrityError as err:
            raise DatabaseError(f"could not save model {name!r}: {err.orig}") from err

    def get_model(self, name_or_id: str | int, *, with_weights: bool = True) -> ModelRow:
        """A model by name or id; KeyError naming the known models if there is none.

        A string is tried as a name first, then (if all digits) as an id.
        ``with_weights=False`` skips loading the weight blob.
        """
        columns = [c for c in _models.c if with_weights or c.name != "weights"]
        with self._engine.connect() as conn:
            row = None
            if isinstance(name_or_id, str):
                row = conn.execute(select(*columns).where(_models.c.name == name_or_id)).first()
                if row is None and name_or_id.strip().isdigit():
                    row = conn.execute(select(*columns).where(_models.c.id == int(name_or_id))).first()
            elif isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
                row = conn.execute(select(*columns).where(_models.c.id == int(name_or_id))).first()
            else:
                raise TypeError(
                    f"model key must be a name (str) or id (int), got {type(name_or_id).__name__}"
                )
            if row is None:
                known = [f"{name} (id {model_id})" for model_id, name in conn.execute(
                    select(_models.c.id, _models.c.name).order_by(_models.c.id)
                )]
        if row is None:
            listing = ", ".join(known) if known else "none stored yet"
            raise KeyError(f"no model {name_or_id!r}; known models: {listing}")
        checksum = row._mapping.get("weights_sha256")
        if with_weights and checksum is not None and hashlib.sha256(row._mapping["weights"]).hexdigest() != checksum:
            raise DatabaseError(
                f"{self._name}: the weights of model {row._mapping['name']!r} do not match their SHA-256 "
                "checksum: the database was altered or damaged; rebuild it with `semhash index --overwrite`"
            )
        return _model_row(row)

    def list_models(self) -> list[ModelRow]:
        """All models ordered by id, without their weights (``weights`` is None)."""
        columns = [c for c in _models.c if c.name != "weights"]
        with self._engine.connect() as conn:
            return [_model_row(row) for row in conn.execute(select(*columns).order_by(_models.c.id))]

    def _model_header(self, model_id: int) -> _ModelHeader:
        """Id, name, kind and size of a model: the columns stored before the weights blob,
        so SQLite never walks the blob's overflow pages (``get_model(with_weights=False)``
        does, to reach the later columns: milliseconds per call on every batch)."""
        model_id = _as_id(model_id, "model id")
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_models.c.id, _models.c.name, _models.c.kind, _models.c.n_dims).where(_models.c.id == model_id)
            ).first()
        if row is None:
            self.get_model(model_id, with_weights=False)  # raises a helpful KeyError
        return _ModelHeader(int(row.id), row.name, row.kind, int(row.n_dims))

    def _model_id(self, model_id: int) -> int:
        return self._model_header(model_id).id

    def clear(self) -> None:
        """Delete every document, model, code and fact but the schema's, in one transaction
        (what rebuilding a collection in place on a server starts with)."""
        with self._writing() as conn:
            for table in (_codes, _pixels, _documents, _models):
                conn.execute(delete(table))
            conn.execute(delete(_meta).where(_meta.c.key != "schema_version"))

    # ---------------------------------------------------------------- vocabulary

    def save_vocabulary(self, vocabulary: dict[str, Any]) -> None:
        """Store the collection's vocabulary (JSON), which every text model of it reads."""
        if not isinstance(vocabulary, dict):
            raise TypeError(f"vocabulary must be a dict, got {type(vocabulary).__name__}")
        value = _to_json(vocabulary, "vocabulary")
        with self._writing() as conn:
            conn.execute(delete(_meta).where(_meta.c.key == _VOCABULARY_KEY))
            conn.execute(insert(_meta).values(key=_VOCABULARY_KEY, value=value))

    def get_vocabulary(self) -> dict[str, Any] | None:
        """The collection's vocabulary; in databases from before it was stored once, the
        copy stored with the first model that has one. None if there is none."""
        with self._engine.connect() as conn:
            raw = conn.execute(select(_meta.c.value).where(_meta.c.key == _VOCABULARY_KEY)).scalar()
            if raw is None:
                raw = conn.execute(select(_models.c.vocabulary).where(_models.c.vocabulary.is_not(None))
                                   .order_by(_models.c.id).limit(1)).scalar()
        return None if raw is None else json.loads(raw)

    # ---------------------------------------------------------------- summary

    def stats(self) -> dict[str, Any]:
        """Counts for a quick overview.

        Keys: ``documents`` (total), ``documents_by_kind`` ({kind: n}), ``labels``
        (number of distinct labels, over all the labels of every document), ``models``
        ([{id, name, kind, n_dims, codes, class, layers, code_bytes_per_document}]),
        ``search_bytes_per_document`` (what the search indexes of all models hold per document),
        ``pixels`` (images with stored pixels) and ``file_size`` (bytes of the SQLite file and
        its WAL, None if not a file).
        """
        with self._engine.connect() as conn:
            by_kind = dict(conn.execute(
                select(_documents.c.kind, func.count())
                .group_by(_documents.c.kind)
                .order_by(_documents.c.kind)
            ).all())
            # A multi-label document's labels are all in its JSON list: the distinct lists are
            # decoded here, which works on every dialect (no JSON functions needed).
            labels = set(conn.execute(
                select(_documents.c.label).distinct()
                .where(_documents.c.labels.is_(None), _documents.c.label.is_not(None))
            ).scalars())
            for labels_json in conn.execute(
                select(_documents.c.labels).distinct().where(_documents.c.labels.is_not(None))
            ).scalars():
                labels.update(json.loads(labels_json))
            n_labels = len(labels)
            code_counts = (
                select(_codes.c.model_id, func.count().label("n"))
                .group_by(_codes.c.model_id)
                .subquery()
            )
            models = [
                {
                    "id": row.id,
                    "name": row.name,
                    "kind": row.kind,
                    "n_dims": row.n_dims,
                    "codes": int(row.n or 0),
                    "class": json.loads(row.config).get("class"),
                    "layers": json.loads(row.config).get("layers"),
                    "code_bytes_per_document": _code_bytes(row.kind, row.n_dims),
                }
                for row in conn.execute(
                    select(_models.c.id, _models.c.name, _models.c.kind, _models.c.n_dims, _models.c.config,
                           code_counts.c.n)
                    .outerjoin(code_counts, code_counts.c.model_id == _models.c.id)
                    .order_by(_models.c.id)
                )
            ]
            pixel_count = int(conn.execute(select(func.count()).select_from(_pixels)).scalar())
        file_size = None
        if self.path is not None:
            file_size = sum(
                p.stat().st_size
                for p in (self.path, self.path.with_name(self.path.name + "-wal"))
                if p.exists()
            )
        return {
            "documents": sum(by_kind.values()),
            "documents_by_kind": {kind: int(n) for kind, n in by_kind.items()},
            "labels": int(n_labels),
            "models": models,
            # A search index keeps each code and an 8-byte document id in memory.
            "search_bytes_per_document": sum(model["code_bytes_per_document"] + 8 for model in models),
            "pixels": pixel_count,
            "file_size": file_size,
        }


def _code_bytes(kind: str, n_dims: int) -> int:
    dtype, width = _code_layout(kind, n_dims)
    return width * dtype.itemsize


class UsesDatabase:
    """Base of the objects that work on one database, opened from a path or URL or given
    open: they close it when they opened it (``close()``, or a ``with`` block)."""

    def _open(self, database: Database | str | Path) -> Database:
        self._owns_database = not isinstance(database, Database)
        return Database(database, create=False) if self._owns_database else database

    def close(self) -> None:
        if getattr(self, "_owns_database", False):
            self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def default_index_dir(url_text: str, path: Path | None) -> Path | None:
    """Where a database's derived search files live unless told: ``$SEMHASH_INDEX_DIR`` when
    set; else ``<db file>.faiss`` beside a file, a folder of the user's cache named after the
    URL for a server (so that every process finds them), and nowhere (built in memory) for
    an in-memory database."""
    if os.environ.get("SEMHASH_INDEX_DIR"):
        return Path(os.environ["SEMHASH_INDEX_DIR"])
    if path is not None:
        return path.with_name(path.name + ".faiss")
    url = make_url(url_text)
    if url.get_backend_name() == "sqlite":
        return None
    cache = Path(os.environ.get("SEMHASH_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semhash")
    name = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return cache / "indexes" / f"{url.get_backend_name()}-{name}"


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


