"""Tests for semhash.pipelines.corpus: every format, the id/label/title rules, and each kind of bad input."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from semhash.pipelines.corpus import CorpusError, CorpusWarning, Document, read_corpus

NEWSGROUPS_TARBALL = Path(__file__).resolve().parents[1] / "data" / "20news-bydate.tar.gz"
NEWSGROUPS = {
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
    "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
    "talk.religion.misc",
}

# A small 20NG-like tree: relative path -> file bytes.
NEWS_TREE = {
    "sci.space/61234": b"From: a@b.edu\nSubject:  Shuttle launch \nLines: 1\n\nThe shuttle flew.\n",
    "rec.autos/1001": b"\n\n   First line is the title  \nmore text\n",
    "rec.autos/deep/2002": b"Nested files take the top-level folder as label\n",
    "README": b"A file in the root has no label\n",
    ".hidden": b"hidden files are skipped\n",
    "rec.autos/.DS_Store": b"hidden files are skipped in sub-folders too\n",
}
EXPECTED_NEWS = [  # (external_id, label, title)
    ("README", None, "A file in the root has no label"),
    ("rec.autos/1001", "rec.autos", "First line is the title"),
    ("rec.autos/deep/2002", "rec.autos", "Nested files take the top-level folder as label"),
    ("sci.space/61234", "sci.space", "Shuttle launch"),
]


# --------------------------------------------------------------------------- fixture builders


def write_folder(root: Path, tree: dict[str, bytes]) -> Path:
    for relative_path, data in tree.items():
        path = root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_tar(path: Path, tree: dict[str, bytes]) -> Path:
    mode = "w" if path.name.endswith(".tar") else "w:gz"
    with tarfile.open(path, mode) as tar:
        for name, data in tree.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, tree: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zip_file:
        for name, data in tree.items():
            zip_file.writestr(name, data)
    return path


TREE_WRITERS = {
    "folder": lambda tmp_path, tree: write_folder(tmp_path / "corpus", tree),
    "tar.gz": lambda tmp_path, tree: write_tar(tmp_path / "corpus.tar.gz", tree),
    "tgz": lambda tmp_path, tree: write_tar(tmp_path / "corpus.tgz", tree),
    "tar": lambda tmp_path, tree: write_tar(tmp_path / "corpus.tar", tree),
    "zip": lambda tmp_path, tree: write_zip(tmp_path / "corpus.zip", tree),
}


@pytest.fixture(params=sorted(TREE_WRITERS))
def make_tree(request, tmp_path):
    """Builds a file tree as a folder or as each kind of archive."""
    return lambda tree: TREE_WRITERS[request.param](tmp_path, tree)


def read_with_warnings(source, **options) -> tuple[list[Document], list[str]]:
    """read_corpus, plus the messages of the CorpusWarnings it issued (other warnings fail the test)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        documents = read_corpus(source, **options)
    assert all(issubclass(w.category, CorpusWarning) for w in caught), [str(w.message) for w in caught]
    return documents, [str(w.message) for w in caught]


def summary(documents: list[Document]) -> list[tuple[str, str | None, str | None]]:
    return sorted((d.external_id, d.label, d.title) for d in documents)


# --------------------------------------------------------------------------- file trees


def test_tree_ids_labels_titles_and_hidden_files(make_tree):
    source = make_tree(NEWS_TREE)
    documents, messages = read_with_warnings(source)
    assert summary(documents) == EXPECTED_NEWS
    assert messages == []
    by_id = {d.external_id: d for d in documents}
    assert by_id["sci.space/61234"].text == NEWS_TREE["sci.space/61234"].decode()


def test_folder_and_archive_sources_name_the_file(tmp_path):
    folder = write_folder(tmp_path / "corpus", NEWS_TREE)
    archive = write_tar(tmp_path / "corpus.tar.gz", NEWS_TREE)
    from_folder = {d.external_id: d.source for d in read_corpus(folder)}
    from_archive = {d.external_id: d.source for d in read_corpus(archive)}
    assert from_folder["rec.autos/deep/2002"] == str(folder / "rec.autos" / "deep" / "2002")
    assert from_archive["rec.autos/deep/2002"] == f"{archive}:rec.autos/deep/2002"


def test_folder_reads_in_sorted_order_and_limit_keeps_the_first(tmp_path):
    folder = write_folder(tmp_path / "corpus", NEWS_TREE)
    assert [d.external_id for d in read_corpus(folder)] == [e[0] for e in EXPECTED_NEWS]
    assert [d.external_id for d in read_corpus(folder, limit=2)] == ["README", "rec.autos/1001"]


