"""Read a corpus of text documents from a folder, an archive, a JSONL/CSV file or a Hugging Face dataset.

Every format ends up as a list of :class:`Document` (:func:`read_corpus`), or as a stream of them
that holds one at a time (:func:`iter_corpus`, for corpora larger than memory). Two families of sources share one code path each:

* file trees (a folder, or a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive of one): one file per
  document, the label is the name of the file's top-level sub-folder, the id its relative path;
  an optional ``labels.tsv`` at the root gives documents several labels;
* tables (``.jsonl``, ``.csv``, ``hf:NAME``): one record per document, with configurable columns.

A document may carry several labels (``Document.labels``); ``Document.label`` is the first of them.

Fatal input problems raise :class:`CorpusError`; recoverable ones (binary files, empty documents,
unsafe archive members, ...) skip the offending item and are reported once per kind, with counts,
as a :class:`CorpusWarning`. This module never writes to disk: archives are read in memory.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from semhash.pipelines.corpus_common import (
    _Budget,
    _Collector,
    _Decoder,
    _HF_PREFIX,
    _TAR_SUFFIXES,
    _ZIP_SUFFIXES,
    CorpusError,
    CorpusWarning,
    Document,
    MAX_CORPUS_BYTES,
    MAX_DOCUMENT_BYTES,
    STDIN,
)
from semhash.pipelines.corpus_files import (
    _apply_labels_file,
    _warn_unmatched_labels,
    _archive_files,
    _FileConverter,
    _find_labels_file,
    _folder_files,
    _HeldLabelsFile,
    _hold_back_labels_file,
    _parse_labels_file,
    _reject_subdir,
    _safe_subdir,
)
from semhash.pipelines.corpus_tables import (
    _Columns,
    _csv_line_records,
    _csv_records,
    _decode_whole_file,
    _file_codec,
    _hf_records,
    _jsonl_line_records,
    _jsonl_records,
    _RecordConverter,
    _stdin_lines,
    _text_lines,
)

__all__ = ["Document", "CorpusError", "CorpusWarning", "read_corpus", "iter_corpus", "sample_documents",
           "sample_positions", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS = (
    "a folder (one file per document, label = top-level sub-folder)",
    ".tar.gz / .tgz / .tar / .zip archive of such a folder",
    ".jsonl (one JSON object per line)",
    ".csv (with a header row)",
    "hf:NAME (a Hugging Face dataset)",
)


def read_corpus(
    source: str | Path,
    *,
    subdir: str | None = None,
    text_column: str = "text",
    label_column: str | None = "label",
    labels_column: str | None = "labels",
    title_column: str | None = "title",
    id_column: str | None = "id",
    split: str = "train",
    encoding: str = "auto",
    limit: int | None = None,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    max_corpus_bytes: int = MAX_CORPUS_BYTES,
    verbose: bool = False,
) -> list[Document]:
    """Read the documents of ``source``; the format is chosen from the source itself.

    * a folder, or a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive of one: one file per document.
      ``external_id`` is the path relative to the root (``"sci.space/61234"``), ``label`` the
      top-level sub-folder (``None`` for files directly in the root), ``title`` the ``Subject:``
      header among the first lines, else the first non-empty line. ``subdir`` reads only that
      sub-folder, and ids and labels are then relative to it. Hidden files and folders are skipped.
      Archive members are read in memory; absolute paths, ``..`` components, links and devices are
      skipped as unsafe. An optional ``labels.tsv`` at the root (of ``subdir``, when given) is not a
      document: its lines ``relative/path<TAB>label,label`` give the documents they name those
      labels instead of their folder's.
    * ``.jsonl`` or ``.csv``: one record per document. ``text_column`` is required; the label,
      labels, title and id columns are read when present (pass ``None`` to ignore one). The labels
      column holds a JSON list of labels (JSONL) or labels separated by commas (CSV); a label
      column beside it gives the first label. The default id is the 1-based line (JSONL) or data
      row (CSV) number.
    * ``-``: JSONL records on standard input (as for a ``.jsonl`` file).
    * ``hf:NAME``: split ``split`` of a Hugging Face dataset, from the Hub or from a folder written by
      ``save_to_disk`` (:mod:`semhash.pipelines.hf`), same columns; integer labels are
      mapped to their ``ClassLabel`` names when the dataset has them (also in a list of labels).
      The default id is the 0-based row index.

    ``encoding="auto"`` reads UTF-8 and falls back to latin-1 (cp1252) for files that are not;
    an explicit encoding skips the files it cannot decode. ``limit`` stops after that many
    documents. A progress bar shows on stderr while progress is
    shown (``verbose=True``, or logging set up to show :mod:`semhash.progress` lines).

    A document (file, archive member or record text) larger than ``max_document_bytes``, or a
    corpus holding more than ``max_corpus_bytes`` of text, is a :class:`CorpusError` naming the
    limit; files are measured before they are read.

    Raises :class:`CorpusError` when nothing can be read (with the reason), on duplicate ids, on an
    unknown format and on malformed tables; issues one :class:`CorpusWarning` per kind of skipped item.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of documents, got {limit}")
    budget = _Budget(max_document_bytes, max_corpus_bytes)
    decoder = _Decoder(encoding)
    name = os.fspath(source)
    if label_column is not None and label_column == labels_column:
        label_column = None  # the one column is read as a list of labels, not also as one label
    columns = _Columns(text_column, label_column, labels_column, title_column, id_column)

    if name == STDIN:
        _reject_subdir(subdir, "standard input")
        collector = _Collector("standard input", "record", encoding, limit, verbose, budget)
        data = sys.stdin.buffer.read(budget.max_corpus_bytes + 1)
        budget.add(len(data), "standard input")
        try:
            text, _ = decoder.decode(data)
        except UnicodeDecodeError as error:
            raise CorpusError(f"cannot decode standard input as {decoder.encoding}: {error}") from error
        return collector.collect(_jsonl_records("standard input", text), _RecordConverter(columns, collector))

    if name.startswith(_HF_PREFIX):
        _reject_subdir(subdir, name)
        dataset_name = name[len(_HF_PREFIX):]
        if not dataset_name:
            raise CorpusError(f"no dataset name in {name!r}: expected hf:NAME, e.g. hf:SetFit/20_newsgroups")
        collector = _Collector(name, "record", encoding, limit, verbose, budget)
        records = _hf_records(dataset_name, split, (label_column, labels_column))
        return collector.collect(records, _RecordConverter(columns, collector))

    path = Path(source)
    if not path.exists():
        raise CorpusError(f"no documents in {name}: the path does not exist")
    lower_name = path.name.lower()
    if path.is_dir() or lower_name.endswith(_TAR_SUFFIXES + _ZIP_SUFFIXES):
        read_files = _folder_files if path.is_dir() else _archive_files
        collector = _Collector(name, "file", encoding, limit, verbose, budget)
        subdir = _safe_subdir(subdir, name)
        held = _HeldLabelsFile()
        files = _hold_back_labels_file(read_files(path, subdir, collector), held)
        documents = collector.collect(files, _FileConverter(decoder, collector))
        if held.raw is None and not held.walk_finished:
            held.raw = _find_labels_file(path, subdir)  # the walk stopped at `limit` before reaching it
        if held.raw is None:
            return documents
        return _apply_labels_file(documents, held.raw, report_absent=held.walk_finished)
    if lower_name.endswith((".jsonl", ".csv")):
        _reject_subdir(subdir, name)
        is_csv = lower_name.endswith(".csv")
        read_records = _csv_records if is_csv else _jsonl_records
        collector = _Collector(name, "record", encoding, limit, verbose, budget)
        records = read_records(path, _decode_whole_file(path, decoder, collector))
        # A CSV cell holds one string, so several labels are separated by commas.
        converter = _RecordConverter(columns, collector, labels_separator="," if is_csv else None)
        return collector.collect(records, converter)
    raise CorpusError(f"unknown corpus format for {name}; supported formats: " + "; ".join(SUPPORTED_FORMATS))


