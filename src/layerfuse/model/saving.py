"""Saving and loading trained nets (``net.safetensors`` + ``net.json``) and grid-row results.

Folders that hold several files record the size and sha256 of each (:func:`file_checksums`)
and refuse to load when one no longer matches (:func:`verify_checksums`), so damaged weights
are never used: a flipped byte inside a float would otherwise go unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

from layerfuse.errors import LayerfuseError
from layerfuse.model.fusion import build_fusion
from layerfuse.model.heads import FusionClassifierNet, build_head
from layerfuse.model.training import SeedResult, TrainedModel, count_params

__all__ = ["WEIGHTS_FILE", "CONFIG_FILE", "SEEDS_FILE", "FORMAT_VERSION", "save_net", "load_net", "save_seeds",
           "load_seeds", "file_checksums", "verify_checksums"]

WEIGHTS_FILE = "net.safetensors"
CONFIG_FILE = "net.json"
SEEDS_FILE = "seeds.json"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# checksums


def file_checksums(folder: Path, exclude: tuple[str, ...] = ()) -> dict:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` but ``exclude``."""
    from layerfuse.cache.atomic import sha256_file

    folder = Path(folder)
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and str(p.relative_to(folder)) not in exclude}


def verify_checksums(folder: Path, recorded, where: Path, fix: str) -> None:
    """Raise a one-line :class:`LayerfuseError` naming the first file under ``folder`` that is
    missing or differs from ``recorded`` (as written by :func:`file_checksums` into ``where``)."""
    from layerfuse.cache.atomic import sha256_file

    if not isinstance(recorded, dict):
        raise LayerfuseError(f"{where}: malformed 'files' checksums; {fix}")
    for name, rec in recorded.items():
        p = Path(folder) / name
        try:
            if not isinstance(rec, dict):
                raise TypeError
            if not p.is_file():
                raise LayerfuseError(f"{p}: file missing (listed in {where.name}); {fix}")
            if p.stat().st_size != rec["size"] or sha256_file(p) != rec["sha256"]:
                raise LayerfuseError(f"{p}: damaged, its checksum differs from the one {where.name} recorded at "
                                     f"save; {fix}")
        except (KeyError, TypeError):
            raise LayerfuseError(f"{where}: malformed checksum for {name}; {fix}") from None


# --------------------------------------------------------------------------------------------
# save / load


