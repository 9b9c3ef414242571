"""Metrics: scores and intervals of logits (`classification`), flip rates (`robustness`), the
shortcut audit's single-feature AUCs (`shortcuts`), their figures (`figures`, `stress_figures`)
and their console text (`summary`). NumPy, scikit-learn and matplotlib only."""
