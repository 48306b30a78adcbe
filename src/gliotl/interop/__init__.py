"""Interoperability with other drug-response frameworks (drevalpy)."""
