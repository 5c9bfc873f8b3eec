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

import io
import json
import logging
import os
import time
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from semhash.autoencoder import SPREAD_SAMPLE, DeepAutoencoder, evaluate_loss, fine_tune
from semhash.codes import code_spread
from semhash.data import as_generator
from semhash.files import atomic_write_bytes
from semhash.neighbours import lsa_neighbours, smooth_with_neighbours, tfidf_neighbours
from semhash.progress import shown_while
from semhash.rbm import RBM

log = logging.getLogger(__name__)

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
# The pair term's weight there: a title's few words make a weak reconstruction target, so
# the neighbour pairs lead (chosen on StackOverflow's validation split, with the hashers'
# pair_temperature of 0.2; benchmarks/README.md, "Many corpora").
SHORT_DOCUMENT_PAIR_WEIGHT = 10.0
# And for longer documents, where reconstruction leads and the pairs refine it (chosen by
# the worst ratio over the other corpora's validation splits; same README section).
DOCUMENT_PAIR_WEIGHT = 0.5


# A pretrained layer in which this share of the hidden units no longer varies across the
# training documents (std of the activation under DEAD_UNIT_STD) is re-trained, up to
# DEAD_LAYER_RETRIES times, each time with DEAD_LAYER_STEP times the CD step. A unit that
# is nearly off (or on) and only flickers (std 0.01-0.02, mean activity 0.001) passes on
# as little, and gets as little gradient, as one pinned there: such a layer once slipped
# through and collapsed a whole fit's codes, so saturated binary units count as dead up
# to SATURATED_UNIT_STD. An undertrained unit near 0.5 still learns in fine-tuning.
# A layer still dead after its re-trainings is left at random weights (_random_weights).
DEAD_LAYER_SHARE = 0.9
DEAD_UNIT_STD = 0.01
SATURATED_UNIT_STD = 0.05
SATURATED_MEAN = 0.05
DEAD_LAYER_RETRIES = 2
DEAD_LAYER_STEP = 0.2


class CodeCollapseWarning(UserWarning):
    """A fitted model whose binary codes have lost their spread (see ``code_spread_``)."""


class ModelFormatError(ValueError):
    """A model file that is not a semhash model, or one this version cannot read."""


