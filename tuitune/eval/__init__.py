"""Evaluate: did fine-tuning help, on records the model never saw?

``run`` (plan and evaluate: held-out loss and answers for the target and its baseline),
``loss`` (per-record loss with the training encoding), ``metrics`` (ROUGE-L, BLEU-4,
chrF, exact match), ``prompt_scores`` (a GRPO run's held-out prompts scored by its own rewards)
and ``report`` (the report's files, marks, the list of reports).
Light to import: torch, transformers and sacrebleu load when an evaluation runs.
"""

from __future__ import annotations

from tuitune.eval.report import list_reports, mark, read_report, summary_line
from tuitune.eval.run import EvalPlan, default_output, evaluate, plan

__all__ = ["EvalPlan", "plan", "evaluate", "default_output", "list_reports", "mark", "read_report", "summary_line"]
