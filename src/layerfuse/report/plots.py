"""Tables (CSV / JSON / Markdown) and plots (PNG) for layerfuse results.

Plots use matplotlib's object API (``matplotlib.figure.Figure``) with the Agg renderer, so they
never touch pyplot's global state or need a display. Each function is independent: it takes
plain data (profiles, rows) and a path, writes one file and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["plot_layer_profile", "plot_windows", "plot_score_agreement", "plot_fusion_results", "plot_complementarity", "plot_fusion_chart"]

_ANALYSIS = "test_acc_analysis_only"

#: Axis labels for known score columns; fractions in [0, 1] are shown as percentages.
_LABELS = {
    "probe_acc": "CV probe accuracy (%)",
    "probe_f1": "CV probe macro-F1 (%)",
    "centroid_acc": "nearest-centroid CV accuracy (%)",
    "knn_acc": "k-NN leave-one-out accuracy (%)",
    "fisher": "Fisher / LDA separability",
    "logme": "LogME (log evidence per sample)",
    _ANALYSIS: "test accuracy, analysis only (%)",
}
_SHORT = {
    "probe_acc": "CV probe acc",
    "probe_f1": "CV probe F1",
    "centroid_acc": "nearest centroid",
    "knn_acc": "k-NN",
    "fisher": "Fisher/LDA",
    "logme": "LogME",
}
_PERCENT = {"probe_acc", "probe_f1", "centroid_acc", "knn_acc", _ANALYSIS}
_BOX = dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85)
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=150, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LayerfuseError(f"{path}: plots are written as PNG; pass a path ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _scale(score: str) -> float:
    return 100.0 if score in _PERCENT else 1.0


def _fmt(score: str, v: float) -> str:
    return f"{v:.1f}" if score in _PERCENT else f"{v:.3g}"


def _rows_of(profile: Any, kind: str) -> list[dict]:
    if not hasattr(profile, "rows"):
        raise LayerfuseError(
            f"expected a LayerProfile (from layerfuse.scoring.score_layers), got "
            f"{type(profile).__name__}"
        )
    rows = [r for r in profile.rows if r.get("kind") == kind]
    return sorted(rows, key=lambda r: (r["start"], r["end"]))


def _values(rows: list[dict], col: str) -> np.ndarray:
    out = []
    for r in rows:
        v = r.get(col)
        out.append(float(v) if v is not None else float("nan"))
    return np.asarray(out, dtype=np.float64)


def _check_score(profile: Any, score: str) -> None:
    if not any(score in r for r in profile.rows):
        have = sorted({k for r in profile.rows for k in r} & set(_LABELS))
        raise LayerfuseError(
            f"profile {profile.name or ''} has no {score!r} column; pick one of "
            f"{', '.join(have) or '(none)'}"
        )


def _as_profiles(profiles: Any) -> dict[str, Any]:
    if hasattr(profiles, "rows"):
        return {profiles.name or "model": profiles}
    if isinstance(profiles, Mapping) and profiles:
        return dict(profiles)
    raise LayerfuseError(
        "pass a LayerProfile or a non-empty dict {model name: LayerProfile} to plot"
    )


# --------------------------------------------------------------------------------------------
# layer profile (the paper's Figure 2 view)
# --------------------------------------------------------------------------------------------


def plot_layer_profile(
    profiles: Mapping[str, Any] | Any,
    path: str | Path,
    score: str = "probe_acc",
    *,
    title: str | None = None,
    show_test: bool = True,
) -> Path:
    """Score against relative depth, one line per model; best and last layer marked.

    A ± std band is drawn when the profile has ``<score>_std`` (the probe's fold spread). When
    rows carry ``test_acc_analysis_only``, it is drawn dashed in the same colour and labelled
    "test (analysis only)".
    """
    profiles = _as_profiles(profiles)
    fig = _figure(8.0, 4.8)
    ax = fig.add_subplot()
    k = _scale(score)
    all_y: list[float] = []
    for i, (label, prof) in enumerate(profiles.items()):
        _check_score(prof, score)
        rows = _rows_of(prof, "layer")
        if not rows:
            raise LayerfuseError(f"profile {label!r} has no layer rows to plot")
        color = _COLORS[i % len(_COLORS)]
        x = _values(rows, "depth")
        yv = _values(rows, score) * k
        all_y.extend(yv[np.isfinite(yv)].tolist())
        L = prof.n_layers or max(r["start"] for r in rows)
        ax.plot(x, yv, "-o", color=color, lw=1.8, ms=3.2, label=f"{label} ({L} layers)", zorder=3)
        std_col = f"{score}_std"
        if any(std_col in r for r in rows):
            sd = _values(rows, std_col) * k
            ax.fill_between(x, yv - sd, yv + sd, color=color, alpha=0.15, lw=0,
                            label=f"{label} ± 1 std over folds")
        if show_test and any(_ANALYSIS in r for r in rows):
            yt = _values(rows, _ANALYSIS) * 100.0
            all_y.extend(yt[np.isfinite(yt)].tolist())
            ax.plot(x, yt, "--", color=color, lw=1.3, alpha=0.85,
                    label=f"{label} test (analysis only)", zorder=2)
        # best and last layer, by the plotted train-side score
        finite = np.where(np.isfinite(yv))[0]
        if len(finite):
            b = int(finite[np.argmax(yv[finite])])
            last = len(rows) - 1
            ax.scatter([x[b]], [yv[b]], marker="*", s=190, color=color, edgecolor="black",
                       linewidth=0.8, zorder=5)
            same = b == last
            ax.annotate(
                f"best{' = last' if same else ''}: layer {rows[b]['start']} ({_fmt(score, yv[b])})",
                (x[b], yv[b]), xytext=(0, 10 + 12 * i), textcoords="offset points",
                ha="center", fontsize=8, color=color, fontweight="bold",
                arrowprops=dict(arrowstyle="-", color=color, lw=0.6), bbox=_BOX, zorder=6,
            )
            if not same and np.isfinite(yv[last]):
                ax.scatter([x[last]], [yv[last]], marker="s", s=50, color="white",
                           edgecolor=color, linewidth=1.6, zorder=5)
                ax.annotate(
                    f"last: layer {rows[last]['start']} ({_fmt(score, yv[last])})",
                    (x[last], yv[last]), xytext=(-6, -16 - 12 * i), textcoords="offset points",
                    ha="right", fontsize=8, color=color, bbox=_BOX, zorder=6,
                )
    if all_y:
        lo, hi = min(all_y), max(all_y)
        pad = 0.12 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + 2.2 * pad)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("relative depth (layer / L; 0 = token embeddings)")
    ax.set_ylabel(_LABELS.get(score, score))
    if title is None:
        what = _LABELS.get(score, score).replace(" (%)", "")
        title = f"{what[0].upper() + what[1:]} by layer"
        if len(profiles) == 1:
            title += f" — {next(iter(profiles))}"
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# averaged windows (the paper's Figure 3 view)
# --------------------------------------------------------------------------------------------


def plot_windows(profile: Any, path: str | Path, score: str = "probe_acc", *,
                 title: str | None = None) -> Path:
    """Heatmap of averaged windows: start layer (x) by width (y, 1 = single layers).

    The best window (width >= 2) is outlined in red, the best single layer in dashed orange.
    """
    _check_score(profile, score)
    layers = _rows_of(profile, "layer")
    windows = _rows_of(profile, "window")
    if not windows:
        raise LayerfuseError(
            "the profile has no window rows; run score_layers with windows >= 2 to plot windows"
        )
    n_layers = max(max(r["end"] for r in layers + windows) + 1, profile.n_layers + 1)
    max_w = max(r["end"] - r["start"] + 1 for r in windows)
    k = _scale(score)
    grid = np.full((max_w, n_layers), np.nan)
    for r in layers + windows:
        v = r.get(score)
        if v is not None:
            grid[r["end"] - r["start"], r["start"]] = float(v) * k
    fig = _figure(min(3.0 + 0.33 * n_layers, 14.0), 1.9 + 0.55 * max_w)
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e8e8e8")
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap,
                   interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, pad=0.01)
    cb.set_label(_LABELS.get(score, score), fontsize=8)
    cb.ax.tick_params(labelsize=7)
    finite = np.isfinite(grid)
    lo, hi = (np.nanmin(grid), np.nanmax(grid)) if finite.any() else (0.0, 1.0)
    if n_layers <= 40:  # cell values, readable while there are not too many columns
        for (w, s), v in np.ndenumerate(grid):
            if np.isfinite(v):
                light = (v - lo) / ((hi - lo) or 1.0) < 0.55
                ax.text(s, w, _fmt(score, v), ha="center", va="center", fontsize=5.5,
                        color="white" if light else "black")
    from matplotlib.patches import Rectangle

    notes = []
    win_grid = grid.copy()
    win_grid[0] = np.nan
    if np.isfinite(win_grid).any():
        w, s = np.unravel_index(np.nanargmax(win_grid), grid.shape)
        ax.add_patch(Rectangle((s - 0.5, w - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.2,
                               zorder=5))
        notes.append(f"red box: best window, layers {s}..{s + w} ({_fmt(score, grid[w, s])})")
    if np.isfinite(grid[0]).any():
        s1 = int(np.nanargmax(grid[0]))
        ax.add_patch(Rectangle((s1 - 0.5, -0.5), 1, 1, fill=False, edgecolor="orange", lw=2.2,
                               ls="--", zorder=5))
        notes.append(f"orange box: best single layer, {s1} ({_fmt(score, grid[0, s1])})")
    step = 1 if n_layers <= 16 else 2 if n_layers <= 40 else 5
    ax.set_xticks(range(0, n_layers, step))
    ax.set_yticks(range(max_w))
    ax.set_yticklabels([str(w + 1) for w in range(max_w)])
    ax.tick_params(labelsize=8)
    ax.set_xlabel("window start layer")
    ax.set_ylabel("width (layers averaged)")
    if title is None:
        what = _LABELS.get(score, score)
        title = f"Averaged-layer windows: {what}" + (f" — {profile.name}" if profile.name else "")
    ax.set_title(title + ("\n" + ";   ".join(notes) if notes else ""), fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# cheap scores against the probe
# --------------------------------------------------------------------------------------------


def plot_score_agreement(profile: Any, path: str | Path, *, reference: str = "probe_acc",
                         title: str | None = None) -> Path:
    """Each cheap score, min-max normalised over layers, against the probe across depth.

    The legend carries each score's Spearman correlation with the probe across layers.
    """
    _check_score(profile, reference)
    rows = _rows_of(profile, "layer")
    x = _values(rows, "depth")
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()

    def norm(v: np.ndarray) -> np.ndarray:
        ok = np.isfinite(v)
        if not ok.any():
            return v
        lo, hi = np.min(v[ok]), np.max(v[ok])
        return (v - lo) / ((hi - lo) or 1.0)

    ref = _values(rows, reference)
    k = _scale(reference)
    unit = "%" if reference in _PERCENT else ""
    span = f"{_fmt(reference, np.nanmin(ref) * k)}–{_fmt(reference, np.nanmax(ref) * k)}{unit}"
    ax.plot(x, norm(ref), "-", color="black", lw=2.6, zorder=4,
            label=f"{_SHORT.get(reference, reference)} (reference, {span})")
    markers = ["o", "s", "^", "D", "v", "P"]
    agreement = getattr(profile, "agreement", {}) or {}
    i = 0
    for name, col in (("centroid", "centroid_acc"), ("knn", "knn_acc"), ("fisher", "fisher"),
                      ("logme", "logme")):
        if not any(col in r for r in rows):
            continue
        v = _values(rows, col)
        rho = agreement.get(name)
        ok = isinstance(rho, (int, float)) and math.isfinite(rho)
        rho_s = f"ρ = {rho:+.2f}" if ok else "ρ n/a"
        ax.plot(x, norm(v), "-", marker=markers[i % len(markers)], ms=3.5, lw=1.3,
                color=_COLORS[i % len(_COLORS)], alpha=0.9, label=f"{_SHORT[col]} ({rho_s})")
        i += 1
    ax.set_xlabel("relative depth (layer / L; 0 = token embeddings)")
    ax.set_ylabel("score, min-max normalised over layers")
    ax.set_ylim(-0.05, 1.12)
    ax.set_xlim(-0.03, 1.03)
    if title is None:
        title = "Cheap scores vs the CV probe across depth" + (
            f" — {profile.name}" if profile.name else "")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9,
              title="Spearman ρ with the probe across layers", title_fontsize=7)
    return _save(fig, path)


def plot_fusion_results(rows: list[dict], path, *, title: str | None = None) -> Path:
    """Horizontal bars of test accuracy (mean ± std over seeds) per configuration, best on top;
    single models in grey, fusions in blue, the configuration chosen on validation in orange with
    its label in bold (marked on the bar and the axis, so nothing depends on room right of the bars)."""
    from matplotlib.patches import Patch

    rows = sorted(rows, key=lambda r: r["acc_mean"])
    labels = [f"{r['models']}  [{r['fusion']}/{r['head']}]" if r["n_models"] > 1 else f"{r['models']}  [{r['head']}]"
              for r in rows]
    h = max(2.5, 0.42 * len(rows) + 1.2)
    fig = _figure(max(10.0, 6.0 + 0.075 * max(len(t) for t in labels)), h)
    ax = fig.subplots()
    single, fused, chosen = "#9e9e9e", "#1f77b4", "#ff7f0e"
    colours = [chosen if r.get("chosen_on_validation") else single if r["n_models"] == 1 else fused for r in rows]
    ax.barh(range(len(rows)), [100 * r["acc_mean"] for r in rows], xerr=[100 * r["acc_std"] for r in rows],
            color=colours, edgecolor="black", linewidth=0.4, capsize=3)
    for i, r in enumerate(rows):
        ax.text(100 * r["acc_mean"] + 100 * r["acc_std"] + 0.1, i, f"{100 * r['acc_mean']:.2f}", va="center",
                fontsize=8, fontweight="bold" if r.get("chosen_on_validation") else "normal")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r.get("chosen_on_validation"):
            tick.set_fontweight("bold")
    lo = min(100 * (r["acc_mean"] - r["acc_std"]) for r in rows)
    hi = max(100 * (r["acc_mean"] + r["acc_std"]) for r in rows)
    ax.set_xlim(max(0, lo - 3), min(100, hi + (hi - lo) * 0.1 + 1))
    ax.set_xlabel("test accuracy, % (mean ± std over seeds; test scored once per trained model)")
    ax.set_title(title or "Single models and fusions")
    drawn = set(colours)  # the legend names only the colours on the chart
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=t)
               for c, t in [(single, "single model"), (fused, "fusion"), (chosen, "chosen on validation")] if c in drawn]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_complementarity(comp: list[dict], path) -> Path:
    """Model pairs on validation: CKA (similarity of representations) and shared errors against
    what independent errors would give. Pairs low on both are the promising fusions."""
    models = sorted({c["a"] for c in comp} | {c["b"] for c in comp})
    n = len(models)
    idx = {m: i for i, m in enumerate(models)}
    cka = np.eye(n)
    shared = np.full((n, n), np.nan)
    for c in comp:
        i, j = idx[c["a"]], idx[c["b"]]
        cka[i, j] = cka[j, i] = c["cka"]
        if "both_wrong" in c and c["both_wrong_if_independent"] > 0:
            shared[i, j] = shared[j, i] = c["both_wrong"] / c["both_wrong_if_independent"]
    fig = _figure(4.2 * 2 + 1, 0.6 * n + 3)
    axes = fig.subplots(1, 2)
    for ax, mat, title, cmap, vmin, vmax in [
        (axes[0], cka, "linear CKA (1 = same information)", "viridis", 0, 1),
        (axes[1], shared, "shared errors ÷ independent\n(1 = independent, higher = redundant)", "magma_r", 0,
         max(2.0, np.nanmax(shared) if np.isfinite(shared).any() else 2.0)),
    ]:
        im = ax.imshow(mat, cmap=cmap, vmin=vmin, vmax=vmax)
        for i in range(n):
            for j in range(n):
                if np.isfinite(mat[i, j]) and i != j:
                    r, g, b, _ = im.cmap(im.norm(mat[i, j]))
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=9,
                            color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
        ax.set_yticklabels(models, fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Model complementarity on the validation split", fontsize=11)
    return _save(fig, path)


def plot_fusion_chart(rows: list[dict], out, *, dataset: str) -> Path:
    """``out/fusion_results.png``: the bar chart of a grid's rows, titled with the dataset."""
    return plot_fusion_results(rows, Path(out) / "fusion_results.png", title=f"{dataset}: single models and fusions")
