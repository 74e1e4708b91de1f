"""A trained classifier as a folder on disk, and prediction from raw texts.

Folder layout (one small file per stage, plus a manifest, in the spirit of sentence-transformers)::

    DIR/manifest.json      backbones (reference + weight fingerprint), layers, pooling, how layers
                           combine, extraction settings, label names, metrics, versions
    DIR/net.safetensors    fusion + head weights (input standardisation included)
    DIR/net.json           how to rebuild the fusion + head module

The manifest records the size and sha256 of the other files; :meth:`FusionPipeline.load`
refuses a folder whose files no longer match (a damaged ``net.safetensors`` would otherwise
predict wrong labels without a word).

``load(DIR).predict(texts)`` runs each backbone once, only up to the deepest layer it needs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from layerfuse.cache.atomic import atomic_folder
from layerfuse.config import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_LENGTH
from layerfuse.errors import LayerfuseError
from layerfuse.model.sources import SourceSpec, build_sources

if TYPE_CHECKING:
    from layerfuse.model.training import TrainedModel

MANIFEST = "manifest.json"
FORMAT = "layerfuse-classifier/1"


def _versions() -> dict:
    import torch
    import transformers

    from layerfuse import __version__

    return {"layerfuse": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


@dataclass
class FusionPipeline:
    """Backbones → selected layers → fusion → head, ready to predict on raw texts."""

    specs: list[SourceSpec]
    trained: TrainedModel
    classes: list[str]
    extraction: dict  # max_length, dtype, storage, batch_tokens
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    #: Lexical sources (``tfidf``) by name, fitted on train: saved under ``DIR/lexical/NAME``.
    lexical: dict = field(default_factory=dict)
    _backbones: dict = field(default_factory=dict, repr=False)

    # -- prediction ---------------------------------------------------------------------------
    def _backbone(self, ref: str, fingerprint: str, device: str, cache_dir):
        from layerfuse.embed.backbones import describe_reference, load_backbone

        if ref in self._backbones:
            return self._backbones[ref]
        try:
            found = describe_reference(ref, cache_dir)["fingerprint"]
        except LayerfuseError as e:
            raise LayerfuseError(f"this classifier needs model '{ref}', which cannot be found: {e}") from e
        if fingerprint and found and found != fingerprint:
            raise LayerfuseError(
                f"model '{ref}' has weight fingerprint {found}, but the classifier was trained on {fingerprint}: "
                "point it at the same weights (the saved manifest.json lists them) or retrain")
        bb = load_backbone(ref, dtype=self.extraction.get("dtype", "float32"), device=device, root=cache_dir,
                           progress=False)
        if fingerprint and bb.fingerprint != fingerprint:
            raise LayerfuseError(f"model '{ref}' loaded with fingerprint {bb.fingerprint}, expected {fingerprint}")
        self._backbones[ref] = bb
        return bb

    def sources(self, texts: Sequence[str], *, device: str = "cpu", cache_dir=None) -> list[np.ndarray]:
        """Fusion inputs for raw texts: each backbone runs once, up to the deepest layer it needs."""
        from layerfuse.embed.forward import embed_texts

        texts = list(texts)
        if not texts:
            raise LayerfuseError("no texts to predict")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise LayerfuseError(f"text {bad[0] + 1} is empty (or not a string): every input needs some text")
        per_model: dict[str, dict] = {}
        arrays = {ref: {"tfidf": src.transform(texts)[None]} for ref, src in self.lexical.items()}
        for s in self.specs:
            if s.model in self.lexical:
                continue
            m = per_model.setdefault(s.model, {"depth": 0, "poolings": [], "fingerprint": s.fingerprint})
            m["depth"] = max(m["depth"], s.depth)
            if s.pooling not in m["poolings"]:
                m["poolings"].append(s.pooling)
        for ref, m in per_model.items():
            bb = self._backbone(ref, m["fingerprint"], device, cache_dir)
            arrays[ref] = embed_texts(bb, texts, m["poolings"], depth=m["depth"],
                                      max_length=self.extraction.get("max_length", DEFAULT_MAX_LENGTH),
                                      batch_tokens=self.extraction.get("batch_tokens", DEFAULT_BATCH_TOKENS),
                                      round_to=self.extraction.get("storage"))
        out = []
        for s in self.specs:
            out.extend(build_sources(s, arrays[s.model][s.pooling]))
        return out

    def predict_proba(self, texts: Sequence[str], **kw) -> np.ndarray:
        return self.trained.predict_proba(self.sources(texts, **kw))

    def compile(self, *, device: str = "cpu", cache_dir=None, announce=None) -> list[str]:
        """Load every backbone and run its blocks through ``torch.compile``
        (:func:`layerfuse.embed.compiled.compile_blocks`; a model that fails to compile stays eager
        and ``announce`` says why). Worth it for a long-lived process (``layerfuse serve
        --compile``); returns the backbones that run compiled."""
        from layerfuse.embed.compiled import compile_blocks

        done = []
        for s in self.specs:
            if s.model in self.lexical or s.model in done:
                continue
            bb = self._backbone(s.model, s.fingerprint, device, cache_dir)
            if compile_blocks(bb, root=cache_dir, announce=announce):
                done.append(s.model)
        return done

    def predict(self, texts: Sequence[str], **kw) -> list[str]:
        proba = self.predict_proba(texts, **kw)
        return [self.classes[i] for i in proba.argmax(1)]

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        from layerfuse.model.saving import file_checksums, save_net

        target = Path(directory)
        if target.exists() and not (target / MANIFEST).exists() and any(target.iterdir()):
            raise LayerfuseError(f"{target} exists and is not a layerfuse classifier folder: choose another folder to save to")
        with atomic_folder(target) as tmp:
            save_net(self.trained, tmp)
            for name, src in self.lexical.items():
                src.save(tmp / "lexical" / name)
            manifest = {
                "format": FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "classes": list(self.classes),
                "sources": [s.to_dict() for s in self.specs],
                "backbones": {s.model: s.fingerprint for s in self.specs if s.model not in self.lexical},
                "lexical": sorted(self.lexical),
                "extraction": self.extraction,
                "fusion": self.trained.fusion,
                "head": self.trained.head,
                "metrics": self.metrics,
                "info": self.info,
                "versions": _versions(),
                "files": file_checksums(tmp),  # size + sha256 of every other file, checked on load
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FusionPipeline":
        from layerfuse.model.saving import load_net, verify_checksums

        d = Path(directory)
        if not d.is_dir():
            raise LayerfuseError(f"classifier folder {d} does not exist: pass a folder written by save (`save` in fuse/run)")
        mpath = d / MANIFEST
        if not mpath.exists():
            raise LayerfuseError(f"{mpath} is missing: {d} is not a layerfuse classifier folder")
        try:
            man = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LayerfuseError(f"{mpath} is not valid JSON ({e}): the folder is damaged, save the classifier again") from e
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise LayerfuseError(f"{mpath}: unknown format {man.get('format') if isinstance(man, dict) else None!r}, "
                                 f"expected {FORMAT}")
        for key in ("classes", "sources", "extraction"):
            if key not in man:
                raise LayerfuseError(f"{mpath} lacks the field '{key}': the folder is damaged, save the classifier again")
        try:
            specs = [SourceSpec.from_dict(s) for s in man["sources"]]
        except (TypeError, KeyError) as e:
            raise LayerfuseError(f"{mpath}: malformed 'sources' entry ({e})") from e
        if "files" in man:  # folders saved before checksums were recorded have none
            verify_checksums(d, man["files"], mpath, "the folder is damaged: save the classifier again or restore "
                             "it from a copy")
        trained = load_net(d)
        lexical = _load_lexical(d, man, specs)
        if trained.n_classes != len(man["classes"]):
            raise LayerfuseError(f"{mpath} lists {len(man['classes'])} classes but the network has {trained.n_classes}")
        n_sources = sum(len(s.layers) if s.combine == "separate" else 1 for s in specs)
        if n_sources != len(trained.net.source_dims):
            raise LayerfuseError(f"{mpath} describes {n_sources} sources but the network takes "
                                 f"{len(trained.net.source_dims)}")
        return cls(specs=specs, trained=trained, classes=list(man["classes"]), extraction=man["extraction"],
                   metrics=man.get("metrics", {}), info=man.get("info", {}), lexical=lexical)


def _load_lexical(d: Path, man: dict, specs) -> dict:
    """The lexical sources a manifest lists (``DIR/lexical/NAME``), each checked against the
    fingerprint its source entry recorded."""
    from layerfuse.model.lexical import TfidfSource, is_lexical

    names = man.get("lexical") or []
    missing = sorted({s.model for s in specs if is_lexical(s.model)} - set(names))
    if missing:
        raise LayerfuseError(f"{d / MANIFEST} uses the lexical source '{missing[0]}' but does not list it: "
                             "save the classifier again")
    out = {}
    for name in names:
        src = TfidfSource.load(d / "lexical" / name)
        want = {s.fingerprint for s in specs if s.model == name and s.fingerprint}
        if want and src.fingerprint not in want:
            raise LayerfuseError(f"{d / 'lexical' / name} has fingerprint {src.fingerprint}, the manifest expects "
                                 f"{sorted(want)[0]}: the folder is damaged, save the classifier again")
        out[name] = src
    return out


def load(directory: str | os.PathLike) -> FusionPipeline:
    """Load a classifier folder written by ``--save`` / ``FusionPipeline.save``."""
    return FusionPipeline.load(directory)
