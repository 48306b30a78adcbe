"""Drug-response data: readers of the published formats and cross-platform harmonisation."""