class DeepCodeModel(TransformerMixin, BaseEstimator):
    """Base estimator: RBM-pretrained, fine-tuned deep autoencoder over word counts.

    The subclasses (:class:`~semhash.hasher.SemanticHasher`,
    :class:`~semhash.topic_map.TopicMap` and the image models) list their parameters,
    with their own defaults, in their ``__init__``; this class holds the training code
    and documents the parameters they share.

    Parameters
    ----------
    n_bits or n_components : units in the code layer (bits, or dimensions of a real code).
    hidden_layers : sizes of the layers between the input and the code.
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
    idf_input : likewise weight the encoder's ``log(1 + count)`` input by idf; ``"auto"``:
        on, except for short documents (fewer than :data:`SHORT_DOCUMENT_WORDS` distinct
        vocabulary words on average), where a title's few words all carry its topic and
        idf mostly lifts rare, noisy ones.
    input_dropout : fraction of the encoder's inputs zeroed at random in each fine-tuning
        step (denoising): the code must be recoverable from part of a document's words,
        which regularises it and makes a fragment's code land near the whole document's.
    pair_weight : weight of a contrastive term in fine-tuning: each training document's
        code is pulled towards the code of one of its ``neighbour_targets`` nearest
        documents (found as for the targets) and away from the other documents' in the
        mini-batch (InfoNCE over expected Hamming distances, ``pair_temperature`` times the
        code size). ``"auto"``, for binary codes: :data:`SHORT_DOCUMENT_PAIR_WEIGHT` for
        short documents (the ``neighbour_similarity`` rule), :data:`DOCUMENT_PAIR_WEIGHT`
        otherwise; 0 for real-valued codes.
    validation_fraction : share of the training documents held out for early stopping.
    patience, tol, learning_rate_drops : when to stop fine-tuning. An epoch counts as
        progress when it lowers the validation loss by at least ``tol`` (relative) below
        the last progress; after ``patience`` epochs without progress, Adam's step is
        divided by 4, up to ``learning_rate_drops`` times, and then fine-tuning stops
        (``finetune_epochs`` is only a cap). The weights kept are those of the epoch with
        the lowest validation loss.
    random_state : seed; the same seed and data give the same model.
    verbose : show progress (layer, epoch, loss) on stderr while fitting (the lines go to
        the ``semhash`` loggers; see :mod:`semhash.progress`).

    Fitted attributes: ``n_features_in_``, ``model_`` (the fine-tuned autoencoder), the
    input statistics (``idf_``, ``input_scale_``; ``mean_``, ``std_`` for images), what
    ``"auto"`` resolved to (``batch_size_``, ``pair_weight_``...) and how the fit went
    (``pretrain_history_``, ``finetune_history_``, ``best_epoch_``, ``code_spread_``...).
    """

    code_units = "binary"  # or "linear"
    visible_units = "poisson"  # bottom RBM's visible units
    output_units = "softmax"  # decoder output: a word distribution
    _code_size_param = "n_bits"  # the __init__ parameter that sets the code layer's width

    @property
    def code_size(self) -> int:
        """Units in the code layer: the ``n_bits`` or ``n_components`` parameter."""
        return getattr(self, self._code_size_param)

    def _keep_params(self, given: dict) -> None:
        """Store each ``__init__`` argument as given, under its own name (scikit-learn's
        rule), from the ``locals()`` of a subclass's ``__init__``."""
        for name in self._get_param_names():
            setattr(self, name, given[name])

    @property
    def layer_sizes(self) -> list[int]:
        return [self.n_features_in_, *self.hidden_layers, int(self.code_size)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # word counts are CSR matrices
        tags.input_tags.positive_only = True  # counts cannot be negative
        # Packed or unpacked bits are uint8, real codes float32, whatever the input dtype.
        tags.transformer_tags.preserves_dtype = ["float32"] if self.code_units == "linear" else []
        return tags

    def _expected_failed_checks(self) -> dict[str, str]:
        """scikit-learn's estimator checks that cannot pass by design, each with why."""
        return {}  # none for word counts (the image models need 3,072 features)

    def _validate_params(self) -> None:
        """Parameters are checked when fitting, never in ``__init__`` or ``set_params``."""
        size = self.code_size
        if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{self._code_size_param} must be a positive integer, got {size!r}")
        if self.idf_input not in ("auto", True, False):
            raise ValueError(f"idf_input must be 'auto', True or False, got {self.idf_input!r}")
        if self.neighbour_similarity not in ("auto", "tfidf", "lsa"):
            raise ValueError(f"neighbour_similarity must be 'auto', 'tfidf' or 'lsa', got {self.neighbour_similarity!r}")
        if self.pair_weight != "auto" and (isinstance(self.pair_weight, str) or not self.pair_weight >= 0):
            raise ValueError(f"pair_weight must be a non-negative number or 'auto', got {self.pair_weight!r}")
        if isinstance(self.tol, bool) or not (isinstance(self.tol, (int, float)) and 0 <= self.tol < 1):
            raise ValueError(f"tol must be a number in [0, 1), got {self.tol!r}")
        if not isinstance(self.learning_rate_drops, Integral) or self.learning_rate_drops < 0:
            raise ValueError(f"learning_rate_drops must be a non-negative integer, got {self.learning_rate_drops!r}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, Integral) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")

    # -------------------------------------------------------------- training
    def fit(self, X, y=None) -> "DeepCodeModel":
        """Pretrain the RBM stack on word counts ``X`` and fine-tune the autoencoder."""
        with shown_while(self.verbose):
            return self._fit_autoencoder(X)

    def _fit_autoencoder(self, X) -> "DeepCodeModel":
        started = time.perf_counter()
        self._validate_params()
        X = self._check_input(X)  # sets n_features_in_
        generator = as_generator(self.random_state)
        torch.manual_seed(0 if self.random_state is None else self.random_state)
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
        log.info(
            f"{type(self).__name__}: {X.shape[0]} documents, network "
            f"{'-'.join(map(str, self.layer_sizes))}, {self.code_units} code"
        )
        rbms = self._pretrain(inputs[train_rows], generator)
        self.model_ = DeepAutoencoder.from_rbms(rbms, code=self.code_units, output=self.output_units)
        self.pretrain_history_ = [rbm.history_ for rbm in rbms]

        validation = (inputs[val_rows], targets[val_rows]) if len(val_rows) else None
        log.info(f"fine-tuning ({'noise std %g on the code' % self.code_noise if self.code_units == 'binary' else 'linear code'})")
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
            tol=self.tol,
            learning_rate_drops=self.learning_rate_drops,
            generator=generator,
        )
        self.finetune_history_ = result.history
        self.best_epoch_ = result.best_epoch + 1
        self._check_spread(inputs[train_rows])
        self.fit_seconds_ = time.perf_counter() - started
        log.info(f"trained in {self.fit_seconds_:.1f}s (best epoch {self.best_epoch_})")
        return self

    def _neighbour_similarity(self, X) -> str:
        if self.neighbour_similarity != "auto":
            return self.neighbour_similarity
        return "lsa" if _short_documents(X) else "tfidf"

    def _neighbours(self, X, similarity: str) -> np.ndarray:
        """Each row's ``neighbour_targets`` nearest other rows of ``X`` by ``similarity``."""
        find = lsa_neighbours if similarity == "lsa" else tfidf_neighbours
        return find(X, self.neighbour_targets)

    def _pair_weight(self, X) -> float:
        """The weight of the neighbour-pair term: ``"auto"`` turns it on for binary codes,
        strongest for collections of short documents, where it is what lifts the codes
        towards the LSA neighbours' level (benchmarks/README.md)."""
        if self.pair_weight == "auto":
            if self.neighbour_targets == 0 or self.code_units != "binary":
                return 0.0
            return SHORT_DOCUMENT_PAIR_WEIGHT if self._neighbour_similarity(X) == "lsa" else DOCUMENT_PAIR_WEIGHT
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
        return int(self.batch_size)

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
            log.info(f"pretraining layer {depth + 1}/{len(sizes) - 1}: {visible} {n_in} -> {hidden} {n_out}")
            rbm = RBM(
                n_out,
                visible=visible,
                hidden=hidden,
                learning_rate=self._layer_learning_rate(bottom, hidden) * self._batch_rate_scale(inputs.shape[0]),
                batch_size=self.batch_size_,
                n_epochs=self.pretrain_epochs,
                random_state=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)),
            )
            rbm.fit(data)
            dead = dead_unit_share(rbm, data)
            for _ in range(DEAD_LAYER_RETRIES):
                if dead < DEAD_LAYER_SHARE:
                    break
                # Too large a step drives every hidden unit off (total input ~ -20, where no
                # gradient reaches it in fine-tuning); a smaller one keeps them alive.
                log.info(f"  {dead:.0%} of the layer's units never change: re-training with a fifth of the step")
                rbm.set_params(learning_rate=rbm.learning_rate * DEAD_LAYER_STEP).fit(data)
                dead = dead_unit_share(rbm, data)
            if dead >= DEAD_LAYER_SHARE:
                log.info(f"  {dead:.0%} of the layer's units still never change: leaving it at random weights")
                _random_weights(rbm, generator)
            rbms.append(rbm)
            if not top:
                data = rbm.transform(data)
        return rbms

    # ------------------------------------------------- input hooks (text)
    # Subclasses for other data (images) override these five methods.
    def _check_input(self, X, fitted: bool = False) -> sp.csr_matrix:
        """Validate word counts as scikit-learn does (``fitted``: against the fitted width)
        and return them as float32 CSR. For fitting, documents with no words are left out:
        they teach the network nothing (``transform`` still encodes them)."""
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        if fitted and _is_ready_counts(X, self.n_features_in_):
            return X  # what a search engine builds for each query: the checks below cost a millisecond
        X = sp.csr_matrix(validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=not fitted))
        check_non_negative(X, f"{type(self).__name__} (word counts)")
        words = np.asarray(X.sum(axis=1)).ravel() > 0
        if fitted or words.all():
            return X
        if not words.any():
            raise ValueError(f"none of the {X.shape[0]} documents has a word in the vocabulary: nothing to fit")
        log.info(f"{X.shape[0] - words.sum()} documents with no words in the vocabulary are left out of the fit")
        return X[np.flatnonzero(words)]

    def _fit_input_statistics(self, X) -> None:
        """Learn the words' inverse document frequencies (used if idf weighting is on) and
        the input scale (see :data:`INPUT_TOTAL`)."""
        document_frequency = np.bincount(X.indices, minlength=X.shape[1])
        self.idf_ = (np.log((1.0 + X.shape[0]) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
        self.idf_input_ = not _short_documents(X) if self.idf_input == "auto" else bool(self.idf_input)
        self.input_scale_ = 1.0
        self.input_scale_ = max(1.0, INPUT_TOTAL / max(float(self._encoder_input(X).sum(axis=1).mean()), 1e-6))

    def _encoder_input(self, X):
        inputs = encoder_input(X)
        if self.idf_input_:
            inputs = sp.csr_matrix(inputs @ sp.diags(self.idf_))
        if self.input_scale_ != 1.0:
            inputs.data *= np.float32(self.input_scale_)
        return inputs

    def _reconstruction_target(self, X):
        return word_distribution(sp.csr_matrix(X @ sp.diags(self.idf_)) if self.idf_target else X)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors besides the network's weights, saved with the model."""
        return {
            "idf": torch.from_numpy(self.idf_),
            "input_scale": torch.tensor(self.input_scale_, dtype=torch.float64),
            "idf_input": torch.tensor(self.idf_input_),
        }

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.idf_ = state["idf"].numpy()
        # Models saved before the input was scaled saw log(1 + count) as it is.
        self.input_scale_ = float(state["input_scale"]) if "input_scale" in state else 1.0
        # Models saved before idf_input had "auto" were fitted with the boolean they name,
        # or, older still, without the parameter, which was off then.
        self.idf_input_ = bool(state["idf_input"]) if "idf_input" in state else self.idf_input is True

    # ------------------------------------------------------------- inference
    @torch.no_grad()
    def transform_real(self, X) -> np.ndarray:
        """Code-unit activities, ``(n, code_size)`` float32 (probabilities for binary codes)."""
        self._check_fitted()
        X = self._check_input(X, fitted=True)
        if self.model_.training:  # fit and load leave it in eval mode; walking the modules costs per query
            self.model_.eval()
        inputs = self._encoder_input(X)
        out = [self.model_.encode_matrix(inputs[start : start + 4096]) for start in range(0, X.shape[0], 4096)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.layer_sizes[-1]), np.float32)

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
            "params": self.get_params(deep=False) | {"verbose": False},
            "n_features_in": self.n_features_in_,
            "best_epoch": self.best_epoch_,
            "fit_seconds": self.fit_seconds_,
            **self._extra_config(),
        }
        payload = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": json.dumps(config, default=_json_value),
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
        # Files from before fine-tuning ran to convergence were trained without it.
        params = {"tol": 0.0, "learning_rate_drops": 0} | params
        unknown = sorted(set(params) - set(model_class._get_param_names()))
        if unknown:
            raise ModelFormatError(
                f"the model was saved with parameters this semhash does not know ({', '.join(unknown)}); "
                "it comes from another version: re-train it or use a matching semhash"
            )
        estimator = model_class(**params)
        estimator.n_features_in_ = config["n_features_in"]
        estimator.best_epoch_ = config["best_epoch"]
        estimator.fit_seconds_ = config["fit_seconds"]
        estimator.model_ = DeepAutoencoder(estimator.layer_sizes, code=estimator.code_units,
                                           output=estimator.output_units)
        try:
            estimator.model_.load_state_dict(payload["state"])
            estimator._load_extra_state(payload.get("extra", {}))
            estimator._load_extra_config(config)
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
    def _extra_config(self) -> dict:
        """What a subclass keeps in the file's JSON config besides its parameters."""
        return {}

    def _load_extra_config(self, config: dict) -> None:
        pass

    def _check_fitted(self) -> None:
        check_is_fitted(self, "model_")  # NotFittedError


