"""Parametric t-SNE: fine-tune a deep encoder so that its 2-D codes form a t-SNE map.

van der Maaten (2009), "Learning a Parametric Embedding by Preserving Local Structure":
an RBM-pretrained encoder is fine-tuned to minimise KL(P || Q), where P holds the
input-space neighbour probabilities and Q the Student-t similarities of the codes. Unlike
plain t-SNE, the result is a function: a new document is placed by one forward pass.

Two ways of getting P are offered (``affinity=``):

* ``"knn"`` (default, chosen by measurement on a validation split of 20 Newsgroups
  train, see ``benchmarks/maps.py``): a perplexity-calibrated Gaussian over each
  document's ``3 * perplexity`` nearest neighbours by cosine in LSA-50 space (TF-IDF then
  truncated SVD), symmetrised over the whole collection, as in Barnes-Hut t-SNE. Each
  step samples a mini-batch of neighbour pairs ``(i, j)`` with probability ``p_ij`` and
  estimates the full-collection KL (up to the constant entropy of P) as
  ``-mean log w(y_i, y_j) + log mean_{a != b} w(y_a, y_b) + log N(N-1)``: the attraction
  over sampled pairs, the normalisation of Q from all pairs of codes in the batch.
* ``"batch"`` (the original recipe): P is a perplexity-calibrated Gaussian within each
  random mini-batch of documents, Q the Student-t similarities within the same batch.

Optionally the decoder's reconstruction loss is added (``reconstruction_weight > 0``),
which keeps the code informative about the words as well as the neighbourhoods.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from semhash.autoencoder import DeepAutoencoder, adam
from semhash.data import as_generator, dense_if_small, drop_inputs, to_dense_tensor

AFFINITIES = ("knn", "batch")
SCHEDULES = ("constant", "cosine")


# ----------------------------------------------------------------- input affinities
def lsa_features(counts, n_components: int = 50, random_state: int | None = 0) -> np.ndarray:
    """Unit-norm LSA vectors (TF-IDF, truncated SVD) of word counts: where P is computed."""
    from semhash.baselines import LSA

    n_components = int(min(n_components, counts.shape[1] - 1, counts.shape[0] - 1))
    return LSA(n_components=n_components, random_state=random_state).fit_transform(counts)


def pca_features(X, n_components: int = 50, random_state: int | None = 0) -> np.ndarray:
    """PCA-``n_components`` coordinates of dense inputs (e.g. standardised pixels): where
    P is computed for images. Centred first, so that cosine between rows is meaningful."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    n_components = int(min(n_components, X.shape[1], X.shape[0] - 1))
    return PCA(n_components=n_components, svd_solver="randomized", random_state=random_state).fit_transform(X)


def _calibrate(sq_distances: np.ndarray, perplexity: float, n_steps: int = 64) -> np.ndarray:
    """Rows of conditional probabilities ``p_{j|i}`` with the given perplexity.

    ``sq_distances`` is ``(n, k)``; each row gets its own Gaussian precision, found by
    bisection on ``log beta`` (vectorised over rows). Infinite distances get probability 0.
    """
    d = np.asarray(sq_distances, dtype=np.float64)
    d = d - np.min(np.where(np.isfinite(d), d, np.inf), axis=1, keepdims=True)  # stability
    finite = np.isfinite(d)
    n_finite = finite.sum(axis=1)
    target = np.log(np.minimum(perplexity, np.maximum(n_finite - 1, 1)))[:, None]
    lo = np.full((len(d), 1), -30.0)
    hi = np.full((len(d), 1), 30.0)
    d0 = np.where(finite, d, 0.0)
    for _ in range(n_steps):
        log_beta = (lo + hi) / 2
        logits = np.where(finite, -np.exp(log_beta) * d0, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        p = w / w.sum(axis=1, keepdims=True)
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1, keepdims=True)
        too_flat = entropy > target  # entropy too high: sharpen (raise beta)
        lo = np.where(too_flat, log_beta, lo)
        hi = np.where(too_flat, hi, log_beta)
    return p


