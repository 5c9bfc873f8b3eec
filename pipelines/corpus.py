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

import codecs
import contextlib
import csv
import io
import json
import logging
import os
import random
import stat
import sys
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from semhash.pipelines.hf import HubDatasetError, load_hf_dataset
from semhash.progress import shows_progress

log = logging.getLogger(__name__)

__all__ = ["Document", "CorpusError", "CorpusWarning", "read_corpus", "sample_documents", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS = (
    "a folder (one file per document, label = top-level sub-folder)",
    ".tar.gz / .tgz / .tar / .zip archive of such a folder",
    ".jsonl (one JSON object per line)",
    ".csv (with a header row)",
    "hf:NAME (a Hugging Face dataset)",
)

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_ZIP_SUFFIXES = (".zip",)
_HF_PREFIX = "hf:"
STDIN = "-"  # a corpus read from standard input, as JSONL

# Titles come from a "Subject:" header near the top of a file (news and mail), else its first line.
_TITLE_HEADER = "subject:"
_TITLE_SEARCH_LINES = 30
_TITLE_MAX_CHARS = 120

# Binary sniffing looks at the head of a file only: enough to tell, cheap on large files.
_SNIFF_BYTES = 8192
_MAX_NON_TEXT_FRACTION = 0.30
# Bytes that occur in text: printable ASCII, common whitespace/control, and every byte >= 0x80
# (UTF-8 sequences and single-byte Western encodings).
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x7F)) | set(range(0x80, 0x100)))

# cp1252 leaves 5 bytes undefined; map them to their latin-1 code points (as browsers do) so the
# fallback decoding can never fail.
_CP1252_TABLE = "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(256))

_MAX_EXAMPLES = 3
_MAX_DUPLICATES_SHOWN = 5

# Multi-label input. The per-label bound is the database's label column width.
LABELS_FILE = "labels.tsv"
_MAX_LABELS_FILE_BYTES = 64 * 2**20
_MAX_LABEL_CHARS = 255
_MAX_LABELS = 1000

