"""Read a corpus of text documents from a folder, an archive, a JSONL/CSV file or a Hugging Face dataset.

Every format ends up as a list of :class:`Document`. Two families of sources share one code path each:

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

import os
import random
import sys
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
    _archive_files,
    _FileConverter,
    _find_labels_file,
    _folder_files,
    _HeldLabelsFile,
    _hold_back_labels_file,
    _reject_subdir,
    _safe_subdir,
)
from semhash.pipelines.corpus_tables import (
    _Columns,
    _csv_records,
    _decode_whole_file,
    _hf_records,
    _jsonl_records,
    _RecordConverter,
)

__all__ = ["Document", "CorpusError", "CorpusWarning", "read_corpus", "sample_documents", "SUPPORTED_FORMATS"]

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