def test_subdir_makes_ids_and_labels_relative_to_it(make_tree):
    source = make_tree({
        "train/sci.space/1": b"a train post\n",
        "train/rec.autos/2": b"another train post\n",
        "test/sci.space/3": b"a test post\n",
    })
    documents, _ = read_with_warnings(source, subdir="train")
    assert summary(documents) == [
        ("rec.autos/2", "rec.autos", "another train post"),
        ("sci.space/1", "sci.space", "a train post"),
    ]
    with pytest.raises(CorpusError, match="valid"):
        read_corpus(source, subdir="valid")
    with pytest.raises(CorpusError, match=r"\.\."):
        read_corpus(source, subdir="../outside")


def test_title_is_truncated_to_120_characters(tmp_path):
    folder = write_folder(tmp_path / "corpus", {
        "g/subject": ("Subject: " + "s" * 200 + "\n\nbody\n").encode(),
        "g/first-line": ("f" * 200 + "\nbody\n").encode(),
        "g/late-subject": ("line\n" * 40 + "Subject: too late\n").encode(),
    })
    titles = {d.external_id: d.title for d in read_corpus(folder)}
    assert titles == {"g/subject": "s" * 120, "g/first-line": "f" * 120, "g/late-subject": "line"}


def test_auto_encoding_falls_back_to_latin1_with_one_counting_warning(make_tree):
    source = make_tree({
        "g/utf8": "café déjà vu\n".encode("utf-8"),
        "g/latin1-a": "café\n".encode("latin-1"),
        "g/latin1-b": "naïve\n".encode("latin-1"),
        "g/cp1252": "“smart quotes”\n".encode("cp1252"),
    })
    documents, messages = read_with_warnings(source)
    texts = {d.external_id: d.text for d in documents}
    assert texts == {"g/utf8": "café déjà vu\n", "g/latin1-a": "café\n", "g/latin1-b": "naïve\n",
                     "g/cp1252": "“smart quotes”\n"}
    assert len(messages) == 1
    assert messages[0].startswith("3 files were not valid UTF-8 and were read as latin-1")


def test_explicit_encoding_skips_undecodable_files_naming_three_examples(tmp_path):
    tree = {f"g/bad{i}": "é\n".encode("latin-1") for i in range(4)} | {"g/good": b"fine\n"}
    folder = write_folder(tmp_path / "corpus", tree)
    documents, messages = read_with_warnings(folder, encoding="utf-8")
    assert [d.external_id for d in documents] == ["g/good"]
    assert len(messages) == 1
    assert messages[0].startswith("4 files in ") and "skipped as undecodable in utf-8" in messages[0]
    assert sum(str(folder / "g" / f"bad{i}") in messages[0] for i in range(4)) == 3


def test_unknown_encoding_is_a_value_error(tmp_path):
    folder = write_folder(tmp_path / "corpus", {"g/a": b"text\n"})
    with pytest.raises(ValueError, match="no-such-codec"):
        read_corpus(folder, encoding="no-such-codec")


def test_binary_and_empty_files_are_skipped_with_one_warning_each(make_tree):
    source = make_tree({
        "g/text": b"real text\n",
        "g/nul": b"GIF89a\x00\x01\x02 image data",
        "g/control-bytes": bytes(range(1, 32)) * 20,  # no NUL, but mostly non-text bytes
        "g/empty": b"",
        "g/blank": b"  \n\t\r\n ",
        "g/blank2": b"\n",
    })
    documents, messages = read_with_warnings(source)
    assert [d.external_id for d in documents] == ["g/text"]
    assert len(messages) == 2
    binary = next(m for m in messages if "skipped as binary" in m)
    empty = next(m for m in messages if "skipped as empty" in m)
    assert binary.startswith("2 files in ")
    assert empty.startswith("3 files in ")


def test_no_documents_says_why(tmp_path):
    folder = write_folder(tmp_path / "corpus", {"g/nul": b"\x00\x00", "g/nul2": b"a\x00b", "g/empty": b" \n"})
    why = "2 files skipped as binary, 1 file skipped as empty or whitespace-only"
    with pytest.raises(CorpusError, match=rf"no documents in .*: {why}$"):
        read_corpus(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no files"):
        read_corpus(tmp_path / "empty")
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "missing")


