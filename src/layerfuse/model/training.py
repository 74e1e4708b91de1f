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
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerfuse.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FUSION,
    DEFAULT_HEAD,
    DEFAULT_LR,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_PATIENCE,
    DEFAULT_PROJ_DIM,
    DEFAULT_SEED,
    DEFAULT_SEEDS,
    DEFAULT_VAL_FRACTION,
)
from layerfuse.data.sampling import stratified_validation_split
from layerfuse.errors import LayerfuseError
from layerfuse.model.fusion import FUSIONS, build_fusion
from layerfuse.model.heads import HEADS, FusionClassifierNet, build_head
from layerfuse.model.metrics import classification_metrics, mean_std
from layerfuse.validation import as_labels, check_choice

__all__ = ["source_dims_of", "TrainedModel", "count_params", "fit_head", "evaluate", "SeedResult", "fit_seeds",
           "merge_seed_results", "PRECISIONS"]

_EVAL_BATCH = 2048
#: How a head's training steps compute: float32, or bfloat16 autocast (weights, Adam state, validation
#: and prediction stay float32).
PRECISIONS = ("float32", "bfloat16")


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


def count_params(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


# --------------------------------------------------------------------------------------------
# training


def fit_head(
    sources_train,
    y_train,
    *,
    n_classes: int,
    fusion: str = DEFAULT_FUSION,
    head: str = DEFAULT_HEAD,
    proj_dim: int = DEFAULT_PROJ_DIM,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    progress: bool = False,
    fusion_kwargs: dict | None = None,
    precision: str = "float32",
) -> TrainedModel:
    """Train ``fusion`` + ``head`` on training arrays only and return the best-validation model.

    A stratified ``val_fraction`` of the training rows (see :func:`stratified_validation_split`,
    same ``seed``) is held out; inputs are standardised with the remaining rows' statistics.
    Training uses Adam (``lr``, ``weight_decay`` as L2) on shuffled minibatches and stops after
    ``patience`` epochs without a better validation macro-F1 (ties: lower validation loss), then
    restores the best epoch's weights. ``precision="bfloat16"`` runs each training step's forward
    and backward pass under bfloat16 autocast (the matrix products in bf16, ~1.5x faster heads on a
    CPU with AVX-512 BF16; docs/benchmarks.md#training-the-heads); weights, optimizer state,
    validation and prediction stay float32. ``val_fraction=0`` trains all ``max_epochs`` on every row
    and keeps the last epoch (val scores are then ``None``). ``seed`` fixes the split, the
    initialisation, dropout and shuffling; the global torch RNG state is left as it was.
    """
    arrays = _as_sources(sources_train, "sources_train")
    n_classes = _check_n_classes(n_classes)
    y = as_labels(y_train, arrays[0].shape[0], "y_train", n_classes)
    _check_training_settings(head, fusion, batch_size, max_epochs, patience, lr, weight_decay)
    check_choice(precision, PRECISIONS, "precision")
    fusion_kwargs = dict(fusion_kwargs or {})
    if FUSIONS[fusion].custom_fit is not None:  # e.g. stack: out-of-fold heads + a meta-classifier
        return FUSIONS[fusion].custom_fit(
            arrays, y, n_classes=n_classes, head=head, proj_dim=proj_dim, val_fraction=val_fraction, seed=seed,
            fusion_kwargs=fusion_kwargs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
            max_epochs=max_epochs, patience=patience, progress=progress, precision=precision)
    train_idx, val_idx = _train_and_validation_rows(y, val_fraction, seed)

    config = _run_config(fusion, head, arrays, proj_dim, n_classes, fusion_kwargs, val_fraction, seed, lr,
                         weight_decay, batch_size, max_epochs, patience, train_idx, val_idx)
    if precision != "float32":  # recorded only when set, so float32 nets keep their former net.json
        config["precision"] = precision

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

        bar = _progress_bar(max_epochs, f"{fusion}/{head} seed {seed}") if progress else None
        try:
            history, best_epoch, best_val = _train_epochs(
                net, xs_tr, y_tr, xs_va, y_va, lr=lr, weight_decay=weight_decay, seed=seed,
                batch_size=batch_size, max_epochs=max_epochs, patience=patience, bar=bar,
                bf16=precision == "bfloat16")
        finally:
            if bar is not None:
                bar.close()
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
        n_params=count_params(net),
        history=history,
    )


