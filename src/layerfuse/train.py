"""Classifier heads and their training on pooled-embedding arrays.

Inputs are plain arrays: a *source* is ``[N, d]`` or ``[N, K, d]`` (K layers for a learned scalar
mix) for N texts; several sources may have different widths. :func:`fit_head` carves a stratified
validation split out of the training data, standardises every source with statistics of the
training part, trains a fusion + head with Adam and early-stops on validation macro-F1. Test data
is never seen there: :func:`evaluate` scores it once, and :func:`fit_seeds` does so once per seed
after that seed's training has finished.

Early stopping monitors validation **macro-F1** (R8/R52 are very imbalanced, so accuracy would
reward ignoring small classes); an epoch counts as better when its macro-F1 is higher, or equal
with a lower validation loss. The weights of the best epoch are restored at the end.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerfuse.errors import LayerfuseError
from layerfuse.fusion import FUSIONS, Fusion, build_fusion

__all__ = [
    "HEADS",
    "FusionClassifierNet",
    "LinearHead",
    "MLPHead",
    "SeedResult",
    "TrainedModel",
    "build_head",
    "evaluate",
    "fit_head",
    "fit_seeds",
    "load_net",
    "load_seeds",
    "save_net",
    "save_seeds",
    "source_dims_of",
    "stratified_validation_split",
]

WEIGHTS_FILE = "net.safetensors"
CONFIG_FILE = "net.json"
SEEDS_FILE = "seeds.json"
FORMAT_VERSION = 1
_EVAL_BATCH = 2048


# --------------------------------------------------------------------------------------------
# heads


class MLPHead(nn.Module):
    """The paper's head: Linear(in, 1024) ReLU Dropout(0.5) Linear(1024, 256) ReLU Dropout(0.3) Linear(256, C)."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.in_dim, self.n_classes = in_dim, n_classes
        self.net = nn.Sequential(
            nn.Linear(in_dim, 1024),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(1024, 256),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(256, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LinearHead(nn.Module):
    """Multinomial logistic regression: one Linear(in, C)."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.in_dim, self.n_classes = in_dim, n_classes
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


#: name -> head class, each built as ``cls(in_dim, n_classes)``.
HEADS: dict[str, type[nn.Module]] = {"mlp": MLPHead, "logreg": LinearHead}


def build_head(name: str, in_dim: int, n_classes: int) -> nn.Module:
    if name not in HEADS:
        raise LayerfuseError(f"unknown head {name!r}: pass one of {', '.join(sorted(HEADS))}")
    return HEADS[name](in_dim, n_classes)


# --------------------------------------------------------------------------------------------
# the network


class FusionClassifierNet(nn.Module):
    """Standardise each source, fuse, classify. Returns logits ``[B, C]``.

    Per-source mean/std live in buffers (``input_mean_i`` / ``input_std_i``, shaped like one row of
    the source), so a saved state dict is all a loaded net needs. They start as 0/1 (identity);
    :meth:`set_standardization` fills them from training arrays.
    """

    def __init__(self, fusion: Fusion, head: nn.Module):
        super().__init__()
        self.fusion = fusion
        self.head = head
        for i, d in enumerate(fusion.source_dims):
            shape = (d,) if isinstance(d, int) else tuple(d)
            self.register_buffer(f"input_mean_{i}", torch.zeros(shape))
            self.register_buffer(f"input_std_{i}", torch.ones(shape))

    @property
    def source_dims(self) -> list:
        return self.fusion.source_dims

    def set_standardization(self, sources: list[np.ndarray]) -> None:
        """Compute per-feature mean/std of each source (axis 0); std below 1e-6 counts as 1."""
        for i, s in enumerate(sources):
            s64 = np.asarray(s, dtype=np.float64)
            mean = s64.mean(axis=0)
            std = s64.std(axis=0)
            std[std < 1e-6] = 1.0
            getattr(self, f"input_mean_{i}").copy_(torch.from_numpy(mean))
            getattr(self, f"input_std_{i}").copy_(torch.from_numpy(std))

    def forward(self, xs: list[Tensor]) -> Tensor:
        if isinstance(xs, (list, tuple)) and len(xs) == self.fusion.n_sources:
            xs = [
                (x - getattr(self, f"input_mean_{i}")) / getattr(self, f"input_std_{i}")
                if isinstance(x, Tensor) and x.shape[1:] == getattr(self, f"input_mean_{i}").shape
                else x  # wrong shape: let the fusion raise its clear error
                for i, x in enumerate(xs)
            ]
        return self.head(self.fusion(xs))


# --------------------------------------------------------------------------------------------
# input checks


def source_dims_of(sources: list[np.ndarray]) -> list:
    """``source_dims`` entries for arrays: ``d`` for ``[N, d]``, ``(K, d)`` for ``[N, K, d]``."""
    return [int(s.shape[1]) if s.ndim == 2 else (int(s.shape[1]), int(s.shape[2])) for s in sources]


def _as_sources(sources, what: str) -> list[np.ndarray]:
    if isinstance(sources, (np.ndarray, Tensor)):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or len(sources) == 0:
        raise LayerfuseError(
            f"{what} must be a non-empty list with one array [N, d] or [N, K, d] per source, "
            f"got {type(sources).__name__}"
        )
    out = []
    for i, s in enumerate(sources):
        if isinstance(s, Tensor):
            s = s.detach().cpu().numpy()
        try:
            a = np.asarray(s, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise LayerfuseError(f"{what}[{i}] is not a numeric array ({exc}): pass float arrays") from None
        if a.ndim not in (2, 3) or 0 in a.shape[1:]:
            raise LayerfuseError(
                f"{what}[{i}] has shape {a.shape}: expected [N, d] (one vector per text) "
                "or [N, K, d] (K layers per text)"
            )
        if not np.isfinite(a).all():
            raise LayerfuseError(f"{what}[{i}] contains NaN or infinite values: pass finite embeddings")
        out.append(np.ascontiguousarray(a))
    n = {a.shape[0] for a in out}
    if len(n) != 1:
        raise LayerfuseError(
            f"{what} have different row counts {[a.shape[0] for a in out]}: pass one row per text in every source"
        )
    return out


def _as_labels(y, n: int, what: str, n_classes: int | None = None) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise LayerfuseError(f"{what} has shape {a.shape}: pass a 1-D array of integer class ids")
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise LayerfuseError(
                f"{what} holds {a.dtype} values: pass integer class ids 0..C-1 (map label names to ids first)"
            )
    a = a.astype(np.int64)
    if a.shape[0] != n:
        raise LayerfuseError(f"{what} has {a.shape[0]} labels but the sources have {n} rows: pass one label per row")
    if n_classes is not None and a.size and (a.min() < 0 or a.max() >= n_classes):
        raise LayerfuseError(
            f"{what} holds class ids {int(a.min())}..{int(a.max())} but n_classes={n_classes}: "
            f"pass ids in 0..{n_classes - 1} or a larger n_classes"
        )
    return a


def _check_against_net(net: FusionClassifierNet, sources: list[np.ndarray], what: str) -> None:
    dims = net.source_dims
    got = source_dims_of(sources)
    if len(got) != len(dims):
        raise LayerfuseError(f"{what}: the model was trained on {len(dims)} source(s), got {len(got)}")
    for i, (g, d) in enumerate(zip(got, dims)):
        if g != d:
            exp = f"[N, {d}]" if isinstance(d, int) else f"[N, {d[0]}, {d[1]}]"
            raise LayerfuseError(f"{what}[{i}] has shape {sources[i].shape}: the model expects {exp}")


# --------------------------------------------------------------------------------------------
# metrics and split


def _metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in ``y_true`` or ``y_pred`` (as scikit-learn)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return {"acc": float("nan"), "macro_f1": float("nan")}
    labels = np.union1d(y_true, y_pred)
    f1s = []
    for c in labels:
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"acc": float(np.mean(y_true == y_pred)), "macro_f1": float(np.mean(f1s))}


def stratified_validation_split(y, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train_idx, val_idx), stratified by class and deterministic in ``seed``.

    About ``round(fraction * N)`` examples go to validation, shared among classes in proportion to
    their size (largest remainder, ties broken by a seeded draw). A class never gives its last
    example, so every class with at least one example (two or more in particular) stays in train;
    singleton classes are train-only. Both index arrays are sorted.
    """
    y = np.asarray(y)
    y = _as_labels(y, y.shape[0] if y.ndim == 1 else -1, "y")
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise LayerfuseError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    caps = counts - 1
    want = fraction * counts
    n_val = np.minimum(np.floor(want).astype(np.int64), caps)
    target = min(int(math.floor(fraction * len(y) + 0.5)), int(caps.sum()))
    # Hand out the remaining slots by largest fractional part (random tie-break), within caps.
    order = np.lexsort((rng.random(len(classes)), -(want - np.floor(want))))
    while n_val.sum() < target:
        moved = False
        for j in order:
            if n_val.sum() >= target:
                break
            if n_val[j] < caps[j]:
                n_val[j] += 1
                moved = True
        if not moved:
            break
    val_parts = []
    for c, k in zip(classes, n_val):
        idx = np.flatnonzero(y == c)
        if k:
            val_parts.append(rng.permutation(idx)[:k])
        else:
            rng.permutation(idx)  # keep the stream aligned across classes
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64)


# --------------------------------------------------------------------------------------------
# trained model


@dataclass
class TrainedModel:
    """A trained fusion + head. ``net`` is in eval mode; scores are from the validation split."""

    net: FusionClassifierNet
    fusion: str
    head: str
    config: dict
    best_epoch: int
    val_acc: float | None
    val_f1: float | None
    train_seconds: float
    n_params: int
    history: list[dict] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return int(self.net.head.n_classes)

    def predict_proba(self, sources, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """Class probabilities ``[N, C]`` (float32), batched, without gradients."""
        arrays = _as_sources(sources, "sources")
        _check_against_net(self.net, arrays, "sources")
        return _predict_proba(self.net, [torch.from_numpy(a) for a in arrays], batch_size)

    def predict(self, sources, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """Predicted class ids ``[N]``."""
        return self.predict_proba(sources, batch_size).argmax(axis=1)


def _predict_logits(net: nn.Module, xs: list[Tensor], batch_size: int) -> Tensor:
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            n = xs[0].shape[0]
            out = [net([x[i : i + batch_size] for x in xs]) for i in range(0, n, batch_size)]
            if not out:
                return torch.empty(0, net.head.n_classes)
            return torch.cat(out)
    finally:
        net.train(was_training)


def _predict_proba(net: nn.Module, xs: list[Tensor], batch_size: int) -> np.ndarray:
    return torch.softmax(_predict_logits(net, xs, batch_size), dim=1).numpy()


def _count_params(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


# --------------------------------------------------------------------------------------------
# training


def fit_head(
    sources_train,
    y_train,
    *,
    n_classes: int,
    fusion: str = "concat",
    head: str = "mlp",
    proj_dim: int = 1024,
    val_fraction: float = 0.1,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    max_epochs: int = 50,
    patience: int = 5,
    progress: bool = False,
    fusion_kwargs: dict | None = None,
) -> TrainedModel:
    """Train ``fusion`` + ``head`` on training arrays only and return the best-validation model.

    A stratified ``val_fraction`` of the training rows (see :func:`stratified_validation_split`,
    same ``seed``) is held out; inputs are standardised with the remaining rows' statistics.
    Training uses Adam (``lr``, ``weight_decay`` as L2) on shuffled minibatches and stops after
    ``patience`` epochs without a better validation macro-F1 (ties: lower validation loss), then
    restores the best epoch's weights. ``val_fraction=0`` trains all ``max_epochs`` on every row
    and keeps the last epoch (val scores are then ``None``). ``seed`` fixes the split, the
    initialisation, dropout and shuffling; the global torch RNG state is left as it was.
    """
    arrays = _as_sources(sources_train, "sources_train")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise LayerfuseError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    n_classes = int(n_classes)
    y = _as_labels(y_train, arrays[0].shape[0], "y_train", n_classes)
    if head not in HEADS:
        raise LayerfuseError(f"unknown head {head!r}: pass one of {', '.join(sorted(HEADS))}")
    if fusion not in FUSIONS:
        raise LayerfuseError(f"unknown fusion {fusion!r}: pass one of {', '.join(sorted(FUSIONS))}")
    for name, v, lo in (("batch_size", batch_size, 1), ("max_epochs", max_epochs, 1), ("patience", patience, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise LayerfuseError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise LayerfuseError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise LayerfuseError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    fusion_kwargs = dict(fusion_kwargs or {})

    if val_fraction:
        train_idx, val_idx = stratified_validation_split(y, val_fraction, seed)
        if len(val_idx) == 0:
            raise LayerfuseError(
                f"val_fraction={val_fraction} leaves no validation rows out of {len(y)}: "
                "pass a larger val_fraction, more data, or val_fraction=0 to train without early stopping"
            )
    else:
        train_idx, val_idx = np.arange(len(y)), np.empty(0, dtype=np.int64)
    if len(train_idx) == 0:
        raise LayerfuseError("sources_train has no rows: pass at least one example per class")

    config: dict[str, Any] = {
        "fusion": fusion,
        "head": head,
        "source_dims": [d if isinstance(d, int) else list(d) for d in source_dims_of(arrays)],
        "proj_dim": int(proj_dim) if isinstance(proj_dim, (int, np.integer)) else proj_dim,
        "n_classes": n_classes,
        "fusion_kwargs": fusion_kwargs,
        "val_fraction": val_fraction,
        "seed": int(seed),
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": int(batch_size),
        "max_epochs": int(max_epochs),
        "patience": int(patience),
        "monitor": "val_macro_f1",
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
    }

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _no_denormals():
        torch.manual_seed(seed)
        fusion_mod = build_fusion(fusion, source_dims_of(arrays), proj_dim=config["proj_dim"], **fusion_kwargs)
        net = FusionClassifierNet(fusion_mod, build_head(head, fusion_mod.out_dim, n_classes))
        net.set_standardization([a[train_idx] for a in arrays])
        config["fusion_kwargs"] = dict(fusion_mod.extra_kwargs)

        xs_tr = [torch.from_numpy(a[train_idx]) for a in arrays]
        y_tr = torch.from_numpy(y[train_idx])
        xs_va = [torch.from_numpy(a[val_idx]) for a in arrays]
        y_va = y[val_idx]
        y_va_t = torch.from_numpy(y_va)

        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        n_tr = len(train_idx)
        history: list[dict] = []
        best_key: tuple[float, float] | None = None
        best_state = None
        best_epoch = 0
        best_val: dict[str, float] = {}
        stale = 0

        bar = _progress_bar(max_epochs, f"{fusion}/{head} seed {seed}") if progress else None
        for epoch in range(1, max_epochs + 1):
            te = time.perf_counter()
            net.train()
            perm = torch.randperm(n_tr, generator=gen)
            total = 0.0
            for start in range(0, n_tr, batch_size):
                idx = perm[start : start + batch_size]
                logits = net([x[idx] for x in xs_tr])
                loss = F.cross_entropy(logits, y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            row: dict[str, Any] = {"epoch": epoch, "train_loss": total / n_tr}
            if len(val_idx):
                logits_va = _predict_logits(net, xs_va, _EVAL_BATCH)
                val_loss = float(F.cross_entropy(logits_va, y_va_t))
                m = _metrics(y_va, logits_va.argmax(1).numpy())
                row.update(val_loss=val_loss, val_acc=m["acc"], val_f1=m["macro_f1"])
                key = (m["macro_f1"], -val_loss)
                better = best_key is None or key[0] > best_key[0] + 1e-12 or (
                    abs(key[0] - best_key[0]) <= 1e-12 and key[1] > best_key[1]
                )
                if better:
                    best_key, best_epoch, stale = key, epoch, 0
                    best_val = {"acc": m["acc"], "f1": m["macro_f1"]}
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    stale += 1
            else:
                best_epoch = epoch
            row["seconds"] = time.perf_counter() - te
            history.append(row)
            if bar is not None:
                bar.update(1)
                if "val_f1" in row:
                    bar.set_postfix(val_f1=f"{row['val_f1']:.4f}", best=best_epoch)
            if len(val_idx) and stale >= patience:
                break
        if bar is not None:
            bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
    net.eval()
    config["epochs_run"] = len(history)
    return TrainedModel(
        net=net,
        fusion=fusion,
        head=head,
        config=config,
        best_epoch=best_epoch,
        val_acc=best_val.get("acc"),
        val_f1=best_val.get("f1"),
        train_seconds=time.perf_counter() - t0,
        n_params=_count_params(net),
        history=history,
    )


def _flush_denormal_on() -> bool:
    probe = torch.from_numpy(np.array([1e-39], dtype=np.float32))
    return bool((probe * 1.0).item() == 0.0)


@contextlib.contextmanager
def _no_denormals():
    """Treat subnormal floats as zero while training, then restore the previous mode.

    Once the head fits its training rows, softmax saturates and many gradients fall into the
    subnormal range, where CPU matrix products run 10-100x slower; their value is negligible.
    (Threads of an intra-op pool created before this call keep their own mode.)
    """
    was_on = _flush_denormal_on()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _progress_bar(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=False)


def evaluate(trained: TrainedModel, sources_test, y_test) -> dict[str, float]:
    """Accuracy and macro-F1 of ``trained`` on test arrays: ``{"acc": ..., "macro_f1": ...}``."""
    arrays = _as_sources(sources_test, "sources_test")
    y = _as_labels(y_test, arrays[0].shape[0], "y_test", trained.n_classes)
    return _metrics(y, trained.predict(arrays))


# --------------------------------------------------------------------------------------------
# several seeds


@dataclass
class SeedResult:
    """One model per seed, each scored once on test after its training. Std is the sample std (ddof=1; 0 for one seed)."""

    seeds: list[int]
    per_seed: list[dict]
    acc_mean: float
    acc_std: float
    f1_mean: float
    f1_std: float
    val_acc_mean: float | None
    val_f1_mean: float | None
    n_params: int
    train_seconds_mean: float
    train_seconds_total: float
    models: list[TrainedModel] = field(repr=False, default_factory=list)

    def summary(self) -> dict:
        """Everything except the models, JSON-friendly."""
        return {k: v for k, v in self.__dict__.items() if k != "models"}


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fit_seeds(sources_train, y_train, sources_test, y_test, *, seeds=(0, 1, 2), **fit_kw) -> SeedResult:
    """Train one model per seed with :func:`fit_head` and score each on test once, after training."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LayerfuseError("seeds is empty: pass at least one seed, e.g. seeds=(0, 1, 2)")
    train = _as_sources(sources_train, "sources_train")
    test = _as_sources(sources_test, "sources_test")
    per_seed, models = [], []
    for s in seeds:
        model = fit_head(train, y_train, seed=s, **fit_kw)
        m = evaluate(model, test, y_test)
        models.append(model)
        per_seed.append(
            {
                "seed": s,
                "test_acc": m["acc"],
                "test_macro_f1": m["macro_f1"],
                "val_acc": model.val_acc,
                "val_f1": model.val_f1,
                "best_epoch": model.best_epoch,
                "epochs_run": len(model.history),
                "n_params": model.n_params,
                "train_seconds": model.train_seconds,
            }
        )
    acc_mean, acc_std = _mean_std([r["test_acc"] for r in per_seed])
    f1_mean, f1_std = _mean_std([r["test_macro_f1"] for r in per_seed])
    vals = [r["val_acc"] for r in per_seed]
    have_val = all(v is not None for v in vals)
    times = [r["train_seconds"] for r in per_seed]
    return SeedResult(
        seeds=seeds,
        per_seed=per_seed,
        acc_mean=acc_mean,
        acc_std=acc_std,
        f1_mean=f1_mean,
        f1_std=f1_std,
        val_acc_mean=float(np.mean(vals)) if have_val else None,
        val_f1_mean=float(np.mean([r["val_f1"] for r in per_seed])) if have_val else None,
        n_params=models[0].n_params,
        train_seconds_mean=float(np.mean(times)),
        train_seconds_total=float(np.sum(times)),
        models=models,
    )


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
        n_params=_count_params(net),
        history=list(meta.get("history") or []),
    )


def save_seeds(result: SeedResult, directory, info: dict | None = None) -> Path:
    """Write a :class:`SeedResult` into ``directory``: every seed's net (:func:`save_net`, folder
    ``seed-<s>``) and the scores (``seeds.json``, with ``info`` beside them). The folder is built
    under a temporary name and renamed into place, so an interrupted save leaves nothing half-written."""
    from .cache import atomic_folder

    d = Path(directory)
    with atomic_folder(d) as tmp:
        for s, model in zip(result.seeds, result.models):
            save_net(model, tmp / f"seed-{s}")
        doc = {"format": "layerfuse.seeds", "version": FORMAT_VERSION, "summary": result.summary(), "info": info or {}}
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
    models = [load_net(d / f"seed-{s}") for s in summary["seeds"]]
    return SeedResult(**summary, models=models)
