"""The engine: a control problem, gradient flows, the rollout, its backward passes, updates, optimizers and networks. Knows no task and no file."""
