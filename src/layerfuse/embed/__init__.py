"""TODO embed
"""

from .backbones import Backbone, describe_reference, find_layer_list, fingerprint_source, load_backbone, resolve
from .device import DTYPES, bf16_instructions, bf16_speedup, fast_bf16, resolve_device, resolve_dtype
from .extract import STORAGE, Embeddings, extract, extract_texts, peak_rss_mb
from .forward import embed_sorted, embed_texts, forward_all_layers, plan_batches, tokenize
from .pooling import POOLINGS, parse_poolings, pool
from .registry import ALIASES, AliasInfo, alias_installed, alias_source, list_models

__all__ = [
    "fingerprint_source",
    "Backbone",
    "find_layer_list",
    "resolve",
    "load_backbone",
    "describe_reference",
    "DTYPES",
    "fast_bf16",
    "bf16_instructions",
    "bf16_speedup",
    "resolve_dtype",
    "resolve_device",
    "STORAGE",
    "Embeddings",
    "peak_rss_mb",
    "extract_texts",
    "extract",
    "plan_batches",
    "forward_all_layers",
    "tokenize",
    "embed_sorted",
    "embed_texts",
    "POOLINGS",
    "pool",
    "parse_poolings",
    "AliasInfo",
    "ALIASES",
    "alias_installed",
    "list_models",
    "alias_source",
]
