"""Evaluation of HOPE checkpoints: perplexity (state carried across windows), the paper's zero-shot suite with
lm-eval's prompts and metrics, lm-eval integration, long-context probes, throughput and the Table-1 report.

Entry points: ``python -m eval.perplexity``, ``eval.commonsense``, ``eval.harness``, ``eval.longctx``,
``eval.speed`` and ``eval.report``.
"""
