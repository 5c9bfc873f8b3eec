"""Restricted Boltzmann machines trained by contrastive divergence (CD-k).

One class covers the unit types the semantic-hashing stacks need:

visible units
    ``"binary"``   logistic units, for the layers above the first;
    ``"poisson"``  the constrained Poisson model of Salakhutdinov & Hinton ("Semantic
                   Hashing", 2009) for word counts: the visible rates are
                   ``N * softmax(a + W h)``, so the reconstruction of a document keeps its
                   length ``N`` and the model cannot put mass on words it never saw together;
    ``"gaussian"`` linear units with unit variance, for standardised real inputs (pixels).
hidden units
    ``"binary"``   logistic units;
    ``"linear"``   linear units with unit-variance Gaussian noise, for a real-valued top layer.

Training follows Hinton's practical guide: mini-batches, mean-field visible
reconstructions, sampled hidden states while the chain runs, momentum that rises from
0.5 to 0.9 after a few epochs, and L2 weight decay.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from semhash.data import as_generator, iterate_batches, n_rows
from semhash.progress import shown_while

log = logging.getLogger(__name__)

VISIBLE_UNITS = ("binary", "poisson", "gaussian")
HIDDEN_UNITS = ("binary", "linear")


class RBM(TransformerMixin, BaseEstimator):
    """A restricted Boltzmann machine, as a scikit-learn transformer (data to hidden means).

    Parameters
    ----------
    n_hidden : number of hidden units.
    visible, hidden : unit types (see the module docstring).
    learning_rate : step size of the CD updates. Linear and Poisson units want smaller
        steps than binary ones (about 0.001-0.01 versus 0.05-0.1).
    momentum : final momentum; the first ``warmup_epochs`` epochs use 0.5.
    weight_decay : L2 penalty on the weights.
    cd_steps : k in CD-k.
    batch_size, n_epochs : mini-batch size and passes over the data.
    random_state : seed for the initial weights, batch order and sampling.
    verbose : show one line of progress per epoch on stderr (the lines go to this
        module's logger; see :mod:`semhash.progress`).

    Attributes
    ----------
    weights_ : ``(n_features_in_, n_hidden)`` tensor; ``visible_bias_``, ``hidden_bias_``.
    history_ : reconstruction error of each epoch.
    """

    def __init__(
        self,
        n_hidden: int = 500,
        *,
        visible: str = "binary",
        hidden: str = "binary",
        learning_rate: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 2e-4,
        cd_steps: int = 1,
        batch_size: int = 100,
        n_epochs: int = 10,
        warmup_epochs: int = 5,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self.n_hidden = n_hidden
        self.visible = visible
        self.hidden = hidden
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.cd_steps = cd_steps
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.warmup_epochs = warmup_epochs
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ units
    def hidden_mean(self, v: torch.Tensor) -> torch.Tensor:
        """E[h | v]: logistic or linear in the total input."""
        # .to is a no-op in training (float32); transform passes float64 batches.
        total = v @ self.weights_.to(v.dtype) + self.hidden_bias_.to(v.dtype)
        return torch.sigmoid(total) if self.hidden == "binary" else total

    def visible_mean(self, h: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        """E[v | h]; Poisson visibles need the document ``length`` (row sums of the data)."""
        total = h @ self.weights_.T + self.visible_bias_
        if self.visible == "binary":
            return torch.sigmoid(total)
        if self.visible == "poisson":
            return length * torch.softmax(total, dim=1)
        return total

    def sample_hidden(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.hidden == "binary":
            return torch.bernoulli(mean, generator=generator)
        return mean + torch.randn(mean.shape, generator=generator)

    # --------------------------------------------------------------- learning
    def fit(self, X, y=None) -> "RBM":
        """Train on ``X`` (dense or sparse, ``(n_samples, n_visible)``) by CD-k."""
        with shown_while(self.verbose):
            return self._fit(X)

    def _fit(self, X) -> "RBM":
        self._check_params()
        X = self._check_input(X, reset=True)
        n_visible = X.shape[1]
        generator = as_generator(self.random_state)
        # Small random weights break the symmetry; 0.01 is Hinton's recommendation.
        self.weights_ = 0.01 * torch.randn(n_visible, self.n_hidden, generator=generator)
        self.hidden_bias_ = torch.zeros(self.n_hidden)
        self.visible_bias_ = self._initial_visible_bias(X)
        self.history_: list[float] = []

        params = (self.weights_, self.visible_bias_, self.hidden_bias_)
        velocity = [torch.zeros_like(p) for p in params]
        for epoch in range(self.n_epochs):
            started = time.perf_counter()
            momentum = 0.5 if epoch < self.warmup_epochs else self.momentum
            error, seen = 0.0, 0
            for v0 in iterate_batches(X, self.batch_size, shuffle=True, generator=generator):
                grads, batch_error = self._contrastive_divergence(v0, generator)
                grads[0] -= self.weight_decay * self.weights_
                for param, vel, grad in zip(params, velocity, grads):
                    vel.mul_(momentum).add_(grad, alpha=self.learning_rate)
                    param.add_(vel)
                error += batch_error * len(v0)
                seen += len(v0)
            self.history_.append(error / seen)
            if not math.isfinite(self.history_[-1]):
                raise FloatingPointError(
                    f"RBM training diverged at epoch {epoch + 1} (reconstruction error "
                    f"{self.history_[-1]}): lower the learning rate (now {self.learning_rate})"
                )
            log.info(
                f"  epoch {epoch + 1:3d}/{self.n_epochs}  reconstruction error "
                f"{self.history_[-1]:.4f}  ({time.perf_counter() - started:.1f}s)"
            )
        return self

    def _contrastive_divergence(self, v0: torch.Tensor, generator: torch.Generator):
        """Gradient estimate of CD-k for one batch, and the batch's reconstruction error."""
        length = v0.sum(dim=1, keepdim=True) if self.visible == "poisson" else None
        h0_mean = self.hidden_mean(v0)
        h = self.sample_hidden(h0_mean, generator)
        for step in range(self.cd_steps):
            # Mean-field visible reconstructions: less sampling noise, same fixed points.
            vk = self.visible_mean(h, length)
            hk_mean = self.hidden_mean(vk)
            if step < self.cd_steps - 1:
                h = self.sample_hidden(hk_mean, generator)
        batch = len(v0)
        grad_w = (v0.T @ h0_mean - vk.T @ hk_mean) / batch
        grad_a = (v0 - vk).mean(dim=0)
        grad_b = (h0_mean - hk_mean).mean(dim=0)
        return [grad_w, grad_a, grad_b], self._reconstruction_error(v0, vk, length)

    def _reconstruction_error(self, v0, vk, length) -> float:
        if self.visible == "poisson":
            # Cross-entropy between the word distributions, in nats per document.
            target = v0 / length.clamp_min(1e-12)
            predicted = vk / length.clamp_min(1e-12)
            return float(-(target * torch.log(predicted.clamp_min(1e-12))).sum(dim=1).mean())
        return float(((v0 - vk) ** 2).sum(dim=1).mean())

    def _initial_visible_bias(self, X) -> torch.Tensor:
        """Visible biases start at the data's log-odds (binary), log-rates (Poisson) or mean."""
        mean = torch.zeros(X.shape[1])
        for batch in iterate_batches(X, 4096):
            mean += batch.sum(dim=0)
        mean /= n_rows(X)
        if self.visible == "binary":
            p = mean.clamp(1e-3, 1 - 1e-3)
            return torch.log(p / (1 - p))
        if self.visible == "poisson":
            return torch.log(mean.clamp_min(1e-6) / mean.sum().clamp_min(1e-6))
        return mean

    # ------------------------------------------------------------- inference
    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Hidden means for every row of ``X``, as a float32 array."""
        self._check_fitted()
        X = self._check_input(X, reset=False)
        # In float64, then rounded: float32 sums in BLAS depend on where a row falls in its
        # block, so a row's output would otherwise change with the rows around it.
        out = [self.hidden_mean(batch.double()).float() for batch in iterate_batches(X, 4096)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.n_hidden), np.float32)

    @torch.no_grad()
    def reconstruction_error(self, X) -> float:
        """Mean error of one deterministic up-down pass (the measure ``fit`` reports)."""
        self._check_fitted()
        X = self._check_input(X, reset=False)
        total, seen = 0.0, 0
        for v0 in iterate_batches(X, 4096):
            length = v0.sum(dim=1, keepdim=True) if self.visible == "poisson" else None
            vk = self.visible_mean(self.hidden_mean(v0), length)
            total += self._reconstruction_error(v0, vk, length) * len(v0)
            seen += len(v0)
        return total / seen

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if self.visible not in VISIBLE_UNITS:
            raise ValueError(f"unknown visible units {self.visible!r}; choose from {VISIBLE_UNITS}")
        if self.hidden not in HIDDEN_UNITS:
            raise ValueError(f"unknown hidden units {self.hidden!r}; choose from {HIDDEN_UNITS}")
        if self.n_hidden < 1 or self.cd_steps < 1 or self.batch_size < 1 or self.n_epochs < 0:
            raise ValueError("n_hidden, cd_steps and batch_size must be >= 1, n_epochs >= 0")

    def _check_input(self, X, *, reset: bool):
        """``X`` validated as scikit-learn does, float32 (CSR if sparse); Poisson visible
        units model counts, so they refuse negative values."""
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=reset)
        if self.visible == "poisson":
            check_non_negative(X, "RBM (Poisson visible units)")
        return X

    def _check_fitted(self) -> None:
        check_is_fitted(self, "weights_")  # NotFittedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = self.visible == "poisson"
        tags.transformer_tags.preserves_dtype = ["float32"]  # hidden means are float32
        return tags