# --------------------------------------------------------------------------- streaming


def iter_corpus(
    source: str | Path,
    *,
    subdir: str | None = None,
    text_column: str = "text",
    label_column: str | None = "label",
    labels_column: str | None = "labels",
    title_column: str | None = "title",
    id_column: str | None = "id",
    split: str = "train",
    encoding: str = "auto",
    limit: int | None = None,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    max_corpus_bytes: int = MAX_CORPUS_BYTES,
    verbose: bool = False,
    name: str | None = None,
) -> Iterator[Document]:
    """The documents of ``source`` one at a time, as :func:`read_corpus` reads them (same
    formats, options, documents, errors and warnings), holding only the one being read:
    for corpora larger than memory. Each call reads the source anew, so a file, folder,
    archive or ``hf:`` dataset can be read several times; standard input (``-``) once.

    What differs, as no document is held:

    * a table (JSONL, CSV) is scanned once for its encoding before its records are read;
      standard input cannot be, so with ``encoding="auto"`` each of its lines that is not
      UTF-8 is read as latin-1 (cp1252), where :func:`read_corpus` decides for the whole input;
    * a repeated id is found within a few thousand documents of the repeat, so some
      documents after it may have been yielded before the :class:`CorpusError`;
    * a folder or archive's ``labels.tsv`` is looked up before its documents are read (an
      archive is then read twice) and applied as each document comes.

    Errors are raised as the reading meets them (an empty source once it is exhausted);
    warnings are issued once it is exhausted. ``name`` names the source in messages and in
    ``Document.source`` (a file spooled from standard input is read as ``"standard input"``).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of documents, got {limit}")
    options = dict(subdir=subdir, text_column=text_column, label_column=label_column, labels_column=labels_column,
                   title_column=title_column, id_column=id_column, split=split, encoding=encoding, limit=limit,
                   max_document_bytes=max_document_bytes, max_corpus_bytes=max_corpus_bytes, name=name)

    def confirm(suspects: set[str], count: int) -> set[str]:
        """Which ``suspects`` occur twice among the first ``count`` documents (read again)."""
        seen: dict[str, int] = dict.fromkeys(suspects, 0)
        for document in itertools.islice(_stream(source, verbose=False, check_ids=False, warn=False, **options), count):
            if document.external_id in seen:
                seen[document.external_id] += 1
        return {key for key, occurrences in seen.items() if occurrences > 1}

    can_reread = os.fspath(source) != STDIN
    return _stream(source, verbose=verbose, check_ids=True, warn=True, confirm=confirm if can_reread else None,
                   **options)


def _stream(source, *, subdir, text_column, label_column, labels_column, title_column, id_column, split, encoding,
            limit, max_document_bytes, max_corpus_bytes, name, verbose, check_ids, warn, confirm=None
            ) -> Iterator[Document]:
    budget = _Budget(max_document_bytes, max_corpus_bytes)
    decoder = _Decoder(encoding)
    source_name = os.fspath(source)
    shown = name if name is not None else source_name
    if label_column is not None and label_column == labels_column:
        label_column = None  # the one column is read as a list of labels, not also as one label
    columns = _Columns(text_column, label_column, labels_column, title_column, id_column)
    stream = dict(check_ids=check_ids, confirm=confirm, warn=warn)

    if source_name == STDIN:
        _reject_subdir(subdir, "standard input")
        collector = _Collector("standard input", "record", encoding, limit, verbose, budget)
        records = _jsonl_line_records("standard input", _stdin_lines(decoder, collector))
        return collector.stream(records, _RecordConverter(columns, collector), **stream)

    if source_name.startswith(_HF_PREFIX):
        _reject_subdir(subdir, source_name)
        dataset_name = source_name[len(_HF_PREFIX):]
        if not dataset_name:
            raise CorpusError(f"no dataset name in {source_name!r}: expected hf:NAME, e.g. hf:SetFit/20_newsgroups")
        collector = _Collector(shown, "record", encoding, limit, verbose, budget)
        records = _hf_records(dataset_name, split, (label_column, labels_column))
        return collector.stream(records, _RecordConverter(columns, collector), **stream)

    path = Path(source)
    if not path.exists():
        raise CorpusError(f"no documents in {shown}: the path does not exist")
    lower_name = path.name.lower()
    if path.is_dir() or lower_name.endswith(_TAR_SUFFIXES + _ZIP_SUFFIXES):
        read_files = _folder_files if path.is_dir() else _archive_files
        collector = _Collector(shown, "file", encoding, limit, verbose, budget)
        subdir = _safe_subdir(subdir, shown)
        if subdir is not None and path.is_dir() and not (path / subdir).is_dir():
            raise CorpusError(f"no documents in {path}: it has no sub-folder {subdir!r}")
        labels_file = _find_labels_file(path, subdir)
        held = _HeldLabelsFile()
        files = _hold_back_labels_file(read_files(path, subdir, collector), held)
        documents = collector.stream(files, _FileConverter(decoder, collector), **stream)
        if labels_file is None:
            return documents
        return _streamed_labels(documents, labels_file, held, warn)
    if lower_name.endswith((".jsonl", ".csv")):
        _reject_subdir(subdir, shown)
        is_csv = lower_name.endswith(".csv")
        collector = _Collector(shown, "record", encoding, limit, verbose, budget)
        codec = _file_codec(path, decoder, collector)
        lines = _text_lines(path, codec, newline="" if is_csv else "\n", budget=budget)
        records = (_csv_line_records if is_csv else _jsonl_line_records)(shown, lines)
        converter = _RecordConverter(columns, collector, labels_separator="," if is_csv else None)
        return collector.stream(records, converter, **stream)
    raise CorpusError(f"unknown corpus format for {shown}; supported formats: " + "; ".join(SUPPORTED_FORMATS))


def _streamed_labels(documents: Iterator[Document], raw, held: _HeldLabelsFile, warn: bool) -> Iterator[Document]:
    """The documents of a tree, those its labels file lists taking their labels from it."""
    labels_by_path = _parse_labels_file(raw)
    matched: set[str] = set()
    for document in documents:
        labels = labels_by_path.get(document.external_id)
        if labels is not None:
            matched.add(document.external_id)
            document = replace(document, label=None, labels=labels)
        yield document
    if warn and held.walk_finished:  # only a complete walk can tell that a listed path is not in the tree
        _warn_unmatched_labels(labels_by_path, matched, raw, stacklevel=3)


# --------------------------------------------------------------------------- sampling


def sample_documents(documents: list[Document], n: int, seed: int = 0) -> list[Document]:
    """A seeded sample of ``n`` documents spread across labels as the corpus is (in corpus order).

    Each label (the first, for several) gets its share of ``n``, rounded so that the shares
    add up to ``n``; a corpus read from a sorted tree would otherwise give its first few
    labels only."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a sample must be a positive number of documents, got {n!r}")
    if n >= len(documents):
        return list(documents)
    rng = random.Random(seed)
    groups: dict[str | None, list[int]] = {}
    for index, document in enumerate(documents):
        groups.setdefault(document.label, []).append(index)
    exact = {label: n * len(rows) / len(documents) for label, rows in groups.items()}
    shares = {label: int(value) for label, value in exact.items()}
    # Largest remainders first, ties by label order, until the shares add up to n.
    for label in sorted(groups, key=lambda label: (-(exact[label] - shares[label]), str(label)))[: n - sum(shares.values())]:
        shares[label] += 1
    chosen = sorted(index for label, rows in groups.items() for index in rng.sample(rows, shares[label]))
    return [documents[index] for index in chosen]