def _run_config(fusion, head, arrays, proj_dim, n_classes, fusion_kwargs, val_fraction, seed, lr, weight_decay,
                batch_size, max_epochs, patience, train_idx, val_idx) -> dict[str, Any]:
    """What a trained net records about how it was trained (``net.json``'s ``config``)."""
    return {
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


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise LayerfuseError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    return int(n_classes)


def _check_training_settings(head, fusion, batch_size, max_epochs, patience, lr, weight_decay) -> None:
    check_choice(head, list(HEADS), "head")
    check_choice(fusion, list(FUSIONS), "fusion")
    for name, v, lo in (("batch_size", batch_size, 1), ("max_epochs", max_epochs, 1), ("patience", patience, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise LayerfuseError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise LayerfuseError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise LayerfuseError(f"weight_decay must be a number >= 0, got {weight_decay!r}")


def _train_and_validation_rows(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The stratified validation carve (none when ``val_fraction`` is 0) and the rows left to train."""
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
    return train_idx, val_idx


def _train_epochs(net, xs_tr, y_tr, xs_va, y_va, *, lr, weight_decay, seed, batch_size, max_epochs, patience,
                  bar, bf16: bool = False) -> tuple[list[dict], int, dict[str, float]]:
    """Adam epochs with early stopping on validation macro-F1 (ties: lower validation loss); the best
    epoch's weights are loaded back into ``net``. Returns (history, best epoch, best val scores)."""
    y_va_t = torch.from_numpy(y_va)
    has_val = len(y_va) > 0
    # fused: one kernel per step instead of a Python loop of elementwise ops over the parameters
    # (heads ~1.2x faster on CPU; same algorithm, other rounding; docs/benchmarks.md#training-the-heads)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    gen = torch.Generator().manual_seed(seed)
    n_tr = len(y_tr)
    history: list[dict] = []
    best_key: tuple[float, float] | None = None
    best_state = None
    best_epoch = 0
    best_val: dict[str, float] = {}
    stale = 0

    for epoch in range(1, max_epochs + 1):
        te = time.perf_counter()
        net.train()
        perm = torch.randperm(n_tr, generator=gen)
        total = 0.0
        for start in range(0, n_tr, batch_size):
            idx = perm[start : start + batch_size]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net([x[idx] for x in xs_tr])
            loss = F.cross_entropy(logits.float(), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": total / n_tr}
        if has_val:
            logits_va = _predict_logits(net, xs_va, _EVAL_BATCH)
            val_loss = float(F.cross_entropy(logits_va, y_va_t))
            m = classification_metrics(y_va, logits_va.argmax(1).numpy())
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
        if has_val and stale >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    return history, best_epoch, best_val


def _flush_denormal_on() -> bool:
    probe = torch.from_numpy(np.array([1e-39], dtype=np.float32))
    return bool((probe * 1.0).item() == 0.0)


@contextlib.contextmanager
def _no_denormals():
    """Treat subnormal floats as zero while training, then restore the previous mode.

    Once the head fits its training rows, softmax saturates and many gradients fall into the
    subnormal range, where CPU matrix products run far slower (docs/benchmarks.md#measurements-behind-the-defaults); their value is negligible.
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
    y = as_labels(y_test, arrays[0].shape[0], "y_test", trained.n_classes)
    return classification_metrics(y, trained.predict(arrays))


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


def fit_seeds(sources_train, y_train, sources_test, y_test, *, seeds=DEFAULT_SEEDS, **fit_kw) -> SeedResult:
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
    return _seed_result(seeds, per_seed, models)


def merge_seed_results(parts: Sequence[SeedResult]) -> SeedResult:
    """One row's :class:`SeedResult` from results of some of its seeds each (seeds trained in
    separate processes), in the order given: the same summary :func:`fit_seeds` makes."""
    seeds = [s for r in parts for s in r.seeds]
    return _seed_result(seeds, [row for r in parts for row in r.per_seed], [m for r in parts for m in r.models])


def _seed_result(seeds, per_seed, models) -> SeedResult:
    acc_mean, acc_std = mean_std([r["test_acc"] for r in per_seed])
    f1_mean, f1_std = mean_std([r["test_macro_f1"] for r in per_seed])
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
