"""benchmarks/_common.py, the benchmarks' shared plumbing: corpus counts and their cache,
the fitted-model cache, and the result writer."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.conftest import REPO, TOPIC_WORDS, topic_counts

# As the scripts do when run from benchmarks/ (appended: no benchmark shadows a module).
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))
import _common  # noqa: E402

TINY = dict(hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=2)


def test_arrays_round_trip_with_sparse_matrices_and_scalars(tmp_path):
    counts = sp.csr_matrix(np.array([[0, 2, 0], [1, 0, 3]], dtype=np.float32))
    path = tmp_path / "x.npz"
    _common.save_arrays(path, {"train": counts, "labels": np.array(["a", "b"]), "n_words": 3, "dropped": [1, 0]})
    out = _common.load_arrays(path)
    assert sorted(out) == ["dropped", "labels", "n_words", "train"]
    assert (out["train"] != counts).nnz == 0 and out["train"].dtype == np.float32
    assert out["labels"].tolist() == ["a", "b"] and out["dropped"].tolist() == [1, 0]
    assert out["n_words"] == 3 and isinstance(out["n_words"], int)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no partial file left


def test_count_words_fits_on_the_first_split_and_drops_texts_without_a_word():
    # A word must be in two texts to be kept ("goal" is not).
    texts = {"train": ["orbit shuttle orbit", "orbit puck goal", "puck shuttle", "the of and"],
             "test": ["orbit puck", "unknown goal"]}
    counter, counts, kept = _common.count_words(texts, 10)
    assert sorted(counter.words_) == ["orbit", "puck", "shuttle"]
    assert kept["train"].tolist() == [0, 1, 2] and kept["test"].tolist() == [0]
    assert counts["train"].shape == (3, 3) and counts["train"].dtype == np.float32
    assert counts["train"].sum() == 7 and counts["test"].sum() == 2
    # A fitted counter counts the same, and is not refit.
    _, again, kept_again = _common.count_words(texts, counter)
    assert all((again[s] != counts[s]).nnz == 0 for s in texts)
    assert all(kept_again[s].tolist() == kept[s].tolist() for s in texts)


def _newsgroups_folder(root):
    """A tiny corpus laid out as 20 Newsgroups: <split>/<group>/<post>."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for group, words in TOPIC_WORDS.items():
            folder = root / f"20news-bydate-{split}" / group
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / str(i)).write_text(" ".join(rng.choice(words.split(), 8)))
        (root / f"20news-bydate-{split}" / "space" / "empty").write_text("the and of")
    return root


def test_newsgroups_counts_are_the_same_from_the_cache(tmp_path):
    data = _newsgroups_folder(tmp_path / "news")
    fresh = _common.newsgroups_counts(50, False, tmp_path / "cache", data)
    assert fresh["dropped"] == [1, 1] and fresh["train"].shape[0] == 24 and fresh["test"].shape[0] == 12
    assert fresh["label_names"] == sorted(TOPIC_WORDS)
    cached = _common.newsgroups_counts(50, False, tmp_path / "cache", data)
    assert list(tmp_path.joinpath("cache").iterdir())[0].name == "counts-v50.npz"
    for split in ("train", "test"):
        assert (cached[split] != fresh[split]).nnz == 0
        np.testing.assert_array_equal(cached[f"{split}_labels"], fresh[f"{split}_labels"])
    assert (cached["label_names"], cached["dropped"], cached["n_words"]) == (
        fresh["label_names"], fresh["dropped"], fresh["n_words"])
    json.dumps({k: cached[k] for k in ("label_names", "dropped", "n_words")})  # plain Python values


def test_fit_or_load_keys_a_model_by_its_settings_and_rows(tmp_path):
    from semhash import SemanticHasher

    torch.set_num_threads(1)
    counts, _ = topic_counts(n_docs=120, n_words=40, seed=3)
    first, seconds, cached = _common.fit_or_load(SemanticHasher(n_bits=8, **TINY), counts, tmp_path)
    assert not cached and seconds == first.fit_seconds_ > 0
    again, _, cached = _common.fit_or_load(SemanticHasher(n_bits=8, **TINY), counts, tmp_path)
    assert cached and again.finetune_history_ == first.finetune_history_
    np.testing.assert_array_equal(again.transform(counts), first.transform(counts))
    assert not _common.fit_or_load(SemanticHasher(n_bits=8, **TINY, random_state=1), counts, tmp_path)[2]
    assert not _common.fit_or_load(SemanticHasher(n_bits=8, **TINY), counts[1:], tmp_path)[2]
    _, _, cached = _common.fit_or_load(SemanticHasher(n_bits=8, **TINY), counts, None)
    assert not cached  # no folder: always fit


