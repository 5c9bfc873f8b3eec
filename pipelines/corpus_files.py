"""Corpora that are file trees: a folder, or a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive of one
(read in memory, never extracted), one file per document, with an optional ``labels.tsv``."""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath


from semhash.pipelines.corpus_common import (
    _Collector,
    _Decoder,
    _examples,
    _label_set,
    _MAX_EXAMPLES,
    _MAX_NON_TEXT_FRACTION,
    _plural,
    _SNIFF_BYTES,
    _TEXT_BYTES,
    _TITLE_HEADER,
    _TITLE_MAX_CHARS,
    _TITLE_SEARCH_LINES,
    _ZIP_SUFFIXES,
    CorpusError,
    CorpusWarning,
    Document,
    LABELS_FILE,
)

_MAX_LABELS_FILE_BYTES = 64 * 2**20  # a labels file is read whole to be parsed



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


def _own_bound(relative_path: str) -> int | None:
    """The labels file's size bound (it is not a document); None for a document."""
    return _MAX_LABELS_FILE_BYTES if relative_path == LABELS_FILE else None


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
                                         _own_bound(relative_path))
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
                    yield _RawFile(relative_path, collector.budget.read(member.read, member.size, where, _own_bound(relative_path)),
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


def _warn_unmatched_labels(labels_by_path: dict, matched: set[str], raw: _RawFile, stacklevel: int) -> None:
    """Warn about the paths of a labels file that named no document read."""
    absent = [path for path in labels_by_path if path not in matched]
    if absent:
        warnings.warn(
            f"{_plural(len(absent), 'path')} listed in {raw.source} matched no document (absent, hidden "
            f"or skipped){_examples([repr(path) for path in absent[:_MAX_EXAMPLES]])}",
            CorpusWarning,
            stacklevel=stacklevel,
        )


def _apply_labels_file(documents: list[Document], raw: _RawFile, report_absent: bool) -> list[Document]:
    """The documents, those the labels file lists taking its labels instead of their folder's."""
    labels_by_path = _parse_labels_file(raw)
    if report_absent:  # only a complete walk can tell that a listed path is not in the tree
        _warn_unmatched_labels(labels_by_path, {document.external_id for document in documents}, raw, stacklevel=4)
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

