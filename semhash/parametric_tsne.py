"""Parametric t-SNE: fine-tune a deep encoder so that its 2-D codes form a t-SNE map.

van der Maaten (2009), "Learning a Parametric Embedding by Preserving Local Structure":
an RBM-pretrained encoder is fine-tuned to minimise KL(P || Q), where P holds the
input-space neighbour probabilities and Q the Student-t similarities of the codes. Unlike
plain t-SNE, the result is a function: a new document is placed by one forward pass.

Two ways of getting P are offered (``TSNEConfig.affinity``):

* ``"knn"`` (default, chosen by measurement on a validation split of 20 Newsgroups
  train, see ``benchmarks/maps.py``): a perplexity-calibrated Gaussian over each
  document's ``3 * perplexity`` nearest neighbours by cosine of the given features (for
  documents: TF-IDF rows, or LSA-50 for short ones; for images: PCA-50), symmetrised over the whole collection, as in Barnes-Hut t-SNE. Each
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
import logging
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from semhash.autoencoder import DeepAutoencoder, adam
from semhash.data import as_generator, dense_if_small, drop_inputs, to_dense_tensor
from semhash.progress import shown_while

log = logging.getLogger(__name__)

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

    ``features`` (dense, or scipy-sparse such as TF-IDF rows) are compared by cosine (rows
    are L2-normalised here); each point's ``n_neighbors`` (default ``3 * perplexity``)
    nearest other points get a Gaussian calibrated to ``perplexity``, then
    ``P = (P_cond + P_cond^T) / 2n``.
    """
    X = _unit_rows(features)
    n = X.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE affinities need at least 3 points, got {n}")
    k = int(min(n - 1, n_neighbors or max(3, round(3 * perplexity))))
    perplexity = min(perplexity, max(1.0, (k - 1) / 3)) if n_neighbors is None and k < 3 * perplexity else perplexity
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        sims = X[start : start + block] @ X.T
        sims = sims.toarray() if sp.issparse(sims) else sims
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


