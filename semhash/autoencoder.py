"""The deep autoencoder: a stack of pretrained RBMs, unrolled and fine-tuned.

Unrolling (Hinton & Salakhutdinov, Science 2006): the encoder uses each RBM's weights
and hidden biases bottom-up; the decoder uses the transposed weights and visible
biases top-down, so before fine-tuning the network computes exactly the stack's
deterministic up-down pass. Fine-tuning then trains encoder and decoder as separate
weights by backpropagation.

Binary codes come from logistic code units with Gaussian noise added to their total
input during fine-tuning: to get its reconstruction through the noise, the network has
to push the inputs far from zero, which drives the code units to 0 or 1, so that
thresholding at 0.5 loses little ("Semantic Hashing", Salakhutdinov & Hinton 2009).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from semhash.codes import code_spread
from semhash.data import dense_if_small, drop_inputs, gather_rows, iterate_batches, to_dense_tensor
from semhash.rbm import RBM

log = logging.getLogger(__name__)

CODE_UNITS = ("binary", "linear")
OUTPUT_UNITS = ("softmax", "linear", "logistic")
SPARSE_MIN_ROWS = 256  # from this many rows on, sparse input meets the first layer sparse


class SparseInputLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` for a scipy-sparse batch ``x``, differentiable in weight and bias.

    Word counts are mostly zeros (more so after input dropout): a dense first layer spends
    nearly all its work on them. The sparse products (scipy) cost the non-zeros times the
    layer width, for the forward pass and for the weight gradient alike (the saving is
    measured in benchmarks/README.md). No gradient flows to ``x`` (the data).
    """

    @staticmethod
    def forward(ctx, weight, bias, x):
        ctx.x = x
        out = x @ np.ascontiguousarray(weight.detach().numpy().T)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)) + bias

    @staticmethod
    def backward(ctx, grad):
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_weight = torch.from_numpy(np.ascontiguousarray((ctx.x.T @ grad.numpy()).T, dtype=np.float32))
        if ctx.needs_input_grad[1]:
            grad_bias = grad.sum(0)
        return grad_weight, grad_bias, None


class DeepAutoencoder(nn.Module):
    """Encoder ``sizes[0] -> ... -> sizes[-1]`` (the code) and its mirror-image decoder."""

    def __init__(self, sizes: Sequence[int], *, code: str = "binary", output: str = "softmax"):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an autoencoder needs at least two layer sizes, got {list(sizes)}")
        if code not in CODE_UNITS:
            raise ValueError(f"unknown code units {code!r}; choose from {CODE_UNITS}")
        if output not in OUTPUT_UNITS:
            raise ValueError(f"unknown output units {output!r}; choose from {OUTPUT_UNITS}")
        self.sizes, self.code, self.output = list(sizes), code, output
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.decoder = nn.ModuleList(nn.Linear(b, a) for a, b in reversed(pairs))

    @classmethod
    @torch.no_grad()
    def from_rbms(cls, rbms: Sequence[RBM], *, code: str, output: str) -> "DeepAutoencoder":
        sizes = [rbms[0].weights_.shape[0]] + [rbm.weights_.shape[1] for rbm in rbms]
        model = cls(sizes, code=code, output=output)
        for layer, rbm in zip(model.encoder, rbms):
            layer.weight.copy_(rbm.weights_.T)
            layer.bias.copy_(rbm.hidden_bias_)
        for layer, rbm in zip(model.decoder, reversed(rbms)):
            layer.weight.copy_(rbm.weights_)
            layer.bias.copy_(rbm.visible_bias_)
        return model

    def code_input(self, x) -> torch.Tensor:
        """Total input to the code units, of a dense tensor or a scipy-sparse batch."""
        first = self.encoder[0]
        total = SparseInputLinear.apply(first.weight, first.bias, x) if sp.issparse(x) else first(x)
        for layer in self.encoder[1:]:
            total = layer(torch.sigmoid(total))
        return total

    def encode(self, x) -> torch.Tensor:
        """Code-unit activities: probabilities in (0, 1) for binary codes, reals otherwise."""
        total = self.code_input(x)
        return torch.sigmoid(total) if self.code == "binary" else total

    def encode_matrix(self, X) -> torch.Tensor:
        """:meth:`encode` of the rows of a dense or scipy-sparse matrix.

        Word counts have a few dozen non-zeros in thousands of columns, so many sparse rows
        go through the first layer as a sparse product (several times faster than
        densifying them); a few rows are faster dense.
        """
        if not sp.issparse(X):
            return self.encode(to_dense_tensor(X))
        X = sp.csr_matrix(X, dtype=np.float32)
        if X.shape[0] >= SPARSE_MIN_ROWS:
            return self.encode(X)
        # A few rows (a query) meet only the first layer's weights of their words: a dozen
        # of thousands, where a dense product would multiply every other column by zero.
        if X.shape[0] == 1:
            columns, dense = X.indices, X.data[None, :]  # a repeated column adds up the same way
        else:
            columns, positions = np.unique(X.indices, return_inverse=True)
            dense = np.zeros((X.shape[0], len(columns)), np.float32)
            dense[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), positions] = X.data
        rows = self._input_rows().index_select(0, torch.from_numpy(columns.astype(np.int64)))
        total = torch.addmm(self.encoder[0].bias, torch.from_numpy(np.ascontiguousarray(dense)), rows)
        for layer in self.encoder[1:]:
            total = layer(torch.sigmoid(total))
        return torch.sigmoid(total) if self.code == "binary" else total

    def _input_rows(self) -> torch.Tensor:
        """The first layer's weights as one contiguous row per input unit, so that a query
        gathers its words' rows rather than strided columns; kept while the weights are
        unchanged (an optimiser step bumps the tensor's version)."""
        weight = self.encoder[0].weight
        key = (weight.data_ptr(), weight._version)
        if self.__dict__.get("_rows_key") != key:
            self.__dict__["_rows"] = weight.detach().T.contiguous()
            self.__dict__["_rows_key"] = key
        return self.__dict__["_rows"]

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Output total inputs (logits for softmax and logistic outputs)."""
        for layer in self.decoder[:-1]:
            code = torch.sigmoid(layer(code))
        return self.decoder[-1](code)

    def training_code(self, x, code_noise: float = 0.0, generator=None) -> torch.Tensor:
        """The code of a batch as fine-tuning sees it: binary codes with ``code_noise``
        (std) added to the code units' input."""
        total = self.code_input(x)
        if self.code != "binary":
            return total
        if code_noise > 0:
            total = total + code_noise * torch.randn(total.shape, generator=generator)
        return torch.sigmoid(total)

    def forward(self, x, code_noise: float = 0.0, generator=None):
        """Code (see :meth:`training_code`) and output logits of a dense or scipy-sparse batch."""
        code = self.training_code(x, code_noise, generator)
        return code, self.decode(code)

    def reconstruction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss per row: softmax cross-entropy against a distribution, or MSE/BCE."""
        if self.output == "softmax":
            return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        if self.output == "logistic":
            return nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()
        return ((logits - target) ** 2).sum(dim=1).mean()


def adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one vectorised pass over each tensor per step.

    On a CPU the per-tensor and ``foreach`` implementations make the optimiser a large
    share of a fit; the fused kernel does the same update several times faster
    (benchmarks/README.md). Same algorithm, so results agree up to float rounding.
    """
    return torch.optim.Adam(parameters, lr=learning_rate, fused=True)


