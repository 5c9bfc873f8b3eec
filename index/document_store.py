"""The documents of a database: added in bulk (ids in order, duplicates refused whole), found
by id or external id, counted, paged through; part of :class:`~semhash.index.database.Database`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, func, insert, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from semhash.index.schema import (
    _as_id,
    _chunks,
    _codes,
    _document_row,
    _document_values,
    _documents,
    _documents_in,
    _preview,
    _select_documents,
    _utcnow,
    DatabaseError,
    DELETIONS_KEY,
    DocumentRow,
)

_MAX_ID = 2**63 - 1


def _numeric_id(key: str | int) -> int | None:
    """The id a key names when read as a number (an int, or a string of ASCII digits), else None."""
    if isinstance(key, str):
        key = key.strip()
        if not (key.isascii() and key.isdigit()):
            return None
    value = int(key)
    return value if 0 < value <= _MAX_ID else None


class NoSuchDocument(KeyError):
    """No stored document has the id or external id asked for (the user's to fix: a 404)."""


class DocumentStore:
    """Documents; mixed into :class:`~semhash.index.database.Database`, whose engine it uses."""

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

    def delete_documents(self, keys: Sequence[str | int], *, missing_ok: bool = False) -> list[int]:
        """Delete documents (by id or external id, as :meth:`find_document` takes them) with
        their codes and pixels, in one transaction; return their ids, ascending. A key that
        names no document is a KeyError naming it, and then nothing is deleted (with
        ``missing_ok``, it is skipped). The database's deletion counter moves on (part of
        :meth:`~semhash.index.code_store.CodeStore.revision`, which long-running readers
        poll), and every model's code fingerprint changes with its count of codes, so
        derived search files and copies of the codes elsewhere see the change."""
        keys = list(keys)
        with self._writing() as conn:
            found = self._document_ids(conn, keys)
            missing = [key for key in dict.fromkeys(keys) if key not in found]
            if missing and not missing_ok:
                raise KeyError(f"no document with id or external_id {_preview(missing)}; nothing was deleted")
            ids = sorted(set(found.values()))
            if not ids:
                return []
            for chunk in _chunks(ids):
                # Codes and pixels go by ON DELETE CASCADE (SQLite: foreign keys are on per connection).
                conn.execute(delete(_documents).where(_documents.c.id.in_(chunk)))
            self._bump_meta_counter(conn, DELETIONS_KEY)
        return ids

    def document_ids(self, keys: Sequence[str | int]) -> dict[str | int, int]:
        """The ids of the documents that ``keys`` name (ids or external ids, as
        :meth:`find_document` takes them), by key; keys that name none are left out.
        Looked up in bulk: a few queries for thousands of keys."""
        with self._engine.connect() as conn:
            return self._document_ids(conn, list(keys))

    @staticmethod
    def _document_ids(conn: Connection, keys: list) -> dict[str | int, int]:
        for key in keys:
            if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"document key must be an id (int) or external_id (str), got {type(key).__name__}")
        unique = list(dict.fromkeys(keys))
        found: dict[str | int, int] = {}
        texts = [key for key in unique if isinstance(key, str)]
        for chunk in _chunks(texts):
            query = select(_documents.c.external_id, _documents.c.id).where(_documents.c.external_id.in_(chunk))
            found.update((external_id, int(doc_id)) for external_id, doc_id in conn.execute(query))
        numeric = {key: _numeric_id(key) for key in unique if key not in found}
        numeric = {key: value for key, value in numeric.items() if value is not None}
        present: set[int] = set()
        for chunk in _chunks(sorted(set(numeric.values()))):
            present.update(int(v) for v in conn.execute(select(_documents.c.id).where(_documents.c.id.in_(chunk))).scalars())
        found.update((key, value) for key, value in numeric.items() if value in present)
        return found

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

    def get_documents(self, ids: Sequence[int], *, missing_ok: bool = False) -> list[DocumentRow]:
        """Documents by id, in the order of ``ids``; KeyError naming any missing id (with
        ``missing_ok``, the ids no longer stored are left out)."""
        wanted = [_as_id(doc_id, "document id") for doc_id in ids]
        found: dict[int, DocumentRow] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted(set(wanted))):
                for row in conn.execute(_documents_in("id"), {"values": list(chunk)}):
                    found[row.id] = _document_row(row)
        missing = [doc_id for doc_id in wanted if doc_id not in found]
        if missing and not missing_ok:
            raise KeyError(f"no document with id {_preview(missing)}")
        return [found[doc_id] for doc_id in wanted if doc_id in found]

    def find_document(self, key: str | int) -> DocumentRow:
        """One document by numeric id (int) or external_id (str).

        A string is looked up as an external_id first, then, if it is all digits,
        as a numeric id (so command-line input like ``"42"`` works).
        """
        (row,) = self.find_documents([key])
        if row is None:
            raise NoSuchDocument(f"no document with id or external_id {key!r}")
        return row

    def find_documents(self, keys: Sequence[str | int]) -> list[DocumentRow | None]:
        """:meth:`find_document` of each key, read together; None where no document has it."""
        for key in keys:
            if isinstance(key, bool) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(
                    f"document key must be an id (int) or external_id (str), got {type(key).__name__}"
                )
        external = sorted({key for key in keys if isinstance(key, str)})
        numeric = sorted({doc_id for key in keys if (doc_id := _numeric_id(key)) is not None})
        by_external: dict[str, DocumentRow] = {}
        by_id: dict[int, DocumentRow] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(external):
                for row in conn.execute(_documents_in("external_id"), {"values": list(chunk)}):
                    by_external[row.external_id] = _document_row(row)
            for chunk in _chunks(numeric):
                for row in conn.execute(_documents_in("id"), {"values": list(chunk)}):
                    by_id[row.id] = _document_row(row)
        return [(by_external.get(key) if isinstance(key, str) else None) or by_id.get(_numeric_id(key))
                for key in keys]

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