def test_results_carry_the_environment(tmp_path):
    paths = _common.write_results(tmp_path / "out", "bench.quick", {"figure": 0.5}, "# Bench\n\n| a |\n")
    saved = json.loads(paths["json"].read_text())
    assert saved["figure"] == 0.5 and {"platform", "cpu_count", "date"} <= saved["environment"].keys()
    markdown = paths["md"].read_text().splitlines()
    assert markdown[:3] == ["# Bench", "", "| a |"] and markdown[-1].startswith("Environment: ")
    assert f"{saved['environment']['cpu_count']} cores" in markdown[-1]


@pytest.mark.parametrize("value, expected", [("none", None), ("NONE", None), ("/tmp/x", "/tmp/x")])
def test_cache_folders_can_be_turned_off(value, expected):
    out = _common.folder_or_none(value)
    assert (out if out is None else str(out)) == expected


def test_scale_update_replaces_the_rows_measured_again_and_says_so():
    import scale

    search = lambda p50: {"exhaustive": {"p50_ms": p50, "precision_at_100": 0.4, "first_query_s": 0.0, "p99_ms": p50}}
    earlier = {"sizes": [100, 1000, 10000], "index": {"sqlite 1000": {"wall_s": 9}, "ray 1000": {"wall_s": 8}},
               "search": {"sqlite 1000": search(7.0), "milvus 1000": search(20.0), "milvus 10000": search(30.0),
                          "postgres 1000": search(11.0)}}
    run = {"index": {"sqlite 1000": {"wall_s": 4}},
           "search": {"sqlite 1000": search(5.0), "milvus 1000": search(5.4), "sqlite 10000": search(28.0),
                      "milvus 10000": {"not_measured": "stopped"}}}
    earlier["updates"] = [{"rows": ["search milvus 10000", "search postgres 1000"], "date": "d0", "code": {}}]
    measured_now = {"search milvus 1000", "search milvus 10000", "search sqlite 1000", "search sqlite 10000"}
    result, sizes, middle = scale.updated(earlier, run, ["sqlite", "milvus"], measured_now)
    assert (sizes, middle) == ([100, 1000, 10000], 1000)
    # Milvus's rows, and the search row of the SQLite collection it measured (the same codes)
    assert result["search"]["milvus 1000"] == run["search"]["milvus 1000"]
    assert result["search"]["sqlite 1000"] == run["search"]["sqlite 1000"]
    assert result["search"]["milvus 10000"] == {"not_measured": "stopped"}
    # not the SQLite rows of a size Milvus did not measure, nor index rows, nor other backends
    assert "sqlite 10000" not in result["search"]
    assert result["index"] == {"sqlite 1000": {"wall_s": 9}, "ray 1000": {"wall_s": 8}}
    assert result["search"]["postgres 1000"]["exhaustive"]["p50_ms"] == 11.0
    # the rows measured now are listed as such, and no longer under an earlier update
    before, update = result["updates"]
    assert before == {"rows": ["search postgres 1000"], "date": "d0", "code": {}}
    assert update["rows"] == ["search milvus 1000", "search milvus 10000", "search sqlite 1000"]
    assert update["date"] and "commit" in update["code"]
    # rows read back from the work folder, not measured again, are not listed
    result, _, _ = scale.updated(result, run, ["sqlite", "milvus"], {"search milvus 10000"})
    assert [u["rows"] for u in result["updates"]] == [["search postgres 1000"], ["search milvus 1000", "search sqlite 1000"],
                                                      ["search milvus 10000"]]


def test_representations_smoothing_pulls_each_vector_towards_its_neighbours():
    import representations

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 8))
    vectors = np.repeat(centres, 20, axis=0) + 0.8 * rng.normal(size=(40, 8))
    out = representations.smoothed(vectors, k=5, steps=3)
    assert out.shape == vectors.shape and np.allclose(np.linalg.norm(out, axis=1), 1.0)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    spread = lambda v: np.mean([np.linalg.norm(v[i * 20:(i + 1) * 20] - unit(v[i * 20:(i + 1) * 20]).mean(0), axis=1).mean()
                                for i in range(2)])
    assert spread(out) < spread(unit(vectors))  # each group tighter around its mean
