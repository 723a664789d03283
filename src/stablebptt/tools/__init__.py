"""Tools around runs: the epoch benchmark, FLOP counting, animations."""
