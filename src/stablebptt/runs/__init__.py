"""Runs on disk: configuration, run folders, resume, one run, and comparisons of methods."""