def save_net(trained: TrainedModel, directory) -> Path:
    """Write ``net.safetensors`` (weights and standardisation buffers) and ``net.json`` into ``directory``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    fusion_cfg = trained.net.fusion.get_config()
    meta = {
        "format": "layerfuse.net",
        "version": FORMAT_VERSION,
        "fusion": fusion_cfg["name"],
        "head": trained.head,
        "source_dims": fusion_cfg["source_dims"],
        "proj_dim": fusion_cfg["proj_dim"],
        "n_classes": trained.n_classes,
        "fusion_kwargs": fusion_cfg["kwargs"],
        "best_epoch": trained.best_epoch,
        "val_acc": trained.val_acc,
        "val_f1": trained.val_f1,
        "train_seconds": trained.train_seconds,
        "n_params": trained.n_params,
        "train_config": trained.config,
        "history": trained.history,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in trained.net.state_dict().items()}
    save_file(state, str(d / WEIGHTS_FILE), metadata={"format": "layerfuse.net"})
    (d / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return d


def _read_json_object(path: Path, fix: str) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayerfuseError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(doc, dict):
        raise LayerfuseError(f"{path}: expected a JSON object; {fix}")
    return doc


def load_net(directory) -> TrainedModel:
    """Rebuild the exact :class:`TrainedModel` written by :func:`save_net` (net in eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    if not d.is_dir():
        raise LayerfuseError(f"{d}: not a folder; pass the folder written by save_net")
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise LayerfuseError(f"{p}: file missing; pass a folder written by save_net ({CONFIG_FILE} + {WEIGHTS_FILE})")
    meta = _read_json_object(cfg_path, "re-save the model with save_net")
    missing = [k for k in ("fusion", "head", "source_dims", "proj_dim", "n_classes") if k not in meta]
    if missing:
        raise LayerfuseError(f"{cfg_path}: missing field(s) {', '.join(missing)}; re-save the model with save_net")
    try:
        fusion_mod = build_fusion(
            meta["fusion"], meta["source_dims"], proj_dim=meta["proj_dim"], **(meta.get("fusion_kwargs") or {})
        )
        n_classes = meta["n_classes"]
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise LayerfuseError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        head_mod = build_head(meta["head"], fusion_mod.out_dim, n_classes)
    except LayerfuseError as exc:
        raise LayerfuseError(f"{cfg_path}: {exc}") from None
    except TypeError as exc:
        raise LayerfuseError(f"{cfg_path}: malformed field ({exc}); re-save the model with save_net") from None
    net = FusionClassifierNet(fusion_mod, head_mod)

    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LayerfuseError(f"{w_path}: unreadable safetensors file ({exc}); re-save the model with save_net") from None
    expected = net.state_dict()
    missing_t = sorted(set(expected) - set(state))
    extra_t = sorted(set(state) - set(expected))
    if missing_t or extra_t:
        parts = []
        if missing_t:
            parts.append(f"missing tensor(s) {', '.join(missing_t[:5])}")
        if extra_t:
            parts.append(f"unexpected tensor(s) {', '.join(extra_t[:5])}")
        raise LayerfuseError(f"{w_path}: {'; '.join(parts)} for the net described in {CONFIG_FILE}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise LayerfuseError(
                f"{w_path}: tensor {k} has shape {list(state[k].shape)} but {CONFIG_FILE} implies "
                f"{list(v.shape)}; the two files do not belong together"
            )
    net.load_state_dict(state)
    net.eval()
    return TrainedModel(
        net=net,
        fusion=meta["fusion"],
        head=meta["head"],
        config=meta.get("train_config") or {
            k: meta[k] for k in ("fusion", "head", "source_dims", "proj_dim", "n_classes", "fusion_kwargs") if k in meta
        },
        best_epoch=int(meta.get("best_epoch", 0) or 0),
        val_acc=meta.get("val_acc"),
        val_f1=meta.get("val_f1"),
        train_seconds=float(meta.get("train_seconds", 0.0) or 0.0),
        n_params=count_params(net),
        history=list(meta.get("history") or []),
    )


def save_seeds(result: SeedResult, directory, info: dict | None = None) -> Path:
    """Write a :class:`SeedResult` into ``directory``: every seed's net (:func:`save_net`, folder
    ``seed-<s>``) and the scores (``seeds.json``, with ``info`` beside them). The folder is built
    under a temporary name and renamed into place, so an interrupted save leaves nothing half-written."""
    from layerfuse.cache.atomic import atomic_folder

    d = Path(directory)
    with atomic_folder(d) as tmp:
        for s, model in zip(result.seeds, result.models):
            save_net(model, tmp / f"seed-{s}")
        doc = {"format": "layerfuse.seeds", "version": FORMAT_VERSION, "summary": result.summary(), "info": info or {},
               "files": file_checksums(tmp)}
        (tmp / SEEDS_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return d


def load_seeds(directory) -> SeedResult:
    """Read back the exact :class:`SeedResult` written by :func:`save_seeds`, models included."""
    d = Path(directory)
    path = d / SEEDS_FILE
    if not path.is_file():
        raise LayerfuseError(f"{path}: file missing; pass a folder written by save_seeds")
    doc = _read_json_object(path, "train the row again")
    names = set(SeedResult.__dataclass_fields__) - {"models"}
    summary = doc.get("summary")
    if not isinstance(summary, dict) or doc.get("format") != "layerfuse.seeds" or set(summary) != names:
        raise LayerfuseError(f"{path}: not a layerfuse seeds file of this version (fields {sorted(names)} expected)")
    if "files" in doc:  # rows saved before checksums were recorded have none
        verify_checksums(d, doc["files"], path, "train the row again")
    models = [load_net(d / f"seed-{s}") for s in summary["seeds"]]
    return SeedResult(**summary, models=models)
