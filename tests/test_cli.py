"""The command line, driven as a user would: click's runner, real files."""

import json

import pytest
from click.testing import CliRunner

from cli import main

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
    assert {m["name"] for m in info["models"]} == {"hasher", "map"}
    assert info["search_bytes_per_document"] == (2 + 8) + (8 + 8)
    code = run("encode", "space shuttle", "--db", database)
    assert code.exit_code == 0 and len(code.output.strip()) == 4  # 16 bits = 4 hex digits
    hits = json.loads(run("search", code.output.strip(), "--code", "--db", database, "--json").output)
    assert len(hits) == 10


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


def test_help_teaches(database):
    for command in ("index", "search", "similar", "add", "info", "map"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output and "--db" in result.output
    assert "semhash search" in run("--help").output
