"""From texts to per-layer pooled embeddings: model references, the forward pass that pools every
layer, the compute dtype and device, and extraction through the cache.
"""

from .backbones import Backbone, describe_reference, load_backbone, resolve
from .device import DTYPES, dtype_decision, resolve_device, resolve_dtype
from .extract import STORAGE, Embeddings, extract, extract_texts
from .forward import embed_texts, forward_all_layers, forward_pooled, plan_batches, tokenize
from .pooling import POOLINGS, parse_poolings, pool
from .registry import ALIASES, alias_installed, list_models

__all__ = [
    "Backbone",
    "describe_reference",
    "load_backbone",
    "resolve",
    "DTYPES",
    "resolve_device",
    "resolve_dtype",
    "dtype_decision",
    "STORAGE",
    "Embeddings",
    "extract",
    "extract_texts",
    "embed_texts",
    "forward_all_layers",
    "forward_pooled",
    "plan_batches",
    "tokenize",
    "POOLINGS",
    "parse_poolings",
    "pool",
    "ALIASES",
    "alias_installed",
    "list_models",
]