# Filled by the subclasses' modules, so that a file names the class it holds.
MODEL_CLASSES: dict[str, type[DeepCodeModel]] = {}


def _json_value(value):
    """JSON for numpy scalars (a grid search's, say) and sets of words (``stop_words``)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value.item()  # numpy scalars; anything else raises, as json would


def dead_unit_share(rbm: RBM, data, sample: int = 2000) -> float:
    """Share of ``rbm``'s hidden units whose activation barely varies over (up to ``sample``
    rows of) ``data``, or, for binary units, that sit near 0 or 1 and only flicker: such a
    unit passes nothing on (see DEAD_UNIT_STD, SATURATED_UNIT_STD). A linear unit has no
    bounds to saturate at, so only the first test applies to it."""
    activations = rbm.transform(data[:sample])
    std, mean = activations.std(axis=0), activations.mean(axis=0)
    dead = std < DEAD_UNIT_STD
    if rbm.hidden == "binary":
        dead |= (np.minimum(mean, 1.0 - mean) < SATURATED_MEAN) & (std < SATURATED_UNIT_STD)
    return float(dead.mean())


def _random_weights(rbm: RBM, generator: torch.Generator) -> None:
    """Give a layer that pretraining could not keep alive random weights of unit-variance
    fan-in scale and no biases: its units start near 0.5, where fine-tuning's gradient
    reaches them, and the layer is learned there from scratch."""
    n_in, n_out = rbm.weights_.shape
    rbm.weights_ = torch.randn(n_in, n_out, generator=generator) / n_in**0.5
    rbm.hidden_bias_ = torch.zeros(n_out)


def _is_ready_counts(X, width: int) -> bool:
    """Whether ``X`` is already valid fitted input: float32 CSR of ``width`` columns with
    finite, non-negative counts (what full validation would return unchanged)."""
    return (isinstance(X, sp.csr_matrix) and X.dtype == np.float32 and X.shape[1] == width
            and X.shape[0] > 0 and (X.nnz == 0 or (np.isfinite(X.data).all() and X.data.min() >= 0)))


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


def _short_documents(X: sp.csr_matrix) -> bool:
    """Whether a collection's documents are short (titles, tweets): fewer than
    :data:`SHORT_DOCUMENT_WORDS` distinct vocabulary words each on average."""
    return X.nnz / X.shape[0] < SHORT_DOCUMENT_WORDS
