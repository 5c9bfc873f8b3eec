"""semhash: semantic hashing of documents and images with deep autoencoders.

One installed namespace holds five layers, each importing only those before it:
``semhash`` (models, codes, memory) <- ``semhash.index`` (storage and search) <-
``semhash.pipelines`` (reading, training, indexing, evaluation) <- ``semhash.server``
(the web API and page) <- ``semhash.cli``. In the source tree the last four sit beside
this folder (``index/``, ``pipelines/``, ``server/``, ``cli.py``); ``pyproject.toml`` maps
them into the package when it is built.
"""

import os as _os

from semhash.estimator import ModelFormatError
from semhash.hasher import SemanticHasher
from semhash.rbm import RBM
from semhash.text_hasher import TextHasher
from semhash.topic_map import TopicMap


def _source_tree_layers() -> None:
    """In a checkout (or an editable install), find ``semhash.index`` & co. beside ``semhash/``.

    A built wheel copies them inside the package, so this only ever runs where the
    checkout's ``pyproject.toml`` names this project.
    """
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    marker = _os.path.join(root, "pyproject.toml")
    if not all(_os.path.exists(_os.path.join(root, part)) for part in ("cli.py", "index", "pipelines")):
        return
    try:
        with open(marker, encoding="utf-8") as file:
            is_ours = 'name = "semhash"' in file.read()
    except OSError:
        return
    if is_ours and root not in __path__:
        __path__.append(root)


_source_tree_layers()

__all__ = ["RBM", "SemanticHasher", "TextHasher", "TopicMap", "ModelFormatError"]
__version__ = "0.1.0"
