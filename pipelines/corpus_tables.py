"""Corpora that are tables: ``.jsonl`` and ``.csv`` files, standard input, ``hf:`` datasets:
one record per document, with configurable columns."""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from semhash.pipelines.hf import HubDatasetError, load_hf_dataset
from semhash.pipelines.corpus_common import (
    _Budget,
    _Collector,
    _CP1252_TABLE,
    _Decoder,
    _label_set,
    CorpusError,
    Document,
)

_SCAN_BYTES = 2**20  # a table is scanned for its encoding a chunk at a time
_CP1252 = "cp1252 (semhash's table)"  # the "auto" fallback: every byte decodes
_LATIN1_TO_CP1252 = {byte: _CP1252_TABLE[byte] for byte in range(0x80, 0xA0)}



@dataclass(frozen=True)
class _Record:
    values: Mapping
    default_id: str
    source: str


def _decode_whole_file(path: Path, decoder: _Decoder, collector: _Collector) -> str:
    """A table is decoded as a whole: one undecodable byte makes the whole file unreadable."""
    collector.budget.add(path.stat().st_size, str(path))  # measured before it is read
    try:
        text, used_fallback = decoder.decode(path.read_bytes())
    except UnicodeDecodeError as error:
        raise CorpusError(f"cannot decode {path} as {decoder.encoding}: {error}") from error
    if used_fallback:
        collector.latin1_fallbacks.append(str(path))
    return text


def _file_codec(path: Path, decoder: _Decoder, collector: _Collector) -> str:
    """The codec to stream a table with, chosen as :func:`_decode_whole_file` decodes it (one
    undecodable byte makes the whole file unreadable, or latin-1 with ``"auto"``), by
    reading the file once in chunks, without holding it (the bytes count against the corpus
    bound as :func:`_text_lines` reads them, so ``limit`` documents of a larger file can be read)."""
    codec = "utf-8-sig" if decoder.encoding == "auto" else decoder.encoding
    incremental = codecs.getincrementaldecoder(codec)()
    try:
        with path.open("rb") as file:
            while chunk := file.read(_SCAN_BYTES):
                incremental.decode(chunk)
            incremental.decode(b"", final=True)
    except UnicodeDecodeError as error:
        if decoder.encoding != "auto":
            raise CorpusError(f"cannot decode {path} as {decoder.encoding}: {error}") from error
        collector.latin1_fallbacks.append(str(path))
        return _CP1252
    return codec


def _text_lines(path: Path, codec: str, newline: str, budget: _Budget) -> Iterator[str]:
    """The lines of a text file (with their ends), decoded one at a time; the bytes read from
    the file so far (to the read-ahead's few KiB) are charged to ``budget`` as they go."""
    fallback = codec == _CP1252  # latin-1 then the 32 code points where cp1252 differs: the fallback table
    with path.open("r", encoding="latin-1" if fallback else codec, newline=newline) as file:
        charged = 0
        for line in file:
            read = file.buffer.tell()
            if read > charged:
                budget.add(read - charged, str(path))
                charged = read
            yield line.translate(_LATIN1_TO_CP1252) if fallback else line


def _stdin_lines(decoder: _Decoder, collector: _Collector) -> Iterator[str]:
    """Standard input's lines, decoded one at a time; with ``"auto"``, each line that is not
    UTF-8 is read as latin-1 (cp1252): the whole input cannot be scanned first."""
    budget, stream = collector.budget, sys.stdin.buffer
    if decoder.encoding != "auto":
        text = io.TextIOWrapper(stream, encoding=decoder.encoding, newline="\n")
        try:
            for line in text:
                budget.add(len(line), "standard input")
                yield line
        except UnicodeDecodeError as error:
            raise CorpusError(f"cannot decode standard input as {decoder.encoding}: {error}") from error
        finally:
            text.detach()  # leave sys.stdin's buffer open
        return
    first, fallback = True, False
    for raw in stream:
        budget.add(len(raw), "standard input")
        if first and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        first = False
        text, used_fallback = decoder.decode(raw)
        if used_fallback and not fallback:
            collector.latin1_fallbacks.append("standard input")
            fallback = True
        yield text


def _jsonl_records(path: Path | str, text: str) -> Iterator[_Record]:
    # Split on "\n" only: str.splitlines would also break on U+2028, which JSON strings may hold.
    return _jsonl_line_records(path, text.split("\n"))


