"""The command line, driven as a user would: click's runner, real files."""

import json

import numpy as np

from tests.conftest import TOPIC_WORDS, colour_photos

import pytest
from click.testing import CliRunner

from semhash.cli import main

pytestmark = pytest.mark.slow
FAST = ["--bits", "16", "--epochs", "10", "--pretrain-epochs", "2", "--map-dims", "2", "-q"]


@pytest.fixture(scope="module")
def database(newsgroups_subset, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "news.db"
    result = CliRunner().invoke(main, ["index", str(newsgroups_subset["train"]), "--db", str(path), *FAST])
    assert result.exit_code == 0, result.output
    assert "Indexed 800 documents" in result.output
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_search_json_has_the_documented_keys(database):
    result = run("search", "hockey playoff goalie", "--db", database, "-k", "4", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 4
    assert {"id", "distance", "title", "label"} <= set(hits[0])


def test_search_text_output_and_rerank(database):
    result = run("search", "hockey playoff goalie", "--db", database, "-k", "3", "--rerank")
    assert result.exit_code == 0, result.output
    assert result.output.count("cosine distance") == 3


def test_similar_by_external_id_and_numeric_id(database):
    first = json.loads(run("search", "israel arab", "--db", database, "-k", "1", "--json").output)[0]
    by_name = json.loads(run("similar", first["external_id"], "--db", database, "-k", "3", "--json").output)
    by_id = json.loads(run("similar", first["id"], "--db", database, "-k", "3", "--json").output)
    assert by_name == by_id and len(by_name) == 3
    assert first["id"] not in [hit["id"] for hit in by_name]


def test_info_and_encode(database):
    info = json.loads(run("info", "--db", database, "--json").output)
    assert info["documents"] == 800
    assert {m["name"] for m in info["models"]} == {"hasher", "map", "address"}
    assert info["search_bytes_per_document"] == (2 + 8) + (8 + 8) + (3 + 8)
    code = run("encode", "space shuttle", "--db", database)
    assert code.exit_code == 0 and len(code.output.strip()) == 4  # 16 bits = 4 hex digits
    hits = json.loads(run("search", code.output.strip(), "--code", "--db", database, "--json").output)
    assert len(hits) == 10


def test_recall_brings_back_a_document_from_its_code(database):
    hit = json.loads(run("search", "israel arab", "--db", database, "-k", "1", "--json").output)[0]
    from semhash.index.search import SearchEngine
    from semhash.codes import to_hex

    engine = SearchEngine(database)
    _, codes = engine.db.get_codes(engine.db.get_model("hasher").id, [hit["id"]])
    result = run("recall", "--code", to_hex(codes[0]), "--db", database, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    recalled = json.loads(result.output)
    assert recalled[0]["confidence"] == 1.0
    assert {"id", "external_id", "title", "label", "confidence", "snippet"} <= set(recalled[0])
    assert run("recall", "--db", database).exit_code == 2  # neither text nor code


def test_recall_brings_back_a_document_from_half_of_its_words(database):
    from semhash.index.search import SearchEngine

    engine = SearchEngine(database)
    doc = max(engine.db.get_documents(list(range(1, 41))), key=lambda d: len(set((d.text or "").split())))
    words = doc.text.split()
    fragment = " ".join(words[::2])  # every other word
    result = run("recall", fragment, "--db", database, "--json")
    assert result.exit_code == 0, result.output
    recalled = json.loads(result.output)
    assert recalled[0]["id"] == doc.id and 0 < recalled[0]["confidence"] <= 1
    result = run("recall", fragment, "--db", database, "--codes-only", "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 2


def test_map_png_comparison_and_offline_html(database, tmp_path):
    png, html = tmp_path / "map.png", tmp_path / "map.html"
    result = run("map", "--db", database, "--out", png, "--compare", "lsa", "--html", html, "--query", "hockey goalie")
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.read_text(encoding="utf-8")
    assert "<script src=" not in page and "<link href=" not in page
    assert "hockey goalie" in page and "rec.sport.hockey" in page


def test_evaluate_reports_precision_beside_baselines(database, newsgroups_subset):
    result = run("evaluate", "--db", database, "--queries", newsgroups_subset["test"], "--max-queries", "60", "--json", "-q")
    assert result.exit_code == 0, result.output
    methods = {row["method"] for row in json.loads(result.output)["methods"]}
    assert {"tfidf", "lsa"} <= methods and any(name.startswith("semhash") for name in methods)


def test_errors_are_one_clear_line(database, tmp_path):
    cases = [
        (["search", "qqqzx", "--db", database], "vocabulary"),
        (["similar", "no/such", "--db", database], "no document"),
        (["info", "--db", tmp_path / "missing.db"], "no database at"),
        (["index", tmp_path / "nothing-here", "--db", tmp_path / "x.db", "-q"], "does not exist"),
        (["index", database, "--db", tmp_path / "y.db", "-q"], "unknown corpus format"),
        (["index", tmp_path, "--db", database, "-q"], "already holds 800 documents"),
    ]
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("my notes")
    cases.append((["info", "--db", not_a_db], "not a semhash database"))
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    assert not_a_db.read_text() == "my notes"


def test_a_bug_is_not_dressed_up_as_bad_input(database, monkeypatch):
    """Only errors semhash raises on purpose become one line; a failed lookup keeps its traceback."""
    from semhash.index.search import SearchEngine

    monkeypatch.setattr(SearchEngine, "search", lambda self, text, **options: {}["missing"])
    result = run("search", "hockey", "--db", database)
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)
    monkeypatch.setattr(SearchEngine, "search", lambda self, text, **options: np.zeros(2)[5])
    assert isinstance(run("search", "hockey", "--db", database).exception, IndexError)
    # the same KeyError type, raised with a message by the database, is one clear line
    result = run("similar", "no/such", "--db", database)
    assert result.exit_code == 1 and "no document" in result.output and not isinstance(result.exception, KeyError)


def test_a_corrupt_index_file_is_rebuilt_with_a_warning_on_stderr(database):
    index_file = database.parent / f"{database.name}.faiss" / "hasher.index"
    index_file.write_bytes(b"not a faiss index")
    result = run("search", "hockey playoff goalie", "--db", database, "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "rebuilding it now" in result.output
    result = run("search", "hockey playoff goalie", "--db", database, "-k", "2", "--json")
    assert "warning:" not in result.output and len(json.loads(result.output)) == 2


def test_progress_goes_through_logging_and_q_silences_it(database, newsgroups_subset):
    shown = run("add", newsgroups_subset["train"], "--db", database)
    assert shown.exit_code == 0 and "800 of 800 documents already stored; adding 0" in shown.output
    quiet = run("add", newsgroups_subset["train"], "--db", database, "-q")
    assert quiet.exit_code == 0 and "already stored; adding" not in quiet.output
    evaluated = run("evaluate", "--db", database, "--fraction", "0.05", "--max-queries", "10")
    assert evaluated.exit_code == 0 and "queries against" in evaluated.output, evaluated.output


def test_index_dir_holds_the_search_files_elsewhere(database, tmp_path):
    import os

    folder = tmp_path / "search-files"
    result = run("similar", "1", "--db", database, "-k", "3", "--index-dir", folder, "--mode", "cells", "--json")
    assert result.exit_code == 0, result.output
    assert "cells.hasher.index" in {p.name for p in folder.iterdir()}
    assert "SEMHASH_INDEX_DIR" not in os.environ  # the option lasts for its command only


def test_help_teaches(database):
    for command in ("index", "search", "similar", "add", "info", "map", "recall"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output and "--db" in result.output
    assert "semhash search" in run("--help").output


def test_images_index_search_similar_and_montage(tmp_path):
    colour_photos(tmp_path / "photos")
    db = tmp_path / "photos.db"
    result = run("images", "index", tmp_path / "photos", "--db", db, "--bits", "16", "--address-bits", "8",
                 "--epochs", "3", "-q")
    assert result.exit_code == 0, result.output
    assert "Stored 60 images" in result.output
    montage_png = tmp_path / "hits.png"
    result = run("images", "search", tmp_path / "photos" / "red" / "000.png", "--db", db, "-k", "5", "--json",
                 "--montage", montage_png)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [hit["label"] for hit in hits].count("red") >= 4
    assert montage_png.read_bytes()[:4] == b"\x89PNG"
    similar = json.loads(run("images", "similar", hits[0]["external_id"], "--db", db, "-k", "3", "--json").output)
    assert len(similar) == 3 and hits[0]["id"] not in [hit["id"] for hit in similar]
    # two-stage search: sorted, and never nearer than exhaustive search, rank by rank
    exhaustive = json.loads(run("images", "similar", hits[0]["external_id"], "--db", db, "-k", "10", "--json").output)
    result = run("images", "similar", hits[0]["external_id"], "--db", db, "-k", "10", "--json",
                 "--address", "--radius", "6", "--max-candidates", "1000")
    assert result.exit_code == 0, result.output
    two_stage = json.loads(result.output)
    found = [h["distance"] for h in two_stage]
    assert len(found) == 10 and found == sorted(found)
    assert all(a >= b for a, b in zip(found, (h["distance"] for h in exhaustive)))
    # cell search: 60 images make one cell, so it is exhaustive search
    result = run("images", "similar", hits[0]["external_id"], "--db", db, "-k", "10", "--json", "--cells", "--probes", "2")
    assert result.exit_code == 0, result.output
    assert [h["distance"] for h in json.loads(result.output)] == [h["distance"] for h in exhaustive]
    result = run("images", "search", tmp_path / "photos" / "red" / "000.png", "--db", db, "--cells", "--address")
    assert result.exit_code == 2 and "choose one" in result.output


def _write_multi_label_jsonl(path, n_docs, seed):
    """Posts on one or two of four topics (a labels list), written as a user's JSONL corpus."""
    topics = TOPIC_WORDS
    rng = np.random.default_rng(seed)
    names = list(topics)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n_docs):
            labels = [names[i % 4]] + ([names[(i + 1) % 4]] if i % 3 == 0 else [])
            words = [word for label in labels for word in rng.choice(topics[label].split(), 12 // len(labels))]
            handle.write(json.dumps({"id": f"{seed}-{i}", "text": " ".join(words), "labels": labels}) + "\n")
    return path


def test_index_and_evaluate_a_multi_label_corpus(tmp_path):
    corpus = _write_multi_label_jsonl(tmp_path / "train.jsonl", 150, seed=0)
    queries = _write_multi_label_jsonl(tmp_path / "test.jsonl", 40, seed=1)
    db = tmp_path / "multi.db"
    result = run("index", corpus, "--db", db, "--bits", "16", "--vocab", "40", "--epochs", "1",
                 "--pretrain-epochs", "1", "--map-dims", "0", "--address-bits", "0", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(run("info", "--db", db, "--json").output)["labels"] == 4
    hit = json.loads(run("similar", "0-0", "--db", db, "-k", "1", "--json").output)[0]
    assert hit["label"] in {"space", "hockey", "graphics", "mideast"}

    result = run("evaluate", "--db", db, "--queries", queries, "-q")
    assert result.exit_code == 0, result.output
    assert "40 queries (corpus) against 150 labelled documents, 4 labels" in result.output
    assert "relevant = shares a label (multi-label corpus)" in result.output
    report = json.loads(run("evaluate", "--db", db, "--fraction", "0.2", "--json", "-q").output)
    assert report["multi_label"] is True and report["n_queries"] == 30 and report["n_database"] == 120
    tfidf = next(m for m in report["methods"] if m["method"] == "tfidf")
    assert tfidf["p_at_10"] > 0.9  # topics with disjoint words: a shared label is easy to find


def test_standard_input_feeds_index_add_search_and_recall(tmp_path):
    from tests.conftest import write_topic_posts

    db = tmp_path / "stdin.db"
    posts = write_topic_posts(tmp_path / "posts.jsonl", "post", 80, seed=0).read_text()
    more = write_topic_posts(tmp_path / "more.jsonl", "more", 12, seed=1).read_text()
    fit = ["--bits", "16", "--epochs", "2", "--pretrain-epochs", "1", "--vocab", "40", "--map-dims", "0",
           "--address-bits", "0", "-q"]
    runner = CliRunner()
    result = runner.invoke(main, ["index", "-", "--db", str(db), *fit], input=posts)
    assert result.exit_code == 0 and "Indexed 80 documents" in result.output, result.output
    result = runner.invoke(main, ["add", "-", "--db", str(db), "-q", "--json"], input=more)
    assert result.exit_code == 0 and json.loads(result.output)["added"] == 12, result.output
    result = runner.invoke(main, ["search", "-", "--db", str(db), "-k", "3", "--json"], input="orbit shuttle launch\n")
    assert result.exit_code == 0 and len(json.loads(result.output)) == 3, result.output
    result = runner.invoke(main, ["recall", "-", "--db", str(db), "--json"], input="puck goal team season playoff\n")
    assert result.exit_code == 0 and json.loads(result.output), result.output


def test_hits_print_as_newline_delimited_json_and_csv(database):
    import csv
    import io

    lines = run("search", "hockey playoff goalie", "--db", database, "-k", "4", "--nl").output.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 4 and {"id", "external_id", "distance", "label", "snippet"} <= set(rows[0])
    table = list(csv.DictReader(io.StringIO(run("similar", "1", "--db", database, "-k", "4", "--csv").output)))
    assert len(table) == 4 and table[0]["external_id"] and int(table[0]["distance"]) >= 0
    recalled = run("recall", "hockey playoff goalie", "--db", database, "--csv").output.splitlines()
    assert recalled[0].startswith("id,") and len(recalled) >= 2


def test_every_result_has_a_json_form(database, tmp_path):
    code = json.loads(run("encode", "nasa shuttle orbit", "--db", database, "--json").output)
    assert code["space"] == "hamming" and len(code["code"]) == 4  # 16 bits in hex
    point = json.loads(run("encode", "nasa shuttle orbit", "--db", database, "--space", "euclidean", "--json").output)
    assert len(point["code"]) == 2
    drawn = json.loads(run("map", "--db", database, "--out", tmp_path / "m.png", "-q", "--json").output)
    assert drawn == {"out": str(tmp_path / "m.png"), "html": None, "documents": 800}


def test_sample_spreads_across_labels_where_limit_takes_the_first(newsgroups_subset):
    from semhash.pipelines.corpus import read_corpus, sample_documents

    documents = read_corpus(newsgroups_subset["train"])
    first = read_corpus(newsgroups_subset["train"], limit=100)
    sample = sample_documents(documents, 100, seed=0)
    assert [d.external_id for d in first] == [d.external_id for d in documents[:100]]
    counts = {label: sum(d.label == label for d in sample) for label in {d.label for d in documents}}
    assert sorted(counts.values()) == [25, 25, 25, 25]  # 200 of each group: equal shares
    assert sample == sample_documents(documents, 100, seed=0) != sample_documents(documents, 100, seed=1)
    assert [d.external_id for d in sample] == sorted((d.external_id for d in sample), key=[x.external_id for x in documents].index)


def test_delete_by_key_from_a_file_and_from_standard_input(database, tmp_path):
    import shutil

    path = tmp_path / "news.db"
    shutil.copy(database, path)
    assert "semhash delete" in run("delete", "--help").output
    hits = json.loads(run("search", "hockey playoff goalie", "--db", path, "-k", "5", "--json").output)
    by_id, by_name = hits[0], hits[1]
    result = run("delete", str(by_id["id"]), by_name["external_id"], "--db", path)
    assert result.exit_code == 0 and "Deleted 2 documents (798 left)" in result.output, result.output
    found = json.loads(run("search", "hockey playoff goalie", "--db", path, "-k", "800", "--json").output)
    assert len(found) == 798 and not {by_id["id"], by_name["id"]} & {hit["id"] for hit in found}
    # an unknown key: one line naming it, and nothing deleted
    result = run("delete", hits[2]["external_id"], "no/such/post", "--db", path)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "'no/such/post'" in result.output
    assert json.loads(run("info", "--db", path, "--json").output)["documents"] == 798
    # a file of keys (blank lines skipped), with one already gone: --missing-ok skips it
    (tmp_path / "keys.txt").write_text(f"{hits[2]['external_id']}\n\n{by_name['external_id']}\n")
    result = run("delete", "--from-file", tmp_path / "keys.txt", "--db", path, "--missing-ok", "-q", "--json")
    assert json.loads(result.output) == {**json.loads(result.output), "deleted": 1, "ids": [hits[2]["id"]],
                                         "missing": [by_name["external_id"]], "documents": 797}
    result = CliRunner().invoke(main, ["delete", "--from-file", "-", "--db", str(path), "-q", "--json"],
                                input=f"{hits[3]['id']}\n")
    assert json.loads(result.output)["deleted"] == 1
    similar = run("similar", by_name["external_id"], "--db", path)
    assert similar.exit_code == 1 and "no document" in similar.output
    nothing = run("delete", "--db", path)
    assert nothing.exit_code == 2 and "name the documents to delete" in nothing.output
