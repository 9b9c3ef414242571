"""Metrics: scores and intervals of logits (`classification`), their figures (`figures`) and their
console text (`summary`). NumPy and scikit-learn only."""
