"""Sweeps: named grids of runs (presets, specs), their groups and backends (local, Ray), reports and the claims of the paper."""
