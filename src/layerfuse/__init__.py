"""layerfuse: layer-aware embedding fusion for text classification with frozen language models."""

__version__ = "0.1.0"
