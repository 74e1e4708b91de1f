"""Grid-row checkpoints: one folder per finished row, keyed by everything its numbers depend on, read
back instead of retrained.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from layerfuse.errors import LayerfuseError
from layerfuse.run.prepare import ModelPrep

__all__ = ["load_or_fit", "has_checkpoint", "grid_row_key", "load_or_score"]


def load_or_fit(folder, fit, info: dict, log=print):
    """``fit()`` (returning a :class:`~layerfuse.model.training.SeedResult`) unless ``folder`` already holds
    its result from an earlier run; a new result is saved there atomically. ``folder`` None: just
    fit. Returns ``(result, loaded)``. An unreadable folder is reported and trained again."""
    from layerfuse.model.saving import load_seeds, save_seeds

    if has_checkpoint(folder):
        try:
            return load_seeds(folder), True
        except LayerfuseError as exc:
            log(f"  {folder}: unreadable ({exc}); training again")
    res = fit()
    if folder is not None:
        save_seeds(res, folder, info=info)
    return res, False


def has_checkpoint(folder) -> bool:
    """Whether ``folder`` holds a finished row (save_seeds renames it into place only when complete)."""
    from layerfuse.model.saving import SEEDS_FILE

    return folder is not None and (Path(folder) / SEEDS_FILE).is_file()


def grid_row_key(data_fingerprint: str, preps: Sequence[ModelPrep], fusion: str, head: str, settings: dict) -> str:
    """The checkpoint folder name of one grid row: a digest of everything its numbers depend on —
    the dataset (texts and labels), each model's embedding cache entries (model, texts, max length,
    dtype, storage) and chosen layers, the fusion, the head, the seeds and the training settings."""
    from layerfuse.cache.layout import make_key

    sources = [{"spec": asdict(p.spec), "splits": {s: p.emb.keys.get(s) for s in ("train", "test")}}
               for p in preps]
    return make_key({"what": "grid-row", "data": data_fingerprint, "sources": sources, "fusion": fusion,
                     "head": head, **settings})


def load_or_score(path, score, log=print) -> dict:
    """``score()`` (a :func:`~layerfuse.run.selection_rules.cv_scores` dict) unless ``path`` already
    holds it from an earlier run; a new one is written there atomically (JSON, ``oof_pred`` as a
    list). ``path`` None: just score. An unreadable file is reported and scored again."""
    import json

    import numpy as np

    from layerfuse.cache.atomic import atomic_write_bytes

    if path is not None and Path(path).is_file():
        try:
            d = json.loads(Path(path).read_text())
            d["oof_pred"] = np.asarray(d["oof_pred"], dtype=np.int64)
            return d
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log(f"  {path}: unreadable ({exc}); scoring again")
    d = score()
    if path is not None:
        atomic_write_bytes(Path(path), json.dumps({**d, "oof_pred": np.asarray(d["oof_pred"]).tolist()}).encode())
    return d