def sample_positions(labels: Iterator[str | None], n: int, seed: int = 0):
    """The positions (sorted int64 array) that :func:`sample_documents` would keep from a
    corpus whose documents have these ``labels`` (each document's first), in one pass over
    the labels and 4 bytes a document: the same seeded sample, for a corpus that is streamed.

    ``sample_documents(documents, n, seed) == [documents[i] for i in sample_positions(
    (d.label for d in documents), n, seed)]``."""
    import numpy as np

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a sample must be a positive number of documents, got {n!r}")
    codes: dict[str | None, int] = {}  # label -> its code, in order of first appearance
    column = np.fromiter((codes.setdefault(label, len(codes)) for label in labels), dtype=np.int32)
    total = len(column)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    rng = random.Random(seed)
    sizes = np.bincount(column, minlength=len(codes))
    exact = {label: n * int(sizes[code]) / total for label, code in codes.items()}
    shares = {label: int(value) for label, value in exact.items()}
    for label in sorted(codes, key=lambda label: (-(exact[label] - shares[label]), str(label)))[: n - sum(shares.values())]:
        shares[label] += 1
    order = np.argsort(column, kind="stable")  # positions grouped by label, each group in corpus order
    starts = np.concatenate([[0], np.cumsum(sizes)])
    chosen = []
    for label, code in codes.items():
        rows = order[starts[code]:starts[code + 1]]
        # random.sample picks the same indices from any population of that size
        chosen.append(rows[rng.sample(range(len(rows)), shares[label])])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
