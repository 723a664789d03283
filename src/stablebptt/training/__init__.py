"""Training: data batching, the epoch program (built and compiled in one place), the loop, metrics and the NaN guard."""

from .batching import batch_count, split_batches
from .program import EpochFunctions, EpochProgram, compile_epoch, evaluate_losses, make_epoch_functions
from .trainer import (
    METRIC_COLUMNS,
    NonFiniteLossError,
    ZeroUpdateError,
    TrainResult,
    TrainState,
    best_epoch,
    train,
    train_batched,
)

__all__ = [
    "batch_count",
    "split_batches",
    "METRIC_COLUMNS",
    "EpochFunctions",
    "EpochProgram",
    "NonFiniteLossError",
    "ZeroUpdateError",
    "TrainResult",
    "TrainState",
    "best_epoch",
    "compile_epoch",
    "evaluate_losses",
    "make_epoch_functions",
    "train",
    "train_batched",
]
