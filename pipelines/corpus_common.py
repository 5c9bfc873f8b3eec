"""What every corpus reader shares: the document, the errors, the bounds, the tally of what
was skipped, and the decoding of bytes (see :mod:`semhash.pipelines.corpus`)."""

from __future__ import annotations

import codecs
import contextlib
import logging
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from semhash.progress import shows_progress

log = logging.getLogger(__name__)

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

    def read(self, read: Callable[[int], bytes], size: int | None, where: str, own_bound: int | None = None) -> bytes:
        """``read(at most n bytes)`` of one file, within both bounds; a file with ``own_bound``
        (the labels file) is read up to it, and checked where it is parsed."""
        if own_bound is not None:
            data = read(own_bound + 1)
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

    def stream(self, items: Generator, convert: Callable[[Any], Document | None], *, check_ids: bool = True,
               confirm: Callable[[set[str], int], set[str]] | None = None, warn: bool = True) -> Iterator[Document]:
        """:meth:`collect` one document at a time, holding none of them: the same limit,
        checks and warnings (issued once the items are exhausted).

        Repeated ids are found through :class:`_SeenIds` (8 bytes an id): a suspected
        repeat is confirmed by ``confirm(ids, n)`` (which of ``ids`` occur twice among the
        first ``n`` documents, read again) when the source can be read again, so that a
        hash collision is never taken for a repeat. It is reported within a few thousand
        documents of the repeat; ``check_ids=False`` skips the check."""
        count = 0
        seen = _SeenIds() if check_ids else None
        bar = tqdm(
            total=self.limit, unit="doc", desc="reading corpus", disable=not self.show_bar, file=sys.stderr
        )

        def check() -> None:
            suspects = seen.flush()
            repeated = (confirm(suspects, count) if confirm is not None else suspects) if suspects else set()
            if repeated:
                self._raise_duplicates(sorted(repeated))

        with bar, contextlib.closing(items):
            for item in items:
                document = convert(item)
                if document is None:
                    continue
                count += 1
                if seen is not None:
                    seen.add(document.external_id)
                    if seen.full():
                        check()
                yield document
                bar.update()
                if self.limit is not None and count >= self.limit:
                    break
        if seen is not None:
            check()
        if not count:
            raise CorpusError(f"no documents in {self.source_name}: {self._why_empty()}")
        if warn:
            self._warn()

    def _raise_duplicates(self, duplicates: list[str]) -> None:
        shown = ", ".join(repr(d) for d in duplicates[:_MAX_DUPLICATES_SHOWN])
        hidden = len(duplicates) - _MAX_DUPLICATES_SHOWN
        more = f" and {hidden} more" if hidden > 0 else ""
        raise CorpusError(
            f"duplicate document ids in {self.source_name}: {_plural(len(duplicates), 'id')} "
            f"occur more than once: {shown}{more}"
        )

    def _check_ids(self, documents: list[Document]) -> None:
        counts = Counter(document.external_id for document in documents)
        duplicates = [external_id for external_id, count in counts.items() if count > 1]
        if duplicates:
            self._raise_duplicates(duplicates)

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


class _SeenIds:
    """The ids of a corpus read so far, as 64-bit hashes in sorted numpy runs (8 bytes an id,
    where a set of the ids themselves takes some 80), to find repeats without holding the ids.

    :meth:`add` buffers ids; :meth:`flush` checks the buffer against the runs, all at once,
    and returns the ids whose hash was seen before (in the buffer or a run): repeats, or
    (about N^2 / 2^65 of the time, 3 in a million at 10 million ids) a hash collision,
    which the caller confirms. Runs merge like a binary counter, so each
    hash is sorted O(log N) times."""

    BUFFER = 4096

    def __init__(self) -> None:
        self._runs: list = []  # sorted int64 arrays, longest first
        self._buffer: dict[int, str] = {}
        self._suspects: set[str] = set()

    def add(self, key: str) -> None:
        digest = hash(key)
        if digest in self._buffer:
            self._suspects.add(key)
        else:
            self._buffer[digest] = key

    def full(self) -> bool:
        return len(self._buffer) >= self.BUFFER

    def flush(self) -> set[str]:
        """The ids added since the last flush whose hash was seen before (then forgets them)."""
        import numpy as np

        suspects, self._suspects = self._suspects, set()
        if not self._buffer:
            return suspects
        digests = np.fromiter(self._buffer, dtype=np.int64, count=len(self._buffer))
        for run in self._runs:
            where = np.minimum(np.searchsorted(run, digests), len(run) - 1)
            for digest in digests[run[where] == digests]:
                suspects.add(self._buffer[int(digest)])
        run = np.sort(digests)
        while self._runs and len(self._runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]), kind="mergesort")
        self._runs.append(run)
        self._buffer = {}
        return suspects


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

