"""The ``stack`` fusion: per-source linear heads, out-of-fold on train, and a meta-classifier.

Training (:func:`fit_stacked`, called by :func:`layerfuse.model.training.fit_head` for
``fusion="stack"``):

1. the same stratified validation carve as every other fusion (``val_fraction``, ``seed``), and the
   same per-source standardisation (statistics of the training part);
2. per source, a multinomial logistic regression (``l2`` as the layer probes use) on each of
   ``folds`` stratified folds of the training part gives **out-of-fold** class probabilities for
   every training row; the validation rows get the probabilities of the head fitted on the whole
   training part (they never trained it);
3. the meta-classifier (the grid's ``head``: ``logreg`` or ``mlp``) is trained on the
   concatenated probabilities ``[N, S*C]`` and early-stopped on the validation rows, exactly as
   :func:`fit_head` trains any head;
4. the per-source heads are refitted on all training rows (training part and validation) and
   frozen into :class:`StackFusion`, so at predict time they feed the meta-classifier.

The saved net is an ordinary :class:`~layerfuse.model.heads.FusionClassifierNet` whose fusion is
``stack``: it saves and loads like every other fusion (the per-source weights and the
meta-classifier's input standardisation are tensors of its state dict). A ``[N, K, d]`` source
is averaged over its K layers (a :class:`~layerfuse.model.fusion.ScalarMix` at its initial,
equal weights) before its head.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import Tensor, nn

from layerfuse.config import DEFAULT_SEED, DEFAULT_STACK_FOLDS, DEFAULT_STACK_L2
from layerfuse.data.sampling import stratified_folds
from layerfuse.errors import LayerfuseError
from layerfuse.model.fusion import Fusion, register_fusion

__all__ = ["StackFusion", "fit_stacked", "out_of_fold_probabilities"]

#: L2 of the per-source heads (the layer probes' default: scikit-learn's C = 1 / (l2 * n)).


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, train_idx: np.ndarray,
                              val_idx: np.ndarray, *, folds: int = DEFAULT_STACK_FOLDS, seed: int = DEFAULT_SEED,
                              l2: float = DEFAULT_STACK_L2
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One source's stacking features and its final head.

    ``x`` ``[N, d]`` standardised features, ``y`` ``[N]`` class ids. Returns ``(P, W, b)``: ``P``
    ``[N, C]`` (out-of-fold probabilities on ``train_idx``, probabilities of the head fitted on all
    of ``train_idx`` on ``val_idx``) and the weights ``W`` ``[d, C]``, ``b`` ``[C]`` of the head
    fitted on ``train_idx`` and ``val_idx`` together. All heads are fitted in one batched L-BFGS
    (:func:`layerfuse.scoring.solver.fit_logistic`).
    """
    from layerfuse.scoring.solver import fit_logistic

    n = len(y)
    y_tr = y[train_idx]
    n_folds = int(min(folds, max(2, np.bincount(y_tr).max())))
    fold_list = stratified_folds(y_tr, n_folds, seed)  # classes rarer than the fold count are in fewer folds
    mask = torch.zeros(n, n_folds + 2)
    for f, (fit_rows, _) in enumerate(fold_list):
        mask[train_idx[fit_rows], f] = 1
    mask[train_idx, n_folds] = 1
    mask[train_idx, n_folds + 1] = 1
    mask[val_idx, n_folds + 1] = 1
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    W, b, _ = fit_logistic(xs, torch.from_numpy(y.astype(np.int64)), n_classes, mask, l2=l2)
    P = np.zeros((n, n_classes), dtype=np.float32)
    with torch.no_grad():
        for f, (_, held) in enumerate(fold_list):
            rows = train_idx[held]
            P[rows] = torch.softmax(xs[rows] @ W[:, f] + b[f], dim=1).numpy()
        if len(val_idx):
            P[val_idx] = torch.softmax(xs[val_idx] @ W[:, n_folds] + b[n_folds], dim=1).numpy()
    return P, W[:, n_folds + 1].numpy(), b[n_folds + 1].numpy()


