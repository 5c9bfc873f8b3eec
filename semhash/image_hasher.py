"""ImageHasher: binary codes for small colour images (Krizhevsky & Hinton 2011).

"Using very deep autoencoders for content-based image retrieval" hashes 32x32 colour
images with a deep autoencoder pretrained as a stack of RBMs whose bottom layer has
Gaussian visible units over standardised pixels. Here the network is
``3072 -> hidden_layers -> n_bits`` (default 3072-1024-512-256), fine-tuned with a
linear output layer scored by squared error on the standardised pixels and noisy
logistic code units, as for documents (:class:`semhash.hasher.SemanticHasher`).

Input: an array ``(n, 3072)`` (or ``(n, 32, 32, 3)``) of 32x32 RGB pixels in
height-width-channel order, either ``uint8`` 0-255 or floats in [0, 1].
``fit`` learns the per-dimension mean and standard deviation of the training pixels
(``mean_``, ``std_``, saved with the model); the encoder sees, and the decoder must
reproduce, ``(pixels - mean_) / std_``.

Two-stage retrieval as in the paper: a short *address* code finds a Hamming ball of
candidates, which a long code re-ranks. The address code is simply a second, separately
trained hasher with few bits::

    long = ImageHasher(n_bits=256).fit(pixels)
    address = ImageHasher(n_bits=28).fit(pixels)   # or ImageHasher.address_model()

(28 bits is the paper's choice: 2^28 addresses is about one per image of a very large
collection, so a small Hamming ball around a query holds a useful candidate list).
"""

from __future__ import annotations

import numpy as np
import torch

from sklearn.utils.validation import check_array, validate_data

from semhash.estimator import MODEL_CLASSES, DeepCodeModel
from semhash.hasher import binary_codes

IMAGE_SIDE = 32
IMAGE_CHANNELS = 3
IMAGE_DIMS = IMAGE_SIDE * IMAGE_SIDE * IMAGE_CHANNELS  # 3072
ADDRESS_BITS = 28
# Floor of the per-pixel standard deviation (pixels in [0, 1]): a constant pixel
# (a border always black, say) must not blow up to huge standardised values.
MIN_PIXEL_STD = 1e-2


