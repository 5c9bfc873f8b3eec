"""Baselines on small synthetic word-count matrices with known answers."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from semhash.baselines import (
    ITQ,
    LSA,
    PCASign,
    RandomHyperplaneLSH,
    SpectralHashing,
    TfidfCosine,
    select_modes,
)
from semhash.codes import hamming_distances, unpack_bits

HASHERS = [RandomHyperplaneLSH, PCASign, ITQ, SpectralHashing]


def random_counts(n_docs=200, n_words=60, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.3, size=(n_docs, n_words)).astype(np.float32)
    return sp.csr_matrix(counts)


def two_topics(n_per_topic=60, n_words=40, seed=0):
    """Documents drawn from one of two disjoint halves of the vocabulary (plus noise)."""
    rng = np.random.default_rng(seed)
    half = n_words // 2
    rates = np.full((2, n_words), 0.05)
    rates[0, :half] = 1.5
    rates[1, half:] = 1.5
    labels = np.repeat([0, 1], n_per_topic)
    counts = rng.poisson(rates[labels]).astype(np.float32)
    return sp.csr_matrix(counts), labels


def test_tfidf_smooth_idf_and_unit_rows():
    counts = sp.csr_matrix(np.array([[2, 0, 1], [0, 0, 3], [1, 0, 0]], dtype=np.float32))
    model = TfidfCosine(sublinear_tf=False).fit(counts)
    df = np.array([2, 0, 2])
    np.testing.assert_allclose(model.idf_, np.log(4 / (1 + df)) + 1, rtol=1e-6)
    tfidf = model.transform(counts)
    assert sp.isspmatrix_csr(tfidf) and tfidf.dtype == np.float32
    np.testing.assert_allclose(sp.linalg.norm(tfidf, axis=1), 1.0, rtol=1e-6)
    row = np.array([2, 0, 1]) * model.idf_
    np.testing.assert_allclose(tfidf[0].toarray().ravel(), row / np.linalg.norm(row), rtol=1e-6)


def test_tfidf_sublinear_tf():
    counts = sp.csr_matrix(np.array([[np.e, 1.0]], dtype=np.float32))
    model = TfidfCosine(sublinear_tf=True).fit(counts)
    # both words have df 1, so equal idf: tf 1 + log e = 2 against 1 + log 1 = 1
    np.testing.assert_allclose(model.transform(counts).toarray(), [[2, 1] / np.sqrt(5)], rtol=1e-6)


def test_tfidf_keeps_empty_documents_zero():
    counts = sp.csr_matrix(np.array([[1, 1], [0, 0]], dtype=np.float32))
    assert TfidfCosine().fit(counts).transform(counts)[1].nnz == 0


def test_lsa_unit_rows_and_reproducible():
    counts = random_counts()
    vectors = LSA(n_components=5).fit(counts).transform(counts)
    assert vectors.shape == (200, 5) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors, LSA(n_components=5).fit(counts).transform(counts))


@pytest.mark.parametrize("hasher", HASHERS)
@pytest.mark.parametrize("n_bits", [8, 12])
def test_packed_output_shape_dtype_and_determinism(hasher, n_bits):
    counts = random_counts()
    codes = hasher(n_bits=n_bits).fit(counts).transform(counts[:7])
    assert codes.dtype == np.uint8 and codes.shape == (7, (n_bits + 7) // 8)
    again = clone(hasher(n_bits=n_bits)).fit(counts).transform(counts[:7])
    np.testing.assert_array_equal(codes, again)
    if n_bits % 8:  # pad bits stay zero
        assert not np.any(codes[:, -1] & ((1 << (8 - n_bits % 8)) - 1))


def test_lsh_bits_about_half_ones():
    counts = random_counts(n_docs=500, n_words=80)
    bits = unpack_bits(RandomHyperplaneLSH(n_bits=256).fit(counts).transform(counts), 256)
    assert abs(bits.mean() - 0.5) < 0.05


def test_lsh_hamming_tracks_angle():
    # Charikar: P(bit differs) = angle / pi, so with many bits distance ~ n_bits * angle / pi
    counts = random_counts(n_docs=2, n_words=30, seed=4)
    model = RandomHyperplaneLSH(n_bits=4096).fit(counts)
    tfidf = model.tfidf_.transform(counts).toarray()
    angle = np.arccos(np.clip(tfidf[0] @ tfidf[1], -1, 1))
    codes = model.transform(counts)
    distance = hamming_distances(codes[:1], codes[1:])[0, 0]
    assert distance / 4096 == pytest.approx(angle / np.pi, abs=0.03)


def test_itq_quantization_loss_decreases_and_bits_balanced():
    counts = random_counts(n_docs=400, n_words=60, seed=1)
    model = ITQ(n_bits=16, n_iter=30).fit(counts)
    loss = model.quantization_loss_
    assert loss.shape == (30,)
    assert np.all(np.diff(loss) <= 1e-9 * loss[0])
    assert loss[-1] < loss[0]
    np.testing.assert_allclose(model.rotation_ @ model.rotation_.T, np.eye(16), atol=1e-5)
    bit_means = unpack_bits(model.transform(counts), 16).mean(axis=0)
    assert np.all((bit_means > 0.2) & (bit_means < 0.8))


@pytest.mark.parametrize("hasher", [PCASign, ITQ, SpectralHashing])
def test_two_clusters_far_apart_in_hamming(hasher):
    counts, labels = two_topics()
    codes = hasher(n_bits=8).fit(counts).transform(counts)
    distances = hamming_distances(codes, codes)
    same = labels[:, None] == labels[None, :]
    assert distances[~same].mean() > distances[same].mean() + 1.0


def test_pca_sign_centres_at_the_database_mean():
    counts = random_counts(n_docs=300)
    bit_means = unpack_bits(PCASign(n_bits=8).fit(counts).transform(counts), 8).mean(axis=0)
    assert np.all((bit_means > 0.15) & (bit_means < 0.85))


def test_select_modes_small_case():
    # frequencies k / range: direction 0 (range 4): 0.25, 0.5, 0.75, 1.0 ...;
    # direction 1 (range 2): 0.5, 1.0 ...; direction 2 (range 1): 1.0 ...
    modes = select_modes(np.array([4.0, 2.0, 1.0]), n_bits=5)
    expected = [[0, 1], [0, 2], [1, 1], [0, 3], [0, 4]]
    np.testing.assert_array_equal(modes, expected)
    # ties go to the lower direction: 1.0 is reached by (0, 4), (1, 2) and (2, 1)
    np.testing.assert_array_equal(
        select_modes(np.array([4.0, 2.0, 1.0]), n_bits=7)[4:], [[0, 4], [1, 2], [2, 1]]
    )


def test_select_modes_one_dominant_direction_takes_every_bit():
    np.testing.assert_array_equal(
        select_modes(np.array([100.0, 1.0]), n_bits=3), [[0, 1], [0, 2], [0, 3]]
    )


def test_spectral_hashing_eigenfunctions():
    counts = random_counts(n_docs=300, seed=2)
    model = SpectralHashing(n_bits=6).fit(counts)
    assert model.modes_.shape == (6, 2)
    frequencies = model.modes_[:, 1] / (model.upper_ - model.lower_)[model.modes_[:, 0]]
    assert np.all(np.diff(frequencies) >= 0)
    # the bits are the signs of sin(pi/2 + k pi (x - a) / (b - a)) on the PCA projections
    projected = model.pca_.transform(model.tfidf_.transform(counts))
    d, k = model.modes_[:, 0], model.modes_[:, 1]
    scaled = (projected[:, d] - model.lower_[d]) / (model.upper_ - model.lower_)[d]
    expected = np.sin(np.pi / 2 + k * np.pi * scaled) > 0
    np.testing.assert_array_equal(unpack_bits(model.transform(counts), 6), expected)
    # the first bit (k = 1 on the widest direction) splits its range at the midpoint
    assert tuple(model.modes_[0]) == (int(np.argmax(model.upper_ - model.lower_)), 1)


def test_hashers_reject_too_many_bits():
    with pytest.raises(ValueError):
        PCASign(n_bits=60).fit(random_counts(n_words=60))
