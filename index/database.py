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

import json
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from semhash.codes import n_bytes

SCHEMA_VERSION = 1
MODEL_KINDS = ("binary", "real")
DOCUMENT_FIELDS = ("external_id", "kind", "source", "title", "label", "text", "labels")
# Columns added to the version-1 schema after it was first released: added in place when an
# older database is opened (NULL reads as before), so it needs no version bump or rebuild.
_ADDED_COLUMNS = {"documents": {"labels": "TEXT"}}

# Rows per IN (...) query: well below SQLite's bound-parameter limit on every version.
_IN_CHUNK = 900
# Little-endian float32, the on-disk form of real-valued codes whatever the host.
_REAL_DTYPE = np.dtype("<f4")


class DatabaseError(RuntimeError):
    """The database cannot be opened, or a write would break its consistency."""


# --------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DocumentRecord(Base):
    """A document (text now, images later) identified by its ``external_id``."""

    __tablename__ = "documents"
    # AUTOINCREMENT: ids are never reused, so a stale search index cannot
    # point an old id at a new document.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(512), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(32), default="text", server_default="text", index=True)
    source: Mapped[str | None] = mapped_column(String(1024))
    title: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(String(255))
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    # JSON list of all labels when there are several (see the module docstring); last, since
    # ALTER TABLE ADD COLUMN puts it there in databases that predate it.
    labels: Mapped[str | None] = mapped_column(Text)


class ModelRecord(Base):
    """A trained model: its weights (opaque bytes), config and vocabulary."""

    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint("kind IN ('binary', 'real')", name="ck_models_kind"),
        CheckConstraint("n_dims > 0", name="ck_models_n_dims"),
        {"sqlite_autoincrement": True},  # a replaced model gets a fresh id
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    n_dims: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)  # JSON
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    vocabulary: Mapped[str | None] = mapped_column(Text)  # JSON
    # No longer written: the count of code writes moved to the meta table (key
    # "codes_revision/<model id>"; updating this row rewrote the weights blob). Kept so
    # that databases made by earlier versions keep their schema.
    codes_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class CodeRecord(Base):
    """The code of one document under one model."""

    __tablename__ = "codes"
    __table_args__ = (
        # Cascading deletes from documents look codes up by document.
        Index("ix_codes_document_id", "document_id"),
        # Clustered on the key: one model's codes lie together, sorted by document,
        # which is exactly how get_codes reads them.
        {"sqlite_with_rowid": False},
    )

    # Key order (model_id, document_id); the key is the pair (document, model).
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[bytes] = mapped_column(LargeBinary)


class MetaRecord(Base):
    """Key/value facts about the database itself, e.g. ``schema_version``."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


_documents = DocumentRecord.__table__
_models = ModelRecord.__table__
_codes = CodeRecord.__table__
_meta = MetaRecord.__table__


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class DocumentRow:
    """A stored document, as returned by :class:`Database`.

    ``labels`` are all its labels, ``label`` the first of them; when not given, ``labels``
    is ``(label,)`` (or ``()`` without a label).
    """

    id: int
    external_id: str
    kind: str
    source: str | None
    title: str | None
    label: str | None
    text: str | None
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.labels and self.label is not None:
            object.__setattr__(self, "labels", (self.label,))


@dataclass(frozen=True)
class ModelRow:
    """A stored model.

    ``weights`` is ``None`` when the row comes from :meth:`Database.list_models`
    (or ``get_model(..., with_weights=False)``): listing never loads weight blobs.
    """

    id: int
    name: str
    kind: str
    n_dims: int
    config: dict[str, Any]
    weights: bytes | None
    vocabulary: dict[str, Any] | None
    created_at: datetime

    @property
    def code_dtype(self) -> np.dtype:
        """dtype of this model's codes: uint8 (packed bits) or float32."""
        return _code_layout(self.kind, self.n_dims)[0]

    @property
    def code_width(self) -> int:
        """Columns of this model's code array: bytes for binary, dimensions for real."""
        return _code_layout(self.kind, self.n_dims)[1]


@dataclass(frozen=True)
class _ModelHeader:
    """What storing and reading codes needs of a model (see ``Database._model_header``)."""

    id: int
    name: str
    kind: str
    n_dims: int