def check_pixels(X, estimator=None, *, reset: bool = True) -> np.ndarray:
    """Validate images and return float32 ``(n, 3072)`` pixels in [0, 1].

    Accepts ``(n, 3072)`` or ``(n, 32, 32, 3)`` arrays (or tensors); ``uint8`` is 0-255,
    floats must already be in [0, 1]. With an ``estimator``, the array is validated as
    scikit-learn does (``validate_data``: ``n_features_in_`` set when ``reset``, checked
    otherwise); without, by ``check_array``.
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    elif not hasattr(X, "shape"):
        X = np.asarray(X)  # nested lists
    shape = X.shape
    if len(shape) == 4 and tuple(shape[1:]) == (IMAGE_SIDE, IMAGE_SIDE, IMAGE_CHANNELS):
        X = np.asarray(X).reshape(len(X), IMAGE_DIMS)
    elif len(shape) > 2:
        raise ValueError(f"got an array of shape {tuple(shape)}: {_EXPECTED}")
    elif len(shape) == 2 and not reset:
        _check_width(shape[1], estimator)  # with the hint, before scikit-learn's plain message
    # dtype="numeric" keeps uint8 (0-255) apart from floats (0-1); 1-D, sparse, empty,
    # complex, NaN and infinite inputs are refused with scikit-learn's messages.
    if estimator is None:
        X = check_array(X, dtype="numeric")
        _check_width(X.shape[1])
        return _scaled(X)
    fitted = {name: vars(estimator)[name] for name in _INPUT_ATTRIBUTES if name in vars(estimator)}
    X = validate_data(estimator, X, dtype="numeric", reset=reset)
    if X.shape[1] != IMAGE_DIMS:
        for name in _INPUT_ATTRIBUTES:  # leave the estimator as it was before this fit
            vars(estimator).pop(name, None)
        vars(estimator).update(fitted)
        _check_width(X.shape[1], estimator)
    return _scaled(X)


def _scaled(X: np.ndarray) -> np.ndarray:
    """Validated pixels as float32 in [0, 1]."""
    if X.dtype == np.uint8:
        return X.astype(np.float32) / 255.0
    if not np.issubdtype(X.dtype, np.floating) and not np.issubdtype(X.dtype, np.integer):
        raise ValueError(f"pixels must be uint8 or floats in [0, 1], got dtype {X.dtype}")
    X = X.astype(np.float32)
    if X.min() < 0.0 or X.max() > 1.0 + 1e-6:
        raise ValueError(
            f"float pixels must lie in [0, 1] (got {X.min():.3g}..{X.max():.3g}); "
            "pass uint8 arrays for 0-255 values"
        )
    return X


# What validate_data records of the input when fitting.
_INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_")


def _check_width(n_features: int, estimator=None) -> None:
    if n_features != IMAGE_DIMS:
        expecting = f", but {type(estimator).__name__} is expecting {IMAGE_DIMS} features as input" if estimator else ""
        raise ValueError(f"X has {n_features} features{expecting}: {_EXPECTED}")


_EXPECTED = (
    f"expected 32x32 RGB images, shape (n, {IMAGE_DIMS}) or (n, {IMAGE_SIDE}, {IMAGE_SIDE}, {IMAGE_CHANNELS}); "
    "resize images to 32x32 RGB first (semhash.pipelines.images.read_images does)"
)


class ImageInput:
    """The input side shared by the image models (:class:`ImageHasher`,
    :class:`~semhash.image_map.ImageMap`): pixels in, standardised with the training
    mean and std (saved with the weights), a Gaussian-visible bottom RBM with its own CD
    step, and a linear output scored by squared error. Mix it in before the estimator."""

    visible_units = "gaussian"
    output_units = "linear"

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.neighbour_targets:
            raise ValueError("neighbour_targets is for word counts; use 0 for images")

    def _fit_pixels(self, X, y=None):
        """The estimator's ``fit``, standardising the pixels once for input and target."""
        self._fitting = True
        try:
            return super().fit(X, y)
        finally:
            self._fitting = False
            self._last_input = None

    def _check_input(self, X, fitted: bool = False) -> np.ndarray:
        return check_pixels(X, self, reset=not fitted)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # pixels are dense
        tags.input_tags.positive_only = True  # pixels lie in [0, 1] (or 0-255)
        return tags

    def _expected_failed_checks(self) -> dict[str, str]:
        # Every check that fits or transforms the checks' own data: it has a few features,
        # and an image model needs exactly 3,072 (32x32 RGB pixels).
        reason = f"an image model needs exactly {IMAGE_DIMS} features (32x32 RGB pixels)"
        # A map checks for a single sample (t-SNE) first; a map preserves float32, a hasher
        # gives uint8 bits (no dtype check): each fails one more check on the checks' data.
        extra = ("check_transformer_preserve_dtypes",) if self.code_units == "linear" else ("check_fit2d_1sample",)
        return dict.fromkeys(IMAGE_DATA_CHECKS + extra, reason)

    def _fit_input_statistics(self, X: np.ndarray) -> None:
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.mean_ = torch.from_numpy(mean.astype(np.float32))
        self.std_ = torch.from_numpy(np.maximum(std, MIN_PIXEL_STD).astype(np.float32))

    def _encoder_input(self, X: np.ndarray) -> np.ndarray:
        out = (X - self.mean_.numpy()) / self.std_.numpy()
        if getattr(self, "_fitting", False):
            self._last_input = (X, out)
        return out

    def _reconstruction_target(self, X: np.ndarray) -> np.ndarray:
        # The same standardised pixels (DeepCodeModel.fit calls both hooks; computing
        # it twice would double the memory of a large training set, so share it).
        cached = getattr(self, "_last_input", None)
        if cached is not None and cached[0] is X:
            return cached[1]
        return self._encoder_input(X)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean_, "std": self.std_}

    def _load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"mean", "std"}:
            raise RuntimeError(f"an image model file needs 'mean' and 'std' tensors, got {sorted(state)}")
        self.mean_ = state["mean"].to(torch.float32)
        self.std_ = state["std"].to(torch.float32)
        if self.mean_.shape != (IMAGE_DIMS,) or self.std_.shape != (IMAGE_DIMS,):
            raise RuntimeError(f"mean/std must have shape ({IMAGE_DIMS},)")

    # ------------------------------------------------------------ pretraining
    def _layer_learning_rate(self, bottom: bool, hidden: str) -> float:
        """The Gaussian bottom layer gets its own small CD step."""
        if bottom and self.gaussian_learning_rate is not None:
            return self.gaussian_learning_rate
        return super()._layer_learning_rate(bottom, hidden)

    def _batch_rate_scale(self, n_train: int) -> float:
        # The same CD step per example at any collection size: a Gaussian-visible layer
        # diverges with TopicMap's larger steps for small collections (90 images).
        return DeepCodeModel._batch_rate_scale(self, n_train)


