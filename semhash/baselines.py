"""Baselines that semantic hashing has to beat.

Every estimator here takes the same input as the semantic-hashing autoencoder: a
scipy CSR matrix of raw word counts, shape ``(n_docs, n_words)``, float32.

Float baselines (scored with :func:`semhash.pipelines.evaluate.rank_by_score`):

* :class:`TfidfCosine` -- L2-normalised TF-IDF, compared by cosine similarity.
* :class:`LSA` -- latent semantic analysis: truncated SVD of the TF-IDF, rows
  L2-normalised so that a dot product is a cosine.

Binary hashers (codes packed as in :mod:`semhash.codes`, searched by Hamming distance):

* :class:`RandomHyperplaneLSH` -- Charikar (2002), sign random projections.
* :class:`PCASign` -- sign of the top principal-component projections.
* :class:`ITQ` -- Gong & Lazebnik (2011), PCA plus an iterative-quantization rotation.
* :class:`SpectralHashing` -- Weiss, Torralba & Fergus (2008).

All hashers share :class:`BinaryHasher`: they first map the counts to the
L2-normalised TF-IDF of :class:`TfidfCosine` (idf learned on the data given to
``fit``), then apply their own real-valued projection, and a bit is 1 where that
projection is positive. With ``tfidf=False`` they skip the TF-IDF and take dense real
features as given, ``(n_samples, n_features)`` (e.g. standardised pixels for images).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted, check_random_state

from semhash.codes import pack_bits

# sublinear_tf (tf -> 1 + log tf) was chosen on a validation split carved from the
# 20 Newsgroups training set (a stratified 20% of train as queries against the other
# 80%, seed 0; the test split was never looked at), where it raised precision@100 of
# TF-IDF cosine, LSA and ITQ (figures in benchmarks/README.md), so it is the default
# wherever TF-IDF is computed, except random-hyperplane LSH, which did better without it.
DEFAULT_SUBLINEAR_TF = True


def _as_counts(X) -> sp.csr_matrix:
    """Validate a matrix of word counts and return it as float32 CSR."""
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D (n_docs, n_words) matrix, got shape {X.shape}")
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and X.data.min() < 0:
        raise ValueError("word counts must be non-negative")
    return X


class TfidfCosine(TransformerMixin, BaseEstimator):
    """TF-IDF weighting with L2-normalised rows, for cosine-similarity retrieval.

    ``fit`` learns the smooth inverse document frequency of the database,
    ``idf = log((1 + n_docs) / (1 + df)) + 1``: the +1 inside keeps words absent from
    the database finite, the +1 outside keeps words in every document from vanishing.
    ``transform`` returns ``tf * idf`` with every row scaled to unit L2 norm, so a dot
    product between rows is their cosine similarity.

    Parameters
    ----------
    sublinear_tf:
        Use ``1 + log(count)`` instead of the raw count as term frequency, so a word
        repeated twenty times does not count twenty times as much as one used once.
    """

    def __init__(self, sublinear_tf: bool = DEFAULT_SUBLINEAR_TF):
        self.sublinear_tf = sublinear_tf

    @classmethod
    def from_document_frequency(
        cls, document_frequency: np.ndarray, n_documents: int, sublinear_tf: bool = DEFAULT_SUBLINEAR_TF
    ) -> "TfidfCosine":
        """A fitted instance from stored statistics (e.g. a saved vocabulary's)."""
        tfidf = cls(sublinear_tf=sublinear_tf)
        tfidf._set_idf(np.asarray(document_frequency), n_documents)
        return tfidf

    def _set_idf(self, document_frequency: np.ndarray, n_docs: int) -> None:
        self.idf_ = (np.log((1.0 + n_docs) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
        self.n_features_in_ = len(document_frequency)

    def fit(self, X, y=None) -> "TfidfCosine":
        """Learn the idf of every word from the counts ``X`` (the database)."""
        X = _as_counts(X)
        document_frequency = np.bincount(X.indices[X.data > 0], minlength=X.shape[1])
        self._set_idf(document_frequency, X.shape[0])
        return self

    def transform(self, X) -> sp.csr_matrix:
        """Counts to L2-normalised TF-IDF, CSR float32 (all-zero rows stay zero)."""
        check_is_fitted(self, "idf_")
        X = _as_counts(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} words, got {X.shape[1]}")
        X = X.copy()
        X.eliminate_zeros()  # so log below never sees a zero
        if self.sublinear_tf:
            np.log(X.data, out=X.data)
            X.data += 1.0
        X = X @ sp.diags(self.idf_)
        return normalize(X.tocsr(), norm="l2", copy=False).astype(np.float32)


class LSA(TransformerMixin, BaseEstimator):
    """Latent semantic analysis: truncated SVD of the TF-IDF, rows L2-normalised.

    The TF-IDF is not centred (as in Deerwester et al. 1990), and the SVD is the
    randomized one with a fixed seed, so results are reproducible. Rows of the output
    have unit norm, so dot products are cosines in the latent space.
    """

    def __init__(
        self,
        n_components: int = 64,
        sublinear_tf: bool = DEFAULT_SUBLINEAR_TF,
        n_iter: int = 7,
        random_state: int | None = 0,
    ):
        self.n_components = n_components
        self.sublinear_tf = sublinear_tf
        self.n_iter = n_iter
        self.random_state = random_state

    def fit(self, X, y=None) -> "LSA":
        self.tfidf_ = TfidfCosine(sublinear_tf=self.sublinear_tf).fit(X)
        self.svd_ = TruncatedSVD(
            n_components=self.n_components,
            algorithm="randomized",
            n_iter=self.n_iter,
            random_state=self.random_state,
        ).fit(self.tfidf_.transform(X))
        return self

    def transform(self, X) -> np.ndarray:
        """Counts to ``(n_docs, n_components)`` float32 unit-norm latent vectors."""
        check_is_fitted(self, "svd_")
        latent = self.svd_.transform(self.tfidf_.transform(X))
        return normalize(latent, norm="l2").astype(np.float32)


class BinaryHasher(TransformerMixin, BaseEstimator, ABC):
    """Base class of the binary hashers: counts -> TF-IDF -> projection -> packed bits.

    The input to every method is the L2-normalised TF-IDF of :class:`TfidfCosine`, with
    the idf learned in ``fit``. Subclasses learn a real-valued embedding of it with
    ``n_bits`` columns (``_fit_embedding``) and compute it (``_embed``); a bit is 1 where
    the embedding is positive. ``transform`` returns codes packed by
    :func:`semhash.codes.pack_bits`: uint8 of shape ``(n_docs, ceil(n_bits / 8))``.
    """

    def __init__(
        self,
        n_bits: int = 64,
        sublinear_tf: bool = DEFAULT_SUBLINEAR_TF,
        random_state: int | None = 0,
        tfidf: bool = True,
    ):
        self.n_bits = n_bits
        self.sublinear_tf = sublinear_tf
        self.random_state = random_state
        self.tfidf = tfidf

    def fit(self, X, y=None) -> "BinaryHasher":
        """Learn the idf (unless ``tfidf=False``) and the projection from the database ``X``."""
        if self.n_bits <= 0:
            raise ValueError(f"n_bits must be positive, got {self.n_bits}")
        self.tfidf_ = TfidfCosine(sublinear_tf=self.sublinear_tf).fit(X) if self.tfidf else None
        self._fit_embedding(self._features(X))
        return self

    def transform(self, X) -> np.ndarray:
        """Counts (or dense features) to packed binary codes, uint8 ``(n_docs, ceil(n_bits / 8))``."""
        check_is_fitted(self, "tfidf_")
        return pack_bits(self.embed(X) > 0)

    def embed(self, X) -> np.ndarray:
        """The real-valued ``(n_docs, n_bits)`` embedding whose signs are the bits."""
        check_is_fitted(self, "tfidf_")
        return self._embed(self._features(X))

    def _features(self, X):
        """What the projections see: L2-normalised TF-IDF, or dense real features as given."""
        if self.tfidf_ is not None:
            return self.tfidf_.transform(X)
        if sp.issparse(X):
            X = X.toarray()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D (n_samples, n_features) array, got shape {X.shape}")
        return X

    @abstractmethod
    def _fit_embedding(self, tfidf: sp.csr_matrix) -> None:
        """Learn the embedding from the L2-normalised TF-IDF of the database."""

    @abstractmethod
    def _embed(self, tfidf: sp.csr_matrix) -> np.ndarray:
        """Real-valued embedding, ``(n_docs, n_bits)``; bit = embedding > 0."""


class _PCAHasher(BinaryHasher):
    """A hasher that starts by projecting the centred TF-IDF on its top principal axes.

    The PCA centres implicitly: scikit-learn's ARPACK solver on sparse input multiplies
    by ``X - 1 mean^T`` as a linear operator, so the TF-IDF is never densified (that
    matters for 10,000-word vocabularies). ARPACK's start vector comes from
    ``random_state``, so the axes are reproducible.
    """

    def _fit_pca(self, tfidf: sp.csr_matrix, n_components: int) -> np.ndarray:
        """Fit ``self.pca_`` and return the centred projections of the database."""
        if n_components >= min(tfidf.shape):
            raise ValueError(
                f"{type(self).__name__} needs n_bits < min(n_docs, n_words) = "
                f"{min(tfidf.shape)}, got {n_components}"
            )
        # Dense features (tfidf=False): scikit-learn's own choice ("auto": covariance
        # eigendecomposition, full or seeded randomized SVD by shape) beats ARPACK there.
        solver = "arpack" if sp.issparse(tfidf) else "auto"
        self.pca_ = PCA(n_components=n_components, svd_solver=solver, random_state=self.random_state)
        return self.pca_.fit_transform(tfidf)

    def _project(self, tfidf: sp.csr_matrix) -> np.ndarray:
        return self.pca_.transform(tfidf)


class RandomHyperplaneLSH(BinaryHasher):
    """Charikar's (2002) random-hyperplane LSH: bit j = sign(r_j . x), r_j ~ N(0, I).

    Two documents differ in a bit with probability angle(x, y) / pi, so Hamming distance
    is an unbiased estimate of the TF-IDF cosine ranking. The TF-IDF is deliberately
    not centred: the guarantee is for the angle between the vectors themselves.
    Raw term frequencies by default: they did better here on validation (see
    ``DEFAULT_SUBLINEAR_TF``).
    """

    def __init__(
        self,
        n_bits: int = 64,
        sublinear_tf: bool = False,
        random_state: int | None = 0,
        tfidf: bool = True,
    ):
        super().__init__(n_bits=n_bits, sublinear_tf=sublinear_tf, random_state=random_state, tfidf=tfidf)

    def _fit_embedding(self, tfidf: sp.csr_matrix) -> None:
        rng = check_random_state(self.random_state)
        self.hyperplanes_ = rng.standard_normal((tfidf.shape[1], self.n_bits)).astype(
            np.float32
        )

    def _embed(self, tfidf: sp.csr_matrix) -> np.ndarray:
        return np.asarray(tfidf @ self.hyperplanes_)


class PCASign(_PCAHasher):
    """Bit j = sign of the projection of the centred TF-IDF on principal axis j.

    Centring at the database mean puts each threshold at the middle of the data, so
    every bit splits the database roughly in two.
    """

    def _fit_embedding(self, tfidf: sp.csr_matrix) -> None:
        self._fit_pca(tfidf, self.n_bits)

    def _embed(self, tfidf: sp.csr_matrix) -> np.ndarray:
        return self._project(tfidf)


class ITQ(_PCAHasher):
    """Iterative quantization (Gong & Lazebnik 2011).

    PCA of the centred TF-IDF to ``V`` with ``n_bits`` columns, then an orthogonal
    rotation ``R`` minimising the quantization loss ``||B - V R||_F^2`` over codes
    ``B`` in {-1, +1}: alternately ``B = sign(V R)`` and ``R`` from the orthogonal
    Procrustes problem (SVD of ``V^T B``), starting from a random orthogonal ``R``.
    Both steps can only lower the loss, so ``quantization_loss_`` (recorded after
    every iteration, per document) never increases. Bits are ``sign(V R)``.
    """

    def __init__(
        self,
        n_bits: int = 64,
        n_iter: int = 50,
        sublinear_tf: bool = DEFAULT_SUBLINEAR_TF,
        random_state: int | None = 0,
        tfidf: bool = True,
    ):
        super().__init__(n_bits=n_bits, sublinear_tf=sublinear_tf, random_state=random_state, tfidf=tfidf)
        self.n_iter = n_iter

    def _fit_embedding(self, tfidf: sp.csr_matrix) -> None:
        projected = self._fit_pca(tfidf, self.n_bits).astype(np.float64)
        rng = check_random_state(self.random_state)
        # QR of a Gaussian matrix gives a random orthogonal matrix.
        rotation, _ = np.linalg.qr(rng.standard_normal((self.n_bits, self.n_bits)))
        losses = []
        for _ in range(self.n_iter):
            codes = np.where(projected @ rotation >= 0, 1.0, -1.0)
            # Procrustes: argmax_R tr(B^T V R) over orthogonal R is U W^T, V^T B = U S W^T.
            u, _, wt = np.linalg.svd(projected.T @ codes)
            rotation = u @ wt
            residual = codes - projected @ rotation
            losses.append(float(np.einsum("ij,ij->", residual, residual)) / len(projected))
        self.rotation_ = rotation.astype(np.float32)
        self.quantization_loss_ = np.array(losses)

    def _embed(self, tfidf: sp.csr_matrix) -> np.ndarray:
        return self._project(tfidf) @ self.rotation_


class SpectralHashing(_PCAHasher):
    """Spectral hashing (Weiss, Torralba & Fergus 2008).

    PCA of the centred TF-IDF to ``n_bits`` directions; along direction ``d`` the data is
    assumed uniform on ``[a_d, b_d]`` (its range on the database). The 1-D Laplacian
    eigenfunctions there are ``sin(pi/2 + k pi / (b_d - a_d) * (x - a_d))``, k = 1, 2, ...,
    with eigenvalue increasing in the frequency ``k / (b_d - a_d)``. The ``n_bits``
    (direction, mode) pairs of smallest frequency are kept (ties to the lower direction
    then the lower mode), and each bit thresholds its eigenfunction at 0. So wide
    directions get several bits and narrow ones may get none.

    ``x`` is measured from ``a_d`` as in the authors' reference implementation: then the
    k = 1 eigenfunction splits the range at its midpoint, whereas ``sin(pi/2 + k pi x /
    (b - a))`` on centred data would be positive almost everywhere.

    ``modes_`` is an ``(n_bits, 2)`` int array of (direction, k) pairs, lowest frequency
    first.
    """

    def _fit_embedding(self, tfidf: sp.csr_matrix) -> None:
        projected = self._fit_pca(tfidf, self.n_bits)
        self.lower_ = projected.min(axis=0)
        self.upper_ = projected.max(axis=0)
        self.modes_ = select_modes(self.upper_ - self.lower_, self.n_bits)

    def _embed(self, tfidf: sp.csr_matrix) -> np.ndarray:
        projected = self._project(tfidf)
        directions, ks = self.modes_[:, 0], self.modes_[:, 1]
        frequency = ks * np.pi / (self.upper_ - self.lower_)[directions]
        offset = projected[:, directions] - self.lower_[directions]
        return np.sin(np.pi / 2 + frequency * offset).astype(np.float32)


def select_modes(ranges: np.ndarray, n_bits: int) -> np.ndarray:
    """The ``n_bits`` (direction, k) pairs of smallest frequency ``k / ranges[direction]``.

    ``k`` runs from 1 (the constant k = 0 eigenfunction carries no information). Ties go
    to the lower direction, then the lower k, so the choice is deterministic. Returns an
    ``(n_bits, 2)`` int array, lowest frequency first.
    """
    ranges = np.asarray(ranges, dtype=np.float64)
    if np.any(ranges <= 0):
        raise ValueError("every direction needs a positive range")
    # n_bits modes along one direction always suffice: no direction can need more.
    directions, ks = np.meshgrid(np.arange(len(ranges)), np.arange(1, n_bits + 1), indexing="ij")
    directions, ks = directions.ravel(), ks.ravel()
    order = np.lexsort((ks, directions, ks / ranges[directions]))[:n_bits]
    return np.stack([directions[order], ks[order]], axis=1)
