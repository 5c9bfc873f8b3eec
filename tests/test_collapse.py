"""Codes that lose their spread are detected, corrected, and reported (issue 18).

The end-to-end tests reproduce the collapse found on OHSUMED (every training abstract got
the same code): with the dead-layer correction switched off, today's defaults collapse
there and ``fit`` warns; with it, the same fit keeps its spread.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import semhash.estimator as estimator
from semhash.codes import code_spread
from semhash.estimator import DOCUMENT_PAIR_WEIGHT, SHORT_DOCUMENT_PAIR_WEIGHT, CodeCollapseWarning, dead_unit_share
from semhash.neighbours import lsa_neighbours, tfidf_neighbours
from semhash.hasher import SemanticHasher
from semhash.topic_map import TopicMap
from semhash.rbm import RBM

OHSUMED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohsumed-single-23.tar.gz"


def test_code_spread_of_constant_and_varied_codes():
    constant = code_spread(np.zeros((50, 16), bool))
    assert (constant.distinct, constant.live_bits, constant.collapsed) == (1, 0, True)
    rng = np.random.default_rng(0)
    varied = code_spread(rng.random((500, 16)) > 0.5)
    assert varied.live_bits == 16 and not varied.collapsed
    # A few topics may rightly get a few codes: not a collapse while the bits vary.
    four = code_spread(np.repeat(np.eye(4, 16, dtype=bool) | np.eye(4, 16, 4, dtype=bool)
                                 | np.eye(4, 16, 8, dtype=bool) | np.eye(4, 16, 12, dtype=bool), 25, axis=0))
    assert four.distinct == 4 and four.live_bits == 16 and not four.collapsed
    # Two codes for a whole collection is.
    two = code_spread(np.repeat(np.array([[0] * 16, [1] * 16], bool), 50, axis=0))
    assert two.collapsed
    assert "2 distinct codes for 100 documents" in two.describe()


def test_dead_unit_share_sees_units_pinned_off():
    rbm = RBM(8, n_epochs=0).fit(np.random.default_rng(0).random((40, 5)).astype(np.float32))
    assert dead_unit_share(rbm, np.random.default_rng(1).random((40, 5)).astype(np.float32)) == 1.0  # weights ~0.01
    rbm.weights_ = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert dead_unit_share(rbm, np.random.default_rng(1).random((40, 5)).astype(np.float32)) == 0.0
    rbm.hidden_bias_[:6] = -30.0  # six of eight units can never turn on
    assert dead_unit_share(rbm, np.random.default_rng(1).random((40, 5)).astype(np.float32)) == 0.75


def test_dead_unit_share_sees_units_that_are_off_but_flicker():
    # What a 2,000-post collection's second layer looked like at one seed (std ~0.01,
    # mean activity ~0.001): it passed the old check and every code came out the same.
    rbm = RBM(8, n_epochs=0).fit(np.random.default_rng(0).random((40, 5)).astype(np.float32))
    rbm.weights_ = torch.full((5, 8), 3.0)
    rbm.hidden_bias_[:] = -13.5
    data = np.random.default_rng(1).random((40, 5)).astype(np.float32)
    assert 0.01 < rbm.transform(data).std(axis=0).min() < 0.02
    assert dead_unit_share(rbm, data) == 1.0
    # as little spread near 0.5 is an undertrained unit, which fine-tuning still moves
    rbm.weights_ = torch.full((5, 8), 0.12)
    rbm.hidden_bias_[:] = -0.3
    assert 0.01 < rbm.transform(data).std(axis=0).min() < 0.05
    assert dead_unit_share(rbm, data) == 0.0
    # a linear unit (a map's top layer) has no 0 or 1 to sit at: a mean near 0 with that
    # spread, which a binary unit's test would call saturated, is alive
    rbm.set_params(hidden="linear")
    rbm.weights_ = torch.full((5, 8), 0.045)
    rbm.hidden_bias_[:] = -0.1
    activations = rbm.transform(data)
    assert abs(activations.mean(axis=0)).max() < 0.05 and 0.01 < activations.std(axis=0).min() < 0.05
    assert dead_unit_share(rbm, data) == 0.0


def test_long_documents_keep_their_input_scale(topic_corpus):
    counts, _ = topic_corpus
    long = sp.csr_matrix(counts * 1000.0, dtype=np.float32)  # log(1 + count) sums far above INPUT_TOTAL
    model = SemanticHasher(n_bits=8, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1).fit(long)
    assert float(model._encoder_input(long).sum(axis=1).mean()) > estimator.INPUT_TOTAL
    assert model.input_scale_ == 1.0


def test_short_documents_are_scaled_up_to_a_fixed_mean_total(topic_corpus):
    counts, _ = topic_corpus
    short = sp.csr_matrix(counts.multiply(counts > 3), dtype=np.float32)  # a few words per document
    short = short[np.diff(short.indptr) > 0]
    model = SemanticHasher(n_bits=8, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1).fit(short)
    total = float(model._encoder_input(short).sum(axis=1).mean())
    assert total == pytest.approx(estimator.INPUT_TOTAL, rel=1e-4)
    assert model.input_scale_ > 1.0
    again = SemanticHasher.from_bytes(model.to_bytes())
    assert again.input_scale_ == pytest.approx(model.input_scale_)
    np.testing.assert_array_equal(again.transform(short), model.transform(short))


def test_short_documents_get_lsa_neighbours(topic_corpus):
    counts, labels = topic_corpus
    long_model = SemanticHasher(n_bits=8, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1).fit(counts)
    assert long_model.neighbour_similarity_ == "tfidf"  # 20-60 distinct words a document
    titles = sp.csr_matrix(counts.multiply(counts > 2), dtype=np.float32)
    titles = titles[np.diff(titles.indptr) > 0]
    assert titles.nnz / titles.shape[0] < estimator.SHORT_DOCUMENT_WORDS
    short_model = SemanticHasher(n_bits=8, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1).fit(titles)
    assert short_model.neighbour_similarity_ == "lsa"
    with pytest.raises(ValueError, match="neighbour_similarity"):
        SemanticHasher(n_bits=8, neighbour_similarity="bm25").fit(counts)
    # LSA neighbours of a topic corpus are mostly of the same topic, like TF-IDF ones.
    for find in (lsa_neighbours, tfidf_neighbours):
        neighbours = find(counts, 5)
        assert neighbours.shape == (counts.shape[0], 5)
        assert not (neighbours == np.arange(counts.shape[0])[:, None]).any()
        assert (labels[neighbours] == labels[:, None]).mean() > 0.8


@pytest.fixture(scope="module")
def ohsumed_counts():
    if not OHSUMED.exists():
        pytest.skip(f"OHSUMED not found at {OHSUMED}")
    from semhash.pipelines.corpus import read_corpus
    from semhash.vectorize import WordCounter

    docs = read_corpus(OHSUMED, subdir="ohsumed-single-23/train")
    counts = WordCounter().fit_transform([d.text for d in docs])
    return sp.csr_matrix(counts, dtype=np.float32)[np.diff(counts.indptr) > 0]


def _fit(counts, **params):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SemanticHasher(n_bits=32, finetune_epochs=12, **params).fit(counts)
    return model, [w for w in caught if issubclass(w.category, CodeCollapseWarning)]


def test_ohsumed_collapse_is_reproduced_without_the_correction(ohsumed_counts, monkeypatch):
    monkeypatch.setattr(estimator, "DEAD_LAYER_SHARE", 1.01)  # no layer is ever found dead
    # The setting: raw log(1 + count) input (idf weighting of it alone avoids the collapse).
    model, caught = _fit(ohsumed_counts, idf_input=False)
    assert model.code_spread_.collapsed and model.code_spread_.distinct <= 2
    assert len(caught) == 1 and "the codes have collapsed" in str(caught[0].message)


def test_a_layer_that_stays_dead_is_left_at_random_weights(ohsumed_counts, monkeypatch):
    # No re-training allowed: the dead second layer goes straight to random weights, which
    # fine-tuning trains, and the same fit keeps its spread.
    monkeypatch.setattr(estimator, "DEAD_LAYER_RETRIES", 0)
    randomised, original = [], estimator._random_weights

    def record(rbm, generator):
        randomised.append(tuple(rbm.weights_.shape))
        original(rbm, generator)

    monkeypatch.setattr(estimator, "_random_weights", record)
    model, caught = _fit(ohsumed_counts, idf_input=False)
    assert randomised == [(500, 500)] and not caught
    assert not model.code_spread_.collapsed and model.code_spread_.distinct > 100


def test_ohsumed_keeps_its_spread_with_the_defaults(ohsumed_counts):
    model, caught = _fit(ohsumed_counts, verbose=True)
    assert not caught
    assert not model.code_spread_.collapsed
    assert model.code_spread_.distinct > 100 and model.code_spread_.live_bits >= 24


def test_pair_term_is_strongest_for_short_documents_and_off_for_maps(topic_corpus):
    counts, _ = topic_corpus
    titles = sp.csr_matrix(counts.multiply(counts > 2), dtype=np.float32)
    titles = titles[np.diff(titles.indptr) > 0]
    small = dict(n_bits=8, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1)
    assert SHORT_DOCUMENT_PAIR_WEIGHT > DOCUMENT_PAIR_WEIGHT > 0
    assert SemanticHasher(**small).fit(counts).pair_weight_ == DOCUMENT_PAIR_WEIGHT
    assert SemanticHasher(**small).fit(titles).pair_weight_ == SHORT_DOCUMENT_PAIR_WEIGHT
    tiny_map = dict(n_components=2, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1, tsne_epochs=1,
                    tsne_min_documents=0)
    assert TopicMap(**tiny_map).fit(counts).pair_weight_ == 0.0  # real-valued codes: no Hamming pairs
    assert SemanticHasher(**small, pair_weight=0.5).fit(counts).pair_weight_ == 0.5
    assert SemanticHasher(**small, neighbour_targets=0).fit(titles).pair_weight_ == 0.0  # no neighbours, no pairs
    with pytest.raises(ValueError, match="pair_weight"):
        SemanticHasher(**small, pair_weight="yes").fit(counts)


def test_idf_input_is_on_except_for_short_documents_and_saved_with_the_model(topic_corpus, tmp_path):
    counts, _ = topic_corpus
    titles = sp.csr_matrix(counts.multiply(counts > 2), dtype=np.float32)
    titles = titles[np.diff(titles.indptr) > 0]
    small = dict(n_bits=8, hidden_layers=(16,), pretrain_epochs=1, finetune_epochs=1)
    long_model = SemanticHasher(**small).fit(counts)
    assert long_model.idf_input_ is True and SemanticHasher(**small).fit(titles).idf_input_ is False
    assert SemanticHasher(**small, idf_input=False).fit(counts).idf_input_ is False
    # The resolved choice travels with the weights: a loaded model encodes as the fitted one.
    long_model.save(tmp_path / "m.model")
    loaded = SemanticHasher.load(tmp_path / "m.model")
    assert loaded.idf_input == "auto" and loaded.idf_input_ is True
    np.testing.assert_array_equal(loaded.transform(counts), long_model.transform(counts))
    with pytest.raises(ValueError, match="idf_input"):
        SemanticHasher(**small, idf_input="yes").fit(counts)


def test_pair_term_rewards_codes_near_their_neighbours():
    from semhash.autoencoder import DeepAutoencoder, _pair_loss

    torch.manual_seed(0)
    model = DeepAutoencoder([30, 20, 16])
    inputs = torch.rand(64, 30) * 3
    rows = np.arange(64)
    code = model.encode(inputs)
    loss = lambda neighbours: float(_pair_loss(model, code, rows, inputs, neighbours, 0.0, 0.0, 0.1, None))
    itself = np.arange(64)[:, None]  # every document its own neighbour: the mate is the code itself
    shuffled = np.random.default_rng(0).permutation(64)[:, None]
    assert loss(itself) < loss(shuffled)