class ImageHasher(ImageInput, DeepCodeModel):
    """Learn ``n_bits``-bit binary codes for 32x32 colour images.

    Parameters are those of :class:`~semhash.hasher.SemanticHasher` (``packed`` included;
    see :class:`~semhash.estimator.DeepCodeModel`), with image defaults, plus:

    gaussian_learning_rate : CD step of the bottom (Gaussian-visible) RBM, for batches
        of 100. Gaussian units on standardised pixels get large total inputs from 3072
        visibles, so they want a much smaller step than binary layers (Hinton's guide:
        one or two orders of magnitude); ``None`` falls back to the base rule
        (a tenth of ``pretrain_learning_rate``).

    ``neighbour_targets`` must be 0 (the neighbour smoothing of the base class is for
    TF-IDF of word counts); the word-count parameters (``idf_*``, ``neighbour_*``,
    ``pair_*``) are kept so that every model file's parameters load, but do nothing here.

    >>> hasher = ImageHasher(n_bits=256).fit(train_pixels)   # doctest: +SKIP
    >>> codes = hasher.transform(query_pixels)               # (n, 32) uint8, packed bits
    """

    code_units = "binary"

    def __init__(
        self,
        n_bits: int = 256,
        *,
        hidden_layers: tuple[int, ...] = (1024, 512),
        pretrain_epochs: int = 10,
        pretrain_learning_rate: float = 0.1,
        gaussian_learning_rate: float | None = 0.002,
        finetune_epochs: int = 30,
        finetune_learning_rate: float = 1e-3,
        batch_size: int | str = "auto",
        code_noise: float = 4.0,
        neighbour_targets: int = 0,
        neighbour_weight: float = 0.5,
        neighbour_similarity: str = "auto",
        idf_target: bool = False,
        idf_input: bool = False,
        input_dropout: float = 0.0,
        pair_weight: float | str = "auto",
        pair_temperature: float = 0.1,
        validation_fraction: float = 0.1,
        patience: int = 5,
        tol: float = 0.0,
        learning_rate_drops: int = 0,
        packed: bool = True,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self._keep_params(locals())

    @classmethod
    def address_model(cls, n_bits: int = ADDRESS_BITS, **params) -> "ImageHasher":
        """The short address-code hasher (28 bits by default) of two-stage retrieval."""
        return cls(n_bits=n_bits, **params)

    def fit(self, X, y=None) -> "ImageHasher":
        """Standardise the pixels, pretrain the RBM stack and fine-tune the autoencoder."""
        return self._fit_pixels(X, y)

    def transform(self, X) -> np.ndarray:
        """Binary codes (code units thresholded at 0.5): packed, ``(n, ceil(n_bits / 8))``
        uint8, or unpacked, ``(n, n_bits)`` uint8 of 0/1 (see ``packed``)."""
        return binary_codes(self.transform_real(X), self.packed)


# The checks of sklearn.utils.estimator_checks that fit or transform their own data (a
# few features): an image model cannot take it (ImageInput._expected_failed_checks).
# The others (1-D, sparse, complex, NaN, empty inputs, cloning, parameters) apply and pass.
IMAGE_DATA_CHECKS = (
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
    "check_estimators_dtypes", "check_estimators_fit_returns_self", "check_estimators_nan_inf",
    "check_estimators_overwrite_params", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_fit2d_1feature", "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent",
    "check_fit_score_takes_y", "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_n_features_in", "check_n_features_in_after_fitting", "check_pipeline_consistency",
    "check_positive_only_tag_during_fit", "check_readonly_memmap_input", "check_transformer_data_not_an_array",
    "check_transformer_general",
)

MODEL_CLASSES["ImageHasher"] = ImageHasher