# Reading bounds, so that a small archive cannot inflate into more text than memory holds
# (a zip of repeated text compresses a thousandfold). Both can be raised per call.
MAX_DOCUMENT_BYTES = 16 * 2**20
MAX_CORPUS_BYTES = 2**30


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    ``external_id`` is unique within the corpus; ``source`` says where the document came from
    (a file path, ``"archive.tar.gz:member"``, ``"file.jsonl:line 12"``, ``"hf:name[split]#row"``).

    ``labels`` are all the document's labels, without repeats; ``label`` is the first of them (or
    None). Either may be given: ``label`` joins ``labels`` as their first when it is not there yet
    (and moves to the front when it is), so ``Document(..., label="a")`` has ``labels == ("a",)``
    and ``Document(..., labels=("a", "b"))`` has ``label == "a"``.
    """

    external_id: str
    text: str
    label: str | None = None
    title: str | None = None
    source: str | None = None
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The one place where label and labels are made consistent, whichever reader built us.
        if isinstance(self.labels, str):
            raise TypeError(f"labels must be a sequence of labels, not the string {self.labels!r}")
        labels = tuple(dict.fromkeys(self.labels))  # drops repeats, keeps the order
        if self.label is not None:
            labels = (self.label, *(label for label in labels if label != self.label))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "label", labels[0] if labels else None)


class CorpusError(ValueError):
    """A corpus cannot be read at all; the message names the problem and the source."""


class CorpusWarning(UserWarning):
    """Some items of a corpus were skipped or read with a fallback; the message gives counts."""


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


# --------------------------------------------------------------------------- collecting and reporting


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun if count == 1 else noun + 's'}"


def _were(count: int) -> str:
    return "was" if count == 1 else "were"


def _examples(items: list[str]) -> str:
    return " (e.g. " + ", ".join(items) + ")" if items else ""


def _label_set(values: Iterable[Any], where: str) -> tuple[str, ...]:
    """The labels among ``values``, stripped, blanks dropped; CorpusError naming ``where`` if bad."""
    labels: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise CorpusError(f"{where}: a label is a {type(value).__name__}, expected text")
        value = value.strip()
        if len(value) > _MAX_LABEL_CHARS:
            raise CorpusError(f"{where}: a label is {len(value)} characters long, at most {_MAX_LABEL_CHARS} allowed")
        if value:
            labels.append(value)
        if len(labels) > _MAX_LABELS:
            raise CorpusError(f"{where}: more than {_MAX_LABELS} labels")
    return tuple(labels)


class _Budget:
    """The reading bounds of one corpus, and the bytes read so far."""

    def __init__(self, max_document_bytes: int, max_corpus_bytes: int) -> None:
        for name, value in (("max_document_bytes", max_document_bytes), ("max_corpus_bytes", max_corpus_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
        self.max_document_bytes, self.max_corpus_bytes, self.used = max_document_bytes, max_corpus_bytes, 0

    def check_document(self, size: int, where: str) -> None:
        if size > self.max_document_bytes:
            raise CorpusError(
                f"{where} is over {_mib(self.max_document_bytes)}; a document may hold at most that "
                "(raise the limit with --max-document-mb, or max_document_bytes=)"
            )

    def read(self, read: Callable[[int], bytes], size: int | None, where: str, relative_path: str) -> bytes:
        """``read(at most n bytes)`` of one file, within both bounds (a labels file has its own)."""
        if relative_path == LABELS_FILE:  # checked, with its own bound, where it is parsed
            data = read(_MAX_LABELS_FILE_BYTES + 1)
        else:
            if size is not None:
                self.check_document(size, where)
            data = read(self.max_document_bytes + 1)  # a declared size may lie (zip headers do)
            self.check_document(len(data), where)
        self.add(len(data), where)
        return data

    def add(self, size: int, where: str) -> None:
        self.used += size
        if self.used > self.max_corpus_bytes:
            raise CorpusError(
                f"{where}: the corpus holds more than {_mib(self.max_corpus_bytes)} of text "
                "(raise the limit with --max-corpus-mb, or max_corpus_bytes=)"
            )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


class _Collector:
    """Gathers documents from one source: applies ``limit``, tallies skipped items, checks ids."""

    # Kind of skipped item -> why, as in "3 files were skipped as <why>"; also the order of messages.
    _SKIP_REASONS = {
        "unsafe": "unsafe (absolute path, '..' component, link or device)",
        "special": "not a regular file (fifo, socket or broken link)",
        "binary": "binary",
        "undecodable": "undecodable in {encoding}",
        "empty": "empty or whitespace-only",
    }

    def __init__(self, source_name: str, unit: str, encoding: str, limit: int | None, verbose: bool,
                 budget: _Budget) -> None:
        self.source_name = source_name
        self.unit = unit  # what one item of the source is: "file" or "record"
        self.encoding = encoding
        self.limit = limit
        self.show_bar = verbose or shows_progress(log)
        self.budget = budget
        self.skipped: Counter[str] = Counter()
        self.skip_examples: dict[str, list[str]] = {}
        self.latin1_fallbacks: list[str] = []

    def skip(self, kind: str, example: str) -> None:
        self.skipped[kind] += 1
        examples = self.skip_examples.setdefault(kind, [])
        if len(examples) < _MAX_EXAMPLES:
            examples.append(example)

    def collect(self, items: Generator, convert: Callable[[Any], Document | None]) -> list[Document]:
        """Convert ``items`` to documents (``convert`` returns None for a skipped item) and check them."""
        documents: list[Document] = []
        bar = tqdm(
            total=self.limit, unit="doc", desc="reading corpus", disable=not self.show_bar, file=sys.stderr
        )
        with bar, contextlib.closing(items):
            for item in items:
                document = convert(item)
                if document is None:
                    continue
                documents.append(document)
                bar.update()
                if self.limit is not None and len(documents) >= self.limit:
                    break
        self._check_ids(documents)
        if not documents:
            raise CorpusError(f"no documents in {self.source_name}: {self._why_empty()}")
        self._warn()
        return documents

    def _check_ids(self, documents: list[Document]) -> None:
        counts = Counter(document.external_id for document in documents)
        duplicates = [external_id for external_id, count in counts.items() if count > 1]
        if duplicates:
            shown = ", ".join(repr(d) for d in duplicates[:_MAX_DUPLICATES_SHOWN])
            hidden = len(duplicates) - _MAX_DUPLICATES_SHOWN
            more = f" and {hidden} more" if hidden > 0 else ""
            raise CorpusError(
                f"duplicate document ids in {self.source_name}: {_plural(len(duplicates), 'id')} "
                f"occur more than once: {shown}{more}"
            )

    def _skip_counts(self) -> list[tuple[str, int]]:
        """(kind, count) of the skips that happened, in a fixed order so messages are stable."""
        return [(kind, self.skipped[kind]) for kind in self._SKIP_REASONS if self.skipped[kind]]

    def _describe_skip(self, kind: str, count: int) -> tuple[str, str]:
        """("3 files", "binary"): the counted items and the reason they were skipped."""
        unit = "archive member" if kind == "unsafe" else self.unit
        return _plural(count, unit), self._SKIP_REASONS[kind].format(encoding=self.encoding)

    def _why_empty(self) -> str:
        if not self.skipped:
            return f"it holds no {self.unit}s"
        return ", ".join(
            f"{items} skipped as {reason}" for items, reason in
            (self._describe_skip(kind, count) for kind, count in self._skip_counts())
        )

    def _warn(self) -> None:
        if self.latin1_fallbacks:
            count = len(self.latin1_fallbacks)
            warnings.warn(
                f"{_plural(count, 'file')} {_were(count)} not valid UTF-8 and {_were(count)} read as "
                f"latin-1 (cp1252) in {self.source_name}"
                f"{_examples(self.latin1_fallbacks[:_MAX_EXAMPLES])}",
                CorpusWarning,
                stacklevel=4,
            )
        for kind, count in self._skip_counts():
            items, reason = self._describe_skip(kind, count)
            warnings.warn(
                f"{items} in {self.source_name} {_were(count)} skipped as {reason}"
                f"{_examples(self.skip_examples[kind])}",
                CorpusWarning,
                stacklevel=4,
            )


class _Decoder:
    """Bytes to text: strict with an explicit encoding, UTF-8 then latin-1 (cp1252) with ``"auto"``."""

    def __init__(self, encoding: str) -> None:
        if encoding != "auto":
            try:
                codecs.lookup(encoding)
            except LookupError:
                message = f"unknown encoding {encoding!r}; use 'auto' or a Python codec name"
                raise ValueError(message) from None
        self.encoding = encoding

    def decode(self, data: bytes) -> tuple[str, bool]:
        """Return ``(text, used_fallback)``; raise UnicodeDecodeError for an explicit encoding that fails."""
        if self.encoding != "auto":
            return data.decode(self.encoding), False
        try:
            return data.decode("utf-8-sig"), False
        except UnicodeDecodeError:
            return codecs.charmap_decode(data, "strict", _CP1252_TABLE)[0], True


# --------------------------------------------------------------------------- file trees


@dataclass(frozen=True)
class _RawFile:
    relative_path: str  # '/'-separated, relative to the root (or to subdir)
    data: bytes
    source: str


def _is_safe_relative_path(name: str) -> bool:
    """True for a relative path with no '..' component, no drive letter and no absolute root."""
    # name[1] == ":" catches Windows drive letters ("C:evil"), which zip files may carry.
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    return ".." not in name.replace("\\", "/").split("/")


def _safe_subdir(subdir: str | None, source_name: str) -> str | None:
    if subdir is None:
        return None
    normalized = subdir.strip("/")
    if not _is_safe_relative_path(normalized):
        raise CorpusError(f"subdir {subdir!r} for {source_name} must be a relative path without '..'")
    return normalized


def _reject_subdir(subdir: str | None, source_name: str) -> None:
    if subdir is not None:
        raise CorpusError(f"subdir applies to folders and archives only, not to {source_name}")


def _relative_to_subdir(name: str, subdir: str | None) -> str | None:
    """``name`` relative to ``subdir``, or None when it lies outside it."""
    if subdir is None:
        return name
    prefix = subdir + "/"
    return name[len(prefix):] if name.startswith(prefix) else None


def _is_hidden(relative_path: str) -> bool:
    return any(part.startswith(".") for part in relative_path.split("/"))


def _folder_files(root: Path, subdir: str | None, collector: _Collector) -> Iterator[_RawFile]:
    if subdir is not None:
        if not (root / subdir).is_dir():
            raise CorpusError(f"no documents in {root}: it has no sub-folder {subdir!r}")
        root = root / subdir
    # Sorted walk so the document order does not depend on the file system.
    for folder, dir_names, file_names in os.walk(root):
        dir_names[:] = sorted(d for d in dir_names if not d.startswith("."))
        for file_name in sorted(file_names):
            if file_name.startswith("."):
                continue
            path = Path(folder, file_name)
            if not path.is_file():  # reading a fifo would block; sockets and broken links hold no text
                collector.skip("special", str(path))
                continue
            relative_path = path.relative_to(root).as_posix()
            data = collector.budget.read(lambda n, p=path: _read_at_most(p, n), path.stat().st_size, str(path),
                                         relative_path)
            yield _RawFile(relative_path, data, str(path))


@dataclass(frozen=True)
class _ArchiveMember:
    """One entry of a tar or zip archive, as far as the corpus rules need to know it."""

    name: str
    kind: str  # "file", "folder" or "other" (links, devices, fifos: never read)
    size: int  # as the archive declares it
    read: Callable[[int], bytes]  # at most that many bytes


def _tar_members(archive: Path) -> Iterator[_ArchiveMember]:
    # Stream mode: one pass over the (compressed) archive, each member read before the next.
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            kind = "folder" if member.isdir() else "file" if member.isfile() else "other"
            name = member.name.removeprefix("./")
            yield _ArchiveMember(name, kind, member.size, lambda n, m=member: tar.extractfile(m).read(n))


def _zip_members(archive: Path) -> Iterator[_ArchiveMember]:
    with zipfile.ZipFile(archive) as zip_file:
        for info in zip_file.infolist():
            # Unix file type bits live in the high half of external_attr; 0 means "not recorded".
            file_type = stat.S_IFMT(info.external_attr >> 16)
            kind = "folder" if info.is_dir() else "file" if file_type in (0, stat.S_IFREG) else "other"
            yield _ArchiveMember(info.filename, kind, info.file_size, lambda n, i=info: _read_zip_member(zip_file, i, n))


def _read_at_most(path: Path, n: int) -> bytes:
    with path.open("rb") as file:
        return file.read(n)


def _read_zip_member(zip_file: zipfile.ZipFile, info: zipfile.ZipInfo, n: int) -> bytes:
    with zip_file.open(info) as member:
        return member.read(n)


_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error)


def _archive_members(archive: Path) -> Iterator[_ArchiveMember]:
    return _zip_members(archive) if archive.name.lower().endswith(_ZIP_SUFFIXES) else _tar_members(archive)


def _archive_files(archive: Path, subdir: str | None, collector: _Collector) -> Iterator[_RawFile]:
    """The regular files of a tar or zip archive, read in memory; unsafe members are skipped."""
    members = _archive_members(archive)
    found_subdir = subdir is None
    try:
        with contextlib.closing(members):
            for member in members:
                if member.kind == "folder":
                    continue
                if member.kind != "file" or not _is_safe_relative_path(member.name):
                    collector.skip("unsafe", f"{archive}:{member.name}")
                    continue
                relative_path = _relative_to_subdir(member.name, subdir)
                if relative_path is None:
                    continue
                found_subdir = True
                if not _is_hidden(relative_path):
                    where = f"{archive}:{member.name}"
                    yield _RawFile(relative_path, collector.budget.read(member.read, member.size, where, relative_path),
                                   where)
    except _ARCHIVE_ERRORS as error:
        raise CorpusError(f"cannot read archive {archive}: {error}") from error
    if not found_subdir:
        raise CorpusError(f"no documents in {archive}: it has no member under {subdir!r}")


@dataclass
class _HeldLabelsFile:
    """The labels file of a tree, held back from the documents while the tree is walked."""

    raw: _RawFile | None = None
    walk_finished: bool = False  # False when reading stopped early, at ``limit``


def _hold_back_labels_file(files: Iterator[_RawFile], held: _HeldLabelsFile) -> Generator[_RawFile, None, None]:
    """The files of a tree except the labels file at its root, which goes to ``held``."""
    with contextlib.closing(files):
        for raw in files:
            if raw.relative_path == LABELS_FILE:
                held.raw = raw
            else:
                yield raw
    held.walk_finished = True


def _find_labels_file(root: Path, subdir: str | None) -> _RawFile | None:
    """The labels file of a folder or archive, looked up without reading the documents."""
    name = LABELS_FILE if subdir is None else f"{subdir}/{LABELS_FILE}"
    if root.is_dir():
        path = root / name
        return _RawFile(LABELS_FILE, _read_at_most(path, _MAX_LABELS_FILE_BYTES + 1), str(path)) if path.is_file() else None
    members = _archive_members(root)
    try:
        with contextlib.closing(members):
            for member in members:
                if member.kind == "file" and member.name == name:
                    return _RawFile(LABELS_FILE, member.read(_MAX_LABELS_FILE_BYTES + 1), f"{root}:{member.name}")
    except _ARCHIVE_ERRORS as error:
        raise CorpusError(f"cannot read archive {root}: {error}") from error
    return None


def _parse_labels_file(raw: _RawFile) -> dict[str, tuple[str, ...]]:
    """``{relative path: labels}`` from the lines ``relative/path<TAB>label,label`` of a labels file."""
    if len(raw.data) > _MAX_LABELS_FILE_BYTES:
        raise CorpusError(
            f"{raw.source} is over {_MAX_LABELS_FILE_BYTES // 2**20} MiB; a {LABELS_FILE} may hold at most "
            f"{_MAX_LABELS_FILE_BYTES // 2**20} MiB"
        )
    try:
        text = raw.data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorpusError(f"cannot decode {raw.source} as utf-8: {error}") from error
    labels_by_path: dict[str, tuple[str, ...]] = {}
    first_lines: dict[str, int] = {}
    for line_number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"line {line_number} of {raw.source}"
        path, tab, labels = line.partition("\t")
        path = path.strip().removeprefix("./")
        if not tab or "\t" in labels or not path:
            raise CorpusError(f"{where}: expected 'relative/path<TAB>label,label', got {line[:80]!r}")
        if path in labels_by_path:
            raise CorpusError(f"{where}: {path!r} is listed again (first on line {first_lines[path]})")
        labels_by_path[path] = _label_set(labels.split(","), where)
        if not labels_by_path[path]:
            raise CorpusError(f"{where}: no label for {path!r}")
        first_lines[path] = line_number
    return labels_by_path


def _apply_labels_file(documents: list[Document], raw: _RawFile, report_absent: bool) -> list[Document]:
    """The documents, those the labels file lists taking its labels instead of their folder's."""
    labels_by_path = _parse_labels_file(raw)
    if report_absent:  # only a complete walk can tell that a listed path is not in the tree
        read = {document.external_id for document in documents}
        absent = [path for path in labels_by_path if path not in read]
        if absent:
            warnings.warn(
                f"{_plural(len(absent), 'path')} listed in {raw.source} matched no document (absent, hidden "
                f"or skipped){_examples([repr(path) for path in absent[:_MAX_EXAMPLES]])}",
                CorpusWarning,
                stacklevel=3,
            )
    return [
        replace(document, label=None, labels=labels_by_path[document.external_id])
        if document.external_id in labels_by_path else document
        for document in documents
    ]


