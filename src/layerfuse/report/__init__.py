"""Tables, plots and ``report.md``: everything a person reads after a run.
"""

from .markdown import write_markdown_report
from .plots import (
    plot_complementarity,
    plot_fusion_chart,
    plot_fusion_results,
    plot_layer_profile,
    plot_score_agreement,
    plot_windows,
)
from .summaries import fusion_text, profile_text, write_fusion_outputs, write_profile_outputs
from .tables import json_default, text_table, write_table

__all__ = [
    "write_markdown_report",
    "plot_complementarity",
    "plot_fusion_chart",
    "plot_fusion_results",
    "plot_layer_profile",
    "plot_score_agreement",
    "plot_windows",
    "fusion_text",
    "profile_text",
    "write_fusion_outputs",
    "write_profile_outputs",
    "json_default",
    "text_table",
    "write_table",
]