def knn_affinities(
    features: np.ndarray, perplexity: float = 30.0, n_neighbors: int | None = None, block: int = 2048
) -> sp.csr_matrix:
    """Symmetric t-SNE P over a kNN graph: ``(n, n)`` CSR, entries summing to 1.

    ``features`` are compared by cosine (rows are L2-normalised here); each point's
    ``n_neighbors`` (default ``3 * perplexity``) nearest other points get a Gaussian
    calibrated to ``perplexity``, then ``P = (P_cond + P_cond^T) / 2n``.
    """
    X = np.asarray(features, dtype=np.float32)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    n = len(X)
    if n < 3:
        raise ValueError(f"t-SNE affinities need at least 3 points, got {n}")
    k = int(min(n - 1, n_neighbors or max(3, round(3 * perplexity))))
    perplexity = min(perplexity, max(1.0, (k - 1) / 3)) if n_neighbors is None and k < 3 * perplexity else perplexity
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        sims = X[start : start + block] @ X.T
        local = np.arange(len(sims))
        sims[local, start + local] = -np.inf  # not one's own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sq = 2.0 - 2.0 * np.take_along_axis(sims, top, axis=1)  # squared distance of unit vectors
        p = _calibrate(np.maximum(sq, 0.0), perplexity)
        rows.append(np.repeat(start + local, k))
        cols.append(top.ravel())
        vals.append(p.ravel())
    conditional = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    joint = (conditional + conditional.T).tocsr()
    joint.data /= joint.data.sum()
    joint.eliminate_zeros()
    return joint.astype(np.float64)


