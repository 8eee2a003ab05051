"""The fault matrix of docs/faults.md, by layer (matrix.py says how a cell runs)."""
