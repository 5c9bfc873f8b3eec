"""Writers of one database wait for each other; an interrupted run's leftovers are cleaned up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from semhash.index.database import Database
from semhash.index.locks import LockTimeout, building_path, database_file, lock_path, writer_lock
from tests.conftest import write_topic_posts

HOLD = textwrap.dedent("""
    import sys, time
    from semhash.index.locks import writer_lock
    with writer_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold_lock(database: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(database), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_waits_then_proceeds_or_times_out_clearly(tmp_path):
    database = tmp_path / "news.db"
    holder = _hold_lock(database, 1.5)
    try:
        with pytest.raises(LockTimeout, match=r"another semhash command has been writing to .*news\.db"):
            with writer_lock(database, timeout=0.3):
                pass
        started = time.monotonic()
        with writer_lock(database, timeout=30):
            waited = time.monotonic() - started
        assert waited > 0.5  # it waited for the holder instead of failing
    finally:
        holder.wait(timeout=30)
    with writer_lock(database), writer_lock(database):  # re-entrant within one process
        pass


def test_leftovers_of_an_interrupted_index_are_removed_when_nobody_writes(tmp_path):
    database = tmp_path / "news.db"
    Database(database).close()
    leftovers = [building_path(database), building_path(database).with_name(building_path(database).name + "-journal")]
    for path in leftovers:
        path.write_bytes(b"half written")
    holder = _hold_lock(database, 30)
    try:  # a run still building: its files are not leftovers
        Database(database, create=False).close()
        assert all(path.exists() for path in leftovers)
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(RuntimeWarning, match="left by an interrupted run"):
        Database(database, create=False).close()
    assert not any(path.exists() for path in leftovers)
    assert database.exists() and lock_path(database).exists()


def test_database_file_of_paths_and_urls(tmp_path):
    assert database_file(tmp_path / "a.db") == tmp_path / "a.db"
    assert database_file(f"sqlite:///{tmp_path}/b.db") == tmp_path / "b.db"
    assert database_file("sqlite://") is None
    assert database_file("postgresql+psycopg://user@127.0.0.1/semhash") is None


ADD = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore")
    from semhash.pipelines.indexing import add_documents
    print(add_documents(sys.argv[1], sys.argv[2], batch_size=5)["added"])
""")


@pytest.mark.slow
def test_two_concurrent_adds_both_finish(tmp_path):
    from semhash.pipelines.indexing import index_corpus

    database = tmp_path / "posts.db"
    fit = dict(hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1)
    index_corpus(write_topic_posts(tmp_path / "base.jsonl", "base", 40, seed=0, words=10), database, n_bits=8, address_bits=4, map_dims=0,
                 vocabulary_size=30, hasher_params=fit)
    sources = [write_topic_posts(tmp_path / f"more{i}.jsonl", f"more{i}", 60, seed=i + 1, words=10) for i in range(2)]
    runs = [subprocess.Popen([sys.executable, "-c", ADD, str(database), str(source)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for source in sources]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sorted(int(out.strip()) for out, _ in outputs) == [60, 60]
    with Database(database, create=False) as db:
        assert db.count_documents() == 160
        assert db.documents_without_codes(db.get_model("hasher").id) == []
