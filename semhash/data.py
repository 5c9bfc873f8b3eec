"""Feeding data to torch models: dense or sparse matrices in mini-batches."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch


def n_rows(X) -> int:
    return X.shape[0]


def as_generator(seed: int | None) -> torch.Generator:
    """A torch generator seeded with ``seed`` (fresh entropy when ``None``)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def to_dense_tensor(X) -> torch.Tensor:
    """Rows of a numpy array, scipy sparse matrix or tensor as a float32 tensor."""
    if isinstance(X, torch.Tensor):
        return X.to(torch.float32)
    if sp.issparse(X):
        X = X.toarray()
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


# A sparse training matrix up to this size is densified once before training: gathering
# dense rows is ~10x cheaper than slicing and densifying CSR rows in every batch (~6% of
# a fine-tuning epoch on 20 Newsgroups). Larger ones (e.g. 10,000-word vocabularies)
# stay sparse and are densified a batch at a time.
DENSE_BUDGET_BYTES = 256 * 2**20


def dense_if_small(X, budget: int = DENSE_BUDGET_BYTES):
    """``X`` as a float32 tensor if it is sparse and fits in ``budget`` bytes dense, else ``X``."""
    if sp.issparse(X) and X.shape[0] * X.shape[1] * 4 <= budget:
        return to_dense_tensor(X)
    return X


def drop_inputs(x, rate: float, generator=None, rescale: bool = False):
    """Zero a random ``rate`` of the entries of ``x`` (denoising); ``rescale`` divides the
    rest by ``1 - rate`` so that the expected input is unchanged. A scipy-sparse ``x``
    stays sparse: only its non-zeros are drawn (zeros have nothing to lose)."""
    if rate <= 0:
        return x
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32, copy=True)
        x.data *= (torch.rand(x.nnz, generator=generator) >= rate).numpy()
        if rescale:
            x.data /= 1.0 - rate
        x.eliminate_zeros()  # fewer non-zeros, less work in the products
        return x
    x = x * (torch.rand(x.shape, generator=generator) >= rate)
    return x / (1.0 - rate) if rescale else x


def gather_rows(X, rows, *, keep_sparse: bool = False):
    """Rows ``rows`` of ``X`` as a float32 tensor, or as float32 CSR if ``X`` is sparse and
    ``keep_sparse``."""
    return sp.csr_matrix(X[rows], dtype=np.float32) if keep_sparse and sp.issparse(X) else to_dense_tensor(X[rows])


def iterate_batches(
    X,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    extra=None,
    keep_sparse: bool = False,
    with_rows: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield dense float32 batches of the rows of ``X``.

    Sparse matrices are densified one batch at a time, so a large corpus never has to
    fit in memory as a dense array; with ``keep_sparse``, batches of a sparse ``X`` are
    float32 CSR instead (for :class:`~semhash.autoencoder.SparseInputLinear`). With
    ``extra`` (a second matrix of the same number of rows), yields pairs of batches that
    share the same rows; ``extra`` is always densified. ``with_rows`` puts the batch's row
    indices first in each item.
    """
    n = n_rows(X)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.numpy()
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        if shuffle:
            # Sorted row access is much faster on CSR; the batch content is what is random.
            rows = np.sort(rows)
        batch = gather_rows(X, rows, keep_sparse=keep_sparse)
        item = (batch,) if extra is None else (batch, to_dense_tensor(extra[rows]))
        if with_rows:
            item = (rows, *item)
        yield item if len(item) > 1 else batch
