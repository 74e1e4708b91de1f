"""Layer profiles: how well does each layer separate the classes, measured on train only.

The extraction stage hands over, per pooling, an array ``X`` of shape ``[L+1, N, d]`` (index 0 =
token embeddings, 1..L = transformer blocks; float16 or float32, possibly a memmap) and integer
labels ``y`` of shape ``[N]``. Everything in this module is computed on that training split.
Test data enters only through :func:`eval_test_column`, which writes a column that no selection
function reads (:data:`ANALYSIS_COLUMN`; enforced with an assertion in :func:`train_side_rows`).

Scores (all "higher is better"), per layer and per averaged window of layers:

``probe``
    k-fold stratified CV of an L2-regularised multinomial logistic regression (one weight vector
    per class, also for binary tasks) on standardised features: ``probe_acc`` / ``probe_f1``
    (macro) are the mean over folds, ``*_std`` the population std over folds. The penalty is
    ``l2/2 * ||W||^2`` added to the *mean* log-loss (bias unpenalised), i.e. scikit-learn's
    multinomial ``LogisticRegression(C=1 / (l2 * n_train))``. All folds are trained at once as
    one batched problem: L-BFGS (torch, float32) after a change of variables that whitens
    Böhning's bound on the Hessian, ``0.5 * X'X/n + l2*I`` (a Cholesky factor, or the
    eigendecomposition when LogME has computed it anyway). That converges in ~10-25 loss
    evaluations where plain L-BFGS needs hundreds.
``centroid``
    nearest class centroid (Euclidean, standardised features), cross-validated on the same folds
    as the probe; mean accuracy over folds.
``knn``
    k-nearest-neighbour accuracy (cosine on standardised features, k=10, majority vote, ties
    broken by summed similarity), leave-one-out within a fixed random subsample of
    ``knn_sample`` rows (the same rows for every layer; all rows when N is smaller). The cost
    grows with the square of the subsample; the default of 700 rows keeps k-NN much cheaper than
    the probe while its layer curve follows the full leave-one-out curve (how closely, and at what
    cost for larger samples: docs/benchmarks.md#measurements-behind-the-defaults).
``fisher``
    LDA separability ``tr((S_W + eps*I)^-1 S_B)`` on standardised features, with
    ``eps = fisher_shrink * tr(S_W)/d`` (shrinkage keeps it finite when d is close to N).
``logme``
    LogME (You et al., 2021): the maximised log marginal evidence per sample of a Bayesian
    linear model from features to each (centred) one-hot target, averaged over classes.

Standardisation (per feature mean/std) uses all N training rows of a layer, without labels.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Sequence

import numpy as np
import torch

from layerfuse.config import (
    DEFAULT_FISHER_SHRINK,
    DEFAULT_FOLDS,
    DEFAULT_KNN_K,
    DEFAULT_KNN_SAMPLE,
    DEFAULT_PROBE_L2,
    DEFAULT_PROBE_MAX_ITER,
    DEFAULT_PROBE_TOL,
    DEFAULT_SEED,
    DEFAULT_TOPK,
    DEFAULT_WINDOWS,
)
from layerfuse.errors import LayerfuseError
from layerfuse.scoring.features import as_layers, label_digest, layer_f32, standardise, window_depth
from layerfuse.scoring.kernels import Scorer
from layerfuse.scoring.layer_profile import (
    ANALYSIS_COLUMN,
    CHEAP_SCORES,
    SCORE_COLUMN,
    SCORES,
    LayerProfile,
    top_layers,
)
from layerfuse.scoring.solver import fit_logistic
from layerfuse.scoring.threads import big_threads, torch_threads
from layerfuse.validation import encode_labels, parse_list

__all__ = ["score_layers", "cv_probe", "eval_test_column", "TestColumn", "effective_shortlist"]

# --------------------------------------------------------------------------------------------
# score_layers
# --------------------------------------------------------------------------------------------


def _parse_scores(scores: Any) -> tuple[str, ...]:
    items = [str(s).lower() for s in (scores.split(",") if isinstance(scores, str) else scores)]
    return tuple(parse_list(items, "scores", choices=SCORES, noun="score"))


class _Clock:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, key: str, dt: float) -> None:
        self.t[key] = self.t.get(key, 0.0) + dt


def _score_features(
    sc: Scorer,
    a: torch.Tensor,
    scores: Sequence[str],
    clock: _Clock | None,
    what: str = "X",
    inplace: bool = False,
    keep: dict | None = None,
    block: tuple[str, Sequence[int]] | None = None,
) -> dict:
    """All requested scores of one [N, d] float32 feature block.

    Shared per-block work ("prep"): standardisation, the Gram matrix X'X/N (probe
    preconditioner, Fisher, LogME) and, when LogME is requested, its eigendecomposition, which
    the probe then uses as its preconditioner instead of a Cholesky factor. ``keep`` (a dict)
    receives the standardised block, its statistics and Gram matrix (``xs``, ``stats``, ``gram``).
    ``block`` (kind, layers) names what the features are, for the probe's warm start.
    """
    t0 = time.perf_counter()
    need_gram = any(s in scores for s in ("probe", "fisher", "logme"))
    with torch_threads(sc.big_threads):
        xs, stats, gram = standardise(a, what=what, inplace=inplace, gram=need_gram)
    if keep is not None:
        keep.update(xs=xs, stats=stats, gram=gram)
    t1 = time.perf_counter()
    eig = torch.linalg.eigh(gram) if "logme" in scores else None
    t2 = time.perf_counter()
    if clock is not None:
        clock.add("prep", t2 - t0)
        clock.add("prep_eigh", t2 - t1)
    out: dict = {}
    for name in scores:
        t1 = time.perf_counter()
        if name == "probe":
            out.update(sc.probe(xs, gram, eig, block=block))
        elif name == "centroid":
            out.update(sc.centroid(xs))
        elif name == "knn":
            out.update(sc.knn(xs))
        elif name == "fisher":
            out.update(sc.fisher(xs, gram))
        elif name == "logme":
            out.update(sc.logme(xs, eig))
        if clock is not None:
            clock.add(name, time.perf_counter() - t1)
    return out


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(a[ok], b[ok]).statistic)


def score_layers(
    X: Any,
    y: Any,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    scores: Sequence[str] | str = SCORES,
    windows: int = DEFAULT_WINDOWS,
    window_scores: Sequence[str] | str | None = None,
    topk: int = DEFAULT_TOPK,
    progress: bool = True,
    name: str | None = None,
    probe_l2: float = DEFAULT_PROBE_L2,
    probe_max_iter: int = DEFAULT_PROBE_MAX_ITER,
    probe_tol: float = DEFAULT_PROBE_TOL,
    knn_k: int = DEFAULT_KNN_K,
    knn_sample: int = DEFAULT_KNN_SAMPLE,
    fisher_shrink: float = DEFAULT_FISHER_SHRINK,
    threads: int | None = None,
    window_shortlist: int | None = None,
    layer_hook=None,
    probe_threads: int | None = None,
) -> LayerProfile:
    """Score every layer of ``X [L+1, N, d]`` against labels ``y [N]`` (training split only).

    ``windows``: also score the mean of ``w`` consecutive layers for every width ``2..windows``
    and every start (0 or 1 disables). ``window_scores``: which scores to run on windows
    (default: the same as ``scores``). ``topk``: also CV-probe the concatenation of the ``topk`` best
    layers (by ``probe_acc``), which ``select_layers("auto")`` compares against (0 disables).
    ``threads``: torch threads for the whole call. None (default): the large products (Gram
    matrix, k-NN similarities, many-class probes) use half the cores and everything else one
    thread: close to the fastest on an idle machine, and it avoids large slowdowns when other
    jobs share the cores (docs/benchmarks.md#measurements-behind-the-defaults). ``probe_threads``:
    threads of the many-class probe's two large products alone (None: as the other large
    products); ``prepare_models`` gives a profile that runs alone every core, since those products
    are nearly all of a many-class profile (R52: 97 %). ``window_shortlist``: score only the ``n`` windows whose member layers
    have the highest mean ``probe_acc`` (needs the probe among ``scores``) instead of every window;
    None (default) scores them all. ``layer_hook(layer, xs, stats, gram)``, if given, is called after
    each layer is scored with its standardised training features, their ``(mean, 1/std)`` and Gram
    matrix (None unless a score needed it), to be read, not changed: work that shares the
    standardisation, such as the test column of :class:`TestColumn`. See the module docstring for
    what each score means.

    Longer than 80 lines: this docstring and the argument checks are half of it, and the layer loop
    keeps the running window sums next to the layer it scores, which one place makes easy to follow.
    """
    t_start = time.perf_counter()
    X = as_layers(X)
    n_rows, n, d = (int(s) for s in X.shape)
    L = n_rows - 1
    classes, yi = encode_labels(y, n)
    scores = _parse_scores(scores)
    window_scores = scores if window_scores is None else _parse_scores(window_scores)
    if len(classes) < 2:
        raise LayerfuseError(
            f"y has a single class ({classes[0]!r}); layer scores need at least 2 classes"
        )
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise LayerfuseError(f"folds must be an integer >= 2, got {folds!r}")
    if n < 2 * folds:
        raise LayerfuseError(f"{n} rows are too few for {folds}-fold CV; pass at least {2 * folds}")
    windows = int(windows or 0)
    if windows < 0:
        raise LayerfuseError(f"windows must be >= 0 (0 or 1 = no windows), got {windows}")
    if probe_l2 <= 0:
        raise LayerfuseError(f"probe_l2 must be > 0, got {probe_l2}")
    if probe_threads is not None and (isinstance(probe_threads, bool) or int(probe_threads) < 1):
        raise LayerfuseError(f"probe_threads must be a whole number >= 1 or None, got {probe_threads!r}")
    if window_shortlist is not None and (int(window_shortlist) < 1 or "probe" not in scores):
        raise LayerfuseError("window_shortlist must be >= 1 and needs the probe among the scores "
                             f"(got {window_shortlist!r} with scores {', '.join(scores)})")
    window_shortlist = effective_shortlist(window_shortlist, n_rows, windows)
    settings = {
        "scores": list(scores),
        "windows": windows,
        "window_scores": list(window_scores),
        "topk": int(topk),
        "probe_l2": float(probe_l2),
        "probe_max_iter": int(probe_max_iter),
        "probe_tol": float(probe_tol),
        "probe_start": "warm: the previous layer's solution, the members' for windows and top-k",
        "knn_k": int(knn_k),
        "knn_sample": int(knn_sample),
        "fisher_shrink": float(fisher_shrink),
        **({} if window_shortlist is None else {"window_shortlist": int(window_shortlist)}),
        "standardise": "per layer, mean/std over all training rows",
        "label_digest": label_digest(yi),
    }
    big = big_threads(threads)
    with torch_threads(int(threads) if threads else 1), torch.no_grad():
        sc = Scorer(yi, len(classes), int(folds), int(seed),
                    {**settings, "big_threads": big, "probe_threads": int(probe_threads) if probe_threads else big})
        clock = _Clock()
        layer_rows: list[dict] = []
        window_rows: list[dict] = []
        max_w = min(windows, n_rows)
        online_w = max_w if window_shortlist is None else 0  # shortlisted windows come after the layers
        recent: deque[torch.Tensor] = deque(maxlen=max(max_w - 1, 0))
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n_rows, desc=f"profile {name}" if name else "profile", unit="layer",
            disable=not progress, leave=True, dynamic_ncols=True,
        )
        try:
            for layer in range(n_rows):
                t0 = time.perf_counter()
                a = layer_f32(X, layer)
                clock.add("prep", time.perf_counter() - t0)
                clock.add("prep_read", time.perf_counter() - t0)
                row = {"kind": "layer", "start": layer, "end": layer, "layers": [layer],
                       "depth": layer / max(L, 1)}
                kept: dict = {}
                row.update(_score_features(sc, a, scores, clock, f"X[{layer}]", inplace=online_w < 2, keep=kept,
                                           block=("layer", [layer])))
                layer_rows.append(row)
                if layer_hook is not None:
                    t_h = time.perf_counter()
                    layer_hook(layer, kept["xs"], kept["stats"], kept["gram"])
                    clock.add("layer_hook", time.perf_counter() - t_h)
                    kept.clear()
                # windows ending at this layer: running sums over the previous layers
                t_w = time.perf_counter()
                if online_w >= 2 and recent:
                    acc = a.clone()
                    for width, prev in enumerate(reversed(recent), start=2):
                        acc += prev
                        start = layer - width + 1
                        w_row = {"kind": "window", "start": start, "end": layer,
                                 "layers": list(range(start, layer + 1)),
                                 "depth": window_depth(start, layer, L)}
                        w_row.update(_score_features(sc, acc / width, window_scores, None,
                                                     f"window {start}..{layer}", True,
                                                     block=("window", w_row["layers"])))
                        window_rows.append(w_row)
                if online_w >= 2:
                    recent.append(a)
                clock.add("windows", time.perf_counter() - t_w)
                if "probe_acc" in row:
                    bar.set_postfix(acc=f"{row['probe_acc']:.3f}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        recent.clear()
        if window_shortlist is not None and max_w >= 2:
            t_w = time.perf_counter()
            window_rows = _shortlisted_windows(sc, X, layer_rows, max_w, int(window_shortlist), window_scores, L)
            clock.add("windows", time.perf_counter() - t_w)
        window_rows.sort(key=lambda r: (r["end"] - r["start"], r["start"]))
        rows = layer_rows + window_rows
        # concatenation of the top-k layers, as a candidate for select_layers("auto")
        t_k = time.perf_counter()
        k = min(int(topk or 0), n_rows)
        if "probe" in scores and k >= 2:
            top = sorted(top_layers(layer_rows, "probe_acc", k))
            feats = torch.cat([layer_f32(X, i) for i in top], dim=1)
            k_row = {"kind": "topk", "start": min(top), "end": max(top), "layers": top,
                     "depth": float("nan")}
            k_row.update(_score_features(sc, feats, ("probe",), None, "top-k", True, block=("topk", top)))
            del feats
            rows.append(k_row)
        clock.add("topk", time.perf_counter() - t_k)
    agreement: dict[str, float | None] = {}
    if "probe" in scores:
        ref = [r["probe_acc"] for r in layer_rows]
        for s in scores:
            if s in CHEAP_SCORES:
                agreement[s] = _spearman([r[SCORE_COLUMN[s]] for r in layer_rows], ref)
    timings = {k: round(v, 4) for k, v in clock.t.items()}
    timings["total"] = round(time.perf_counter() - t_start, 4)
    return LayerProfile(
        rows=rows,
        agreement=agreement,
        timings=timings,
        n_layers=L,
        n_samples=n,
        n_features=d,
        classes=[c.item() if hasattr(c, "item") else c for c in classes],
        folds=int(folds),
        seed=int(seed),
        name=name,
        settings=settings,
    )


def _shortlisted_windows(sc: Scorer, X, layer_rows: list[dict], max_w: int, n_keep: int,
                         window_scores: Sequence[str], L: int) -> list[dict]:
    """Score the ``n_keep`` windows (width 2..max_w) whose member layers have the highest mean
    probe accuracy; ties go to the narrower, then the shallower window."""
    acc = [r["probe_acc"] for r in layer_rows]
    cands = window_spans(len(acc), max_w)
    cands.sort(key=lambda se: (-float(np.mean(acc[se[0]:se[1] + 1])), se[1] - se[0], se[0]))
    rows = []
    for start, end in cands[:n_keep]:
        feats = layer_f32(X, end)  # summed in the order of the exhaustive pass: same numbers
        for i in range(end - 1, start - 1, -1):
            feats += layer_f32(X, i)
        w_row = {"kind": "window", "start": start, "end": end, "layers": list(range(start, end + 1)),
                 "depth": window_depth(start, end, L)}
        w_row.update(_score_features(sc, feats / (end - start + 1), window_scores, None,
                                     f"window {start}..{end}", True, block=("window", w_row["layers"])))
        rows.append(w_row)
    return rows


def window_spans(n_rows: int, max_w: int) -> list[tuple[int, int]]:
    """Every averaged window ``(start, end)`` of width 2..``max_w`` over ``n_rows`` layer rows."""
    return [(start, start + w - 1) for w in range(2, max_w + 1) for start in range(n_rows - w + 1)]


def effective_shortlist(window_shortlist: int | None, n_rows: int, windows: int) -> int | None:
    """``window_shortlist``, or None when it keeps every averaged window there is (widths
    2..``windows`` over ``n_rows`` layer rows): such a shortlist is the exhaustive profile, scored
    and keyed as one, so MiniLM-L6 (7 rows, 15 windows of width 2-4) profiled with a shortlist of 15
    and with every window share one profile."""
    if window_shortlist is None:
        return None
    n_windows = len(window_spans(int(n_rows), min(int(windows or 0), int(n_rows))))
    return None if int(window_shortlist) >= n_windows else int(window_shortlist)


def cv_probe(
    features: Any, y: Any, *, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED, l2: float = DEFAULT_PROBE_L2
) -> dict:
    """CV probe accuracy / macro-F1 of one ``[N, d]`` feature matrix (same probe as the profile)."""
    a = np.asarray(features, dtype=np.float32)
    if a.ndim != 2:
        raise LayerfuseError(f"features must have shape [N, d], got {a.shape}")
    classes, yi = encode_labels(y, a.shape[0])
    if len(classes) < 2:
        raise LayerfuseError("y has a single class; the probe needs at least 2 classes")
    settings = {"probe_l2": float(l2), "probe_max_iter": 100, "probe_tol": 1e-4,
                "knn_sample": 0, "knn_k": 10, "fisher_shrink": 0.1,
                "big_threads": big_threads()}
    with torch_threads(1), torch.no_grad():
        sc = Scorer(yi, len(classes), int(folds), int(seed), settings)
        out = _score_features(sc, a, ("probe",), None)
    return out


# --------------------------------------------------------------------------------------------
# test column (analysis only)
# --------------------------------------------------------------------------------------------


def eval_test_column(
    profile: LayerProfile,
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    *,
    progress: bool = False,
) -> LayerProfile:
    """Add ``test_acc_analysis_only`` to every layer row: test accuracy of a probe fit on all
    of train (same standardisation and penalty as the CV probe).

    For plots and analysis only: selection functions strip this column before they look at
    the rows. Returns the same (mutated) profile. (:class:`TestColumn` computes the same column
    while :func:`score_layers` runs, sharing its standardisation.)
    """
    column = TestColumn(X_train, y_train, X_test, y_test, l2=float(profile.settings.get("probe_l2", 1e-2)))
    column.check(profile, X_train)
    from tqdm.auto import tqdm

    big = big_threads()
    with torch_threads(1), torch.no_grad():
        for layer in tqdm(range(column.n_rows), desc="test column", unit="layer", disable=not progress):
            with torch_threads(big):
                xs, stats, gram = standardise(layer_f32(X_train, layer), inplace=True,
                                              what=f"X_train[{layer}]", gram=True)
            column(layer, xs, stats, gram)
    return column.write(profile)


class TestColumn:
    """The analysis-only test column, one layer at a time: pass it as ``score_layers``'
    ``layer_hook`` and it fits the all-train probe on the training features the profile has just
    standardised (instead of reading and standardising every layer a second time), then
    :meth:`write` puts the accuracies into the profile. The same numbers as
    :func:`eval_test_column`: the same features, Gram matrix, penalty and thread settings."""

    __test__ = False  # not a pytest class

    def __init__(self, X_train: Any, y_train: Any, X_test: Any, y_test: Any, *, l2: float = DEFAULT_PROBE_L2):
        X_train = as_layers(X_train, "X_train")
        self.X_test = as_layers(X_test, "X_test")
        if self.X_test.shape[0] != X_train.shape[0] or self.X_test.shape[2] != X_train.shape[2]:
            raise LayerfuseError(
                f"X_test has shape {tuple(self.X_test.shape)}, expected [{X_train.shape[0]}, N_test, "
                f"{X_train.shape[2]}] to match X_train; pass the same model and pooling"
            )
        self.n_rows = int(X_train.shape[0])
        self.classes, yi = encode_labels(y_train, X_train.shape[1], "y_train")
        self.digest = label_digest(yi)
        y_test = np.asarray(y_test)
        if y_test.ndim != 1 or len(y_test) != self.X_test.shape[1]:
            raise LayerfuseError(
                f"y_test must have one label per row of X_test ({self.X_test.shape[1]}), got {y_test.shape}"
            )
        lookup = {c.item() if hasattr(c, "item") else c: i for i, c in enumerate(self.classes)}
        self.yt = np.array([lookup.get(v.item() if hasattr(v, "item") else v, -1) for v in y_test])
        self.yi = torch.from_numpy(yi)
        self.mask = torch.ones(len(yi), 1)
        self.l2 = float(l2)
        self.acc: dict[int, float] = {}
        self.solution: tuple[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # the last layer's fit

    def check(self, profile: LayerProfile, X_train: Any) -> None:
        """Refuse a profile scored on other training data than this column's."""
        X_train = as_layers(X_train, "X_train")
        if X_train.shape[0] != profile.n_layers + 1 or X_train.shape[2] != profile.n_features:
            raise LayerfuseError(
                f"X_train has shape {tuple(X_train.shape)} but the profile was scored on "
                f"{profile.n_layers + 1} layers x {profile.n_features} features; pass the same array"
            )
        digest = profile.settings.get("label_digest")
        if digest and digest != self.digest:
            raise LayerfuseError(
                "y_train differs from the labels the profile was scored on; pass the same "
                "training split"
            )

    def __call__(self, layer: int, xs: torch.Tensor, stats, gram: torch.Tensor | None) -> None:
        """Test accuracy of layer ``layer`` from its standardised training features."""
        big = big_threads()
        if gram is None:
            with torch_threads(big):
                gram = xs.T @ xs / xs.shape[0]
        xt, _, _ = standardise(layer_f32(self.X_test, layer), stats, what=f"X_test[{layer}]", inplace=True)
        prev = self.solution if self.solution is not None and self.solution[0] == int(layer) - 1 else None
        W, b, _ = fit_logistic(xs, self.yi, len(self.classes), self.mask, l2=self.l2, gram=gram, threads=big,
                               init=prev[1] if prev else None)  # warm start, as the CV probe's layers
        self.solution = (int(layer), (W, b))
        pred = (xt @ W[:, 0, :] + b[0]).argmax(1).numpy()
        self.acc[int(layer)] = float((pred == self.yt).mean())

    def write(self, profile: LayerProfile) -> LayerProfile:
        """Put the accuracies into the profile's layer rows; returns the same (mutated) profile."""
        missing = [r["start"] for r in profile.rows if r["kind"] == "layer" and r["start"] not in self.acc]
        if missing:
            raise LayerfuseError(f"the test column lacks layers {missing}: score every layer before writing it")
        for r in profile.rows:
            if r["kind"] == "layer":
                r[ANALYSIS_COLUMN] = self.acc[r["start"]]
        return profile
