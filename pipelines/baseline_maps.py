"""Two-dimensional maps of a collection by the baselines that semhash's maps are compared with:
LSA (a linear projection) and UMAP over LSA-50, each able to place new documents, and t-SNE."""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["LSAMap", "UMAPMap", "lsa_map", "umap_map", "tsne_map"]


class LSAMap:
    """2-D LSA: the first two singular directions of the (uncentred) TF-IDF.

    Unlike :class:`semhash.baselines.LSA` the rows are *not* normalised: unit 2-D
    vectors would put every document on a circle.
    """

    def __init__(self, n_components: int = 2, random_state: int | None = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, counts):
        from semhash.baselines import LSA

        self.lsa_ = LSA(n_components=self.n_components, random_state=self.random_state).fit(counts)
        return self

    def transform(self, counts) -> np.ndarray:
        return self.lsa_.svd_.transform(self.lsa_.tfidf_.transform(counts)).astype(np.float32)

    def fit_transform(self, counts) -> np.ndarray:
        return self.fit(counts).transform(counts)


class UMAPMap:
    """UMAP (cosine, fixed seed) over LSA-50 of the TF-IDF; ``transform`` places new documents."""

    def __init__(self, n_lsa: int = 50, n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0):
        self.n_lsa = n_lsa
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    def fit(self, counts):
        from semhash.baselines import LSA

        umap = _import_umap()
        self.lsa_ = LSA(n_components=self.n_lsa, random_state=self.random_state).fit(counts)
        self.umap_ = umap.UMAP(n_components=2, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                               metric="cosine", random_state=self.random_state)
        with _torch_threads_kept():
            self.embedding_ = self.umap_.fit_transform(self.lsa_.transform(counts)).astype(np.float32)
        return self

    def transform(self, counts) -> np.ndarray:
        with _torch_threads_kept():
            return self.umap_.transform(self.lsa_.transform(counts)).astype(np.float32)

    def fit_transform(self, counts) -> np.ndarray:
        return self.fit(counts).embedding_


@contextlib.contextmanager
def _torch_threads_kept():
    """Restore torch's thread count after UMAP: numba sets the OpenMP runtime that torch
    shares to one thread a core, so a process limited to one torch thread (two jobs on two
    cores) would afterwards run every torch op on two, each fit several times slower."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _import_umap():
    try:
        import umap
    except ImportError:
        raise ImportError(
            "UMAP maps need the umap-learn package: pip install umap-learn "
            "(or pip install 'semhash[maps]')"
        ) from None
    return umap


def lsa_map(counts, random_state: int | None = 0) -> tuple[np.ndarray, LSAMap]:
    """2-D LSA points of ``counts`` and the fitted mapper (``.transform`` for new documents)."""
    mapper = LSAMap(random_state=random_state)
    return mapper.fit_transform(counts), mapper


def umap_map(counts, random_state: int = 0, **kwargs) -> tuple[np.ndarray, UMAPMap]:
    """UMAP (over LSA-50, cosine) points of ``counts`` and the fitted mapper.

    Raises ImportError with an install hint when umap-learn is missing.
    """
    mapper = UMAPMap(random_state=random_state, **kwargs)
    return mapper.fit_transform(counts), mapper


def tsne_map(counts, random_state: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """Plain (non-parametric) t-SNE over LSA-50, cosine: no way to place new documents."""
    from sklearn.manifold import TSNE

    from semhash.baselines import LSA

    features = LSA(n_components=50, random_state=random_state).fit_transform(counts)
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                random_state=random_state).fit_transform(features).astype(np.float32)
