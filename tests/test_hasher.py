import io
import json

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from semhash import ModelFormatError, SemanticHasher, TopicMap
from semhash.codes import hamming_distances
from tests.conftest import topic_counts

SMALL = dict(hidden_layers=(32,), finetune_epochs=60, patience=100, neighbour_targets=0)


@pytest.fixture(scope="module")
def fitted(topic_corpus):
    counts, _ = topic_corpus
    return SemanticHasher(n_bits=8, **SMALL).fit(counts)


def test_codes_are_packed_and_keep_topics_apart(fitted, topic_corpus):
    counts, labels = topic_corpus
    codes = fitted.transform(counts)
    assert codes.shape == (counts.shape[0], 1) and codes.dtype == np.uint8
    distances = hamming_distances(codes, codes)
    same = labels[:, None] == labels[None, :]
    assert distances[same].mean() < 1.0 < 3.0 < distances[~same].mean()


def test_noise_in_the_code_layer_drives_codes_binary(topic_corpus, fitted):
    counts, _ = topic_corpus
    clean = SemanticHasher(n_bits=8, code_noise=0.0, **SMALL).fit(counts)

    def distance_from_binary(model):
        activities = model.transform_real(counts)
        return float(np.minimum(activities, 1 - activities).mean())

    # With noise the code units sit at 0 or 1, so thresholding them loses little.
    assert distance_from_binary(fitted) < 0.01
    assert distance_from_binary(fitted) < 0.4 * distance_from_binary(clean)


@pytest.mark.parametrize("n_bits", [32, 64])
def test_other_code_lengths(topic_corpus, n_bits):
    counts, _ = topic_corpus
    hasher = SemanticHasher(n_bits=n_bits, hidden_layers=(16,), finetune_epochs=2, pretrain_epochs=1).fit(counts)
    assert hasher.transform(counts[:3]).shape == (3, n_bits // 8)
    assert hasher.layer_sizes == [counts.shape[1], 16, n_bits]


def test_same_seed_gives_the_same_codes(topic_corpus):
    counts, _ = topic_corpus
    params = dict(n_bits=16, hidden_layers=(16,), finetune_epochs=3, pretrain_epochs=2)
    a = SemanticHasher(random_state=3, **params).fit(counts).transform(counts)
    b = SemanticHasher(random_state=3, **params).fit(counts).transform(counts)
    assert np.array_equal(a, b)


def test_save_load_round_trip(tmp_path, fitted, topic_corpus):
    counts, _ = topic_corpus
    path = tmp_path / "model.pt"
    fitted.save(path)
    loaded = SemanticHasher.load(path)
    assert np.array_equal(loaded.transform(counts), fitted.transform(counts))
    assert loaded.get_params() == fitted.get_params() | {"verbose": False}
    assert type(loaded).__name__ == "SemanticHasher" and loaded.packed
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


def test_incompatible_or_foreign_files_are_refused(tmp_path, fitted):
    payload = torch.load(io.BytesIO(fitted.to_bytes()), weights_only=True)
    payload["version"] = 99
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(ModelFormatError, match="version 99"):
        SemanticHasher.from_bytes(buffer.getvalue())
    with pytest.raises(ModelFormatError, match="not a semhash model"):
        SemanticHasher.from_bytes(b"definitely not a model")
    with pytest.raises(ModelFormatError, match="holds a SemanticHasher, not a TopicMap"):
        TopicMap.from_bytes(fitted.to_bytes())
    with pytest.raises(FileNotFoundError, match="no model file"):
        SemanticHasher.load(tmp_path / "missing.pt")
    payload = torch.load(io.BytesIO(fitted.to_bytes()), weights_only=True)
    config = json.loads(payload["config"])
    config["params"]["from_the_future"] = 1
    payload["config"] = json.dumps(config)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(ModelFormatError, match="parameters this semhash does not know \\(from_the_future\\)"):
        SemanticHasher.from_bytes(buffer.getvalue())


def test_bad_inputs_are_named(fitted, topic_corpus):
    counts, _ = topic_corpus
    with pytest.raises(ValueError, match="X has 50 features, but SemanticHasher is expecting 120 features"):
        fitted.transform(np.zeros((2, 50), np.float32))
    with pytest.raises(ValueError, match="Negative values in data passed to SemanticHasher"):
        fitted.transform(-counts[:2].toarray())
    with pytest.raises(NotFittedError, match="not fitted"):
        SemanticHasher().transform(counts)
    with pytest.raises(ValueError, match="n_bits must be a positive integer"):
        SemanticHasher(n_bits=0).fit(counts)
    with pytest.raises(ValueError, match="tol must be a number in \\[0, 1\\), got -0.1"):
        SemanticHasher(tol=-0.1).fit(counts)
    with pytest.raises(ValueError, match="learning_rate_drops must be a non-negative integer, got 1.5"):
        SemanticHasher(learning_rate_drops=1.5).fit(counts)
    # An empty query row is encodable (it just gets the code of "no evidence").
    assert fitted.transform(np.zeros((1, 120), np.float32)).shape == (1, 1)


def test_progress_is_shown_and_can_be_silenced(topic_corpus, capsys):
    counts, _ = topic_corpus
    # pair_weight=0: with the pair term, one epoch of this tiny network leaves collapsed
    # codes, and the warning saying so (rightly printed when quiet) is not progress.
    params = dict(n_bits=8, hidden_layers=(8,), finetune_epochs=1, pretrain_epochs=1, pair_weight=0)
    SemanticHasher(verbose=True, **params).fit(counts)
    err = capsys.readouterr().err
    assert "pretraining layer 1/2" in err and "epoch   1/1" in err and "train loss" in err
    SemanticHasher(verbose=False, **params).fit(counts)
    assert capsys.readouterr().err == ""


def test_neighbour_targets_train(topic_corpus):
    counts, labels = topic_corpus
    hasher = SemanticHasher(n_bits=8, **(SMALL | {"neighbour_targets": 5})).fit(counts)
    distances = hamming_distances(hasher.transform(counts), hasher.transform(counts))
    same = labels[:, None] == labels[None, :]
    assert distances[same].mean() < distances[~same].mean()


def test_topic_map_gives_real_2d_codes_that_separate_topics(topic_corpus):
    from sklearn.neighbors import KNeighborsClassifier

    counts, labels = topic_corpus
    held_out, held_out_labels = topic_counts(n_docs=200, seed=1)
    topic_map = TopicMap(hidden_layers=(32, 16), finetune_epochs=30, patience=100, neighbour_targets=0).fit(counts)
    points = topic_map.transform(counts)
    assert points.shape == (counts.shape[0], 2) and points.dtype == np.float32
    # New documents placed on the map land among their topic: 10-NN accuracy, chance 0.25.
    knn = KNeighborsClassifier(10).fit(points, labels)
    assert knn.score(topic_map.transform(held_out), held_out_labels) > 0.55
    # One document alone gets the same code as in a batch.
    assert np.allclose(topic_map.transform(counts[7]), points[7:8], atol=1e-5)

