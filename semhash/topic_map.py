"""TopicMap: a real-valued low-dimensional code, for maps of a collection."""

from __future__ import annotations

import logging
from numbers import Integral

import numpy as np

from semhash.estimator import MODEL_CLASSES, DeepCodeModel
from semhash.progress import shown_while

log = logging.getLogger(__name__)


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
    much better (see benchmarks/results/maps.selection.json).
    New documents are placed with one forward pass.

    Parameters
    ----------
    n_components : dimensions of the code (2 for a map).
    objective : ``"tsne"``, ``"reconstruction"`` or ``"both"`` (see above).
    perplexity, tsne_epochs : of the parametric t-SNE stage.
    tsne_min_documents : the t-SNE stage passes at least this many documents (an epoch
        passes each once): a collection of ``n`` gets ``max(tsne_epochs,
        ceil(tsne_min_documents / n))`` epochs. The default is what 40 epochs of 10,000
        documents pass; in 40 epochs, small collections' maps stopped far short
        (benchmarks/README.md).
    tsne_input_dropout : share of the encoder's inputs zeroed in each t-SNE step.

    The other parameters are described in :class:`~semhash.estimator.DeepCodeModel`.
    """

    code_units = "linear"
    _code_size_param = "n_components"

    def __init__(
        self,
        n_components: int = 2,
        *,
        hidden_layers: tuple[int, ...] = (500, 250, 125),
        pretrain_epochs: int = 5,
        # The hasher's CD step (0.5) collapses a 2-D stack on 20 Newsgroups (every post
        # near one point); 0.1 was chosen on a validation split of the training posts.
        pretrain_learning_rate: float = 0.1,
        finetune_epochs: int = 50,
        finetune_learning_rate: float = 3e-3,
        batch_size: int | str = "auto",
        code_noise: float = 0.0,
        neighbour_targets: int = 10,
        neighbour_weight: float = 0.5,
        neighbour_similarity: str = "auto",
        idf_target: bool = False,
        # As the hasher's: on but for titles, by the worst map/UMAP ratio over the
        # validation splits (benchmarks/README.md).
        idf_input: bool | str = "auto",
        input_dropout: float = 0.0,
        pair_weight: float | str = "auto",
        pair_temperature: float = 0.1,
        validation_fraction: float = 0.1,
        patience: int = 5,
        tol: float = 0.0,
        learning_rate_drops: int = 0,
        objective: str = "tsne",
        perplexity: float = 30.0,
        tsne_epochs: int = 40,
        tsne_min_documents: int = 400_000,
        tsne_input_dropout: float = 0.5,
        random_state: int | None = 0,
        verbose: bool = False,
    ):
        self._keep_params(locals())

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.objective not in ("reconstruction", "tsne", "both"):
            raise ValueError(f"objective must be 'reconstruction', 'tsne' or 'both', got {self.objective!r}")
        if not isinstance(self.tsne_min_documents, Integral) or self.tsne_min_documents < 0:
            raise ValueError(f"tsne_min_documents must be a non-negative integer, got {self.tsne_min_documents!r}")

    def fit(self, X, y=None) -> "TopicMap":
        """Pretrain and fine-tune the autoencoder on ``X``, then (``objective``) the t-SNE stage."""
        n_samples = X.shape[0] if hasattr(X, "shape") else len(np.asarray(X))
        if self.objective != "reconstruction" and n_samples < 2:
            raise ValueError("the t-SNE stage places documents among their neighbours: it needs at least "
                             "2 documents, got n_samples = 1 (use objective='reconstruction')")
        with shown_while(self.verbose):
            super().fit(X, y)
            if self.objective != "reconstruction":
                # Parametric t-SNE (van der Maaten 2009): fine-tune the encoder so that the map
                # keeps each document's neighbours; placing a new document is still one pass.
                from semhash.parametric_tsne import tsne_fine_tune_estimator

                log.info(f"parametric t-SNE fine-tuning ({self.tsne_epochs} epochs, perplexity {self.perplexity:g})")
                tsne_fine_tune_estimator(
                    self, X, objective=self.objective, perplexity=self.perplexity, n_epochs=self.tsne_epochs,
                    min_documents=self.tsne_min_documents, input_dropout=self.tsne_input_dropout,
                )
        return self

    def _tsne_features(self, X):
        """Where the t-SNE stage finds each document's neighbours: by the rule that finds
        the targets' (``neighbour_similarity``), TF-IDF rows, or LSA-50 for short documents
        (with LSA-50 neighbours, 40-word posts' maps came out worse than the
        reconstruction-trained map they start from; benchmarks/README.md)."""
        if self._neighbour_similarity(X) == "tfidf":
            from semhash.baselines import TfidfCosine

            return TfidfCosine().fit_transform(X)
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
