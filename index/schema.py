"""The database's schema and rows: tables, the row objects read back, and the checks and
conversions of the values written (documents, labels, codes, JSON).

:class:`semhash.index.database.Database` reads and writes through these; nothing else does.
See that module for the layout of codes and labels.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, bindparam, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from semhash.codes import n_bytes

SCHEMA_VERSION = 1
MODEL_KINDS = ("binary", "real")
# Columns added to the version-1 schema after it was first released: added in place when an
# older database is opened (NULL reads as before), so it needs no version bump or rebuild.
_ADDED_COLUMNS = {"documents": {"labels": "TEXT"}, "models": {"weights_sha256": "VARCHAR(64)"}}
_ADDED_FOR = {"labels": "multi-label documents", "weights_sha256": "checksums of model weights"}
# Tables added since, created in place in an older database for the same reason.
_ADDED_TABLES = ("pixels",)
# Before the pixels table, images' pixels were the codes of a pseudo-model of this name;
# opening such a database moves them into the table.
_LEGACY_PIXELS_MODEL = "image-pixels"
# The meta key of the collection's vocabulary (older databases kept a copy per model row).
_VOCABULARY_KEY = "vocabulary"
DELETIONS_KEY = "documents_deleted"  # meta: how many times documents were deleted (part of revision())

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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    # SHA-256 of the weights, checked whenever they are loaded; NULL in rows written before
    # checksums (then nothing is checked). Last, where ALTER TABLE ADD COLUMN puts it.
    weights_sha256: Mapped[str | None] = mapped_column(String(64))


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


class PixelRecord(Base):
    """The raw pixels of an image document (uint8, height-width-channel), for display and retraining."""

    __tablename__ = "pixels"

    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MetaRecord(Base):
    """Key/value facts about the database itself, e.g. ``schema_version``."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


_documents = DocumentRecord.__table__
_models = ModelRecord.__table__
_codes = CodeRecord.__table__
_meta = MetaRecord.__table__
_pixels = PixelRecord.__table__


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



@functools.cache
def _documents_in(column: str):
    """The documents whose ``column`` is one of the list bound as ``values``. Built once:
    building an ``IN`` of literal values, each coerced, cost more than running it."""
    return _select_documents().where(_documents.c[column].in_(bindparam("values", expanding=True)))


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
