"""Plots of report.py: what a reader must be able to see in them."""

import matplotlib.colors as mcolors
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from layerfuse import report
from layerfuse.report import plots


def _row(models, acc, *, chosen=False, fusion="concat"):
    n = models.count("+") + 1
    return {"models": models, "n_models": n, "fusion": fusion if n > 1 else "-", "head": "mlp",
            "acc_mean": acc, "acc_std": 0.004, "chosen_on_validation": chosen}


@pytest.fixture
def figures(monkeypatch):
    """Every figure report.py saves, in order (each is still written to its file)."""
    saved = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (saved.append(fig), real_save(fig, path))[1])
    return saved


def test_fusion_chart_marks_the_chosen_row_and_keeps_every_label_inside_the_plot(tmp_path, figures):
    # Long labels (narrow axes), a wide range and accuracies near 100 % leave little room right of the
    # bars: the case (R8) whose "chosen" marker text used to run past the plot to the figure's edge.
    a, b = "smollm2-135m+gemma3-270m+qwen2.5-coder-0.5b", "gemma3-270m+qwen2.5-coder-0.5b+minilm-l6"
    rows = [_row("minilm-l6", 0.968), _row("gemma3-270m", 0.955), _row(b, 0.9651, chosen=True),
            _row(a, 0.9721, fusion="sum"), _row(f"{a}+minilm-l6", 0.8907, fusion="matmul")]
    path = report.plot_fusion_results(rows, tmp_path / "fusion.png", title="t")
    assert path.stat().st_size > 0
    fig = figures[0]
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    # Bars are drawn bottom-up in ascending accuracy; the chosen one stands out by colour and bold label.
    order = sorted(rows, key=lambda r: r["acc_mean"])
    i = next(k for k, r in enumerate(order) if r["chosen_on_validation"])
    bars = ax.patches[:len(rows)]
    assert mcolors.to_hex(bars[i].get_facecolor()) != mcolors.to_hex(bars[i - 1].get_facecolor())
    assert {mcolors.to_hex(b.get_facecolor()) for k, b in enumerate(bars) if k != i} & {
        mcolors.to_hex(bars[i].get_facecolor())} == set()
    assert ax.get_yticklabels()[i].get_fontweight() == "bold"
    assert [t.get_fontweight() for k, t in enumerate(ax.get_yticklabels()) if k != i] == ["normal"] * (len(rows) - 1)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["single model", "fusion", "chosen on validation"]
    # Every value label sits inside the plot area.
    renderer = canvas.get_renderer()
    plot = ax.get_window_extent(renderer)
    for t in ax.texts:
        box = t.get_window_extent(renderer)
        assert plot.x0 <= box.x0 and box.x1 <= plot.x1, t.get_text()
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{100 * r['acc_mean']:.2f}" for r in rows)


def test_fusion_chart_legend_names_only_what_is_drawn(tmp_path, figures):
    report.plot_fusion_results([_row("a", 0.8), _row("b", 0.7)], tmp_path / "singles.png")
    assert [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()] == ["single model"]
    # The only single model is the chosen one: no grey bar, so no "single model" entry.
    report.plot_fusion_results([_row("a", 0.8, chosen=True), _row("a+b", 0.7)], tmp_path / "chosen.png")
    assert [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()] == ["fusion", "chosen on validation"]