def batch_affinities(features: np.ndarray, perplexity: float = 30.0) -> np.ndarray:
    """Dense symmetric P within one batch (van der Maaten 2009), entries summing to 1."""
    X = np.asarray(features, dtype=np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sq = np.maximum(2.0 - 2.0 * X @ X.T, 0.0)
    np.fill_diagonal(sq, np.inf)
    p = _calibrate(sq, min(perplexity, max(1.0, (len(X) - 2) / 3)))
    p = p + p.T
    return p / p.sum()


# ------------------------------------------------------------------ output similarity
def student_t(codes: torch.Tensor, dof: float = 1.0) -> torch.Tensor:
    """Unnormalised Student-t kernel ``(1 + d^2 / dof)^(-(dof + 1) / 2)`` between all rows."""
    sq = torch.cdist(codes, codes).pow(2)
    return (1.0 + sq / dof).pow(-(dof + 1.0) / 2.0)


def _log_kernel(sq: torch.Tensor, dof: float) -> torch.Tensor:
    return -(dof + 1.0) / 2.0 * torch.log1p(sq / dof)


def tsne_kl(codes, P, dof: float = 1.0) -> float:
    """Exact KL(P || Q) of a (small) set of codes; ``P`` dense or sparse, summing to 1."""
    Y = torch.as_tensor(np.asarray(codes), dtype=torch.float64)
    P = P.toarray() if sp.issparse(P) else np.asarray(P)
    P = torch.as_tensor(P, dtype=torch.float64)
    sq = torch.cdist(Y, Y).pow(2)
    log_w = _log_kernel(sq, dof)
    log_w.fill_diagonal_(-math.inf)
    log_q = log_w - torch.logsumexp(log_w.flatten(), 0)
    mask = P > 0
    return float((P[mask] * (torch.log(P[mask]) - log_q[mask])).sum())


# --------------------------------------------------------------------- fine-tuning
COLLAPSE_PROBE_ROWS = 500  # documents whose codes are watched
COLLAPSE_RATIO = 1e-3  # collapsed: the codes' spread fell below this share of the start's
MAX_RESTARTS = 3


@dataclass
class TSNEResult:
    history: list[float] = field(default_factory=list)  # KL estimate per epoch (train)
    seconds: float = 0.0
    restarts: int = 0  # times the stage collapsed the map and started over at a lower step
    collapsed: bool = False  # every attempt collapsed: the model is left as it came in


def fine_tune_tsne(
    model: DeepAutoencoder,
    inputs,
    *,
    affinities: sp.csr_matrix | None = None,
    features: np.ndarray | None = None,
    affinity: str = "knn",
    perplexity: float = 30.0,
    dof: float = 1.0,
    n_epochs: int = 50,
    batch_size: int = 500,
    learning_rate: float = 1e-2,
    exaggeration: float = 4.0,
    exaggeration_epochs: int = 3,
    schedule: str = "constant",
    n_negatives: int = 0,
    input_dropout: float = 0.0,
    reconstruction_targets=None,
    reconstruction_weight: float = 0.0,
    generator: torch.Generator | None = None,
    report: Callable[[str], None] = lambda line: None,
    on_epoch: Callable[[int], None] | None = None,
) -> TSNEResult:
    """Fine-tune ``model``'s encoder (and its decoder, with a reconstruction term) in place.

    ``inputs``: the encoder inputs of the ``n`` training documents (CSR or dense).
    ``affinity="knn"`` needs ``affinities`` (from :func:`knn_affinities`) or ``features``
    to compute them from; ``affinity="batch"`` needs ``features`` (e.g. LSA-50), on which P
    is computed inside each mini-batch of ``batch_size`` documents. ``exaggeration``
    multiplies the attraction for the first ``exaggeration_epochs`` (early exaggeration).
    ``schedule="cosine"`` anneals the learning rate to 0 over the ``n_epochs`` (per step);
    ``"constant"`` keeps it. ``n_negatives`` (knn only) adds that many uniformly drawn
    documents per step to the points whose pairs estimate Q's normaliser.
    ``input_dropout`` zeroes that fraction of the encoder's inputs (rescaling the rest)
    at each step, so that the map does not hinge on single words of the training posts.
    ``on_epoch(epoch)`` (1-based) is called after each epoch, with the model in eval mode.
    With ``reconstruction_weight > 0`` the loss adds that times the decoder's
    reconstruction loss of ``reconstruction_targets`` (the document word distributions).
    Returns the per-epoch KL estimates. The model is left in eval mode.
    """
    if affinity not in AFFINITIES:
        raise ValueError(f"unknown affinity {affinity!r}; choose from {AFFINITIES}")
    if not 0.0 <= input_dropout < 1.0:
        raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
    if model.code != "linear":
        raise ValueError("parametric t-SNE needs a real-valued (linear) code layer")
    n = inputs.shape[0]
    # small collections still get >= 8 steps per epoch
    batch_size = int(max(4, min(batch_size, max(64, n // 8))))
    if affinity == "knn" and affinities is None:
        if features is None:
            raise ValueError("affinity='knn' needs affinities= or features=")
        affinities = knn_affinities(features, perplexity)
    if affinity == "batch" and features is None:
        raise ValueError("affinity='batch' needs features=")
    if reconstruction_weight > 0 and reconstruction_targets is None:
        raise ValueError("reconstruction_weight > 0 needs reconstruction_targets")
    generator = generator if generator is not None else as_generator(0)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    reconstruction_targets = dense_if_small(reconstruction_targets)  # inputs stay sparse: SparseInputLinear
    parameters = list(model.encoder.parameters())
    if reconstruction_weight > 0:
        parameters += list(model.decoder.parameters())
    optimizer = adam(parameters, learning_rate)
    steps_per_epoch = max(1, n // max(1, batch_size // 2)) if affinity == "knn" else max(1, math.ceil((n - 2) / batch_size))
    total_steps, step_count = n_epochs * steps_per_epoch, 0

    def set_learning_rate():
        nonlocal step_count
        if schedule == "cosine":
            fraction = min(step_count / max(total_steps, 1), 1.0)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * 0.5 * (1.0 + math.cos(math.pi * fraction))
        step_count += 1
    result = TSNEResult()
    started = time.perf_counter()

    if affinity == "knn":
        P = affinities.tocoo()
        edge_p = P.data / P.data.sum()
        entropy_term = float((edge_p * np.log(edge_p)).sum()) + math.log(n * (n - 1))
        pairs = max(1, batch_size // 2)
        steps = max(1, n // pairs)

    def rows_tensor(rows):
        """The encoder inputs of ``rows``, dropped out: CSR for sparse inputs, else a tensor."""
        batch = inputs[rows] if sp.issparse(inputs) else to_dense_tensor(inputs[rows])
        return drop_inputs(batch, input_dropout, generator, rescale=True)

    # Collapse guard: with a large step and early exaggeration, Adam can drive the sigmoid
    # layers into saturation within an epoch, and every document then gets the same code
    # (seen on 20 Newsgroups for one seed in five: KL flat from epoch 2, p@100 0.04). The
    # spread of a fixed set of codes tells; the stage then starts over from its input
    # model at a quarter of the step. No random draws, so runs that never collapse are
    # unchanged.
    snapshot = copy.deepcopy(model.state_dict())
    probe = to_dense_tensor(inputs[: min(n, COLLAPSE_PROBE_ROWS)])
    start_spread = code_spread(model, probe)
    epoch = 0
    while epoch < n_epochs:
        epoch_started = time.perf_counter()
        model.train()
        alpha = exaggeration if epoch < exaggeration_epochs else 1.0
        total, count = 0.0, 0
        if affinity == "knn":
            picks = rng.choice(len(edge_p), size=steps * pairs, p=edge_p)
            for step in range(steps):
                edges = picks[step * pairs : (step + 1) * pairs]
                rows = np.concatenate([P.row[edges], P.col[edges]])
                if n_negatives > 0:
                    rows = np.concatenate([rows, rng.integers(0, n, n_negatives)])
                x = rows_tensor(rows)
                codes = model.encode(x)
                head, tail = codes[:pairs], codes[pairs : 2 * pairs]
                attraction = -_log_kernel((head - tail).pow(2).sum(1), dof).mean()
                sq = torch.cdist(codes, codes).pow(2)
                log_w = _log_kernel(sq, dof)
                off = ~torch.eye(len(codes), dtype=torch.bool)
                log_z = torch.logsumexp(log_w[off], 0) - math.log(int(off.sum()))
                kl = attraction + log_z  # + constant entropy_term
                loss = alpha * attraction + log_z
                if reconstruction_weight > 0:
                    target = to_dense_tensor(reconstruction_targets[P.row[edges]])
                    loss = loss + reconstruction_weight * model.reconstruction_loss(model.decode(head), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                set_learning_rate()
                optimizer.step()
                total += kl.item() + entropy_term
                count += 1
        else:
            order = rng.permutation(n)
            for start in range(0, n - 2, batch_size):
                rows = np.sort(order[start : start + batch_size])
                if len(rows) < 3:
                    continue
                Pb = torch.as_tensor(batch_affinities(features[rows], perplexity), dtype=torch.float32)
                x = rows_tensor(rows)
                codes = model.encode(x)
                log_w = _log_kernel(torch.cdist(codes, codes).pow(2), dof)
                log_w = log_w.masked_fill(torch.eye(len(rows), dtype=torch.bool), -math.inf)
                log_q = log_w - torch.logsumexp(log_w.flatten(), 0)
                mask = Pb > 0
                kl = (Pb[mask] * (torch.log(Pb[mask]) - log_q[mask])).sum()
                loss = kl - (alpha - 1.0) * (Pb[mask] * log_w[mask]).sum()
                if reconstruction_weight > 0:
                    target = to_dense_tensor(reconstruction_targets[rows])
                    loss = loss + reconstruction_weight * model.reconstruction_loss(model.decode(codes), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                set_learning_rate()
                optimizer.step()
                total += kl.item()
                count += 1
        mean_kl = total / max(count, 1)
        if not math.isfinite(mean_kl):
            raise FloatingPointError(f"t-SNE fine-tuning diverged at epoch {epoch + 1}: lower the learning rate")
        result.history.append(mean_kl)
        report(
            f"  t-SNE epoch {epoch + 1:3d}/{n_epochs}  KL {mean_kl:.4f}"
            f"{'  (exaggerated)' if alpha != 1.0 else ''}  ({time.perf_counter() - epoch_started:.1f}s)"
        )
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1)
        spread = code_spread(model, probe)
        if spread < COLLAPSE_RATIO * start_spread:
            model.load_state_dict(snapshot)
            if result.restarts == MAX_RESTARTS:
                result.collapsed = True
                warnings.warn(f"t-SNE fine-tuning collapsed the map {MAX_RESTARTS + 1} times (last at learning rate "
                              f"{learning_rate:g}); keeping the map from before the stage", RuntimeWarning, stacklevel=2)
                break
            result.restarts += 1
            learning_rate /= 4
            report(f"  t-SNE collapsed the map at epoch {epoch + 1} (code spread {spread:.2g}, was "
                   f"{start_spread:.2g}): starting over at learning rate {learning_rate:g}")
            optimizer = adam(parameters, learning_rate)
            step_count, epoch = 0, 0
            result.history.clear()
            continue
        epoch += 1
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def code_spread(model: DeepAutoencoder, inputs: torch.Tensor) -> float:
    """The largest standard deviation of a code dimension over ``inputs``: ~0 when the
    map has collapsed to a point."""
    model.eval()
    return float(model.encode(inputs).std(dim=0).max()) if len(inputs) > 1 else math.inf


def tsne_fine_tune_estimator(
    estimator,
    X,
    *,
    objective: str = "tsne",
    perplexity: float = 30.0,
    n_epochs: int = 50,
    affinity: str = "knn",
    reconstruction_weight: float = 0.1,
    **kwargs,
):
    """Run t-SNE fine-tuning on a fitted :class:`~semhash.topic_map.TopicMap` (in place).

    ``objective="tsne"``: KL only; ``"both"``: KL plus ``reconstruction_weight`` times the
    reconstruction loss. P comes from cosine neighbours of the estimator's
    ``_tsne_features(X)`` (TopicMap: LSA-50 of the counts; ImageMap: PCA-50 of the
    standardised pixels). Records ``tsne_history_`` and adds the time to ``fit_seconds_``.
    """
    if objective not in ("tsne", "both"):
        raise ValueError(f"objective must be 'tsne' or 'both' here, got {objective!r}")
    started = time.perf_counter()
    X = estimator._check_input(X)
    features = estimator._tsne_features(X)
    P = knn_affinities(features, perplexity) if affinity == "knn" else None
    generator = as_generator(estimator.random_state)
    both = objective == "both"
    result = fine_tune_tsne(
        estimator.model_,
        estimator._encoder_input(X),
        affinities=P,
        features=features,
        affinity=affinity,
        perplexity=perplexity,
        n_epochs=n_epochs,
        reconstruction_targets=estimator._reconstruction_target(X) if both else None,
        reconstruction_weight=reconstruction_weight if both else 0.0,
        generator=generator,
        report=estimator._log,
        **kwargs,
    )
    estimator.tsne_history_ = result.history
    estimator.fit_seconds_ = getattr(estimator, "fit_seconds_", 0.0) + (time.perf_counter() - started)
    return estimator
