"""TopicMap: a real-valued low-dimensional code, for maps of a collection."""

from __future__ import annotations

import numpy as np

from semhash.estimator import MODEL_CLASSES, DeepCodeModel


class TopicMap(DeepCodeModel):
    """Learn an ``n_components``-dimensional real code (default 2-D) for word counts.

    The network is ``n_words -> hidden_layers -> n_components`` (default
    2000-500-250-125-2, as in Hinton & Salakhutdinov, Science 2006) with linear code
    units: the top RBM has Gaussian hidden units, and fine-tuning uses no code noise.
    With ``objective="tsne"`` (the default, chosen by ``benchmarks/maps.py``) the
    reconstruction-trained encoder is then fine-tuned as a parametric t-SNE, which keeps
    each document's neighbours on the map ("reconstruction" skips that step, "both"
    adds the reconstruction loss to it). During that stage ``tsne_input_dropout`` of the
    encoder's inputs are zeroed at each step, which makes the map place unseen documents
    much better (10-NN accuracy of validation posts of 20 Newsgroups train: 0.494 -> 0.537
    at 40 epochs; see benchmarks/results/maps.selection.json).
    New documents are placed with one forward pass.
    """

    code_units = "linear"

    def __init__(
        self,
        n_components: int = 2,
        *,
        hidden_layers: tuple[int, ...] = (500, 250, 125),
        objective: str = "tsne",
        perplexity: float = 30.0,
        tsne_epochs: int = 40,
        tsne_input_dropout: float = 0.5,
        **kwargs,
    ):
        kwargs.setdefault("code_noise", 0.0)
        # The hasher's CD step (0.5) collapses a 2-D stack on 20 Newsgroups (every post
        # near one point); 0.1 was chosen on a validation split of the training posts.
        kwargs.setdefault("pretrain_learning_rate", 0.1)
        super().__init__(hidden_layers=hidden_layers, code_size=n_components, **kwargs)
        self.n_components = n_components
        self.objective = objective
        self.perplexity = perplexity
        self.tsne_epochs = tsne_epochs
        self.tsne_input_dropout = tsne_input_dropout

    def get_params(self) -> dict:
        params = super().get_params()
        params["n_components"] = params.pop("code_size")
        params.update(objective=self.objective, perplexity=self.perplexity, tsne_epochs=self.tsne_epochs,
                      tsne_input_dropout=self.tsne_input_dropout)
        return params

    def fit(self, X, y=None) -> "TopicMap":
        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.objective not in ("reconstruction", "tsne", "both"):
            raise ValueError(f"objective must be 'reconstruction', 'tsne' or 'both', got {self.objective!r}")
        self.code_size = self.n_components
        super().fit(X, y)
        if self.objective != "reconstruction":
            # Parametric t-SNE (van der Maaten 2009): fine-tune the encoder so that the map
            # keeps each document's neighbours; placing a new document is still one pass.
            from semhash.parametric_tsne import tsne_fine_tune_estimator

            self._log(f"parametric t-SNE fine-tuning ({self.tsne_epochs} epochs, perplexity {self.perplexity:g})")
            tsne_fine_tune_estimator(
                self, X, objective=self.objective, perplexity=self.perplexity, n_epochs=self.tsne_epochs,
                input_dropout=self.tsne_input_dropout,
            )
        return self

    def _tsne_features(self, X) -> np.ndarray:
        """Where the t-SNE stage finds each document's neighbours: LSA-50 of the counts."""
        from semhash.parametric_tsne import lsa_features

        return lsa_features(X, random_state=self.random_state)

    def _batch_rate_scale(self, n_train: int) -> float:
        """A small collection gets few CD updates an epoch; with the step per example of a
        large one, its 2-D stack stays near its random start and the map collapses to a
        point (600 posts: codes spread 1e-6). Steps are therefore scaled up to give each
        layer at least the movement of 100 updates an epoch (unchanged from ~10,000 docs)."""
        updates = max(1, -(-n_train // self.batch_size_))
        return max(super()._batch_rate_scale(n_train), 100 / updates)

    def transform(self, X) -> np.ndarray:
        """Real-valued codes, ``(n, n_components)`` float32: one pass through the encoder."""
        return self.transform_real(X)


MODEL_CLASSES["TopicMap"] = TopicMap
