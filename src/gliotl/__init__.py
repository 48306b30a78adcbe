"""gliotl: transfer learning for small glioblastoma datasets."""

__version__ = "0.1.0"
