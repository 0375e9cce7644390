"""Robustness evaluation you can trust: an attack ensemble, an epsilon sweep and the checks
that catch gradient masking, reported as JSON, a plot and a terminal summary."""

from tfrobust.evaluation import checks
from tfrobust.evaluation.checks import Check
from tfrobust.evaluation.evaluator import CHECKS, evaluate
from tfrobust.evaluation.plot import plot_report
from tfrobust.evaluation.report import EvaluationReport

__all__ = ["CHECKS", "Check", "EvaluationReport", "checks", "evaluate", "plot_report"]
