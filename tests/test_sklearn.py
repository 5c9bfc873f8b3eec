"""The estimators follow scikit-learn's conventions: its estimator checks, cloning and
parameters, pipelines and grid search, raw-text input and unpacked bits; and model files
saved before these conventions still load and give the same codes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

from semhash import RBM, SemanticHasher, TextHasher, TopicMap
from semhash.estimator import DeepCodeModel
from semhash.hasher import hamming_precision_scorer
from semhash.image_hasher import ImageHasher
from semhash.image_map import ImageMap
from semhash.vectorize import WordCounter
from tests.conftest import TOPIC_WORDS, topic_counts

DATA = Path(__file__).parent / "data"
TINY = dict(hidden_layers=(4,), pretrain_epochs=1, finetune_epochs=1)
SMALL = dict(hidden_layers=(16,), pretrain_epochs=2, finetune_epochs=10, neighbour_targets=0)


def _expected_failed_checks(estimator) -> dict[str, str]:
    # Declared by the estimator itself, each with its reason.
    return getattr(estimator, "_expected_failed_checks", dict)()


@parametrize_with_checks(
    [
        SemanticHasher(8, **TINY),
        SemanticHasher(8, packed=False, **TINY),
        TopicMap(tsne_epochs=1, tsne_min_documents=0, **TINY),
        TopicMap(objective="reconstruction", **TINY),
        ImageHasher(8, **TINY),
        ImageMap(tsne_epochs=1, **TINY),
        RBM(4, n_epochs=2),
        RBM(4, visible="poisson", n_epochs=2),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_scikit_learn_estimator_checks(estimator, check):
    torch.set_num_threads(1)
    check(estimator)


def test_image_models_declare_why_checks_fail():
    for model in (ImageHasher(), ImageMap()):
        reasons = set(_expected_failed_checks(model).values())
        assert reasons == {"an image model needs exactly 3072 features (32x32 RGB pixels)"}
    # The word-count models and the RBM pass every check.
    assert _expected_failed_checks(SemanticHasher()) == _expected_failed_checks(TopicMap()) == {}


@pytest.mark.parametrize("estimator", [TextHasher(), WordCounter()])
def test_text_estimators_are_not_skipped_silently(estimator):
    """scikit-learn's checks are written for 2-D numbers; for text input (as for its own
    CountVectorizer) it says it cannot run them. The API is tested below instead."""
    tags = estimator.__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    with pytest.warns(Warning, match="Can't test estimator"):
        check_estimator(estimator)


# Today's defaults, as the classes had them before they listed their parameters.
DEFAULTS = {
    "SemanticHasher": dict(
        n_bits=128, hidden_layers=(500, 500), pretrain_epochs=5, pretrain_learning_rate=0.5, finetune_epochs=100,
        finetune_learning_rate=0.003, code_noise=4.0, neighbour_targets=10, idf_target=True, idf_input="auto",
        input_dropout=0.5, tol=0.005, learning_rate_drops=1, pair_temperature=0.2),
    "TopicMap": dict(
        n_components=2, hidden_layers=(500, 250, 125), pretrain_epochs=5, pretrain_learning_rate=0.1,
        finetune_epochs=50, finetune_learning_rate=0.003, code_noise=0.0, neighbour_targets=10, idf_target=False, idf_input="auto",
        input_dropout=0.0, objective="tsne", perplexity=30.0, tsne_epochs=40, tsne_min_documents=400_000, tsne_input_dropout=0.5, tol=0.0, learning_rate_drops=0, pair_temperature=0.1),
    "ImageHasher": dict(
        n_bits=256, hidden_layers=(1024, 512), pretrain_epochs=10, pretrain_learning_rate=0.1, finetune_epochs=30,
        finetune_learning_rate=0.001, code_noise=4.0, neighbour_targets=0, idf_target=False, idf_input=False,
        input_dropout=0.0, gaussian_learning_rate=0.002, tol=0.0, learning_rate_drops=0, pair_temperature=0.1),
    "ImageMap": dict(
        n_components=2, hidden_layers=(512, 128), pretrain_epochs=10, pretrain_learning_rate=0.1, finetune_epochs=30,
        finetune_learning_rate=0.001, code_noise=0.0, neighbour_targets=0, idf_target=False, idf_input=False,
        input_dropout=0.0, objective="tsne", perplexity=30.0, tsne_epochs=30, tsne_min_documents=0, tsne_input_dropout=0.2,
        gaussian_learning_rate=0.002,
        n_pca=50, tol=0.0, learning_rate_drops=0, pair_temperature=0.1),
}
SHARED = dict(batch_size="auto", neighbour_weight=0.5, neighbour_similarity="auto",
              pair_weight="auto", validation_fraction=0.1, patience=5, random_state=0,
              verbose=False)


@pytest.mark.parametrize("cls", [SemanticHasher, TopicMap, ImageHasher, ImageMap])
def test_each_class_keeps_its_defaults_and_lists_its_parameters(cls):
    expected = SHARED | DEFAULTS[cls.__name__] | ({"packed": True} if "n_bits" in DEFAULTS[cls.__name__] else {})
    assert cls().get_params() == expected


def test_text_hasher_has_the_hashers_and_the_counters_parameters():
    params = TextHasher().get_params()
    assert params == SemanticHasher().get_params() | WordCounter().get_params()


def test_parameters_are_the_attributes_as_set():
    hasher = SemanticHasher(n_bits=64)
    hasher.n_bits = 32
    assert hasher.get_params()["n_bits"] == 32
    assert clone(hasher).n_bits == 32
    assert hasher.set_params(hidden_layers=(8,), packed=False) is hasher
    assert hasher.get_params(deep=False)["hidden_layers"] == (8,) and hasher.packed is False
    with pytest.raises(ValueError, match="Invalid parameter 'n_components'"):
        hasher.set_params(n_components=2)


def test_fit_sets_no_public_parameter(topic_corpus):
    counts, _ = topic_corpus
    topic_map = TopicMap(objective="reconstruction", **TINY)
    before = dict(vars(topic_map))
    topic_map.fit(counts)
    added = set(vars(topic_map)) - set(before)
    assert all(name.endswith("_") or name.startswith("_") for name in added)
    assert {k: v for k, v in vars(topic_map).items() if k in before} == before
    assert topic_map.code_size == topic_map.n_components == 2  # the code width, read-only


@pytest.mark.parametrize("model", [SemanticHasher(), TopicMap(), ImageHasher(), ImageMap(), RBM(), TextHasher()])
def test_unfitted_models_raise_not_fitted(model):
    X = ["some text"] if isinstance(model, TextHasher) else np.ones((2, 3072), np.float32)
    with pytest.raises(NotFittedError):
        model.transform(X)


def test_inputs_are_validated_as_scikit_learn_does(topic_corpus):
    counts, _ = topic_corpus
    hasher = SemanticHasher(8, **TINY).fit(counts)
    dense = counts.toarray()
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        hasher.transform(dense[0])
    with pytest.raises(ValueError, match="Complex data not supported"):
        hasher.transform(dense[:2] + 0j)
    for bad in (np.nan, np.inf):
        broken = dense[:2].copy()
        broken[0, 0] = bad
        with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
            hasher.transform(broken)
    with pytest.raises(ValueError, match="X has 50 features, but SemanticHasher is expecting 120 features"):
        hasher.transform(dense[:2, :50])
    with pytest.raises(ValueError, match="Negative values in data passed to SemanticHasher"):
        hasher.transform(-dense[:2])
    # Sparse formats other than CSR are converted; the codes are the same.
    assert np.array_equal(hasher.transform(sp.csc_matrix(counts)), hasher.transform(counts))


def test_documents_without_words_are_left_out_of_the_fit(topic_corpus):
    counts, _ = topic_corpus
    with_empty = sp.vstack([counts[:100], sp.csr_matrix((3, counts.shape[1])), counts[100:]]).tocsr()
    a = SemanticHasher(8, **TINY).fit(counts)
    b = SemanticHasher(8, **TINY).fit(with_empty)
    assert np.array_equal(a.transform(counts), b.transform(counts))
    with pytest.raises(ValueError, match="none of the 3 documents has a word"):
        SemanticHasher(8, **TINY).fit(sp.csr_matrix((3, 10)))


def _texts(n=160, seed=0):
    rng = np.random.default_rng(seed)
    topics = list(TOPIC_WORDS.values())
    labels = rng.integers(0, len(topics), n)
    texts = [" ".join(rng.choice(topics[label].split(), 12)) for label in labels]
    return texts, labels


def test_count_vectorizer_pipeline_gives_the_hashers_codes():
    texts, _ = _texts()
    pipeline = make_pipeline(CountVectorizer(), SemanticHasher(16, **SMALL)).fit(texts)
    counts = CountVectorizer().fit_transform(texts)
    assert counts.dtype == np.int64  # what CountVectorizer gives, accepted as counts
    direct = SemanticHasher(16, **SMALL).fit(counts)
    assert np.array_equal(pipeline.transform(texts), direct.transform(counts))
    assert pipeline.transform(texts).shape == (len(texts), 2)


def test_text_hasher_reads_raw_text_and_saves_its_vocabulary(tmp_path):
    texts, labels = _texts()
    hasher = TextHasher(16, max_words=30, **SMALL).fit(texts)
    counter = WordCounter(max_words=30).fit(texts)
    assert hasher.vectorizer_.words_ == counter.words_
    same = SemanticHasher(16, **SMALL).fit(counter.transform(texts))
    codes = hasher.transform(texts)
    assert codes.shape == (len(texts), 2) and codes.dtype == np.uint8
    assert np.array_equal(codes, same.transform(counter.transform(texts)))
    assert hasher.transform(["no word of the vocabulary"]).shape == (1, 2)
    hasher.save(tmp_path / "text.model")
    loaded = DeepCodeModel.load(tmp_path / "text.model")
    assert type(loaded) is TextHasher and loaded.get_params() == hasher.get_params()
    assert np.array_equal(loaded.transform(texts), codes)
    with pytest.raises(ValueError, match="single string"):
        hasher.transform("one text")


def test_unpacked_bits_feed_a_downstream_estimator():
    texts, labels = _texts()
    packed = TextHasher(16, max_words=30, **SMALL).fit(texts)
    bits = clone(packed).set_params(packed=False).fit(texts).transform(texts)
    assert bits.shape == (len(texts), 16) and bits.dtype == np.uint8 and set(np.unique(bits)) <= {0, 1}
    assert np.array_equal(np.packbits(bits, axis=1), packed.transform(texts))
    classifier = make_pipeline(TextHasher(16, max_words=30, packed=False, **SMALL), LogisticRegression())
    assert classifier.fit(texts, labels).score(texts, labels) > 0.5  # chance is 0.25


def test_grid_search_with_a_retrieval_scorer():
    counts, labels = topic_counts(n_docs=240, seed=2)
    search = GridSearchCV(
        SemanticHasher(8, **SMALL),
        {"n_bits": [8, 16], "code_noise": [0.0, 4.0]},
        scoring=hamming_precision_scorer(k=10),
        cv=2,
    ).fit(counts, labels)
    scores = search.cv_results_["mean_test_score"]
    assert scores.shape == (4,) and ((0 <= scores) & (scores <= 1)).all()
    assert search.best_score_ > 0.5  # chance is 0.25
    assert search.best_estimator_.n_bits in (8, 16)
    # The scorer reads unpacked bits too, to the same score.
    scorer = hamming_precision_scorer(k=10)
    model = search.best_estimator_
    unpacked = clone(model).set_params(packed=False).fit(counts)
    assert scorer(unpacked, counts, labels) == scorer(model, counts, labels)


# Model files written by semhash before the estimators listed their parameters
# (tests/data/*-0.1.model, with their outputs): they load and give the same codes.
def _saved_inputs():
    counts, _ = topic_counts(n_docs=60, n_words=40, seed=0)
    pixels = np.random.default_rng(0).integers(0, 256, (30, 3072), dtype=np.uint8)
    return {"hasher": counts, "topic_map": counts, "image_hasher": pixels}


@pytest.mark.parametrize("name, cls", [("hasher", SemanticHasher), ("topic_map", TopicMap),
                                       ("image_hasher", ImageHasher)])
def test_model_files_of_the_previous_version_load_and_give_the_same_codes(name, cls, tmp_path):
    expected = np.load(DATA / "models-0.1-outputs.npz")
    X = _saved_inputs()[name]
    old = DeepCodeModel.load(DATA / f"{name}-0.1.model")
    assert type(old) is cls
    # Binary codes are equal; real outputs to float32 rounding (a few rows of word counts
    # now meet the first layer through their words' weights only: sums in another order).
    same = np.array_equal if old.code_units == "binary" else _close
    assert same(old.transform(X), expected[name])
    assert _close(old.transform_real(X), expected[name + "_real"])
    if "packed" in old.get_params():
        assert old.packed is True  # the files predate the parameter: its default
    assert (old.tol, old.learning_rate_drops) == (0.0, 0)  # nor did they run to convergence
    old.save(tmp_path / "again.model")  # and saved by this version, it loads again
    again = DeepCodeModel.load(tmp_path / "again.model")
    assert again.get_params() == old.get_params()
    assert same(again.transform(X), expected[name])


def _close(a, b) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_numpy_parameter_values_are_saved(topic_corpus, tmp_path):
    counts, _ = topic_corpus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny model's codes may collapse
        model = SemanticHasher(np.int64(8), pretrain_epochs=np.int64(1), hidden_layers=(4,), finetune_epochs=1)
        model.fit(counts)
    model.save(tmp_path / "m.model")
    assert SemanticHasher.load(tmp_path / "m.model").n_bits == 8