def _code_layout(kind: str, n_dims: int) -> tuple[np.dtype, int]:
    if kind == "binary":
        return np.dtype(np.uint8), n_bytes(n_dims)
    if kind == "real":
        return np.dtype(np.float32), n_dims
    raise DatabaseError(f"unknown model kind {kind!r} (expected one of {MODEL_KINDS})")


def _as_utc(value: datetime) -> datetime:
    # SQLite keeps no time zone; every timestamp here is written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _preview(values: Iterable[Any], limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" ... ({len(values)} in all)" if len(values) > limit else "")


# --------------------------------------------------------------------------- database


class Database:
    """Documents, models and codes in one SQLite file (or any SQLAlchemy URL).

    ``url_or_path`` is a file path (becomes ``sqlite:///path``) or an SQLAlchemy URL
    (anything containing ``://``). With ``create=False`` a missing file is an error
    instead of a new, empty database. A file that is not a semhash database, or one
    written by a newer semhash (newer schema version), raises :class:`DatabaseError`
    and is left untouched.
    """

    def __init__(self, url_or_path: str | Path, *, create: bool = True) -> None:
        url_text, self.path = self._resolve(url_or_path)
        if self.path is not None:
            if self.path.is_dir():
                raise DatabaseError(f"{self.path} is a directory, not a database file")
            if not self.path.exists():
                if not create:
                    raise DatabaseError(f"no database at {self.path}")
                self.path.parent.mkdir(parents=True, exist_ok=True)

        self._engine: Engine = create_engine(url_text)
        self._local = threading.local()  # the open codes_batch transaction of each thread
        if self._engine.dialect.name == "sqlite":
            # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked, per connection.
            event.listen(self._engine, "connect", _enable_sqlite_foreign_keys)
        try:
            self._open_schema(create)
        except BaseException:
            self._engine.dispose()
            raise

    # ---------------------------------------------------------------- opening

    @staticmethod
    def _resolve(url_or_path: str | Path) -> tuple[str, Path | None]:
        if isinstance(url_or_path, str) and "://" in url_or_path:
            url = make_url(url_or_path)
            database = url.database
            is_file = (
                url.get_backend_name() == "sqlite"
                and bool(database)
                and database != ":memory:"
                and not database.startswith("file:")
            )
            return url_or_path, (Path(database) if is_file else None)
        path = Path(url_or_path).expanduser()
        return f"sqlite:///{path}", path

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else self._engine.url.render_as_string()

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
        missing = ours - tables
        if missing:
            raise DatabaseError(
                f"{self._name} is not a valid semhash database: missing tables {_preview(sorted(missing))}"
            )
        self._add_missing_columns(columns)

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
            raise DatabaseError(
                f"{self._name} predates multi-label documents and could not be upgraded "
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
        self._engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self._name!r})"

    # ---------------------------------------------------------------- documents

    def add_documents(self, docs: Sequence[dict[str, Any] | object]) -> list[int]:
        """Insert documents in one transaction; return their new ids, in input order.

        Each document is a dict or an object with attributes ``external_id``
        (required, non-empty string) and optionally ``text``, ``label``, ``title``,
        ``source`` (strings or None), ``labels`` (a list or tuple of strings, the first of
        which is ``label`` when both are given) and ``kind`` (default ``"text"``). Other keys or
        attributes are ignored. If any ``external_id`` is repeated in the batch or
        already stored, :class:`DatabaseError` lists them and nothing is written.
        """
        rows = [_document_values(doc, position) for position, doc in enumerate(docs)]
        if not rows:
            return []
        external_ids = [row["external_id"] for row in rows]
        repeated = [key for key, count in Counter(external_ids).items() if count > 1]
        if repeated:
            raise DatabaseError(
                f"duplicate external_id within the batch: {_preview(repeated)}; nothing was written"
            )
        now = _utcnow()
        for row in rows:
            row["created_at"] = now

        try:
            with self._engine.begin() as conn:
                # One executemany INSERT (SQLite would run INSERT ... RETURNING with
                # sort_by_parameter_order one row at a time); a stored external_id breaks
                # the unique index, the transaction rolls back and it is named below.
                if conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite":
                    # Straight to the driver's executemany (SQLAlchemy's per-row parameter
                    # processing cost as much as the insert); created_at is the same for
                    # every row, converted once by the column type itself.
                    process = _documents.c.created_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                    stamp = process(now) if process is not None else now
                    columns = ("external_id", "kind", "source", "title", "label", "text", "labels")
                    conn.exec_driver_sql(
                        f"INSERT INTO documents ({', '.join(columns)}, created_at) "
                        f"VALUES ({', '.join('?' * (len(columns) + 1))})",
                        [(*(row[c] for c in columns), stamp) for row in rows],
                    )
                else:
                    conn.execute(insert(_documents), rows)
                if conn.dialect.name == "sqlite":
                    # AUTOINCREMENT gives the rows of one INSERT, under the transaction's
                    # write lock, consecutive ids ending at the table's sequence number.
                    last = conn.execute(
                        text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": _documents.name}
                    ).scalar_one()
                    return list(range(int(last) - len(rows) + 1, int(last) + 1))
                new_ids: dict[str, int] = {}
                for chunk in _chunks(external_ids):
                    query = select(_documents.c.external_id, _documents.c.id).where(
                        _documents.c.external_id.in_(chunk)
                    )
                    new_ids.update((key, doc_id) for key, doc_id in conn.execute(query))
                return [int(new_ids[key]) for key in external_ids]
        except sa_exc.IntegrityError as err:
            with self._engine.connect() as conn:
                stored = self._existing_external_ids(conn, external_ids)
            if stored:
                raise DatabaseError(
                    f"external_id already stored: {_preview(stored)}; nothing was written"
                ) from None
            # a concurrent writer got there first, or another constraint
            raise DatabaseError(f"could not add documents, nothing was written: {err.orig}") from err

    def stored_external_ids(self, external_ids: Sequence[str]) -> set[str]:
        """Which of ``external_ids`` are already stored (for resumable indexing)."""
        with self._engine.connect() as conn:
            return set(self._existing_external_ids(conn, list(external_ids)))

    @staticmethod
    def _existing_external_ids(conn: Connection, external_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        for chunk in _chunks(external_ids):
            found += conn.execute(
                select(_documents.c.external_id).where(_documents.c.external_id.in_(chunk))
            ).scalars()
        return sorted(found)

    def count_documents(self, kind: str | None = None) -> int:
        """Number of documents, optionally of one ``kind``."""
        query = select(func.count()).select_from(_documents)
        if kind is not None:
            query = query.where(_documents.c.kind == kind)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def get_documents(self, ids: Sequence[int]) -> list[DocumentRow]:
        """Documents by id, in the order of ``ids``; KeyError naming any missing id."""
        wanted = [_as_id(doc_id, "document id") for doc_id in ids]
        found: dict[int, DocumentRow] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted(set(wanted))):
                for row in conn.execute(_select_documents().where(_documents.c.id.in_(chunk))):
                    found[row.id] = _document_row(row)
        missing = [doc_id for doc_id in wanted if doc_id not in found]
        if missing:
            raise KeyError(f"no document with id {_preview(missing)}")
        return [found[doc_id] for doc_id in wanted]

    def find_document(self, key: str | int) -> DocumentRow:
        """One document by numeric id (int) or external_id (str).

        A string is looked up as an external_id first, then, if it is all digits,
        as a numeric id (so command-line input like ``"42"`` works).
        """
        if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
            raise TypeError(
                f"document key must be an id (int) or external_id (str), got {type(key).__name__}"
            )
        by_external_id = _select_documents().where(_documents.c.external_id == str(key))
        with self._engine.connect() as conn:
            row = conn.execute(by_external_id).first() if isinstance(key, str) else None
            if row is None and (not isinstance(key, str) or key.strip().isdigit()):
                row = conn.execute(_select_documents().where(_documents.c.id == int(key))).first()
        if row is None:
            raise KeyError(f"no document with id or external_id {key!r}")
        return _document_row(row)

    def iter_documents(self, kind: str | None = None, batch_size: int = 1000) -> Iterator[DocumentRow]:
        """All documents (optionally of one kind), ordered by id, read ``batch_size`` at a time.

        Pages by id rather than holding one cursor open, so the caller may write
        to the database between items.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        last_id = 0
        while True:
            query = _select_documents().where(_documents.c.id > last_id)
            if kind is not None:
                query = query.where(_documents.c.kind == kind)
            with self._engine.connect() as conn:
                batch = conn.execute(query.order_by(_documents.c.id).limit(batch_size)).all()
            yield from (_document_row(row) for row in batch)
            if len(batch) < batch_size:
                return
            last_id = batch[-1].id

    def documents_without_codes(self, model_id: int, kind: str | None = None) -> list[int]:
        """Ids (ascending) of documents that have no code yet under ``model_id``.

        What remains to encode; lets incremental indexing resume after an interruption.
        """
        model_id = self._model_id(model_id)
        has_code = exists().where(
            (_codes.c.document_id == _documents.c.id) & (_codes.c.model_id == model_id)
        )
        query = select(_documents.c.id).where(~has_code)
        if kind is not None:
            query = query.where(_documents.c.kind == kind)
        with self._engine.connect() as conn:
            return [int(doc_id) for doc_id in conn.execute(query.order_by(_documents.c.id)).scalars()]

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
            "codes_revision": 0,
            "created_at": _utcnow(),
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

    # ---------------------------------------------------------------- codes

    @contextmanager
    def codes_batch(self) -> Iterator[None]:
        """Run several :meth:`put_codes` calls (of this thread) in one transaction.

        One commit instead of one per call: each commit of a file database waits for the
        disk, which is most of what storing a batch of codes costs. An exception inside
        the block rolls all of them back. Nested blocks join the outer one.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._engine.begin() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """The open :meth:`codes_batch` transaction, or a new one committed on exit."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._engine.begin() as conn:
            yield conn

    def put_codes(self, model_id: int, document_ids: Sequence[int], codes: np.ndarray) -> None:
        """Store (or overwrite) the codes of ``document_ids`` under a model, in one transaction.

        ``codes`` must be uint8 ``(n, n_bytes(n_dims))`` packed bits for a binary model,
        or float32 ``(n, n_dims)`` (finite) for a real one; ``n == len(document_ids)``.
        """
        model = self._model_header(model_id)
        ids = _as_id_array(document_ids, "document_ids")
        blobs = _code_blobs(model, ids, codes)
        if len(ids) == 0:
            return
        repeated = [int(v) for v, c in zip(*np.unique(ids, return_counts=True)) if c > 1]
        if repeated:
            raise ValueError(f"document_ids repeats {_preview(repeated)}")

        id_list = ids.tolist()
        rows = [
            {"model_id": model.id, "document_id": doc_id, "code": blob}
            for doc_id, blob in zip(id_list, blobs)
        ]
        try:
            with self._writing() as conn:
                self._upsert_codes(conn, model.id, id_list, rows)
                self._bump_codes_revision(conn, model.id)
        except sa_exc.IntegrityError as err:
            # The transaction is rolled back; the foreign key caught unknown documents
            # (checked here, off the fast path, only to name them).
            missing = self._missing_document_ids(id_list)
            if missing:
                raise KeyError(f"no document with id {_preview(missing)}; no codes were written") from err
            raise DatabaseError(f"could not store codes, nothing was written: {err.orig}") from err

    @staticmethod
    def _bump_codes_revision(conn: Connection, model_id: int) -> None:
        """Count one more write of a model's codes (part of :meth:`code_fingerprint`).

        Kept in the small ``meta`` table (key ``codes_revision/<model id>``): updating the
        ``models`` row instead rewrote its multi-megabyte weights blob on every batch.
        """
        key = f"codes_revision/{model_id}"
        if conn.dialect.name == "sqlite":
            statement = sqlite_insert(_meta).values(key=key, value="1")
            conn.execute(statement.on_conflict_do_update(
                index_elements=[_meta.c.key], set_={"value": cast(cast(_meta.c.value, Integer) + 1, Text)}))
            return
        current = conn.execute(select(_meta.c.value).where(_meta.c.key == key)).scalar()
        if current is None:
            conn.execute(insert(_meta).values(key=key, value="1"))
        else:
            conn.execute(update(_meta).where(_meta.c.key == key).values(value=str(int(current) + 1)))

    def _upsert_codes(self, conn: Connection, model_id: int, id_list: list[int], rows: list[dict]) -> None:
        if conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite":
            # Straight to the driver's executemany: SQLAlchemy's per-row parameter
            # processing cost more than SQLite's insert itself (blobs need none).
            conn.exec_driver_sql(
                "INSERT INTO codes (model_id, document_id, code) VALUES (?, ?, ?) "
                "ON CONFLICT (model_id, document_id) DO UPDATE SET code = excluded.code",
                [(row["model_id"], row["document_id"], row["code"]) for row in rows],
            )
            return
        if conn.dialect.name == "sqlite":
            statement = sqlite_insert(_codes)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[_codes.c.model_id, _codes.c.document_id],
                    set_={"code": statement.excluded.code},
                ),
                rows,
            )
            return
        # Portable upsert: drop the old codes of these documents, then insert.
        for chunk in _chunks(id_list):
            conn.execute(
                delete(_codes).where(_codes.c.model_id == model_id, _codes.c.document_id.in_(chunk))
            )
        conn.execute(insert(_codes), rows)

    def _missing_document_ids(self, ids: list[int]) -> list[int]:
        present: set[int] = set()
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids))):
                query = select(_documents.c.id).where(_documents.c.id.in_(chunk))
                present.update(conn.execute(query).scalars())
        return [doc_id for doc_id in ids if doc_id not in present]

    def get_codes(
        self, model_id: int, document_ids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, codes)`` of a model: int64 ids ascending, codes row-aligned with them.

        With ``document_ids=None`` all the model's codes; otherwise those of the given
        documents that have a code (absent ones are simply not returned — compare
        ``ids`` to see which). ``codes`` is uint8 ``(n, n_bytes)`` or float32 ``(n, n_dims)``.
        """
        model = self._model_header(model_id)
        dtype, width = _code_layout(model.kind, model.n_dims)
        row_bytes = width * dtype.itemsize
        base = select(_codes.c.document_id, _codes.c.code).where(_codes.c.model_id == model.id)

        with self._engine.connect() as conn:
            if document_ids is None:
                rows = conn.execute(base.order_by(_codes.c.document_id)).all()
            else:
                wanted = sorted(set(_as_id_array(document_ids, "document_ids").tolist()))
                rows = []
                for chunk in _chunks(wanted):  # chunks are ascending, so rows stay sorted
                    rows += conn.execute(
                        base.where(_codes.c.document_id.in_(chunk)).order_by(_codes.c.document_id)
                    ).all()

        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        # One join and one frombuffer: fast for 100k+ rows. bytearray keeps it writable.
        raw = bytearray().join(row[1] for row in rows)
        if len(raw) != len(rows) * row_bytes:
            bad = [int(row[0]) for row in rows if len(row[1]) != row_bytes]
            raise DatabaseError(
                f"{self._name}: codes of model {model.name!r} have the wrong size "
                f"(expected {row_bytes} bytes) for documents {_preview(bad)}"
            )
        stored = _REAL_DTYPE if model.kind == "real" else dtype
        codes = np.frombuffer(raw, dtype=stored).reshape(len(rows), width)
        return ids, codes.astype(dtype, copy=False)

    def code_fingerprint(self, model_id: int) -> str:
        """A cheap summary of a model's code set, to tell whether a saved index is stale.

        Changes when the model is replaced (new id and created_at), when codes are
        written (revision counter) or deleted (count, id range).
        """
        model_id = _as_id(model_id, "model id")
        with self._engine.connect() as conn:
            model = conn.execute(
                select(_models.c.id, _models.c.created_at).where(_models.c.id == model_id)
            ).first()
            if model is None:
                self.get_model(model_id, with_weights=False)  # raises a helpful KeyError
            writes = conn.execute(
                select(_meta.c.value).where(_meta.c.key == f"codes_revision/{model_id}")
            ).scalar()
            count, first, last = conn.execute(
                select(func.count(), func.min(_codes.c.document_id), func.max(_codes.c.document_id))
                .where(_codes.c.model_id == model_id)
            ).one()
        created = _as_utc(model.created_at).isoformat()
        return (
            f"model={model.id};created={created};revision={writes or 0};"
            f"count={count};min_id={first or 0};max_id={last or 0}"
        )

    # ---------------------------------------------------------------- summary

    def stats(self) -> dict[str, Any]:
        """Counts for a quick overview.

        Keys: ``documents`` (total), ``documents_by_kind`` ({kind: n}), ``labels``
        (number of distinct labels, over all the labels of every document), ``models``
        ([{id, name, kind, n_dims, codes}]) and ``file_size`` (bytes of the SQLite file and its WAL, None if not a file).
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
                }
                for row in conn.execute(
                    select(_models.c.id, _models.c.name, _models.c.kind, _models.c.n_dims, code_counts.c.n)
                    .outerjoin(code_counts, code_counts.c.model_id == _models.c.id)
                    .order_by(_models.c.id)
                )
            ]
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
            "file_size": file_size,
        }


# --------------------------------------------------------------------------- helpers


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _select_documents():
    return select(
        _documents.c.id,
        _documents.c.external_id,
        _documents.c.kind,
        _documents.c.source,
        _documents.c.title,
        _documents.c.label,
        _documents.c.text,
        _documents.c.labels,
    )


def _document_row(row: Any) -> DocumentRow:
    return DocumentRow(
        id=int(row.id),
        external_id=row.external_id,
        kind=row.kind,
        source=row.source,
        title=row.title,
        label=row.label,
        text=row.text,
        labels=tuple(json.loads(row.labels)) if row.labels is not None else (),
    )


def _model_row(row: Any) -> ModelRow:
    mapping = row._mapping
    vocabulary = mapping["vocabulary"]
    return ModelRow(
        id=int(mapping["id"]),
        name=mapping["name"],
        kind=mapping["kind"],
        n_dims=int(mapping["n_dims"]),
        config=json.loads(mapping["config"]),
        weights=mapping.get("weights"),
        vocabulary=None if vocabulary is None else json.loads(vocabulary),
        created_at=_as_utc(mapping["created_at"]),
    )


def _document_values(doc: dict[str, Any] | object, position: int) -> dict[str, Any]:
    """Validated column values of one input document (dict or object)."""
    if isinstance(doc, dict):
        get = doc.get
    else:
        def get(field: str, default: Any = None) -> Any:
            return getattr(doc, field, default)

    external_id = get("external_id")
    if not isinstance(external_id, str) or not external_id:
        raise ValueError(
            f"documents[{position}]: external_id must be a non-empty string, got {external_id!r}"
        )
    values: dict[str, Any] = {"external_id": external_id}
    for field in ("source", "title", "label", "text"):
        value = get(field)
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"documents[{position}] ({external_id!r}): {field} must be a string or None, "
                f"got {type(value).__name__}"
            )
        values[field] = value
    values["label"], values["labels"] = _label_values(get("label"), get("labels"), position, external_id)
    kind = get("kind") or "text"
    if not isinstance(kind, str):
        raise ValueError(f"documents[{position}] ({external_id!r}): kind must be a string, got {kind!r}")
    values["kind"] = kind
    return values


def _label_values(label: str | None, labels: Any, position: int, external_id: str) -> tuple[str | None, str | None]:
    """The ``label`` and ``labels`` columns of a document: its first label, and the JSON list of
    all of them when there are several."""
    where = f"documents[{position}] ({external_id!r})"
    if labels is not None and not (
        isinstance(labels, (list, tuple)) and all(isinstance(value, str) and value for value in labels)
    ):
        raise ValueError(f"{where}: labels must be a list of non-empty strings or None, got {labels!r}")
    if not labels:
        return label, None
    labels = list(labels)
    if len(set(labels)) < len(labels):
        raise ValueError(f"{where}: labels repeat a label: {labels!r}")
    if label is not None and label != labels[0]:
        raise ValueError(f"{where}: label {label!r} must be the first of labels {labels!r}")
    return labels[0], (_to_json(labels, "labels") if len(labels) > 1 else None)


def _as_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _as_id_array(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _code_blobs(model: ModelRow | _ModelHeader, ids: np.ndarray, codes: np.ndarray) -> list[bytes]:
    """Validate ``codes`` against the model and split it into one blob per row."""
    dtype, width = _code_layout(model.kind, model.n_dims)
    codes = np.asarray(codes)
    if codes.dtype != dtype:
        raise ValueError(
            f"model {model.name!r} ({model.kind}, {model.n_dims} dims) needs {dtype} codes, got {codes.dtype}"
        )
    expected = (len(ids), width)
    if codes.shape != expected:
        unit = "bytes of packed bits" if model.kind == "binary" else "dimensions"
        raise ValueError(
            f"model {model.name!r} needs codes of shape {expected} "
            f"({len(ids)} documents x {width} {unit}), got {codes.shape}"
        )
    if model.kind == "real":
        if not np.isfinite(codes).all():
            raise ValueError(f"codes for model {model.name!r} contain NaN or infinity")
        codes = codes.astype(_REAL_DTYPE, copy=False)
    data = np.ascontiguousarray(codes).tobytes()
    row_bytes = width * dtype.itemsize
    return [data[i : i + row_bytes] for i in range(0, len(data), row_bytes)]


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be JSON-serializable: {err}") from err
