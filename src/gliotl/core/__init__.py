"""Shared machinery of both pipelines: configs, run directories, jobs, splits, metrics, reports."""