def test_special_files_in_a_folder_are_skipped_not_read(tmp_path):
    folder = write_folder(tmp_path / "corpus", {"g/text": b"real text\n"})
    os.mkfifo(folder / "g" / "fifo")  # reading it would block forever
    (folder / "g" / "broken-link").symlink_to(tmp_path / "nowhere")
    documents, messages = read_with_warnings(folder)
    assert [d.external_id for d in documents] == ["g/text"]
    assert len(messages) == 1
    assert messages[0].startswith("2 files in ") and "not a regular file" in messages[0]


def test_unknown_format_lists_the_supported_ones(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CorpusError, match=r"unknown corpus format.*\.jsonl.*\.csv.*hf:NAME"):
        read_corpus(tmp_path / "notes.txt")


def test_corrupt_archive_is_a_corpus_error(tmp_path):
    (tmp_path / "broken.tar.gz").write_bytes(b"not a gzip file at all")
    (tmp_path / "broken.zip").write_bytes(b"not a zip file at all")
    for name in ("broken.tar.gz", "broken.zip"):
        with pytest.raises(CorpusError, match=f"cannot read archive .*{name}"):
            read_corpus(tmp_path / name)


def test_reading_an_archive_writes_nothing_to_disk(tmp_path):
    archive = write_tar(tmp_path / "corpus.tar.gz", NEWS_TREE)
    before = sorted(tmp_path.rglob("*"))
    assert len(read_corpus(archive)) == 4
    assert sorted(tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- unsafe archive members


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def unsafe_tar_members() -> list[tuple]:
    return [
        _tar_member("../evil", data=b"escapes the root\n"),
        _tar_member("g/../../evil2", data=b"escapes the root\n"),
        _tar_member("/etc/passwd", data=b"absolute\n"),
        _tar_member("g/symlink", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _tar_member("g/hardlink", tarfile.LNKTYPE, linkname="g/safe"),
        _tar_member("g/device", tarfile.CHRTYPE),
        _tar_member("g/fifo", tarfile.FIFOTYPE),
    ]


def test_unsafe_tar_members_are_skipped_and_counted(tmp_path):
    archive = tmp_path / "corpus.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in [_tar_member("g/safe", data=b"safe text\n"), *unsafe_tar_members()]:
            tar.addfile(info, data)
    documents, messages = read_with_warnings(archive)
    assert [(d.external_id, d.text) for d in documents] == [("g/safe", "safe text\n")]
    assert len(messages) == 1
    assert messages[0].startswith("7 archive members in ") and "unsafe" in messages[0]


def test_tar_of_only_unsafe_members_is_an_error(tmp_path):
    archive = tmp_path / "corpus.tar"
    with tarfile.open(archive, "w") as tar:
        for info, data in unsafe_tar_members():
            tar.addfile(info, data)
    with pytest.raises(CorpusError, match="7 archive members skipped as unsafe"):
        read_corpus(archive)


def test_unsafe_zip_members_are_skipped_and_counted(tmp_path):
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("g/safe", "safe text\n")
        zip_file.writestr("../evil", "escapes the root\n")
        zip_file.writestr("g/..\\..\\evil", "escapes the root on Windows\n")
        zip_file.writestr("/abs", "absolute\n")
        link = zipfile.ZipInfo("g/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zip_file.writestr(link, "/etc/passwd")
    documents, messages = read_with_warnings(archive)
    assert [d.external_id for d in documents] == ["g/safe"]
    assert len(messages) == 1 and messages[0].startswith("4 archive members in ")
    with zipfile.ZipFile(tmp_path / "bad-only.zip", "w") as zip_file:
        zip_file.writestr("../evil", "escapes the root\n")
    with pytest.raises(CorpusError, match="1 archive member skipped as unsafe"):
        read_corpus(tmp_path / "bad-only.zip")


# --------------------------------------------------------------------------- JSONL and CSV


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_jsonl_columns_default_ids_and_sources(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [
        {"text": "first post", "label": "sci.space", "title": "Launch"},
        "",  # blank lines are ignored, but still counted in line numbers
        {"text": "second post", "label": 3},
        {"text": "   ", "label": "x"},
        {"text": None},
    ])
    documents, messages = read_with_warnings(path)
    assert documents == [
        Document("1", "first post", "sci.space", "Launch", f"{path}:line 1"),
        Document("3", "second post", "3", None, f"{path}:line 3"),
    ]
    assert len(messages) == 1
    assert messages[0].startswith("2 records in ") and "skipped as empty" in messages[0]


def test_jsonl_custom_columns(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [
        {"body": "first", "group": "a", "doc": "p-1", "subject": "S1"},
        {"body": "second", "group": "b", "doc": 17, "subject": ""},
    ])
    documents = read_corpus(
        path, text_column="body", label_column="group", id_column="doc", title_column="subject"
    )
    assert [(d.external_id, d.text, d.label, d.title) for d in documents] == [
        ("p-1", "first", "a", "S1"), ("17", "second", "b", None)]
    no_labels = read_corpus(path, text_column="body", label_column=None)
    assert [d.label for d in no_labels] == [None, None]


def test_jsonl_missing_text_column_names_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [{"body": "x", "group": "a"}])
    with pytest.raises(CorpusError, match=r"no text column 'text'; columns found: 'body', 'group'"):
        read_corpus(path)


def test_jsonl_bad_line_names_the_line_number(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [{"text": "ok"}, '{"text": "unterminated', {"text": "ok"}])
    with pytest.raises(CorpusError, match=r"bad JSON on line 2 of .*posts\.jsonl"):
        read_corpus(path)
    path = write_jsonl(tmp_path / "array.jsonl", [{"text": "ok"}, ["not", "an", "object"]])
    with pytest.raises(CorpusError, match="line 2 .* is a JSON list, expected an object"):
        read_corpus(path)


def test_duplicate_ids_are_an_error_listing_five(tmp_path):
    lines = [{"id": f"d{i}", "text": "x"} for i in range(7)] * 2 + [{"id": "unique", "text": "y"}]
    path = write_jsonl(tmp_path / "dups.jsonl", lines)
    shown = "'d0', 'd1', 'd2', 'd3', 'd4' and 2 more"
    with pytest.raises(CorpusError, match=f"7 ids occur more than once: {shown}"):
        read_corpus(path)


def test_csv_columns_quoted_newlines_and_sources(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text('id,text,label\nA,"first line\nsecond line",sci.space\nB,plain,\nC,,rec.autos\n')
    documents, messages = read_with_warnings(path)
    assert documents == [
        Document("A", "first line\nsecond line", "sci.space", None, f"{path}:row 1"),
        Document("B", "plain", None, None, f"{path}:row 2"),
    ]
    assert len(messages) == 1 and messages[0].startswith("1 record in ")


def test_csv_default_ids_and_latin1_fallback(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_bytes("text\ncafé\nnaïve\n".encode("latin-1"))
    documents, messages = read_with_warnings(path)
    assert [(d.external_id, d.text) for d in documents] == [("1", "café"), ("2", "naïve")]
    assert len(messages) == 1 and messages[0].startswith("1 file was not valid UTF-8 and was read as latin-1")
    with pytest.raises(CorpusError, match="cannot decode .* as utf-8"):
        read_corpus(path, encoding="utf-8")


def test_csv_missing_text_column_and_empty_file(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text("body,label\nx,a\n")
    with pytest.raises(CorpusError, match=r"no text column 'text'; columns found: 'body', 'label'"):
        read_corpus(path)
    path.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        read_corpus(path)


def test_subdir_is_rejected_for_tables(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [{"text": "x"}])
    with pytest.raises(CorpusError, match="subdir applies to folders and archives only"):
        read_corpus(path, subdir="train")


# --------------------------------------------------------------------------- Hugging Face datasets


@pytest.fixture
def fake_hub(monkeypatch):
    """Replaces datasets.load_dataset with an in-memory dataset; records the calls made."""
    datasets = pytest.importorskip("datasets")
    calls = []
    features = datasets.Features({
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["alt.atheism", "sci.space"]),
        "label_text": datasets.Value("string"),
    })
    dataset = datasets.Dataset.from_dict(
        {"text": ["about god", "about rockets", " ", "unlabelled"], "label": [0, 1, 1, -1],
         "label_text": ["alt.atheism", "sci.space", "sci.space", ""]},
        features=features,
    )

    def load_dataset(name, split):
        calls.append((name, split))
        return dataset

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hf_maps_class_labels_and_uses_row_indices(fake_hub):
    documents, messages = read_with_warnings("hf:SetFit/20_newsgroups", split="test")
    assert fake_hub == [("SetFit/20_newsgroups", "test")]
    assert documents == [
        Document("0", "about god", "alt.atheism", None, "hf:SetFit/20_newsgroups[test]#0"),
        Document("1", "about rockets", "sci.space", None, "hf:SetFit/20_newsgroups[test]#1"),
        Document("3", "unlabelled", None, None, "hf:SetFit/20_newsgroups[test]#3"),
    ]
    assert len(messages) == 1 and messages[0].startswith("1 record in ")


def test_hf_column_options(fake_hub):
    documents = read_corpus("hf:SetFit/20_newsgroups", label_column="label_text", limit=2)
    assert [(d.external_id, d.label) for d in documents] == [("0", "alt.atheism"), ("1", "sci.space")]
    columns = "'text', 'label', 'label_text'"
    with pytest.raises(CorpusError, match=f"no text column 'body'; columns found: {columns}"):
        read_corpus("hf:SetFit/20_newsgroups", text_column="body")


def test_hf_without_the_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes "import datasets" fail
    with pytest.raises(CorpusError, match="needs the 'datasets' package"):
        read_corpus("hf:SetFit/20_newsgroups")


# --------------------------------------------------------------------------- progress and real data


def test_progress_bar_goes_to_stderr_only_when_asked(tmp_path, capsys):
    folder = write_folder(tmp_path / "corpus", NEWS_TREE)
    read_corpus(folder)
    assert capsys.readouterr().err == ""
    read_corpus(folder, verbose=True)
    captured = capsys.readouterr()
    assert "reading corpus" in captured.err and "4" in captured.err and captured.out == ""


@pytest.mark.skipif(not NEWSGROUPS_TARBALL.exists(), reason="20 Newsgroups tarball not available")
def test_reads_a_real_20_newsgroups_subset():
    documents, _ = read_with_warnings(NEWSGROUPS_TARBALL, subdir="20news-bydate-train", limit=300)
    assert len(documents) == 300
    assert {d.label for d in documents} <= NEWSGROUPS
    for document in documents:
        group, post_number = document.external_id.split("/")
        assert group == document.label and post_number.isdigit()
        assert document.source == f"{NEWSGROUPS_TARBALL}:20news-bydate-train/{document.external_id}"
        assert document.title and len(document.title) <= 120
    assert len({d.external_id for d in documents}) == 300


# --------------------------------------------------------------------------- several labels


def test_document_keeps_label_first_among_its_labels():
    assert Document("a", "t", label="x").labels == ("x",)
    assert Document("a", "t").labels == () and Document("a", "t").label is None
    both = Document("a", "t", labels=["x", "y", "x"])  # repeats dropped, order kept
    assert (both.label, both.labels) == ("x", ("x", "y"))
    assert Document("a", "t", label="y", labels=("x", "y")).labels == ("y", "x")  # label moves first
    assert Document("a", "t", label="z", labels=("x",)).labels == ("z", "x")  # label joins first
    assert Document("a", "t", "x") == Document("a", "t", labels=("x",))
    with pytest.raises(TypeError, match="sequence of labels"):
        Document("a", "t", labels="xy")


def test_jsonl_labels_column_lists_strings_and_nulls(tmp_path):
    path = write_jsonl(tmp_path / "posts.jsonl", [
        {"text": "two labels", "labels": ["sci.space", " rec.autos ", ""]},
        {"text": "one string is one label", "labels": "a, b"},
        {"text": "label joins labels", "label": "c", "labels": ["d", "c"]},
        {"text": "null labels", "label": "e", "labels": None},
        {"text": "no labels at all"},
    ])
    documents = read_corpus(path)
    assert [d.labels for d in documents] == [
        ("sci.space", "rec.autos"), ("a, b",), ("c", "d"), ("e",), ()]
    assert [d.label for d in documents] == ["sci.space", "a, b", "c", "e", None]
    assert [d.labels for d in read_corpus(path, labels_column=None)] == [(), (), ("c",), ("e",), ()]
    renamed = write_jsonl(tmp_path / "tags.jsonl", [{"text": "x", "tags": ["p", "q"]}])
    assert read_corpus(renamed, labels_column="tags")[0].labels == ("p", "q")
    # one column named as both: read as the list it is, not also as one label "['p', 'q']"
    assert read_corpus(renamed, label_column="tags", labels_column="tags")[0].labels == ("p", "q")


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (3, "column 'labels' holds a int, expected a list of labels"),
        ({"a": 1}, "column 'labels' holds a dict, expected a list of labels"),
        (["a", ["b"]], "column 'labels': a label is a list, expected text"),
        (["a", 2], "column 'labels': a label is a int, expected text"),
        (["x" * 256], "column 'labels': a label is 256 characters long, at most 255 allowed"),
        ([str(i) for i in range(1001)], "column 'labels': more than 1000 labels"),
    ],
)
def test_jsonl_bad_labels_name_the_line(tmp_path, labels, problem):
    path = write_jsonl(tmp_path / "posts.jsonl", [{"text": "fine"}, {"text": "bad", "labels": labels}])
    with pytest.raises(CorpusError, match=rf"posts\.jsonl:line 2: {re.escape(problem)}"):
        read_corpus(path)


def test_csv_labels_column_is_split_on_commas(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text('text,label,labels\none,,"a, b,,c "\ntwo,z,"y,z"\nthree,w,\n')
    documents = read_corpus(path)
    assert [(d.label, d.labels) for d in documents] == [
        ("a", ("a", "b", "c")), ("z", ("z", "y")), ("w", ("w",))]
    path.write_text(f"text,labels\nfine,a\nbad,{'x' * 300}\n")
    with pytest.raises(CorpusError, match=r"posts\.csv:row 2: column 'labels': a label is 300 characters"):
        read_corpus(path)


LABELLED_TREE = {
    "sci.space/1": b"a space post\n",
    "sci.space/2": b"another space post\n",
    "rec.autos/3": b"a car post\n",
    "README": b"a file in the root\n",
    "labels.tsv": b"sci.space/1\tsci.space, physics\r\nREADME\tmeta\n\nrec.autos/gone\tx\n./rec.autos/3\tcars,sci.space\n",
}


def test_labels_file_gives_listed_documents_several_labels(make_tree):
    documents, messages = read_with_warnings(make_tree(LABELLED_TREE))
    assert sorted((d.external_id, d.label, d.labels) for d in documents) == [
        ("README", "meta", ("meta",)),
        ("rec.autos/3", "cars", ("cars", "sci.space")),
        ("sci.space/1", "sci.space", ("sci.space", "physics")),
        ("sci.space/2", "sci.space", ("sci.space",)),  # not listed: keeps its folder label
    ]
    assert len(messages) == 1
    assert messages[0].startswith("1 path listed in ") and "labels.tsv matched no document" in messages[0]
    assert "'rec.autos/gone'" in messages[0]


def test_labels_file_sits_at_the_root_of_subdir(make_tree):
    source = make_tree({
        "train/a/1": b"one\n", "train/a/2": b"two\n", "train/labels.tsv": b"a/1\ta,b\n",
        "labels.tsv": b"train/a/2\tignored\n",  # outside subdir: neither read nor a document
    })
    documents, messages = read_with_warnings(source, subdir="train")
    assert sorted((d.external_id, d.labels) for d in documents) == [("a/1", ("a", "b")), ("a/2", ("a",))]
    assert messages == []


def test_labels_file_is_found_when_limit_stops_before_it(tmp_path):
    tree = {"a/1": b"one\n", "a/2": b"two\n", "labels.tsv": b"a/1\tx,y\na/2\tz\n"}  # last in the archive
    for source in (write_tar(tmp_path / "corpus.tar.gz", tree), write_folder(tmp_path / "corpus", tree)):
        documents, messages = read_with_warnings(source, limit=1)
        assert [(d.external_id, d.labels) for d in documents] == [("a/1", ("x", "y"))]
        assert messages == []  # a/2 is listed but was not read: not reported as absent


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"a/1\tx\na/2 x\n", r"line 2 of .*labels\.tsv: expected 'relative/path<TAB>label,label'"),
        (b"a/1\tx\tz\n", r"line 1 of .*labels\.tsv: expected"),
        (b"\tx\n", r"line 1 of .*labels\.tsv: expected"),
        (b"a/1\t , \n", r"line 1 of .*labels\.tsv: no label for 'a/1'"),
        (b"a/1\tx\n\na/1\ty\n", r"line 3 of .*labels\.tsv: 'a/1' is listed again \(first on line 1\)"),
        (b"a/1\t" + b"y" * 300 + b"\n", r"line 1 of .*labels\.tsv: a label is 300 characters long"),
        (b"a/1\t\xff\xfe\n", r"cannot decode .*labels\.tsv as utf-8"),
    ],
)
def test_malformed_labels_file_names_the_line(tmp_path, content, problem):
    source = write_tar(tmp_path / "corpus.tar.gz", {"a/1": b"one\n", "a/2": b"two\n", "labels.tsv": content})
    with pytest.raises(CorpusError, match=problem):
        read_corpus(source)


