"""Redundancy analysis: similarity statistics, the threshold curve, PCA, cross-layer redundancy, 2-D maps."""

from hf_token_merge.analysis.redundancy import RedundancyReport, analyze_redundancy

__all__ = ["RedundancyReport", "analyze_redundancy"]
