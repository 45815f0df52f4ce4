"""Catalog entries, one module per op family; each module exports ``SPECS``."""