def test_labels_file_size_is_bounded(tmp_path, monkeypatch):
    from semhash.pipelines import corpus_files

    monkeypatch.setattr(corpus_files, "_MAX_LABELS_FILE_BYTES", 10)
    folder = write_folder(tmp_path / "corpus", {"a/1": b"one\n", "labels.tsv": b"a/1\tlonger,than,ten\n"})
    with pytest.raises(CorpusError, match=r"labels\.tsv is over 0 MiB; a labels\.tsv may hold at most 0 MiB"):
        read_corpus(folder)


def test_hf_maps_a_list_of_class_labels(monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "text": datasets.Value("string"),
        "labels": datasets.Sequence(datasets.ClassLabel(names=["alt.atheism", "sci.space", "sci.med"])),
    })
    dataset = datasets.Dataset.from_dict(
        {"text": ["both", "one", "none"], "labels": [[1, 2], [0], []]}, features=features)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: dataset)
    documents = read_corpus("hf:some/multi-label")
    assert [(d.label, d.labels) for d in documents] == [
        ("sci.space", ("sci.space", "sci.med")), ("alt.atheism", ("alt.atheism",)), (None, ())]


# --------------------------------------------------------------------------- size bounds


def test_an_oversized_document_is_a_clear_error_before_it_is_read_whole(tmp_path):
    big = b"word " * 50_000  # 250 kB of text, a few hundred bytes compressed
    for source in (write_zip(tmp_path / "c.zip", {"a/1": b"small one\n", "a/2": big}),
                   write_tar(tmp_path / "c.tar.gz", {"a/1": b"small one\n", "a/2": big}),
                   write_folder(tmp_path / "c", {"a/1": b"small one\n", "a/2": big})):
        with pytest.raises(CorpusError, match=r"a/2 is over 0\.1 MiB; a document may hold at most that .*--max-document-mb"):
            read_corpus(source, max_document_bytes=100_000)
        assert len(read_corpus(source, max_document_bytes=300_000)) == 2  # the limit can be raised


