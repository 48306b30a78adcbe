"""Splits, metrics, statistical tests and the predictions-table evaluation."""
