"""layerfuse: layer-aware embedding fusion for text classification with frozen language models.

Heavy imports (torch, transformers) happen on first use, so `import layerfuse` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "extract": ("layerfuse.embed.extract", "extract"),
    "Embeddings": ("layerfuse.embed.extract", "Embeddings"),
    "load_dataset": ("layerfuse.data.loading", "load_dataset"),
    "LayerfuseError": ("layerfuse.errors", "LayerfuseError"),
    "load": ("layerfuse.pipeline", "load"),
    "FusionPipeline": ("layerfuse.pipeline", "FusionPipeline"),
    "LayerFusionClassifier": ("layerfuse.estimator", "LayerFusionClassifier"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'layerfuse' has no attribute '{name}'")
