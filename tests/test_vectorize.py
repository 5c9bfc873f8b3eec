"""Tests for semhash.vectorize: vocabulary choice, counting, IDF, JSON round trip and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from semhash.vectorize import WordCounter, empty_rows

# Document frequencies: cherry 3, banana 2, date 2, apple 1, elder 1, fig 1.
# "fig" has the highest total count but appears in one document only.
FRUIT = [
    "cherry banana apple",
    "Cherry banana",
    "cherry date",
    "date elder",
    "fig fig fig fig fig",
]


def dense(matrix: scipy.sparse.csr_matrix) -> list[list[float]]:
    return matrix.toarray().tolist()


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_is_ordered_by_document_frequency_then_alphabetically():
    counter = WordCounter(min_df=1).fit(FRUIT)
    assert counter.words_ == ["cherry", "banana", "date", "apple", "elder", "fig"]
    assert counter.document_frequency_.tolist() == [3, 2, 2, 1, 1, 1]
    assert counter.document_frequency_.dtype == np.int64
    assert counter.n_documents_ == 5


def test_max_words_keeps_the_most_frequent_by_documents_not_occurrences():
    assert WordCounter(max_words=2, min_df=1).fit(FRUIT).words_ == ["cherry", "banana"]
    assert "fig" not in WordCounter(max_words=3, min_df=1).fit(FRUIT).words_


def test_min_df_and_max_df_prune_rare_and_ubiquitous_words():
    assert WordCounter(min_df=2).fit(FRUIT).words_ == ["cherry", "banana", "date"]
    # max_df=0.5 of 5 documents: words in more than 2.5 documents go.
    assert WordCounter(min_df=1, max_df=0.5).fit(FRUIT).words_ == ["banana", "date", "apple", "elder", "fig"]


def test_tokens_are_lowercased_runs_of_two_or_more_letters():
    counter = WordCounter(min_df=1, stop_words=None).fit(["Apple APPLE apple2 a 42 x_y co-op naïve 3d"])
    assert counter.words_ == ["apple", "co", "naïve", "op"]
    assert dense(counter.transform(["apple Apple CO op op op"])) == [[2.0, 1.0, 0.0, 3.0]]
    case_sensitive = WordCounter(min_df=1, stop_words=None, lowercase=False)
    assert case_sensitive.fit(["Apple apple"]).words_ == ["Apple", "apple"]


def test_stop_words_english_none_or_custom():
    texts = ["the cat and the hat", "the cat"]
    assert WordCounter(min_df=1).fit(texts).words_ == ["cat", "hat"]
    assert WordCounter(min_df=1, stop_words=None).fit(texts).words_ == ["cat", "the", "and", "hat"]
    assert WordCounter(min_df=1, stop_words=["cat"]).fit(texts).words_ == ["the", "and", "hat"]


# --------------------------------------------------------------------------- counting


def test_transform_gives_float32_raw_counts_in_vocabulary_order():
    counter = WordCounter(min_df=1).fit(FRUIT)
    counts = counter.transform(["fig apple cherry cherry unknownword", "nothing known here"])
    assert scipy.sparse.isspmatrix_csr(counts) and counts.dtype == np.float32
    assert counts.shape == (2, 6)
    assert dense(counts) == [[2.0, 0.0, 0.0, 1.0, 0.0, 1.0], [0.0] * 6]


def test_fit_transform_equals_fit_then_transform():
    by_fit_transform = WordCounter(min_df=1, max_words=4).fit_transform(FRUIT)
    counter = WordCounter(min_df=1, max_words=4).fit(FRUIT)
    by_transform = counter.transform(FRUIT)
    assert by_fit_transform.dtype == np.float32 and scipy.sparse.isspmatrix_csr(by_fit_transform)
    assert dense(by_fit_transform) == dense(by_transform)
    assert dense(by_transform) == [
        [1.0, 1.0, 0.0, 1.0],
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]


def test_fit_accepts_a_generator():
    counter = WordCounter(min_df=1).fit(text for text in FRUIT)
    assert counter.n_documents_ == 5


def test_idf_is_smooth_and_float32():
    idf = WordCounter(min_df=1).fit(FRUIT).idf()
    assert idf.dtype == np.float32
    expected = [math.log(6 / (1 + df)) + 1 for df in [3, 2, 2, 1, 1, 1]]
    np.testing.assert_allclose(idf, expected, rtol=1e-6)


def test_empty_rows_finds_documents_without_vocabulary_words():
    counter = WordCounter(min_df=1).fit(FRUIT)
    counts = counter.transform(["cherry", "the and of", "", "fig", "42 1999"])
    assert empty_rows(counts).tolist() == [1, 2, 4]
    assert empty_rows(counts.toarray()).tolist() == [1, 2, 4]
    assert empty_rows(counter.transform(["cherry"])).tolist() == []


# --------------------------------------------------------------------------- bad input


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        WordCounter().fit([])


def test_texts_of_only_stop_words_are_an_error():
    with pytest.raises(ValueError, match="no words left after stop-word removal"):
        WordCounter(min_df=1).fit(["the and of", "it is what it is"])
    with pytest.raises(ValueError, match="no words found"):
        WordCounter(min_df=1, stop_words=None).fit(["42 1999", "a b c"])


def test_pruning_everything_is_an_error():
    with pytest.raises(ValueError, match="no words left after min_df=10"):
        WordCounter(min_df=10).fit(FRUIT)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_words": 0}, "max_words"),
        ({"min_df": 0}, "min_df"),
        ({"max_df": 1.5}, "max_df"),
        ({"max_df": 0}, "max_df"),
        ({"stop_words": "french"}, "stop_words"),
    ],
)
def test_invalid_parameters_are_reported_at_fit(params, message):
    counter = WordCounter(**params)  # the constructor only stores them, as in scikit-learn
    with pytest.raises(ValueError, match=message):
        counter.fit(FRUIT)


def test_a_single_string_is_not_a_corpus():
    with pytest.raises(ValueError, match="single string"):
        WordCounter(min_df=1).fit("cherry banana")
    with pytest.raises(ValueError, match="single string"):
        WordCounter(min_df=1).fit(FRUIT).transform("cherry banana")


def test_using_an_unfitted_counter_raises_not_fitted():
    for use in (lambda c: c.transform(FRUIT), lambda c: c.idf(), lambda c: c.to_dict()):
        with pytest.raises(NotFittedError):
            use(WordCounter())


def test_follows_scikit_learn_parameter_conventions():
    counter = WordCounter(max_words=7, min_df=2, max_df=0.9, stop_words=None, lowercase=False)
    assert counter.get_params() == {
        "max_words": 7, "min_df": 2, "max_df": 0.9, "stop_words": None, "lowercase": False
    }
    assert not hasattr(clone(counter.fit(FRUIT)), "words_")


# --------------------------------------------------------------------------- saving


@pytest.mark.parametrize("stop_words", ["english", None, ("cherry", "date")])
def test_json_round_trip_gives_identical_transforms(stop_words):
    counter = WordCounter(max_words=4, min_df=1, max_df=0.9, stop_words=stop_words).fit(FRUIT)
    data = json.loads(json.dumps(counter.to_dict()))
    restored = WordCounter.from_dict(data)
    saved_stop_words = sorted(stop_words) if isinstance(stop_words, tuple) else stop_words
    assert restored.get_params() == {**counter.get_params(), "stop_words": saved_stop_words}
    assert restored.words_ == counter.words_
    assert restored.document_frequency_.tolist() == counter.document_frequency_.tolist()
    assert restored.n_documents_ == counter.n_documents_
    probe = ["the cherry and the date", "fig fig apple", "banana elder cherry Cherry"]
    assert dense(restored.transform(probe)) == dense(counter.transform(probe))
    np.testing.assert_array_equal(restored.idf(), counter.idf())


def _saved() -> dict:
    return WordCounter(min_df=1).fit(FRUIT).to_dict()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: [d], "expected a dict"),
        (lambda d: {**d, "format": "something.else"}, "not a WordCounter dict"),
        (lambda d: {k: v for k, v in d.items() if k != "words"}, "lacks"),
        (lambda d: {**d, "params": {**d["params"], "colour": "red"}}, "params"),
        (lambda d: {**d, "params": {**d["params"], "max_df": 2.0}}, "max_df"),
        (lambda d: {**d, "words": []}, "non-empty list"),
        (lambda d: {**d, "words": ["cherry"] + d["words"][1:-1] + ["cherry"]}, "duplicate"),
        (lambda d: {**d, "document_frequency": d["document_frequency"][:-1]}, "one integer"),
        (lambda d: {**d, "document_frequency": [99] + d["document_frequency"][1:]}, "one integer"),
        (lambda d: {**d, "n_documents": "5"}, "n_documents"),
    ],
)
def test_from_dict_rejects_malformed_data(corrupt, message):
    with pytest.raises(ValueError, match=message):
        WordCounter.from_dict(corrupt(_saved()))


# --------------------------------------------------------------------------- fast counting

ODD_TEXTS = [
    "İstanbul ΣΑΣ σοφός ΟΔΥΣΣΕΥΣ naïve café_x ab12 x² ² a_b under_score __init__ hello-world",
    "",
    "   \n\t ",
    "a",
    "ÀÉÎ résumé RÉSUMÉ Straße STRASSE ǅemal ﬁsh ΣΑΣ.",
    "tabs\tand\nnewlines\r\nand  spaces, commas;semi:colons (brackets) [x] {y} 'quotes' \"dq\"",
    "numbers 123abc abc123 1st 2nd 3rd 4th 1,000 3.14 e-mail e_mail e2e",
    "emoji 😀 mixed😀word 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math ℌ𝔢𝔩𝔩𝔬 ideographic 漢字 かな カナ",
    "\ud800 lone surrogate then word",
    "word " * 50,
]


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("stop_words", ["english", None])
@pytest.mark.parametrize("lowercase", [True, False])
def test_fast_counts_equal_count_vectorizer(engine, stop_words, lowercase, newsgroups_subset):
    from semhash.pipelines.corpus import read_corpus
    from semhash.vectorize import _kernel

    if engine == "numba" and _kernel() is None:
        pytest.skip("numba not installed")
    texts = [doc.text for doc in read_corpus(newsgroups_subset["test"])][:150]
    corpus = ODD_TEXTS + texts + ODD_TEXTS
    counter = WordCounter(max_words=400, min_df=1, stop_words=stop_words, lowercase=lowercase).fit(corpus)
    counter.transform(["warm"])
    counter._fast_counter.engine = engine
    fast, slow = counter.transform(corpus), counter._slow_transform(corpus)
    assert fast.dtype == np.float32 and fast.shape == slow.shape and fast.has_sorted_indices
    assert (fast != slow).nnz == 0
    # Batches split in chunks give the same rows.
    counter._fast_counter._CHUNK_CHARS = 5_000
    assert (counter.transform(corpus) != slow).nnz == 0
    # Without Σ or İ (lowercase depends on context, or is two characters) the compiled path
    # lowercases through its table: same counts.
    plain = [text.replace("Σ", "S").replace("İ", "I") for text in corpus] + ["ÀÉÎ RÉSUMÉ ǅEMAL ÆON Ωmega ÞORN"]
    assert "Σ" not in "".join(plain)
    plain_counter = WordCounter(max_words=400, min_df=1, stop_words=stop_words, lowercase=lowercase).fit(plain)
    plain_counter.transform(["warm"])
    plain_counter._fast_counter.engine = engine
    assert (plain_counter.transform(plain) != plain_counter._slow_transform(plain)).nnz == 0


def test_fast_counter_is_rebuilt_when_the_vocabulary_or_parameters_change():
    counter = WordCounter(min_df=1).fit(FRUIT)
    before = dense(counter.transform(["cherry the banana"]))
    counter.set_params(stop_words=None)
    counter.words_ = counter.words_ + ["the"]
    after = dense(counter.transform(["cherry the banana"]))
    assert before[0] == after[0][:-1] and after[0][-1] == 1.0