@register_fusion("stack")
class StackFusion(Fusion):
    """Frozen per-source linear heads → softmax probabilities, concatenated ``[B, S*C]`` and
    standardised with the meta-classifier's training statistics.

    Built untrained by :func:`~layerfuse.model.fusion.build_fusion` (``n_classes``, default 2);
    :func:`fit_stacked` fills the weights. Nothing in it is trained by gradient descent.
    """

    def __init__(self, source_dims, proj_dim: int = 1024, n_classes: int = 2):
        super().__init__(source_dims, proj_dim)
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise LayerfuseError(f"stack fusion needs an integer n_classes >= 2, got {n_classes!r}")
        self.extra_kwargs = {"n_classes": n_classes}
        self.n_classes = n_classes
        self.heads = nn.ModuleList(nn.Linear(w, n_classes) for w in self.widths)
        self.fused_dim = self.n_sources * n_classes
        self.register_buffer("meta_mean", torch.zeros(self.fused_dim))
        self.register_buffer("meta_std", torch.ones(self.fused_dim))
        for p in self.parameters():
            p.requires_grad_(False)

    def source_probabilities(self, xs: list[Tensor]) -> list[Tensor]:
        """Each per-source head's class probabilities ``[B, C]`` for already-mixed sources."""
        return [torch.softmax(h(x), dim=-1) for h, x in zip(self.heads, xs)]

    def fuse(self, xs):
        z = torch.cat(self.source_probabilities(xs), dim=-1)
        return (z - self.meta_mean) / self.meta_std


def fit_stacked(arrays: list[np.ndarray], y: np.ndarray, *, n_classes: int, head: str, proj_dim: int,
                val_fraction: float, seed: int, fusion_kwargs: dict | None = None, **train_kw):
    """Train a ``stack`` fusion + meta-head (see the module docstring); returns a
    :class:`~layerfuse.model.training.TrainedModel` like :func:`fit_head` does.

    ``fusion_kwargs`` may set ``folds`` (default ``config.DEFAULT_STACK_FOLDS``) and ``l2`` (default ``config.DEFAULT_STACK_L2``);
    ``train_kw`` (lr, batch size, epochs, patience, ...) trains the meta-classifier.
    """
    import time

    from layerfuse.data.sampling import stratified_validation_split
    from layerfuse.model.heads import FusionClassifierNet
    from layerfuse.model.training import TrainedModel, fit_head

    kw = dict(fusion_kwargs or {})
    folds, l2 = int(kw.pop("folds", DEFAULT_STACK_FOLDS)), float(kw.pop("l2", DEFAULT_STACK_L2))
    if kw:
        raise LayerfuseError(f"fusion 'stack' got unknown option(s) {', '.join(sorted(kw))}: it accepts folds, l2")
    t0 = time.perf_counter()
    if val_fraction:
        train_idx, val_idx = stratified_validation_split(y, val_fraction, seed)
    else:
        train_idx, val_idx = np.arange(len(y)), np.empty(0, dtype=np.int64)
    fusion = StackFusion([int(a.shape[1]) if a.ndim == 2 else (int(a.shape[1]), int(a.shape[2])) for a in arrays],
                         proj_dim=proj_dim, n_classes=n_classes)
    net = FusionClassifierNet(fusion, nn.Identity())
    net.set_standardization([a[train_idx] for a in arrays])
    feats = []
    for i, (a, lin) in enumerate(zip(arrays, fusion.heads)):
        z = (a - getattr(net, f"input_mean_{i}").numpy()) / getattr(net, f"input_std_{i}").numpy()
        z = z.mean(axis=1) if z.ndim == 3 else z
        P, W, b = out_of_fold_probabilities(z, y, n_classes, train_idx, val_idx, folds=folds, seed=seed, l2=l2)
        feats.append(P)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
    # The meta-classifier: an ordinary head on the probabilities, with fit_head's own carve (the
    # same rows: same labels, fraction and seed), standardisation and early stopping.
    meta = fit_head([np.concatenate(feats, axis=1)], y, n_classes=n_classes, fusion="concat", head=head,
                    proj_dim=proj_dim, val_fraction=val_fraction, seed=seed, **train_kw)
    with torch.no_grad():
        fusion.meta_mean.copy_(meta.net.input_mean_0)
        fusion.meta_std.copy_(meta.net.input_std_0)
    net.head = meta.net.head
    net.eval()
    config = dict(meta.config, fusion="stack", source_dims=fusion.get_config()["source_dims"],
                  fusion_kwargs=dict(fusion.extra_kwargs), stack={"folds": folds, "l2": l2})
    return TrainedModel(net=net, fusion="stack", head=head, config=config, best_epoch=meta.best_epoch,
                        val_acc=meta.val_acc, val_f1=meta.val_f1, train_seconds=time.perf_counter() - t0,
                        n_params=int(sum(p.numel() for p in net.parameters())), history=meta.history)


StackFusion.custom_fit = staticmethod(fit_stacked)
