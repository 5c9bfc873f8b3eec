"""The deep-code estimator shared by binary hashers and 2-D maps.

``fit`` runs the whole recipe of Hinton & Salakhutdinov: greedy layer-wise pretraining
of a stack of RBMs, unrolling into a deep autoencoder, and fine-tuning by
backpropagation. Subclasses only choose the code layer (binary or linear) and its size.

Text input is a matrix of raw word counts. The encoder sees ``log(1 + count)``, which
keeps a long post from saturating the first layer while preserving which words occur;
the decoder reconstructs the document's word distribution (counts / length) through a
softmax, scored by cross-entropy, as in the papers.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from semhash.autoencoder import SPREAD_SAMPLE, DeepAutoencoder, evaluate_loss, fine_tune
from semhash.codes import code_spread
from semhash.data import as_generator
from semhash.files import atomic_write_bytes
from semhash.rbm import RBM

FORMAT_NAME = "semhash.model"
FORMAT_VERSION = 1

# The encoder's input is log(1 + count), scaled up for collections of short documents so
# that the average document's total is at least this: the contrastive-divergence steps of
# the Poisson layer and the spread of the first hidden layer grow with that total, so a
# collection of titles (total ~3) barely moves the first layer and its codes collapse.
# Longer documents are left as they are: the learning rates were set on them, and even a
# slight scaling down of 20 Newsgroups posts left the Poisson layer's units nearly all off
# and fine-tuning stuck on a plateau (benchmarks/README.md, "Many corpora").
# 50 is about a 20 Newsgroups post at 2,000 words.
INPUT_TOTAL = 50.0

# Below this many distinct vocabulary words per document (on average: titles, not
# abstracts or the first lines of posts), the neighbour targets use LSA similarity and
# fine-tuning adds the neighbour-pair term (see neighbour_similarity and pair_weight).
# Set between the two corpora on whose validation splits the choice flips
# (benchmarks/README.md, "Many corpora").
SHORT_DOCUMENT_WORDS = 10
LSA_NEIGHBOUR_DIMS = 64

# A pretrained layer in which this share of the hidden units no longer varies across the
# training documents (std of the activation under DEAD_UNIT_STD) is re-trained, up to
# DEAD_LAYER_RETRIES times, each time with DEAD_LAYER_STEP times the CD step.
DEAD_LAYER_SHARE = 0.9
DEAD_UNIT_STD = 0.01
DEAD_LAYER_RETRIES = 2
DEAD_LAYER_STEP = 0.2


class CodeCollapseWarning(UserWarning):
    """A fitted model whose binary codes have lost their spread (see ``code_spread_``)."""


class ModelFormatError(ValueError):
    """A model file that is not a semhash model, or one this version cannot read."""


class DeepCodeModel:
    """Base estimator: RBM-pretrained, fine-tuned deep autoencoder over word counts.

    Parameters
    ----------
    hidden_layers : sizes of the layers between the input and the code.
    code_size : units in the code layer (bits, or dimensions of a real code).
    pretrain_epochs : CD-1 epochs for each RBM of the stack.
    pretrain_learning_rate : CD step for binary layers; the Poisson bottom layer and a
        linear top layer use a tenth of it, as they see larger total inputs.
    finetune_epochs, finetune_learning_rate : backpropagation schedule (Adam).
    batch_size : mini-batch size; ``"auto"`` is 100 (as in the papers) for collections
        of 10,000 documents or more and down to 10 for small ones, so that a small
        collection still gets enough updates. The CD learning rates are given for
        batches of 100 and scale with the batch size (same step per example).
    code_noise : std of the Gaussian noise added to the code units' input during
        fine-tuning (binary codes only); it is what makes the codes binary.
    neighbour_targets : if > 0, the fine-tuning target of each document is its word
        distribution averaged with those of its ``neighbour_targets`` nearest training
        documents by TF-IDF cosine (weight ``neighbour_weight`` on the neighbours). This
        denoises the short, sparse posts' targets: the code must explain the topic a
        document shares with its neighbours, not its idiosyncratic words.
    neighbour_similarity : how those neighbours are found: ``"tfidf"`` cosine, ``"lsa"``
        cosine (LSA-64 of the TF-IDF), or ``"auto"``: LSA when the documents average fewer
        than :data:`SHORT_DOCUMENT_WORDS` distinct vocabulary words (two titles rarely share
        a word, so TF-IDF finds near-random neighbours), TF-IDF otherwise.
    idf_target : weight each word of the reconstruction target by its inverse document
        frequency (then renormalise to a distribution), so that the code spends its
        capacity on topical words rather than on ones every post has.
    idf_input : likewise weight the encoder's ``log(1 + count)`` input by idf.
    input_dropout : fraction of the encoder's inputs zeroed at random in each fine-tuning
        step (denoising): the code must be recoverable from part of a document's words,
        which regularises it and makes a fragment's code land near the whole document's.
    pair_weight : weight of a contrastive term in fine-tuning: each training document's
        code is pulled towards the code of one of its ``neighbour_targets`` nearest
        documents (found as for the targets) and away from the other documents' in the
        mini-batch (InfoNCE over expected Hamming distances, ``pair_temperature`` times the
        code size). ``"auto"``: 1 for short documents (the ``neighbour_similarity``
        rule) with binary codes, 0 otherwise.
    validation_fraction : share of the training documents held out for early stopping.
    patience : fine-tuning epochs without validation improvement before stopping.
    random_state : seed; the same seed and data give the same model.
    verbose : print progress (layer, epoch, loss) to stderr.
    """

    code_units = "binary"  # or "linear"
    visible_units = "poisson"  # bottom RBM's visible units
    output_units = "softmax"  # decoder output: a word distribution

    def __init__(
        self,
        *,
        hidden_layers: tuple[int, ...] = (500, 500),
        code_size: int = 128,
        pretrain_epochs: int = 5,
        pretrain_learning_rate: float = 0.5,
        finetune_epochs: int = 50,
        finetune_learning_rate: float = 3e-3,
        batch_size: int | str = "auto",
        code_noise: float = 4.0,
        neighbour_targets: int = 10,
        neighbour_weight: float = 0.5,
        neighbour_similarity: str = "auto",
        idf_target: bool = False,
        idf_input: bool = False,
        input_dropout: float = 0.0,
        pair_weight: float | str = "auto",
        pair_temperature: float = 0.1,
        validation_fraction: float = 0.1,
        patience: int = 5,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self.hidden_layers = hidden_layers
        self.code_size = code_size
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_learning_rate = pretrain_learning_rate
        self.finetune_epochs = finetune_epochs
        self.finetune_learning_rate = finetune_learning_rate
        self.batch_size = batch_size
        self.code_noise = code_noise
        self.neighbour_targets = neighbour_targets
        self.neighbour_weight = neighbour_weight
        self.neighbour_similarity = neighbour_similarity
        self.idf_target = idf_target
        self.idf_input = idf_input
        self.input_dropout = input_dropout
        self.pair_weight = pair_weight
        self.pair_temperature = pair_temperature
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        names = [name for name in inspect.signature(DeepCodeModel.__init__).parameters if name != "self"]
        return {name: getattr(self, name) for name in names}

    @property
    def layer_sizes(self) -> list[int]:
        return [self.n_features_in_, *self.hidden_layers, self.code_size]

    # -------------------------------------------------------------- training
    def fit(self, X, y=None) -> "DeepCodeModel":
        """Pretrain the RBM stack on word counts ``X`` and fine-tune the autoencoder."""
        started = time.perf_counter()
        X = self._check_input(X)
        generator = as_generator(self.random_state)
        torch.manual_seed(0 if self.random_state is None else self.random_state)
        self.n_features_in_ = X.shape[1]
        self._fit_input_statistics(X)
        inputs, targets = self._encoder_input(X), self._reconstruction_target(X)
        if self.neighbour_targets > 0 and X.shape[0] > 1:
            self.neighbour_similarity_ = self._neighbour_similarity(X)
            neighbours = self._neighbours(X, self.neighbour_similarity_)
            targets = smooth_with_neighbours(targets, neighbours, self.neighbour_weight)

        train_rows, val_rows = self._split(X.shape[0], generator)
        self.batch_size_ = self._batch_size(len(train_rows))
        self.pair_weight_ = self._pair_weight(X)
        pair_neighbours = None
        if self.pair_weight_ > 0 and len(train_rows) > 2:
            # indices among the training rows
            pair_neighbours = self._neighbours(X[train_rows], self._neighbour_similarity(X))
        self._log(
            f"{type(self).__name__}: {X.shape[0]} documents, network "
            f"{'-'.join(map(str, self.layer_sizes))}, {self.code_units} code"
        )
        rbms = self._pretrain(inputs[train_rows], generator)
        self.model_ = DeepAutoencoder.from_rbms(rbms, code=self.code_units, output=self.output_units)
        self.pretrain_history_ = [rbm.history_ for rbm in rbms]

        validation = (inputs[val_rows], targets[val_rows]) if len(val_rows) else None
        self._log(f"fine-tuning ({'noise std %g on the code' % self.code_noise if self.code_units == 'binary' else 'linear code'})")
        result = fine_tune(
            self.model_,
            inputs[train_rows],
            targets[train_rows],
            validation=validation,
            n_epochs=self.finetune_epochs,
            batch_size=self.batch_size_,
            learning_rate=self.finetune_learning_rate,
            code_noise=self.code_noise if self.code_units == "binary" else 0.0,
            input_dropout=self.input_dropout,
            neighbours=pair_neighbours,
            pair_weight=self.pair_weight_,
            pair_temperature=self.pair_temperature,
            patience=self.patience,
            generator=generator,
            report=self._log,
        )
        self.finetune_history_ = result.history
        self.best_epoch_ = result.best_epoch + 1
        self._check_spread(inputs[train_rows])
        self.fit_seconds_ = time.perf_counter() - started
        self._log(f"trained in {self.fit_seconds_:.1f}s (best epoch {self.best_epoch_})")
        return self

    def _neighbour_similarity(self, X) -> str:
        if self.neighbour_similarity not in ("auto", "tfidf", "lsa"):
            raise ValueError(f"neighbour_similarity must be 'auto', 'tfidf' or 'lsa', got {self.neighbour_similarity!r}")
        if self.neighbour_similarity != "auto":
            return self.neighbour_similarity
        return "lsa" if X.nnz / X.shape[0] < SHORT_DOCUMENT_WORDS else "tfidf"

    def _neighbours(self, X, similarity: str) -> np.ndarray:
        """Each row's ``neighbour_targets`` nearest other rows of ``X`` by ``similarity``."""
        find = lsa_neighbours if similarity == "lsa" else tfidf_neighbours
        return find(X, self.neighbour_targets)

    def _pair_weight(self, X) -> float:
        """The weight of the neighbour-pair term: ``"auto"`` turns it on (weight 1) for
        collections of short documents, where it is what lifts the codes to the LSA
        neighbours' level, and off for long ones, where it hurt (benchmarks/README.md)."""
        if self.pair_weight == "auto":
            applies = self.neighbour_targets > 0 and self.code_units == "binary"
            return 1.0 if applies and self._neighbour_similarity(X) == "lsa" else 0.0
        if isinstance(self.pair_weight, str) or not self.pair_weight >= 0:
            raise ValueError(f"pair_weight must be a non-negative number or 'auto', got {self.pair_weight!r}")
        return float(self.pair_weight) if self.neighbour_targets > 0 else 0.0

    def _check_spread(self, inputs) -> None:
        """Measure the spread of the training codes (``code_spread_``); warn if collapsed."""
        if self.code_units != "binary":
            return
        sample = inputs[: 20 * SPREAD_SAMPLE]
        self.model_.eval()
        with torch.no_grad():
            self.code_spread_ = code_spread(self.model_.encode_matrix(sample).numpy() > 0.5)
        if self.code_spread_.collapsed:
            warnings.warn(
                f"the codes have collapsed ({self.code_spread_.describe()}): they cannot tell "
                "these documents apart. Try more pretraining epochs (pretrain_epochs), a lower "
                "pretraining step (pretrain_learning_rate) or less code noise (code_noise)",
                CodeCollapseWarning,
                stacklevel=3,
            )

    def _split(self, n: int, generator: torch.Generator):
        order = torch.randperm(n, generator=generator).numpy()
        n_val = int(round(self.validation_fraction * n)) if n >= 20 else 0
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _batch_size(self, n_train: int) -> int:
        if self.batch_size == "auto":
            return int(np.clip(n_train // 100, 10, 100))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        return self.batch_size

    def _layer_learning_rate(self, bottom: bool, hidden: str) -> float:
        """CD step of one layer (for batches of 100): Poisson and linear units see larger
        total inputs, so they take a tenth of the binary layers' step."""
        return self.pretrain_learning_rate * (0.1 if bottom or hidden == "linear" else 1.0)

    def _batch_rate_scale(self, n_train: int) -> float:
        """Factor on the CD steps (given for batches of 100): the same step per example."""
        return (self.batch_size_ / 100) ** 0.5

    def _pretrain(self, inputs, generator: torch.Generator) -> list[RBM]:
        """Greedy layer-wise pretraining; each RBM learns from the hidden means below it."""
        sizes = self.layer_sizes
        rbms, data = [], inputs
        for depth, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bottom, top = depth == 0, depth == len(sizes) - 2
            visible = self.visible_units if bottom else "binary"
            hidden = "linear" if top and self.code_units == "linear" else "binary"
            self._log(f"pretraining layer {depth + 1}/{len(sizes) - 1}: {visible} {n_in} -> {hidden} {n_out}")
            rbm = RBM(
                n_out,
                visible=visible,
                hidden=hidden,
                learning_rate=self._layer_learning_rate(bottom, hidden) * self._batch_rate_scale(inputs.shape[0]),
                batch_size=self.batch_size_,
                n_epochs=self.pretrain_epochs,
                random_state=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)),
                verbose=self._log if self.verbose else False,
            )
            rbm.fit(data)
            for _ in range(DEAD_LAYER_RETRIES):
                dead = dead_unit_share(rbm, data)
                if dead < DEAD_LAYER_SHARE:
                    break
                # Too large a step drives every hidden unit off (total input ~ -20, where no
                # gradient reaches it in fine-tuning); a smaller one keeps them alive.
                self._log(f"  {dead:.0%} of the layer's units never change: re-training with a fifth of the step")
                rbm.learning_rate *= DEAD_LAYER_STEP
                rbm.fit(data)
            rbms.append(rbm)
            if not top:
                data = rbm.transform(data)
        return rbms

    # ------------------------------------------------- input hooks (text)
    # Subclasses for other data (images) override these five methods.
    def _check_input(self, X, fitted: bool = False):
        if not fitted:
            return check_counts(X)
        return check_counts(X, n_features=self.n_features_in_, allow_empty_rows=True)

    def _fit_input_statistics(self, X) -> None:
        """Learn the words' inverse document frequencies (used if idf weighting is on) and
        the input scale (see :data:`INPUT_TOTAL`)."""
        document_frequency = np.bincount(X.indices, minlength=X.shape[1])
        self.idf_ = (np.log((1.0 + X.shape[0]) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
        self.input_scale_ = 1.0
        self.input_scale_ = max(1.0, INPUT_TOTAL / max(float(self._encoder_input(X).sum(axis=1).mean()), 1e-6))

    def _encoder_input(self, X):
        inputs = encoder_input(X)
        if self.idf_input:
            inputs = sp.csr_matrix(inputs @ sp.diags(self.idf_))
        if self.input_scale_ != 1.0:
            inputs.data *= np.float32(self.input_scale_)
        return inputs

    def _reconstruction_target(self, X):
        return word_distribution(sp.csr_matrix(X @ sp.diags(self.idf_)) if self.idf_target else X)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors besides the network's weights, saved with the model."""
        return {"idf": torch.from_numpy(self.idf_), "input_scale": torch.tensor(self.input_scale_, dtype=torch.float64)}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.idf_ = state["idf"].numpy()
        # Models saved before the input was scaled saw log(1 + count) as it is.
        self.input_scale_ = float(state["input_scale"]) if "input_scale" in state else 1.0

    # ------------------------------------------------------------- inference
    @torch.no_grad()
    def transform_real(self, X) -> np.ndarray:
        """Code-unit activities, ``(n, code_size)`` float32 (probabilities for binary codes)."""
        self._check_fitted()
        X = self._check_input(X, fitted=True)
        self.model_.eval()
        inputs = self._encoder_input(X)
        out = [self.model_.encode_matrix(inputs[start : start + 4096]) for start in range(0, X.shape[0], 4096)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.code_size), np.float32)

    @torch.no_grad()
    def reconstruction_loss(self, X) -> float:
        """Mean cross-entropy of the reconstructed word distributions (codes as deployed)."""
        self._check_fitted()
        X = self._check_input(X, fitted=True)
        return evaluate_loss(self.model_, self._encoder_input(X), self._reconstruction_target(X))

    # ------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """Serialise to bytes: a JSON config and the weight tensors, via ``torch.save``."""
        self._check_fitted()
        config = {
            "class": type(self).__name__,
            "params": self.get_params() | {"verbose": False},
            "n_features_in": self.n_features_in_,
            "best_epoch": self.best_epoch_,
            "fit_seconds": self.fit_seconds_,
        }
        payload = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": json.dumps(config),
            "state": {k: v.contiguous() for k, v in self.model_.state_dict().items()},
            "extra": {k: v.contiguous() for k, v in self._extra_state().items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "DeepCodeModel":
        """Inverse of :meth:`to_bytes`; refuses anything but a compatible semhash model."""
        try:
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as err:  # torch raises several types for foreign or corrupt files
            raise ModelFormatError(f"not a semhash model file ({type(err).__name__}: {err})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise ModelFormatError("not a semhash model file (no semhash format marker)")
        version = payload.get("version")
        if version != FORMAT_VERSION:
            raise ModelFormatError(
                f"model file format version {version} is not supported by this semhash "
                f"(it reads version {FORMAT_VERSION}); re-train the model or use a matching semhash"
            )
        config = json.loads(payload["config"])
        model_class = MODEL_CLASSES.get(config["class"])
        if model_class is None or not issubclass(model_class, cls):
            raise ModelFormatError(f"the file holds a {config['class']}, not a {cls.__name__}")
        params = dict(config["params"])
        params["hidden_layers"] = tuple(params["hidden_layers"])
        known = set(inspect.signature(model_class.__init__).parameters) | set(DeepCodeModel().get_params())
        unknown = sorted(set(params) - known)
        if unknown:
            raise ModelFormatError(
                f"the model was saved with parameters this semhash does not know ({', '.join(unknown)}); "
                "it comes from another version: re-train it or use a matching semhash"
            )
        estimator = model_class(**params)
        estimator.n_features_in_ = config["n_features_in"]
        estimator.best_epoch_ = config["best_epoch"]
        estimator.fit_seconds_ = config["fit_seconds"]
        estimator.model_ = DeepAutoencoder(
            estimator.layer_sizes, code=estimator.code_units, output=estimator.output_units
        )
        try:
            estimator.model_.load_state_dict(payload["state"])
            estimator._load_extra_state(payload.get("extra", {}))
        except RuntimeError as err:
            raise ModelFormatError(f"model weights do not match its config: {err}") from None
        estimator.model_.eval()
        return estimator

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` atomically (a temporary file, then a rename)."""
        atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeepCodeModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}")
        try:
            return cls.from_bytes(path.read_bytes())
        except ModelFormatError as err:
            raise ModelFormatError(f"{path}: {err}") from None

    # ----------------------------------------------------------------- misc
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _log(self, line: str) -> None:
        if self.verbose:
            print(line, file=sys.stderr, flush=True)


# Filled by the subclasses' modules, so that a file names the class it holds.
MODEL_CLASSES: dict[str, type[DeepCodeModel]] = {}


def dead_unit_share(rbm: RBM, data, sample: int = 2000) -> float:
    """Share of ``rbm``'s hidden units whose activation barely varies over (up to ``sample``
    rows of) ``data``: a unit pinned at 0 or 1 passes nothing on."""
    activations = rbm.transform(data[:sample])
    return float((activations.std(axis=0) < DEAD_UNIT_STD).mean())


def check_counts(X, *, n_features: int | None = None, allow_empty_rows: bool = False) -> sp.csr_matrix:
    """Validate a word-count matrix and return it as float32 CSR."""
    if isinstance(X, torch.Tensor):
        X = X.numpy()
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"expected a non-empty 2-D matrix of word counts, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"the word counts have {X.shape[1]} columns, but the model was trained on a "
            f"{n_features}-word vocabulary"
        )
    if X.nnz and (X.data.min() < 0 or not np.isfinite(X.data).all()):
        raise ValueError("word counts must be finite and non-negative")
    if not allow_empty_rows:
        empty = np.flatnonzero(np.diff(X.indptr) == 0)
        if len(empty):
            raise ValueError(
                f"{len(empty)} documents have no words in the vocabulary (rows {empty[:5].tolist()}"
                f"{'...' if len(empty) > 5 else ''}); drop them before fitting"
            )
    return X


def encoder_input(X: sp.csr_matrix) -> sp.csr_matrix:
    """``log(1 + count)``: what the encoder sees."""
    X = X.copy()
    np.log1p(X.data, out=X.data)
    return X


def word_distribution(X: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its total: the distribution the decoder must reproduce."""
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / totals) @ X, dtype=np.float32)


def tfidf_neighbours(X: sp.csr_matrix, k: int) -> np.ndarray:
    """``(n, k)`` indices of each document's ``k`` nearest other documents by TF-IDF cosine,
    nearest first."""
    from semhash.baselines import TfidfCosine

    k = int(min(k, X.shape[0] - 1))
    tfidf = TfidfCosine().fit_transform(X)
    return _top_k(lambda rows: (tfidf[rows] @ tfidf.T).toarray(), X.shape[0], k)


def lsa_neighbours(X: sp.csr_matrix, k: int) -> np.ndarray:
    """Like :func:`tfidf_neighbours`, by cosine of LSA-64 (of the sublinear TF-IDF)."""
    from semhash.baselines import LSA

    k = int(min(k, X.shape[0] - 1))
    dims = max(1, min(LSA_NEIGHBOUR_DIMS, min(X.shape) - 1))
    vectors = LSA(n_components=dims).fit_transform(X)  # rows unit length
    return _top_k(lambda rows: vectors[rows] @ vectors.T, X.shape[0], k)


def _top_k(similarities, n: int, k: int, block: int = 2048) -> np.ndarray:
    """``(n, k)`` indices of each row's ``k`` most similar other rows, most similar first;
    ``similarities(rows)`` gives the dense ``(len(rows), n)`` block."""
    out = []
    for start in range(0, n, block):
        sims = np.array(similarities(slice(start, start + block)), dtype=np.float32)
        np.fill_diagonal(sims[:, start : start + block], -np.inf)  # not one's own neighbour
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def smooth_with_neighbours(targets: sp.csr_matrix, neighbours: np.ndarray, weight: float) -> sp.csr_matrix:
    """Mix each target with the mean target of its neighbours (rows of ``neighbours``)."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k)
    mixing = sp.csr_matrix((np.full(n * k, weight / k, np.float32), (rows, neighbours.ravel())), shape=(n, n))
    return sp.csr_matrix((1 - weight) * targets + mixing @ targets, dtype=np.float32)
