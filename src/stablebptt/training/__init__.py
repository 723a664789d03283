"""Training: data batching, the epoch program, metrics and the NaN guard."""

from .batching import batch_count, split_batches
from .trainer import (
    METRIC_COLUMNS,
    EpochFunctions,
    NonFiniteLossError,
    ZeroUpdateError,
    TrainResult,
    TrainState,
    evaluate_losses,
    make_epoch_functions,
    train,
    train_batched,
)

__all__ = [
    "batch_count",
    "split_batches",
    "METRIC_COLUMNS",
    "EpochFunctions",
    "NonFiniteLossError",
    "ZeroUpdateError",
    "TrainResult",
    "TrainState",
    "evaluate_losses",
    "make_epoch_functions",
    "train",
    "train_batched",
]
