"""The codes (and pixels) of a database's documents: written in batches, read back as arrays.

:class:`CodeStore` holds the part of :class:`~semhash.index.database.Database` that stores
each document's code under each model, the raw pixels of images, and the fingerprint that
tells a derived search file whether it is stale. Codes are packed bits (binary models) or
little-endian float32 (real models); see :mod:`semhash.index.database`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Integer, Text, cast, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from semhash.index.schema import (
    _as_id,
    _as_id_array,
    _as_utc,
    _chunks,
    _code_blobs,
    _code_layout,
    _codes,
    _documents,
    _meta,
    _models,
    _pixels,
    _preview,
    _REAL_DTYPE,
    DatabaseError,
    DELETIONS_KEY,
)


def _stored_layout(model) -> tuple[np.dtype, int, int, np.dtype]:
    """(dtype, columns, bytes a row, stored dtype) of a model's codes: real codes are
    stored little-endian (see :mod:`semhash.index.database`)."""
    dtype, width = _code_layout(model.kind, model.n_dims)
    return dtype, width, width * dtype.itemsize, _REAL_DTYPE if model.kind == "real" else dtype


# Rows fetched at a time when a model's codes are read whole.
_READ_BATCH = 65_536


def _fill(partitions, expected: int, row_bytes: int, name: str, model_name: str
          ) -> tuple[np.ndarray, np.ndarray]:
    """Ids and raw code bytes of row batches, in arrays that grow only if ``expected`` was short."""
    ids = np.empty(expected, dtype=np.int64)
    raw = np.empty((expected, row_bytes), dtype=np.uint8)
    n = 0
    for rows in partitions:
        if not rows:
            continue
        if n + len(rows) > len(ids):  # rows added since the count, or no count given
            size = max(n + len(rows), 2 * len(ids))
            ids = np.resize(ids, size)
            raw = np.resize(raw, (size, row_bytes))
        block = b"".join(row[1] for row in rows)
        if len(block) != len(rows) * row_bytes:
            bad = [int(row[0]) for row in rows if len(row[1]) != row_bytes]
            raise DatabaseError(
                f"{name}: codes of model {model_name!r} have the wrong size "
                f"(expected {row_bytes} bytes) for documents {_preview(bad)}"
            )
        ids[n:n + len(rows)] = [row[0] for row in rows]
        raw[n:n + len(rows)] = np.frombuffer(block, dtype=np.uint8).reshape(len(rows), row_bytes)
        n += len(rows)
    # Copies keep the result writable and no larger than it is.
    return ids[:n].copy() if n < len(ids) else ids, raw[:n].copy() if n < len(raw) else raw


class CodeStore:
    """Codes, pixels and code fingerprints; mixed into :class:`~semhash.index.database.Database`,
    whose engine, name and model look-ups it uses."""

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

    @classmethod
    def _bump_codes_revision(cls, conn: Connection, model_id: int) -> None:
        """Count one more write of a model's codes (part of :meth:`code_fingerprint`).

        Kept in the small ``meta`` table (key ``codes_revision/<model id>``): updating the
        ``models`` row instead rewrote its multi-megabyte weights blob on every batch.
        """
        cls._bump_meta_counter(conn, f"codes_revision/{model_id}")

    @staticmethod
    def _bump_meta_counter(conn: Connection, key: str) -> None:
        """Add one to the counter kept in ``meta`` under ``key`` (1 when there is none)."""
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
        dtype, width, row_bytes, stored = _stored_layout(model)
        base = select(_codes.c.document_id, _codes.c.code).where(_codes.c.model_id == model.id)

        with self._engine.connect() as conn:
            if document_ids is None:
                # Streamed into arrays sized up front: holding 10M rows as Python
                # tuples first would make memory grow with the collection.
                expected = conn.execute(
                    select(func.count()).select_from(_codes).where(_codes.c.model_id == model.id)
                ).scalar_one()
                result = conn.execution_options(stream_results=True, yield_per=_READ_BATCH).execute(
                    base.order_by(_codes.c.document_id))
                partitions = result.partitions()
            else:
                expected = None
                wanted = sorted(set(_as_id_array(document_ids, "document_ids").tolist()))
                # chunks are ascending, so rows stay sorted
                partitions = (conn.execute(base.where(_codes.c.document_id.in_(chunk))
                                           .order_by(_codes.c.document_id)).all()
                              for chunk in _chunks(wanted))
            ids, raw = _fill(partitions, expected or 0, row_bytes, self._name, model.name)
        codes = raw.view(stored).reshape(len(ids), width)
        return ids, codes.astype(dtype, copy=False)

    def iter_codes(self, model_id: int, batch: int = _READ_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All of a model's codes as ``(ids, codes)`` batches of up to ``batch`` rows, ids
        ascending across batches: what builds a search structure of any size without
        holding every code twice (see :meth:`get_codes` for the arrays)."""
        model = self._model_header(model_id)
        dtype, width, row_bytes, stored = _stored_layout(model)
        query = (select(_codes.c.document_id, _codes.c.code).where(_codes.c.model_id == model.id)
                 .order_by(_codes.c.document_id))
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for rows in result.partitions():
                ids, raw = _fill([rows], len(rows), row_bytes, self._name, model.name)
                yield ids, raw.view(stored).reshape(len(ids), width).astype(dtype, copy=False)

    def put_pixels(self, document_ids: Sequence[int], pixels: np.ndarray) -> None:
        """Store (or overwrite) the raw pixels of image documents: uint8 ``(n, ...)``, one row each."""
        ids = _as_id_array(document_ids, "document_ids")
        pixels = np.ascontiguousarray(pixels)
        if pixels.dtype != np.uint8 or len(pixels) != len(ids):
            raise ValueError(f"pixels must be uint8 with one row per document, got {pixels.dtype} {pixels.shape}")
        rows = [{"document_id": int(i), "data": row.tobytes()} for i, row in zip(ids, pixels.reshape(len(ids), -1))]
        if not rows:
            return
        try:
            with self._writing() as conn:
                conn.execute(delete(_pixels).where(_pixels.c.document_id.in_([row["document_id"] for row in rows])))
                conn.execute(insert(_pixels), rows)
        except sa_exc.IntegrityError as err:
            missing = self._missing_document_ids([row["document_id"] for row in rows])
            raise KeyError(f"no document with id {_preview(missing)}; no pixels were written") from err

    def get_pixels(self, document_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids ascending, uint8 (n, bytes))`` of the stored pixels (of ``document_ids`` that have some)."""
        base = select(_pixels.c.document_id, _pixels.c.data)
        with self._engine.connect() as conn:
            if document_ids is None:
                rows = conn.execute(base.order_by(_pixels.c.document_id)).all()
            else:
                wanted = sorted(set(_as_id_array(document_ids, "document_ids").tolist()))
                rows = [row for chunk in _chunks(wanted) for row in conn.execute(
                    base.where(_pixels.c.document_id.in_(chunk)).order_by(_pixels.c.document_id)).all()]
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        width = len(rows[0][1]) if rows else 0
        if any(len(row[1]) != width for row in rows):
            raise DatabaseError(f"{self._name}: stored pixels differ in size")
        return ids, np.frombuffer(bytearray().join(row[1] for row in rows), np.uint8).reshape(len(rows), width)

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

    def revision(self) -> str:
        """A cheap summary of the models and their code writes: it changes whenever a model
        is stored or replaced, whenever semhash writes codes (each bumps the model's write
        counter) and whenever it deletes documents (the deletion counter). It reads the
        models and meta tables only, so its cost does not grow with the collection: a
        long-running reader (the server) polls it to notice another process's writes."""
        with self._engine.connect() as conn:
            models = conn.execute(select(_models.c.id, _models.c.created_at).order_by(_models.c.id)).all()
            writes = dict(conn.execute(
                select(_meta.c.key, _meta.c.value).where(
                    _meta.c.key.like("codes_revision/%") | (_meta.c.key == DELETIONS_KEY))
            ).all())
        summary = ";".join(
            f"{row.id}@{_as_utc(row.created_at).isoformat()}:{writes.get(f'codes_revision/{row.id}', 0)}"
            for row in models
        )
        return summary + (f"|deleted:{writes[DELETIONS_KEY]}" if DELETIONS_KEY in writes else "")