def test_a_corpus_over_its_total_bound_is_a_clear_error(tmp_path):
    tree = {f"a/{i}": b"some words here " * 10 for i in range(5)}  # 160 bytes each
    for source in (write_zip(tmp_path / "c.zip", tree), write_folder(tmp_path / "c", tree)):
        with pytest.raises(CorpusError, match="more than .* of text .*--max-corpus-mb"):
            read_corpus(source, max_corpus_bytes=500)
        assert len(read_corpus(source, max_corpus_bytes=1000)) == 5


def test_tables_are_measured_before_they_are_read_and_records_are_bounded(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": "x" * (200 + i)}) for i in range(3)), encoding="utf-8")
    with pytest.raises(CorpusError, match="more than"):
        read_corpus(path, max_corpus_bytes=100)
    with pytest.raises(CorpusError, match=r"c\.jsonl.*is over"):
        read_corpus(path, max_document_bytes=201)
    with pytest.raises(ValueError, match="max_document_bytes must be a positive"):
        read_corpus(path, max_document_bytes=0)


def test_hf_reads_a_folder_written_by_save_to_disk(tmp_path):
    """A real saved dataset (no network): one split, and a DatasetDict whose split is chosen."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["space", "hockey"])})
    train = datasets.Dataset.from_dict({"text": ["shuttle orbit launch", "puck goal season"], "label": [0, 1]},
                                       features=features)
    train.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": train, "test": train.select([1])}).save_to_disk(str(tmp_path / "both"))
    documents = read_corpus(f"hf:{tmp_path / 'one'}")
    assert [(d.text, d.label) for d in documents] == [("shuttle orbit launch", "space"), ("puck goal season", "hockey")]
    assert [d.label for d in read_corpus(f"hf:{tmp_path / 'both'}", split="test")] == ["hockey"]
    with pytest.raises(CorpusError, match=r"has no split 'validation' \(splits: \['test', 'train'\]\)"):
        read_corpus(f"hf:{tmp_path / 'both'}", split="validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="cannot load .* as a saved dataset"):
        read_corpus(f"hf:{tmp_path / 'empty'}")