def _jsonl_line_records(path: Path | str, lines: Iterable[str]) -> Iterator[_Record]:
    """The records of JSONL ``lines`` (split on "\n" only, with or without it)."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(f"bad JSON on line {line_number} of {path}: {error.msg}") from error
        if not isinstance(values, dict):
            raise CorpusError(
                f"line {line_number} of {path} is a JSON {type(values).__name__}, expected an object"
            )
        yield _Record(values, str(line_number), f"{path}:line {line_number}")


def _csv_records(path: Path, text: str) -> Iterator[_Record]:
    return _csv_line_records(path, io.StringIO(text, newline=""))


def _csv_line_records(path: Path | str, lines: Iterable[str]) -> Iterator[_Record]:
    """The records of a CSV file's ``lines`` (read with ``newline=""``, as the csv module wants)."""
    reader = csv.DictReader(lines)
    try:
        if reader.fieldnames is None:
            raise CorpusError(f"no documents in {path}: the file is empty (a CSV needs a header row)")
        for row_number, row in enumerate(reader, start=1):
            yield _Record(row, str(row_number), f"{path}:row {row_number}")
    except csv.Error as error:
        raise CorpusError(f"malformed CSV in {path} near line {reader.line_num}: {error}") from error


def _class_label_names(feature: Any) -> list[str] | None:
    """The names of a ``ClassLabel`` feature, or of the ``ClassLabel`` in a list feature; else None."""
    if isinstance(feature, (list, tuple)) and feature:  # the plain-list form of a list feature
        feature = feature[0]
    feature = getattr(feature, "feature", feature)  # Sequence(...) / List(...) of a ClassLabel
    return getattr(feature, "names", None)


def _named_labels(value: Any, names: list[str]) -> Any:
    """ClassLabel ids (alone or in a list) as names; ids out of range, like ClassLabel's -1 for
    "no label", are dropped; other values are left for the converter to judge."""
    if isinstance(value, list):
        return [name for name in (_named_labels(item, names) for item in value) if name is not None]
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None
    return value


def _hf_records(dataset_name: str, split: str, label_columns: tuple[str | None, ...]) -> Iterator[_Record]:
    try:
        dataset = load_hf_dataset(dataset_name, split)
    except HubDatasetError as error:
        raise CorpusError(str(error)) from error
    names_by_column = {
        column: names
        for column in label_columns
        if column and (names := _class_label_names(dataset.features.get(column))) is not None
    }
    for index, row in enumerate(dataset):
        if names_by_column:
            row = {**row, **{column: _named_labels(row.get(column), names) for column, names in names_by_column.items()}}
        yield _Record(row, str(index), f"hf:{dataset_name}[{split}]#{index}")


@dataclass(frozen=True)
class _Columns:
    """Which columns of a table hold the text, label, labels, title and id (None: do not read it)."""

    text: str
    label: str | None
    labels: str | None
    title: str | None
    id: str | None


class _RecordConverter:
    """One table record to a :class:`Document`, or None (and a tally) when its text is empty.

    ``labels_separator`` splits a labels column that holds one string (CSV); without it, such a
    string is a single label.
    """

    def __init__(self, columns: _Columns, collector: _Collector, labels_separator: str | None = None) -> None:
        self.columns = columns
        self.collector = collector
        self.labels_separator = labels_separator
        self.text_column_checked = False

    def __call__(self, record: _Record) -> Document | None:
        values, columns = record.values, self.columns
        if not self.text_column_checked:
            self._check_text_column(values, record.source)
        text = values.get(columns.text)
        if text is not None and not isinstance(text, str):
            raise CorpusError(
                f"{record.source}: column {columns.text!r} holds a {type(text).__name__}, expected text"
            )
        if not text or not text.strip():
            self.collector.skip("empty", record.source)
            return None
        self.collector.budget.check_document(len(text), record.source)  # characters: at most the bytes
        external_id = self._optional(values, columns.id)
        if external_id is None:
            if columns.id and values.get(columns.id) is not None:
                raise CorpusError(f"{record.source}: blank id in column {columns.id!r}")
            external_id = record.default_id
        return Document(
            external_id=external_id,
            text=text,
            label=self._optional(values, columns.label),
            title=self._optional(values, columns.title),
            source=record.source,
            labels=self._labels(values, record.source),
        )

    def _labels(self, values: Mapping, source: str) -> tuple[str, ...]:
        """The labels column's labels; () when the column is off, absent or null."""
        column = self.columns.labels
        value = values.get(column) if column else None
        if value is None:
            return ()
        where = f"{source}: column {column!r}"
        if isinstance(value, str):
            value = value.split(self.labels_separator) if self.labels_separator else [value]
        elif not isinstance(value, (list, tuple)):
            raise CorpusError(f"{where} holds a {type(value).__name__}, expected a list of labels")
        return _label_set(value, where)

    def _check_text_column(self, values: Mapping, source: str) -> None:
        if self.columns.text not in values:
            found = ", ".join(repr(str(column)) for column in values if column is not None) or "none"
            raise CorpusError(
                f"{source}: no text column {self.columns.text!r}; columns found: {found} "
                f"(choose one with text_column=...)"
            )
        self.text_column_checked = True

    @staticmethod
    def _optional(values: Mapping, column: str | None) -> str | None:
        """The column's value as text; None when the column is off, absent, null or blank."""
        value = values.get(column) if column else None
        if value is None:
            return None
        value = str(value)
        return value if value.strip() else None

