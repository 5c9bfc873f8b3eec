"""Encoding on Ray workers (``--ray``): a real local cluster of 2 CPUs, no mocks, gives the
codes of the single-process path bit for bit, for `index` and for `add`."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from semhash.cli import main
from semhash.pipelines.indexing import add_documents, index_corpus
from semhash.pipelines.streaming import ENCODE_BATCH
from tests.test_streaming import TINY_SETTINGS, collection, write_corpus

pytest.importorskip("ray", reason="Ray is not installed: pip install 'ray==2.60.0' to test encoding on Ray workers")

pytestmark = pytest.mark.slow


def test_ray_workers_give_the_codes_of_one_process(tmp_path, caplog):
    # Two full batches and a last one of fewer than 256 documents, which a model's first
    # layer takes another path for: the batches must be the same on both sides.
    corpus = write_corpus(tmp_path / "c.jsonl", 2 * ENCODE_BATCH + 150, seed=11, empty_every=450)
    here, there = tmp_path / "here.db", tmp_path / "there.db"
    index_corpus(corpus, here, train_sample=500, **TINY_SETTINGS)
    with caplog.at_level(logging.INFO, logger="semhash.pipelines.ray_encoding"):
        report = index_corpus(corpus, there, train_sample=500, ray="local", **TINY_SETTINGS)
    assert "encoding on 2 Ray workers (a local cluster)" in caplog.text
    assert report.documents == 2 * ENCODE_BATCH + 150 - (2 * ENCODE_BATCH + 150) // 450
    assert collection(here) == collection(there)

    more = tmp_path / "more.jsonl"
    more.write_text(write_corpus(tmp_path / "m.jsonl", 700, seed=12).read_text().replace('"doc-', '"more-'))
    add_documents(here, more, batch_size=300)  # batches of 300, 300 and 100 documents
    result = CliRunner().invoke(main, ["add", str(more), "--db", str(there), "--batch-size", "300", "--json",
                                       "--ray"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["added"] == 700
    assert collection(here) == collection(there)


def test_no_cluster_at_the_address_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    corpus = write_corpus(tmp_path / "c.jsonl", 50)
    index_corpus(corpus, tmp_path / "d.db", train_sample=50, **TINY_SETTINGS)
    result = CliRunner().invoke(main, ["add", str(corpus), "--db", str(tmp_path / "d.db"), "-q", "--ray", "auto"])
    assert result.exit_code == 1 and "cannot start or join the Ray cluster 'auto'" in result.output, result.output


class _SlowStartingRay:
    """Ray's own ``init`` and ``shutdown`` as a busy machine shows them: the first start of a
    local cluster times out (Ray waits a fixed 30 s for its processes to register)."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, []

    def init(self, **options) -> None:
        self.calls.append("init")
        if len(self.calls) <= 2 * self.failures:
            raise Exception("The current node timed out during startup. This could happen because ...")

    def shutdown(self) -> None:
        self.calls.append("shutdown")


def test_a_local_cluster_that_starts_too_slowly_is_started_once_more(caplog):
    from semhash.pipelines.ray_encoding import RayUnavailable, _init

    ray = _SlowStartingRay(failures=1)
    _init(ray, {"address": "local"}, retry=True)
    assert ray.calls == ["init", "shutdown", "init"] and "starting it again" in caplog.text
    with pytest.raises(RayUnavailable, match="cannot start or join the Ray cluster 'local': The current node timed out"):
        _init(_SlowStartingRay(failures=2), {"address": "local"}, retry=True)
    joined = _SlowStartingRay(failures=1)  # an existing cluster is not started here: no second try
    with pytest.raises(RayUnavailable):
        _init(joined, {"address": "auto"}, retry=False)
    assert joined.calls == ["init", "shutdown"]
