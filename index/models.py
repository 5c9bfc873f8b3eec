"""The models a collection stores, by name: how each is saved with its config and loaded.

A database holds one collection, of documents or of images. Its learned models have fixed
names, one :class:`Collection` per kind, so that storage, search and the pipelines agree on
them without importing each other:

* ``long``: binary codes (64-256 bits) searched by Hamming distance;
* ``address``: short binary codes (20-32 bits) used as memory addresses;
* ``map``: real low-dimensional codes, for maps and Euclidean search.

Text collections also store their vocabulary once (a :class:`~semhash.vectorize.WordCounter`),
which turns a query into the word counts every text model of the collection reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from semhash.index.database import DatabaseError

if TYPE_CHECKING:
    from semhash.estimator import DeepCodeModel
    from semhash.index.database import Database
    from semhash.vectorize import WordCounter


@dataclass(frozen=True)
class Collection:
    """The model names of one kind of collection."""

    kind: str  # the documents' `kind` column
    long: str
    address: str
    map: str
    radius: int  # default Hamming radius of address search, chosen on validation queries

    @property
    def code_models(self) -> tuple[str, str, str]:
        return (self.long, self.address, self.map)


TEXT = Collection(kind="text", long="hasher", address="address", map="map", radius=2)
# Radius chosen on validation queries at a million images (benchmarks/image_search_speed.py).
IMAGES = Collection(kind="image", long="image-hasher", address="image-address", map="image-map", radius=3)


def collection_of(db: Database) -> Collection:
    """The collection a database holds: images once it has an image hasher, else text."""
    names = {row.name for row in db.list_models()}
    return IMAGES if IMAGES.long in names else TEXT


def model_kind(model: DeepCodeModel) -> str:
    return "binary" if model.code_units == "binary" else "real"


def model_summary(model: DeepCodeModel) -> dict:
    """What a report shows of a trained model, and the config stored with it."""
    return {
        "class": type(model).__name__,
        "kind": model_kind(model),
        "layers": model.layer_sizes,
        "best_epoch": model.best_epoch_,
        "fit_seconds": round(model.fit_seconds_, 1),
    }


def save_model(db: Database, name: str, model: DeepCodeModel, *, replace: bool = False, **facts) -> int:
    """Store a trained model under ``name`` with its config (its summary and ``facts``); its id."""
    return db.save_model(
        name, model_kind(model), model.code_size,
        config={**model_summary(model), **facts},
        weights=model.to_bytes(),
        vocabulary=None,
        replace=replace,
    )


@dataclass(frozen=True)
class StoredModel:
    model: DeepCodeModel
    id: int


def load_model(db: Database, name: str) -> StoredModel:
    """A stored model (KeyError naming the known ones if absent) and its id."""
    # Imported here so that the model names above cost no torch import. Importing the
    # model modules registers their classes in MODEL_CLASSES.
    import semhash.hasher, semhash.image_hasher, semhash.image_map, semhash.topic_map  # noqa: E401, F401
    from semhash.estimator import MODEL_CLASSES, DeepCodeModel

    row = db.get_model(name)
    model_class = MODEL_CLASSES.get(row.config.get("class", ""), DeepCodeModel)
    return StoredModel(model_class.from_bytes(row.weights), row.id)


def save_vocabulary(db: Database, vocabulary: WordCounter) -> None:
    """Store a text collection's vocabulary (once, for all its models)."""
    db.save_vocabulary(vocabulary.to_dict())


def load_vocabulary(db: Database) -> WordCounter:
    """The vocabulary that turns text into the word counts of the collection's models."""
    from semhash.vectorize import WordCounter

    vocabulary = db.get_vocabulary()
    if vocabulary is None:
        raise DatabaseError(f"{db!r} has no stored vocabulary, so it cannot encode text")
    return WordCounter.from_dict(vocabulary)