LEARNING_RATE_DROP = 4  # the step's divisor at each plateau (see fine_tune)
# The warm-up of fine_tune: its first WARMUP_UPDATES steps, but no more than WARMUP_EPOCHS
# epochs (10 epochs of ~100 steps, what collections of 1,000-10,000 documents take at
# batch_size="auto"); counted in steps, so that a collection of a million documents is
# not held for 10 epochs of 10,000 steps each.
WARMUP_UPDATES = 1000
WARMUP_EPOCHS = 10


@dataclass
class FineTuneResult:
    history: list[tuple[float, float]]  # (train loss, validation loss) per epoch
    best_epoch: int
    drop_epochs: list[int]  # epochs after which the step was divided by LEARNING_RATE_DROP


def fine_tune(
    model: DeepAutoencoder,
    inputs,
    targets,
    *,
    validation: tuple | None = None,
    n_epochs: int = 30,
    batch_size: int = 100,
    learning_rate: float = 1e-3,
    code_noise: float = 0.0,
    patience: int = 5,
    tol: float = 0.0,
    learning_rate_drops: int = 0,
    warmup_epochs: int | None = None,
    input_dropout: float = 0.0,
    neighbours: np.ndarray | None = None,
    pair_weight: float = 0.0,
    pair_temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> FineTuneResult:
    """Backpropagation through the unrolled network, with early stopping.

    ``inputs`` feed the encoder and ``targets`` are what the decoder must reproduce
    (for documents: the word distribution). With ``validation=(inputs, targets)``, the
    model keeps the weights of the epoch with the lowest validation loss, measured on
    the codes as they will be used: thresholded at 0.5 for binary codes. The first
    ``warmup_epochs`` (default: see :data:`WARMUP_UPDATES`) are never chosen nor counted
    towards ``patience``: while the code noise is driving the units to 0/1, the
    thresholded codes get worse before they get better, and stopping there would keep
    nearly constant codes. Nor is an epoch
    whose validation codes have collapsed (:class:`~semhash.codes.CodeSpread`) once one
    that has not was seen: a constant code can have a deceptively low loss on a
    collection dominated by a few frequent words.

    Training runs by convergence: an epoch whose validation loss is at least ``tol``
    (relative) below that of the last such epoch is progress; after ``patience`` epochs
    without progress the step is divided by :data:`LEARNING_RATE_DROP`, up to
    ``learning_rate_drops`` times, and then training stops; ``n_epochs`` is a cap. A
    smaller step at the end lets the noisy binary codes settle, where a constant one
    keeps the validation loss creeping down for as long as it runs.

    ``input_dropout`` zeroes that fraction of the encoder's inputs (a denoising
    autoencoder: the code must be recoverable from part of a document's words).
    Progress (one line an epoch) goes to this module's logger.
    """
    if warmup_epochs is None:
        warmup_epochs = min(WARMUP_EPOCHS, math.ceil(WARMUP_UPDATES / math.ceil(inputs.shape[0] / batch_size)))
    optimizer = adam(model.parameters(), learning_rate)
    targets = dense_if_small(targets)  # inputs stay sparse: SparseInputLinear
    pairs = neighbours is not None and pair_weight > 0
    history: list[tuple[float, float]] = []
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    best_spread_ok = False
    progress = (math.inf, 0)  # (validation loss, epoch) of the last tol-sized improvement
    drop_epochs: list[int] = []
    for epoch in range(n_epochs):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        batches = iterate_batches(inputs, batch_size, shuffle=True, generator=generator, extra=targets,
                                  keep_sparse=True, with_rows=True)
        for rows, x, target in batches:
            x = drop_inputs(x, input_dropout, generator)
            code, logits = model(x, code_noise=code_noise, generator=generator)
            loss = model.reconstruction_loss(logits, target)
            if pairs:
                loss = loss + pair_weight * _pair_loss(model, code, rows, inputs, neighbours, input_dropout,
                                                       code_noise, pair_temperature, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * x.shape[0]
            seen += x.shape[0]
        train_loss = total / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"fine-tuning diverged at epoch {epoch + 1}: lower the learning rate (now {learning_rate})"
            )
        val_loss = evaluate_loss(model, *validation) if validation is not None else train_loss
        history.append((train_loss, val_loss))
        spread_ok = not _codes_collapsed(model, validation[0] if validation is not None else inputs)
        # warm-up epochs and the first epoch whose codes keep their spread are always taken
        taken = epoch < warmup_epochs or epoch == 0 or (spread_ok and not best_spread_ok)
        if (spread_ok or not best_spread_ok) and (val_loss < best[0] or taken):
            if val_loss < progress[0] * (1 - tol) or taken:
                progress = (val_loss, epoch)
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
            best_spread_ok = spread_ok
        log.info(
            f"  epoch {epoch + 1:3d}/{n_epochs}  train loss {train_loss:.4f}  "
            f"validation loss {val_loss:.4f}  ({time.perf_counter() - started:.1f}s)"
        )
        if epoch - progress[1] >= patience:
            if len(drop_epochs) < learning_rate_drops:
                drop_epochs.append(epoch)
                for group in optimizer.param_groups:
                    group["lr"] /= LEARNING_RATE_DROP
                progress = (progress[0], epoch)
                log.info(f"  plateau: learning rate lowered to {optimizer.param_groups[0]['lr']:.2g}")
                continue
            log.info(f"  early stop: no improvement for {patience} epochs, best epoch {best[1] + 1}")
            break
    model.load_state_dict(best[2])
    model.eval()
    return FineTuneResult(history=history, best_epoch=best[1], drop_epochs=drop_epochs)


def _pair_loss(model, code, rows, inputs, neighbours, input_dropout, code_noise, temperature, generator):
    """Contrastive term: each document's code must be nearer (in expected Hamming
    distance) to the code of one of its input-space neighbours than to the other
    documents' neighbours in the batch (InfoNCE over the batch)."""
    pick = torch.randint(0, neighbours.shape[1], (len(rows),), generator=generator).numpy()
    other = neighbours[rows, pick]
    x = drop_inputs(gather_rows(inputs, other, keep_sparse=True), input_dropout, generator)
    mate = model.training_code(x, code_noise, generator)  # the decoder is not needed here
    if model.code == "binary":
        # expected Hamming distance of independent bits: p(1 - q) + q(1 - p), summed
        distance = code.sum(1, keepdim=True) + mate.sum(1)[None, :] - 2 * code @ mate.T
    else:
        distance = torch.cdist(code, mate) ** 2
    logits = -distance / (temperature * code.shape[1])
    return nn.functional.cross_entropy(logits, torch.arange(len(rows)))


SPREAD_SAMPLE = 2000  # documents whose codes are checked for collapse after each epoch


@torch.no_grad()
def _codes_collapsed(model: DeepAutoencoder, inputs) -> bool:
    """Have the binary codes of (up to SPREAD_SAMPLE of) ``inputs`` lost their spread?"""
    if model.code != "binary":
        return False
    model.eval()
    sample = inputs[:SPREAD_SAMPLE]
    return code_spread(model.encode_matrix(sample).numpy() > 0.5).collapsed


@torch.no_grad()
def evaluate_loss(model: DeepAutoencoder, inputs, targets, batch_size: int = 1024) -> float:
    """Reconstruction loss with deployment-time codes (binary codes thresholded)."""
    model.eval()
    total, seen = 0.0, 0
    for x, target in iterate_batches(inputs, batch_size, extra=targets, keep_sparse=True):
        code = model.encode(x)
        if model.code == "binary":
            code = (code > 0.5).to(code.dtype)
        total += float(model.reconstruction_loss(model.decode(code), target)) * x.shape[0]
        seen += x.shape[0]
    return total / seen
