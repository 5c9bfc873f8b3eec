"""The server's JSON API through an in-process client: every endpoint, every error path,
writes with and without the token, and another process's writes seen without a restart."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import urllib.request

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from semhash.cli import main
from tests.conftest import run_cli as run
from semhash.index.database import Database
from semhash.pipelines.corpus import Document
from semhash.pipelines.indexing import add_documents
from semhash.server.app import ServerConfig, create_app
from tests.servers import semhash_server

pytestmark = pytest.mark.slow
HIT_FIELDS = {"id", "external_id", "distance", "title", "label", "source", "snippet"}




@pytest.fixture
def writable_db(indexed_news, tmp_path):
    """A copy of the indexed database that a test may write to."""
    path = tmp_path / "news.db"
    shutil.copy(indexed_news, path)
    return path


def client_for(database, **config) -> TestClient:
    return TestClient(create_app(ServerConfig(str(database), **config)))


@pytest.fixture(scope="module")
def api(indexed_news):
    with client_for(indexed_news, poll_seconds=0) as client:
        yield client


@pytest.fixture(scope="module")
def test_posts(newsgroups_subset):
    return [json.loads(line) for line in newsgroups_subset["test"].read_text().splitlines()]


def hits(response):
    assert response.status_code == 200, response.text
    return response.json()["hits"]


def error(response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    return detail


# ----------------------------------------------------------------------------- reading
def test_health_and_info(api):
    assert api.get("/api/health").json() == {"ready": True, "collection": "text"}
    info = api.get("/api/info").json()
    assert info["documents"] == 800 and info["labels"] == 4 and info["collection"] == "text"
    assert {model["name"] for model in info["models"]} == {"hasher", "address", "map"}
    assert info["writable"] is False


def test_search_answers_as_the_command_line_does(api, indexed_news):
    query = "space shuttle launch orbit nasa"
    served = hits(api.get("/api/search", params={"q": query, "k": 7}))
    printed = json.loads(run("search", query, "--db", indexed_news, "-k", 7, "--json"))
    assert served == printed
    assert set(served[0]) == HIT_FIELDS
    assert [hit["distance"] for hit in served] == sorted(hit["distance"] for hit in served)
    assert hits(api.post("/api/search", json={"q": query, "k": 7})) == served


@pytest.mark.parametrize("options", [
    {"mode": "address"}, {"mode": "address", "radius": 3, "max_candidates": 50}, {"mode": "cells", "probes": 2},
    {"rerank": True, "candidates": 30}, {"space": "euclidean"},
])
def test_every_search_option_works_and_matches_the_cli(api, indexed_news, options):
    query = "graphics card image rendering software"
    served = hits(api.get("/api/search", params={"q": query, "k": 5, **options}))
    flags = [part for key, value in options.items() for part in
             ([f"--{key.replace('_', '-')}"] if value is True else [f"--{key.replace('_', '-')}", value])]
    assert served == json.loads(run("search", query, "--db", indexed_news, "-k", 5, "--json", *flags))
    assert len(served) == 5


def test_concurrent_searches_are_answered_together_each_as_alone(indexed_news):
    """Queries that arrive together are answered in one batch, each as it would be alone;
    a bad one gets its own 400 (an unknown document its 404) and the others their hits."""
    import asyncio

    import httpx

    queries = ["space shuttle launch orbit nasa", "middle east israel peace talks", "hockey game goalie",
               "graphics card driver windows", "qqqq zzzz", "gun control law", "   ", "encryption key chip"]
    requests = [("/api/search", {"q": q, "k": 5}) for q in queries] + [
        (f"/api/similar/{key}", {"k": 4}) for key in ("1", "99999", "2", "3", "no-such-post")]
    app = create_app(ServerConfig(str(indexed_news), poll_seconds=0))
    with TestClient(app) as client:
        alone = [client.get(path, params=params) for path, params in requests]

    async def together():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://semhash") as client:
            return await asyncio.gather(*(client.get(path, params=params) for path, params in requests))

    before = app.state.searches.batches, app.state.similars.batches
    answers = asyncio.run(together())
    statuses = [a.status_code for a in answers]
    assert statuses == [a.status_code for a in alone]
    assert statuses.count(400) == 2 and statuses.count(404) == 2
    assert [a.json() for a in answers] == [a.json() for a in alone]
    assert app.state.searches.batches - before[0] < len(queries)  # some were answered together
    assert app.state.similars.batches - before[1] < 5


def test_search_by_code_and_encode(api):
    code = api.get("/api/encode", params={"q": "middle east israel peace talks"}).json()
    assert code["space"] == "hamming" and len(code["code"]) == 4  # 16 bits in hex
    found = hits(api.get("/api/search", params={"code": code["code"], "k": 3}))
    by_text = hits(api.get("/api/search", params={"q": "middle east israel peace talks", "k": 3}))
    assert [hit["distance"] for hit in found] == [hit["distance"] for hit in by_text]
    point = api.get("/api/encode", params={"q": "middle east israel peace talks", "space": "euclidean"}).json()
    assert len(point["code"]) == 2 and all(isinstance(x, float) for x in point["code"])


def test_similar_by_external_or_numeric_id_excludes_itself(api, indexed_news):
    doc = api.get("/api/documents/1").json()
    assert "/" in doc["external_id"]  # e.g. sci.space/60154: the route takes slashes
    by_name = hits(api.get(f"/api/similar/{doc['external_id']}", params={"k": 5}))
    assert hits(api.get("/api/similar/1", params={"k": 5})) == by_name
    assert 1 not in [hit["id"] for hit in by_name] and len(by_name) == 5
    assert by_name == json.loads(run("similar", doc["external_id"], "--db", indexed_news, "-k", 5, "--json"))


def test_a_document_whole(api, newsgroups_subset):
    doc = api.get("/api/documents/2").json()
    first = json.loads(newsgroups_subset["train"].read_text().splitlines()[1])
    assert (doc["external_id"], doc["text"], doc["label"], doc["title"]) == (
        first["id"], first["text"], first["label"], first["title"])
    assert doc["labels"] == [first["label"]] and doc["snippet"]


def test_recall_from_a_fragment_and_from_a_code(api):
    doc = api.get("/api/documents/5").json()
    fragment = " ".join(doc["snippet"].split()[:40])
    recalled = hits(api.get("/api/recall", params={"q": fragment, "k": 3}))
    assert recalled[0]["id"] == 5 and set(recalled[0]) >= {"confidence", "hamming_distance"}
    assert hits(api.post("/api/recall", json={"q": fragment, "k": 3})) == recalled
    code = api.get("/api/encode", params={"q": doc["text"]}).json()["code"]
    assert hits(api.get("/api/recall", params={"code": code, "codes_only": True}))


def test_map_points(api):
    points = api.get("/api/map").json()
    n = len(points["ids"])
    assert n == 800 and len(points["x"]) == len(points["y"]) == len(points["labels"]) == len(points["titles"]) == n
    assert len(points["label_names"]) == 4 and set(points["labels"]) == {0, 1, 2, 3}


def test_page_docs_and_schema_are_served_from_the_app(api):
    page = api.get("/")
    assert page.status_code == 200 and "semhash" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert api.get(asset).status_code == 200
    schema = api.get("/openapi.json").json()
    assert {"/api/search", "/api/similar/{key}", "/api/documents/{key}", "/api/recall", "/api/encode",
            "/api/info", "/api/images/search", "/api/documents"} <= set(schema["paths"])
    docs = api.get("/docs").text
    # Swagger UI's files come from the app itself, not from a CDN: the page works offline.
    assert "cdn" not in docs.lower() and "https://" not in docs
    assert all(api.get(src).status_code == 200 for src in _local_sources(docs))


def _local_sources(html: str) -> list[str]:
    import re

    sources = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert sources
    return sources


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, status, words", [
    ({"q": ""}, 400, "query text"),
    ({"q": "   "}, 400, "query text"),
    ({}, 400, "either"),
    ({"q": "zzqqxx vvwwyy"}, 400, "vocabulary"),
    ({"q": "shuttle", "k": 0}, 400, "k"),
    ({"q": "shuttle", "k": 5000}, 400, "at most 1000"),
    ({"q": "shuttle", "k": "many"}, 400, "integer"),
    ({"q": "shuttle", "mode": "fastest"}, 400, "mode"),
    ({"q": "shuttle", "space": "cosine"}, 400, "space"),
    ({"q": "shuttle", "mode": "address", "radius": 99}, 400, "radius"),
    ({"q": "shuttle", "space": "euclidean", "mode": "cells"}, 400, "hamming space only"),
    ({"q": "shuttle", "code": "ff00"}, 400, "either"),
    ({"code": "zz"}, 400, "hex"),
])
def test_bad_searches_get_one_line_and_the_right_status(api, params, status, words):
    assert words in error(api.get("/api/search", params=params), status)


def test_a_query_over_the_limit_is_413(api):
    assert "over 64 KiB" in error(api.post("/api/search", json={"q": "shuttle " * 10_000}), 413)


def test_unknown_documents_are_404(api):
    assert "no document" in error(api.get("/api/documents/no-such-post"), 404)
    assert "no document" in error(api.get("/api/similar/99999"), 404)
    assert "no document" in error(api.get("/api/images/99999.png"), 404)


def test_image_endpoints_on_a_text_collection_say_so(api):
    assert "collection of texts" in error(api.post("/api/images/search", content=b"\x89PNG..."), 400)
    assert "collection of texts" in error(api.get("/api/images/similar/1"), 400)


def test_a_body_over_the_limit_is_refused_before_it_is_read(indexed_news):
    with client_for(indexed_news, poll_seconds=0, max_body_bytes=2**20) as client:
        detail = error(client.post("/api/search", content=b"{" + b" " * 2**20 + b"}",
                                   headers={"Content-Type": "application/json"}), 413)
        assert "over 1 MiB" in detail


def test_an_empty_database_is_not_ready(tmp_path):
    Database(tmp_path / "empty.db").close()
    with client_for(tmp_path / "empty.db", poll_seconds=0) as client:
        assert client.get("/api/health").status_code == 503
        assert "nothing to search yet" in error(client.get("/api/search", params={"q": "x"}), 503)
        assert client.get("/api/info").json()["documents"] == 0


def test_a_bug_is_a_500_with_one_line_not_a_traceback(indexed_news, monkeypatch):
    from semhash.index.search import SearchEngine

    def broken(*args, **kwargs):
        return {}["missing"]  # a failed lookup: a bug, not the user's doing

    monkeypatch.setattr(SearchEngine, "search_many", broken)
    with TestClient(create_app(ServerConfig(str(indexed_news), poll_seconds=0)), raise_server_exceptions=False) as client:
        assert "internal error (KeyError)" in error(client.get("/api/search", params={"q": "shuttle"}), 500)


# ----------------------------------------------------------------------------- writes
NEW = {"documents": [{"id": "new/1", "text": "The shuttle orbiter reached orbit after the launch from the cape; "
                                            "nasa engineers tracked the spacecraft", "label": "sci.space",
                      "title": "Orbiter launch"}]}


def test_writes_need_the_token(writable_db):
    with client_for(writable_db, poll_seconds=0) as read_only:
        assert "read-only" in error(read_only.post("/api/documents", json=NEW), 403)
    with client_for(writable_db, poll_seconds=0, token="s3cret") as client:
        assert "token" in error(client.post("/api/documents", json=NEW), 401)
        assert "token" in error(client.post("/api/documents", json=NEW, headers={"Authorization": "Bearer wrong"}), 401)
        assert client.get("/api/info").json()["documents"] == 800  # nothing was written


def test_added_documents_are_searchable_at_once(writable_db):
    auth = {"Authorization": "Bearer s3cret"}
    with client_for(writable_db, poll_seconds=0, token="s3cret") as client:
        assert client.get("/api/info").json()["writable"] is True
        added = client.post("/api/documents", json=NEW, headers=auth)
        assert added.status_code == 200 and added.json()["added"] == 1
        assert client.post("/api/documents", json=NEW, headers=auth).json()["already_stored"] == 1
        code = client.get("/api/encode", params={"q": NEW["documents"][0]["text"]}).json()["code"]
        found = hits(client.get("/api/search", params={"code": code, "k": 900}))
        assert "new/1" in [hit["external_id"] for hit in found]
        doc = client.get("/api/documents/new/1").json()
        assert doc["title"] == "Orbiter launch" and doc["source"] == "api"
        without_id = client.post("/api/documents", json={"documents": [{"text": "rocket launch pad"}]}, headers=auth)
        assert without_id.json()["added"] == 1
        assert "no documents" in error(client.post("/api/documents", json={"documents": []}, headers=auth), 400)
        assert "no text" in error(client.post("/api/documents", json={"documents": [{"text": " "}]}, headers=auth), 400)
        assert "documents" in error(client.post("/api/documents", json={"documents": "x"}, headers=auth), 400)
    with client_for(writable_db, poll_seconds=0, token="s3cret", max_documents=2) as client:
        many = {"documents": [{"text": f"launch {i}"} for i in range(3)]}
        assert "at most 2 documents" in error(client.post("/api/documents", json=many, headers=auth), 413)


def test_deletes_need_the_token(writable_db):
    key = Database(writable_db).find_document(1).external_id
    with client_for(writable_db, poll_seconds=0) as read_only:
        assert "read-only" in error(read_only.delete(f"/api/documents/{key}"), 403)
    with client_for(writable_db, poll_seconds=0, token="s3cret") as client:
        assert "token" in error(client.delete(f"/api/documents/{key}"), 401)
        assert "token" in error(client.delete(f"/api/documents/{key}", headers={"Authorization": "Bearer wrong"}), 401)
        assert "token" in error(client.delete("/api/documents/no/such/post"), 401)  # the token before the key
        assert client.get("/api/info").json()["documents"] == 800  # nothing was deleted
        assert client.get(f"/api/documents/{key}").status_code == 200


def test_deleted_documents_are_gone_at_once(writable_db):
    auth = {"Authorization": "Bearer s3cret"}
    with client_for(writable_db, poll_seconds=0, token="s3cret") as client:
        first = hits(client.get("/api/search", params={"q": "space shuttle launch orbit nasa", "k": 3}))[0]
        assert "/" in first["external_id"]  # a path: the route takes the whole of it
        code = client.get("/api/encode", params={"q": "space shuttle launch orbit nasa"}).json()["code"]
        deleted = client.delete(f"/api/documents/{first['external_id']}", headers=auth)
        assert deleted.status_code == 200, deleted.text
        summary = deleted.json()
        assert summary["deleted"] == 1 and summary["ids"] == [first["id"]] and summary["documents"] == 799
        assert client.get("/api/info").json()["documents"] == 799
        assert "no document" in error(client.get(f"/api/documents/{first['external_id']}"), 404)
        assert "no document" in error(client.get(f"/api/similar/{first['id']}"), 404)
        for params in ({"code": code, "k": 900}, {"q": "space shuttle launch orbit nasa", "k": 900, "mode": "address"},
                       {"q": "space shuttle launch orbit nasa", "k": 900, "space": "euclidean"}):
            assert first["id"] not in [hit["id"] for hit in hits(client.get("/api/search", params=params))], params
        assert first["id"] not in json.loads(client.get("/api/map").content)["ids"]
        recalled = client.get("/api/recall", params={"code": code, "k": 50}).json()["hits"]
        assert recalled and first["id"] not in [hit["id"] for hit in recalled]
        # by numeric id; then an unknown key is 404, and deletes nothing
        other = hits(client.get("/api/search", params={"q": "hockey playoff goalie", "k": 1}))[0]
        assert client.delete(f"/api/documents/{other['id']}", headers=auth).json()["deleted"] == 1
        assert "no document" in error(client.delete(f"/api/documents/{first['external_id']}", headers=auth), 404)
        assert client.get("/api/info").json()["documents"] == 798
    assert Database(writable_db).count_documents() == 798


def test_another_process_writes_are_seen_without_a_restart_and_reads_never_fail(writable_db, test_posts):
    new = [Document(external_id=f"test/{i}", text=post["text"], label=post["label"]) for i, post in enumerate(test_posts[:120])]
    failures, answered = [], 0
    with client_for(writable_db, poll_seconds=0.2) as client:
        before = client.get("/api/info").json()["documents"]
        done = threading.Event()

        def write():
            add_documents(str(writable_db), new, batch_size=40)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        while not done.is_set():
            response = client.get("/api/search", params={"q": "space shuttle launch", "k": 10})
            answered += 1
            if response.status_code != 200:
                failures.append(response.text)
        writer.join()
        deadline = time.monotonic() + 10
        last = new[-1].external_id
        while time.monotonic() < deadline:
            code = client.get("/api/encode", params={"q": new[-1].text}).json()["code"]
            if last in [hit["external_id"] for hit in hits(client.get("/api/search", params={"code": code, "k": 950}))]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server never saw the documents another process added")
        assert client.get("/api/info").json()["documents"] == before + 120 or before == 800
    assert failures == [] and answered > 0


# ----------------------------------------------------------------------------- images
def test_image_search_by_upload_similar_and_pixels(indexed_photos):
    from PIL import Image

    db, photos = indexed_photos
    with client_for(db, poll_seconds=0, max_upload_bytes=2**20) as client:
        assert client.get("/api/health").json()["collection"] == "image"
        upload = (photos / "red" / "000.png").read_bytes()
        found = hits(client.post("/api/images/search", params={"k": 5}, content=upload,
                                 headers={"Content-Type": "image/png"}))
        assert [hit["label"] for hit in found].count("red") >= 4
        printed = json.loads(run("images", "search", photos / "red" / "000.png", "--db", db, "-k", 5, "--json"))
        assert found == printed
        for mode in ("address", "cells"):
            assert len(hits(client.post("/api/images/search", params={"k": 5, "mode": mode}, content=upload))) == 5
        similar = hits(client.get(f"/api/images/similar/{found[0]['external_id']}", params={"k": 3}))
        assert len(similar) == 3 and found[0]["id"] not in [hit["id"] for hit in similar]
        png = client.get(f"/api/images/{found[0]['id']}.png", params={"scale": 3})
        assert png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (96, 96)
        # bad uploads
        assert "not a PNG or JPEG" in error(client.post("/api/images/search", content=b"not an image"), 400)
        assert "request body" in error(client.post("/api/images/search"), 400)
        assert "over 1 MiB" in error(client.post("/api/images/search", content=b"x" * (2**20 + 1)), 413)
        assert "collection of images" in error(client.get("/api/search", params={"q": "red"}), 400)
        assert "no 2-D map model" in error(client.get("/api/map"), 404)


# ----------------------------------------------------------------------------- the command
def test_semhash_serve_runs_uvicorn_on_loopback(indexed_news, tmp_path):
    shutil.copy(indexed_news, tmp_path / "news.db")
    with semhash_server(tmp_path / "news.db") as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/api/search?q=space+shuttle+launch&k=3") as response:
            assert len(json.load(response)["hits"]) == 3


def test_semhash_serve_refuses_a_missing_database(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "missing.db")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: no database at {tmp_path / 'missing.db'}"
    assert not (tmp_path / "missing.db").exists()