def _looks_binary(data: bytes) -> bool:
    head = data[:_SNIFF_BYTES]
    if b"\x00" in head:
        return True
    non_text = len(head.translate(None, _TEXT_BYTES))
    return bool(head) and non_text > _MAX_NON_TEXT_FRACTION * len(head)


def _title_from_text(text: str) -> str | None:
    """The ``Subject:`` header among the first lines, else the first non-empty line."""
    head = text.split("\n", _TITLE_SEARCH_LINES)[:_TITLE_SEARCH_LINES]
    for line in head:
        if line[: len(_TITLE_HEADER)].lower() == _TITLE_HEADER:
            subject = line[len(_TITLE_HEADER):].strip()
            if subject:
                return subject[:_TITLE_MAX_CHARS]
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:_TITLE_MAX_CHARS]
    return None


class _FileConverter:
    """One file of a tree to a :class:`Document`, or None (and a tally) when it is skipped."""

    def __init__(self, decoder: _Decoder, collector: _Collector) -> None:
        self.decoder = decoder
        self.collector = collector

    def __call__(self, raw: _RawFile) -> Document | None:
        if _looks_binary(raw.data):
            self.collector.skip("binary", raw.source)
            return None
        try:
            text, used_fallback = self.decoder.decode(raw.data)
        except UnicodeDecodeError:
            self.collector.skip("undecodable", raw.source)
            return None
        if used_fallback:
            self.collector.latin1_fallbacks.append(raw.source)
        if not text.strip():
            self.collector.skip("empty", raw.source)
            return None
        parts = PurePosixPath(raw.relative_path).parts
        return Document(
            external_id=raw.relative_path,
            text=text,
            label=parts[0] if len(parts) > 1 else None,
            title=_title_from_text(text),
            source=raw.source,
        )


# --------------------------------------------------------------------------- tables


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


def _jsonl_records(path: Path | str, text: str) -> Iterator[_Record]:
    # Split on "\n" only: str.splitlines would also break on U+2028, which JSON strings may hold.
    for line_number, line in enumerate(text.split("\n"), start=1):
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
    reader = csv.DictReader(io.StringIO(text, newline=""))
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
