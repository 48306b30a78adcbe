"""Self-contained HTML reports and the standard evaluation plots."""
