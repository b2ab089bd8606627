"""xl: does machine translation make multilingual encoders cross-lingually aligned?

The package behind the book: corpora, models, training, similarity, SVD,
transfer evaluation, plots, widgets and the notebook runner.
"""
from xl.book import colab  # noqa: F401
from xl.core.presets import PRESETS, config  # noqa: F401

__version__ = "0.1.0"
