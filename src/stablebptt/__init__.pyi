# The public API, one list: lazy_loader reads these imports at run time (nothing loads until first use,
# so `stablebptt --help` answers before JAX is imported), and type checkers read them as a stub.
from . import engine, paper, plots, runs, simulators, sweeps, tasks, tools, training
from .engine.flows import (
    AbstractFlow,
    C,
    Combined,
    Gated,
    M,
    Modified,
    N,
    NetworkOnly,
    R,
    Regular,
    S,
    Schedule,
    Stopped,
    Truncated,
    combine_by_sign,
    flow_from_name,
    gate,
    stack_flows,
)
from .engine.networks import DenseNet, FunctionPolicy, PerSample
from .engine.optim import keras_adam, make_optimizer, scale_by_keras_adam
from .engine.precision import float64, set_float64
from .engine.problem import ControlProblem
from .engine.rollouts import Trajectory, rollout, rollout_loss
from .engine.updates import AbstractBackward, AutodiffBackward, SharedBackward, UpdateInfo, trainable, value_and_update
from .tasks import Task, make_task
from .tools.diagnose import diagnose
from .training import NonFiniteLossError, TrainResult, TrainState, ZeroUpdateError, train, train_batched

__version__: str
