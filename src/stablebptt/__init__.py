"""stablebptt: stabilized backpropagation through time for differentiable physics.

Train a controller through your own JAX simulator with the combined update::

    import stablebptt as sb
    problem = sb.ControlProblem(step=my_step, n_steps=100, final_loss=my_loss)
    result = sb.train(policy, problem, train_x, test_x, flow=sb.C(),
                      optimizer=sb.make_optimizer("none"), epochs=100)

Layers: :mod:`~stablebptt.flows` (R, M, S, N, C as values),
:mod:`~stablebptt.rollout` (one ``lax.scan``), :mod:`~stablebptt.updates`
(the update a flow asks for), :mod:`~stablebptt.training` (the paper's
protocol), :mod:`~stablebptt.tasks` (physics), :mod:`~stablebptt.experiments`
(runs on disk), :mod:`~stablebptt.plots`, :mod:`~stablebptt.cli`.
"""

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers and editors; at run time they load on first use
    from .flows import C, Combined, Flow, Gated, M, Modified, N, NetworkOnly, R, Regular, S, Schedule, Stopped, Truncated, combine_by_sign, flow_from_name, gate, stack_flows
    from .networks import DenseNet, FunctionPolicy, PerSample
    from .optim import keras_adam, make_optimizer, scale_by_keras_adam
    from .precision import float64, set_float64
    from .problem import ControlProblem
    from .rollout import Trajectory, rollout, rollout_loss
    from .tasks import Task, make_task
    from .training import NonFiniteLossError, TrainResult, ZeroUpdateError, train, train_batched
    from .updates import AutodiffBackward, SharedBackward, UpdateInfo, value_and_update

_EXPORTS = {
    "C": "flows",
    "Combined": "flows",
    "Flow": "flows",
    "Gated": "flows",
    "M": "flows",
    "Modified": "flows",
    "N": "flows",
    "NetworkOnly": "flows",
    "R": "flows",
    "Regular": "flows",
    "S": "flows",
    "Schedule": "flows",
    "Stopped": "flows",
    "stack_flows": "flows",
    "Truncated": "flows",
    "combine_by_sign": "flows",
    "flow_from_name": "flows",
    "gate": "flows",
    "DenseNet": "networks",
    "FunctionPolicy": "networks",
    "PerSample": "networks",
    "keras_adam": "optim",
    "make_optimizer": "optim",
    "scale_by_keras_adam": "optim",
    "float64": "precision",
    "set_float64": "precision",
    "ControlProblem": "problem",
    "Trajectory": "rollout",
    "rollout": "rollout",
    "rollout_loss": "rollout",
    "Task": "tasks",
    "make_task": "tasks",
    "NonFiniteLossError": "training",
    "ZeroUpdateError": "training",
    "TrainResult": "training",
    "train": "training",
    "train_batched": "training",
    "AutodiffBackward": "updates",
    "SharedBackward": "updates",
    "UpdateInfo": "updates",
    "value_and_update": "updates",
}


def __getattr__(name: str) -> Any:
    """Import the public names lazily, so that ``stablebptt --help`` and Ctrl-C answer before JAX has loaded."""
    module = _EXPORTS.get(name)
    if module is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'stablebptt' has no attribute {name!r}")
        return importlib.import_module(f".{name}", __name__)  # a subpackage, e.g. sb.updates
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """Keeps ``stablebptt.rollout`` the function: importing the submodule of the same name must not rebind it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "AutodiffBackward",
    "C",
    "Combined",
    "ControlProblem",
    "DenseNet",
    "Flow",
    "FunctionPolicy",
    "Gated",
    "M",
    "Modified",
    "N",
    "NetworkOnly",
    "NonFiniteLossError",
    "ZeroUpdateError",
    "PerSample",
    "R",
    "Regular",
    "S",
    "Schedule",
    "SharedBackward",
    "Stopped",
    "Task",
    "TrainResult",
    "Trajectory",
    "Truncated",
    "UpdateInfo",
    "combine_by_sign",
    "float64",
    "flow_from_name",
    "gate",
    "keras_adam",
    "make_optimizer",
    "make_task",
    "rollout",
    "rollout_loss",
    "scale_by_keras_adam",
    "set_float64",
    "stack_flows",
    "train",
    "train_batched",
    "value_and_update",
]
