"""TODO report
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
from .tables import file_slug, json_default, pct, text_table, write_table

__all__ = [
    "write_markdown_report",
    "plot_layer_profile",
    "plot_windows",
    "plot_score_agreement",
    "plot_fusion_results",
    "plot_complementarity",
    "plot_fusion_chart",
    "write_profile_outputs",
    "profile_text",
    "write_fusion_outputs",
    "fusion_text",
    "write_table",
    "json_default",
    "file_slug",
    "pct",
    "text_table",
]
