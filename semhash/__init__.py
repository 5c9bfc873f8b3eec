"""semhash: semantic hashing of documents and images with deep autoencoders."""

from semhash.estimator import ModelFormatError
from semhash.hasher import SemanticHasher
from semhash.rbm import RBM
from semhash.topic_map import TopicMap

__all__ = ["RBM", "SemanticHasher", "TopicMap", "ModelFormatError"]
__version__ = "0.1.0"