def _unit_rows(features):
    """Rows scaled to unit length: a float32 array, or CSR for sparse features (TF-IDF rows)."""
    if sp.issparse(features):
        from sklearn.preprocessing import normalize

        return normalize(sp.csr_matrix(features, dtype=np.float32))
    X = np.asarray(features, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def batch_affinities(features: np.ndarray, perplexity: float = 30.0) -> np.ndarray:
    """Dense symmetric P within one batch (van der Maaten 2009), entries summing to 1."""
    X = np.asarray(features.toarray() if sp.issparse(features) else features, dtype=np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sq = np.maximum(2.0 - 2.0 * X @ X.T, 0.0)
    np.fill_diagonal(sq, np.inf)
    p = _calibrate(sq, min(perplexity, max(1.0, (len(X) - 2) / 3)))
    p = p + p.T
    return p / p.sum()


# ------------------------------------------------------------------ output similarity
def _log_kernel(sq: torch.Tensor, dof: float) -> torch.Tensor:
    """Log of the unnormalised Student-t kernel ``(1 + d^2 / dof)^(-(dof + 1) / 2)``."""
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


@dataclass(frozen=True)
class TSNEConfig:
    """Settings of the t-SNE fine-tuning stage (see :func:`fine_tune_tsne`).

    ``affinity``: ``"knn"`` or ``"batch"`` (see the module docstring). ``dof``: degrees of
    freedom of the Student-t kernel of the codes. ``exaggeration`` multiplies the
    attraction for the first ``exaggeration_epochs`` (early exaggeration).
    ``schedule="cosine"`` anneals the learning rate to 0 over the ``n_epochs`` (per
    step); ``"constant"`` keeps it. ``n_negatives`` (knn only) adds that many uniformly
    drawn documents per step to the points whose pairs estimate Q's normaliser.
    ``input_dropout`` zeroes that fraction of the encoder's inputs (rescaling the rest)
    at each step, so that the map does not hinge on single words of the training posts.
    ``reconstruction_weight > 0`` adds that times the decoder's reconstruction loss.
    ``min_documents``: an epoch passes each document once (as a pair's end, or in a
    batch); a collection of fewer than ``min_documents / n_epochs`` documents gets the
    epochs that pass that many.
    """

    affinity: str = "knn"
    perplexity: float = 30.0
    dof: float = 1.0
    n_epochs: int = 50
    batch_size: int = 500
    learning_rate: float = 1e-2
    exaggeration: float = 4.0
    exaggeration_epochs: int = 3
    schedule: str = "constant"
    n_negatives: int = 0
    input_dropout: float = 0.0
    reconstruction_weight: float = 0.0
    min_documents: int = 0

    def __post_init__(self) -> None:
        if self.affinity not in AFFINITIES:
            raise ValueError(f"unknown affinity {self.affinity!r}; choose from {AFFINITIES}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {self.input_dropout}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")


@dataclass
class TSNEResult:
    history: list[float] = field(default_factory=list)  # KL estimate per epoch (train)
    restarts: int = 0  # times the stage collapsed the map and started over at a lower step
    collapsed: bool = False  # every attempt collapsed: the model is left as it came in


def fine_tune_tsne(
    model: DeepAutoencoder,
    inputs,
    config: TSNEConfig = TSNEConfig(),
    *,
    affinities: sp.csr_matrix | None = None,
    features: np.ndarray | None = None,
    reconstruction_targets=None,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> TSNEResult:
    """Fine-tune ``model``'s encoder (and its decoder, with a reconstruction term) in place.

    ``inputs``: the encoder inputs of the ``n`` training documents (CSR or dense).
    ``config.affinity="knn"`` needs ``affinities`` (from :func:`knn_affinities`) or
    ``features`` to compute them from; ``"batch"`` needs ``features`` (e.g. LSA-50), on
    which P is computed inside each mini-batch of ``config.batch_size`` documents. With
    ``config.reconstruction_weight > 0`` the loss adds that times the decoder's
    reconstruction loss of ``reconstruction_targets`` (the document word distributions).
    ``on_epoch(epoch)`` (1-based) is called after each epoch, with the model in eval mode.
    Progress goes to this module's logger. The model is left in eval mode.
    """
    if model.code != "linear":
        raise ValueError("parametric t-SNE needs a real-valued (linear) code layer")
    if config.affinity == "knn" and affinities is None:
        if features is None:
            raise ValueError("affinity='knn' needs affinities= or features=")
        affinities = knn_affinities(features, config.perplexity)
    if config.affinity == "batch" and features is None:
        raise ValueError("affinity='batch' needs features=")
    if config.reconstruction_weight > 0 and reconstruction_targets is None:
        raise ValueError("reconstruction_weight > 0 needs reconstruction_targets")
    generator = generator if generator is not None else as_generator(0)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    if config.affinity == "knn":
        sampler = PairSampler(affinities, inputs, reconstruction_targets, config, rng, generator)
    else:
        sampler = WithinBatchSampler(features, inputs, reconstruction_targets, config, rng, generator)
    # a small collection's map stops far short of a large one's in the same epochs
    config = replace(config, n_epochs=max(config.n_epochs, math.ceil(config.min_documents / sampler.n)))
    result = TSNEResult()
    guard = CollapseGuard(model, inputs)
    learning_rate = config.learning_rate
    for attempt in range(MAX_RESTARTS + 1):
        result.history, collapse = train_epochs(model, sampler, config, learning_rate, guard, on_epoch)
        if collapse is None:
            break
        guard.restore(model)
        if attempt == MAX_RESTARTS:
            result.collapsed = True
            warnings.warn(f"t-SNE fine-tuning collapsed the map {MAX_RESTARTS + 1} times (last at learning rate "
                          f"{learning_rate:g}); keeping the map from before the stage", RuntimeWarning, stacklevel=2)
            break
        result.restarts += 1
        learning_rate /= 4  # a smaller step keeps the sigmoid layers out of saturation
        epoch, spread = collapse
        log.info(f"  t-SNE collapsed the map at epoch {epoch} (code spread {spread:.2g}, was "
                 f"{guard.start_spread:.2g}): starting over at learning rate {learning_rate:g}")
    model.eval()
    return result


def train_epochs(model: DeepAutoencoder, sampler: Sampler, config: TSNEConfig, learning_rate: float,
                 guard: CollapseGuard, on_epoch: Callable[[int], None] | None):
    """One attempt at the stage: ``config.n_epochs`` epochs from the model as it is.

    Returns the per-epoch KL estimates and, if the map collapsed, ``(epoch, spread)`` of
    the epoch (1-based) after which it was found collapsed (the attempt stops there).
    """
    parameters = list(model.encoder.parameters())
    if config.reconstruction_weight > 0:
        parameters += list(model.decoder.parameters())
    optimizer = adam(parameters, learning_rate)
    total_steps, step = config.n_epochs * sampler.steps_per_epoch, 0
    history: list[float] = []
    for epoch in range(config.n_epochs):
        epoch_started = time.perf_counter()
        model.train()
        alpha = config.exaggeration if epoch < config.exaggeration_epochs else 1.0
        total, count = 0.0, 0
        for batch in sampler.epoch():
            loss, kl = tsne_loss(model, batch, config, alpha)
            step_size = scheduled_learning_rate(config.schedule, learning_rate, step, total_steps)
            optimisation_step(optimizer, loss, step_size)
            step += 1
            total += kl.item() + sampler.entropy_term
            count += 1
        mean_kl = total / max(count, 1)
        if not math.isfinite(mean_kl):
            raise FloatingPointError(f"t-SNE fine-tuning diverged at epoch {epoch + 1}: lower the learning rate")
        history.append(mean_kl)
        log.info(
            f"  t-SNE epoch {epoch + 1:3d}/{config.n_epochs}  KL {mean_kl:.4f}"
            f"{'  (exaggerated)' if alpha != 1.0 else ''}  ({time.perf_counter() - epoch_started:.1f}s)"
        )
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1)
        spread = guard.collapsed_spread(model)
        if spread is not None:
            return history, (epoch + 1, spread)
    return history, None


# ------------------------------------------------------------------ loss and step
@dataclass
class Batch:
    """One step's documents; the first ``len(target)`` are those whose reconstruction is scored."""

    x: object  # encoder inputs, dropped out: CSR for sparse inputs, else a tensor
    target: torch.Tensor | None = None  # reconstruction targets, if the loss has that term
    n_pairs: int = 0  # knn: rows [0, n_pairs) and [n_pairs, 2 n_pairs) are the sampled pairs
    P: torch.Tensor | None = None  # batch: the input affinities within the batch


def tsne_loss(model: DeepAutoencoder, batch: Batch, config: TSNEConfig, alpha: float):
    """The step's loss (attraction exaggerated ``alpha`` times, plus the reconstruction
    term) and its KL estimate (knn: up to the constant entropy of P)."""
    codes = model.encode(batch.x)
    if batch.P is None:
        kl, loss = sampled_pairs_kl(codes, batch.n_pairs, config.dof, alpha)
    else:
        kl, loss = within_batch_kl(codes, batch.P, config.dof, alpha)
    if config.reconstruction_weight > 0:
        decoded = model.decode(codes[: len(batch.target)])
        loss = loss + config.reconstruction_weight * model.reconstruction_loss(decoded, batch.target)
    return loss, kl


def sampled_pairs_kl(codes: torch.Tensor, n_pairs: int, dof: float, alpha: float):
    """knn: ``-mean log w`` over the sampled pairs plus the log of Q's normaliser from all
    pairs of codes in the batch (see the module docstring); and the exaggerated loss."""
    head, tail = codes[:n_pairs], codes[n_pairs : 2 * n_pairs]
    attraction = -_log_kernel((head - tail).pow(2).sum(1), dof).mean()
    log_w = _log_kernel(torch.cdist(codes, codes).pow(2), dof)
    off = ~torch.eye(len(codes), dtype=torch.bool)
    log_z = torch.logsumexp(log_w[off], 0) - math.log(int(off.sum()))
    return attraction + log_z, alpha * attraction + log_z


def within_batch_kl(codes: torch.Tensor, P: torch.Tensor, dof: float, alpha: float):
    """batch: the exact KL(P || Q) within the batch; and the exaggerated loss."""
    log_w = _log_kernel(torch.cdist(codes, codes).pow(2), dof)
    log_w = log_w.masked_fill(torch.eye(len(codes), dtype=torch.bool), -math.inf)
    log_q = log_w - torch.logsumexp(log_w.flatten(), 0)
    mask = P > 0
    kl = (P[mask] * (torch.log(P[mask]) - log_q[mask])).sum()
    return kl, kl - (alpha - 1.0) * (P[mask] * log_w[mask]).sum()


def scheduled_learning_rate(schedule: str, learning_rate: float, step: int, total_steps: int) -> float:
    """The step size of step ``step`` (0-based): constant, or cosine-annealed to 0."""
    if schedule != "cosine":
        return learning_rate
    fraction = min(step / max(total_steps, 1), 1.0)
    return learning_rate * 0.5 * (1.0 + math.cos(math.pi * fraction))


def optimisation_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, learning_rate: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    optimizer.step()


# ---------------------------------------------------------------------- batches
class Sampler:
    """Draws each epoch's mini-batches; subclasses choose the documents of a step."""

    entropy_term = 0.0  # added to each step's KL estimate

    def __init__(self, inputs, targets, config: TSNEConfig, rng: np.random.Generator, generator: torch.Generator):
        self.inputs, self.config, self.rng, self.generator = inputs, config, rng, generator
        # inputs stay sparse (SparseInputLinear); the targets are gathered often, so dense
        self.targets = dense_if_small(targets) if config.reconstruction_weight > 0 else None
        self.n = inputs.shape[0]
        # small collections still get >= 8 steps per epoch
        self.batch_size = int(max(4, min(config.batch_size, max(64, self.n // 8))))

    def batch(self, rows: np.ndarray, target_rows: np.ndarray, **extra) -> Batch:
        x = self.inputs[rows] if sp.issparse(self.inputs) else to_dense_tensor(self.inputs[rows])
        x = drop_inputs(x, self.config.input_dropout, self.generator, rescale=True)
        target = None if self.targets is None else to_dense_tensor(self.targets[target_rows])
        return Batch(x, target, **extra)


class PairSampler(Sampler):
    """``affinity="knn"``: each step draws ``batch_size // 2`` neighbour pairs ``(i, j)``
    with probability ``p_ij`` (and ``n_negatives`` uniformly drawn documents)."""

    def __init__(self, affinities: sp.csr_matrix, *args):
        super().__init__(*args)
        self.P = affinities.tocoo()
        self.edge_p = self.P.data / self.P.data.sum()
        self.entropy_term = float((self.edge_p * np.log(self.edge_p)).sum()) + math.log(self.n * (self.n - 1))
        self.n_pairs = max(1, self.batch_size // 2)
        self.steps_per_epoch = max(1, self.n // self.n_pairs)

    def epoch(self) -> Iterator[Batch]:
        pairs, negatives = self.n_pairs, self.config.n_negatives
        picks = self.rng.choice(len(self.edge_p), size=self.steps_per_epoch * pairs, p=self.edge_p)
        for step in range(self.steps_per_epoch):
            edges = picks[step * pairs : (step + 1) * pairs]
            rows = np.concatenate([self.P.row[edges], self.P.col[edges]])
            if negatives > 0:
                rows = np.concatenate([rows, self.rng.integers(0, self.n, negatives)])
            yield self.batch(rows, rows[:pairs], n_pairs=pairs)


class WithinBatchSampler(Sampler):
    """``affinity="batch"``: a random partition of the documents into batches, with P
    computed from ``features`` within each."""

    def __init__(self, features: np.ndarray, *args):
        super().__init__(*args)
        self.features = features
        self.steps_per_epoch = max(1, math.ceil((self.n - 2) / self.batch_size))

    def epoch(self) -> Iterator[Batch]:
        order = self.rng.permutation(self.n)
        for start in range(0, self.n - 2, self.batch_size):
            rows = np.sort(order[start : start + self.batch_size])
            if len(rows) < 3:
                continue
            P = torch.as_tensor(batch_affinities(self.features[rows], self.config.perplexity), dtype=torch.float32)
            yield self.batch(rows, rows, P=P)


# ---------------------------------------------------------------- collapse guard
class CollapseGuard:
    """With a large step and early exaggeration, Adam can drive the sigmoid layers into
    saturation within an epoch, and every document then gets the same code (seen on 20
    Newsgroups). The spread of a fixed set of codes tells; the stage then starts over from
    its input model at a quarter of the step. No random draws: runs that never collapse
    are unchanged."""

    def __init__(self, model: DeepAutoencoder, inputs):
        self.snapshot = copy.deepcopy(model.state_dict())
        self.probe = to_dense_tensor(inputs[: min(inputs.shape[0], COLLAPSE_PROBE_ROWS)])
        self.start_spread = code_spread(model, self.probe)

    def collapsed_spread(self, model: DeepAutoencoder) -> float | None:
        """The codes' spread if the map has collapsed, else ``None``."""
        spread = code_spread(model, self.probe)
        return spread if spread < COLLAPSE_RATIO * self.start_spread else None

    def restore(self, model: DeepAutoencoder) -> None:
        model.load_state_dict(self.snapshot)


@torch.no_grad()
def code_spread(model: DeepAutoencoder, inputs: torch.Tensor) -> float:
    """The largest standard deviation of a code dimension over ``inputs``: ~0 when the
    map has collapsed to a point."""
    model.eval()
    return float(model.encode(inputs).std(dim=0).max()) if len(inputs) > 1 else math.inf


def tsne_fine_tune_estimator(estimator, X, *, objective: str = "tsne", perplexity: float = 30.0, n_epochs: int = 50,
                             affinity: str = "knn", reconstruction_weight: float = 0.1, **settings):
    """Run t-SNE fine-tuning on a fitted :class:`~semhash.topic_map.TopicMap` (in place).

    ``objective="tsne"``: KL only; ``"both"``: KL plus ``reconstruction_weight`` times the
    reconstruction loss. ``settings`` are further :class:`TSNEConfig` fields. P comes from
    cosine neighbours of the estimator's ``_tsne_features(X)`` (TopicMap: TF-IDF, or LSA-50
    for short documents; ImageMap: PCA-50 of the standardised pixels). Records ``tsne_history_`` and
    adds the time to ``fit_seconds_``. Progress shows on stderr if ``estimator.verbose``.
    """
    if objective not in ("tsne", "both"):
        raise ValueError(f"objective must be 'tsne' or 'both' here, got {objective!r}")
    both = objective == "both"
    config = TSNEConfig(affinity=affinity, perplexity=perplexity, n_epochs=n_epochs,
                        reconstruction_weight=reconstruction_weight if both else 0.0, **settings)
    started = time.perf_counter()
    with shown_while(estimator.verbose):
        X = estimator._check_input(X)
        features = estimator._tsne_features(X)
        P = knn_affinities(features, perplexity) if affinity == "knn" else None
        result = fine_tune_tsne(
            estimator.model_,
            estimator._encoder_input(X),
            config,
            affinities=P,
            features=features,
            reconstruction_targets=estimator._reconstruction_target(X) if both else None,
            generator=as_generator(estimator.random_state),
        )
    estimator.tsne_history_ = result.history
    estimator.fit_seconds_ = getattr(estimator, "fit_seconds_", 0.0) + (time.perf_counter() - started)
    return estimator
