"""NumPy float64 forward and VJP for each op: the independent source of truth (no torch here)."""
