"""Embedded trace sets (Parquet, numbers only); provenance in PROVENANCE.md beside them."""
