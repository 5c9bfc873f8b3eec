"""TopicMap: a real-valued low-dimensional code, for maps of a collection."""

from __future__ import annotations

import numpy as np

from semhash.estimator import MODEL_CLASSES, DeepCodeModel


class TopicMap(DeepCodeModel):
    """Learn an ``n_components``-dimensional real code (default 2-D) for word counts.

    The network is ``n_words -> hidden_layers -> n_components`` (default
    2000-500-250-125-2, as in Hinton & Salakhutdinov, Science 2006) with linear code
    units: the top RBM has Gaussian hidden units, and fine-tuning uses no code noise.
    Plotting the 2-D codes gives a map where topics form regions; new documents are
    placed with one forward pass.
    """

    code_units = "linear"

    def __init__(self, n_components: int = 2, *, hidden_layers: tuple[int, ...] = (500, 250, 125), **kwargs):
        kwargs.setdefault("code_noise", 0.0)
        super().__init__(hidden_layers=hidden_layers, code_size=n_components, **kwargs)
        self.n_components = n_components

    def get_params(self) -> dict:
        params = super().get_params()
        params["n_components"] = params.pop("code_size")
        return params

    def fit(self, X, y=None) -> "TopicMap":
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        self.code_size = self.n_components
        return super().fit(X, y)

    def transform(self, X) -> np.ndarray:
        """Real-valued codes, ``(n, n_components)`` float32."""
        return self.transform_real(X)


MODEL_CLASSES["TopicMap"] = TopicMap
