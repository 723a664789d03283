"""The resolved configuration of one training run (what ``config.json`` holds)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import jax

from .. import validate
from . import memory
from ..engine.remat import check_remat, segment_length
from ..engine.flows import AbstractFlow, flow_from_name
from ..engine.optim import ADAM_FORMS, CLIP_MODES, make_optimizer
from ..tasks import Task, make_task, task_config
from ..training.batching import batch_count
from ..engine.updates import SharedBackward

__all__ = ["RunConfig", "DTYPES", "KEEP"]

DTYPES = ("float32", "float64")
KEEP = ("final", "best")
"""Which controllers a run saves: the final one (``params.eqx``), or also the one of the lowest test loss (``best_params.eqx``)."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers.

    ``task_options`` overrides the task configuration's defaults (e.g.
    ``{"n_poles": 2}``); :meth:`resolved` fills in every field so that the
    JSON names all constants. The same config gives identical numbers on the
    same machine type and close ones on another CPU.
    ``remat``: steps per checkpointed rollout segment (0: none; ``True``:
    ``ceil(√n_steps)``, spelled out by :meth:`resolved`).
    ``keep``: ``"final"`` saves the last controller; ``"best"`` also the one of
    the lowest test loss (:func:`stablebptt.training.best_epoch`). It changes
    no number; a ``config.json`` without it is a ``"final"`` run.
    Sizes whose memory estimate exceeds the machine's are refused (:mod:`stablebptt.runs.memory`).
    """

    task: str = "cartpole"
    task_options: dict = dataclasses.field(default_factory=dict)
    method: str = "C"
    clip: str = "none"
    epochs: int = 1000
    seed: int = 42
    learning_rate: float = 1e-3
    batch_size: int = 8
    n_train: int = 256
    n_test: int = 256
    adam: str = "keras"
    dtype: str = "float32"
    remat: bool | int = 0
    keep: str = "final"

    def __post_init__(self):
        object.__setattr__(self, "method", str(self.method).upper())
        flow_from_name(self.method)
        validate.choice("clip mode", self.clip, CLIP_MODES)
        validate.choice("Adam form", self.adam, ADAM_FORMS)
        validate.choice("dtype", self.dtype, DTYPES)
        validate.choice("keep setting", self.keep, KEEP)
        for name in ("epochs", "batch_size", "n_train", "n_test"):
            validate.positive_int(name, getattr(self, name))
        validate.integer("seed", self.seed, low=0)
        validate.number("learning_rate", self.learning_rate, positive=True)
        batch_count(self.n_train, self.batch_size)  # the batch must fit the training set and divide it
        task_config(self.task, **self.task_options).check_trainable()  # the task's options, then its own rules for a run
        check_remat(self.remat)
        memory.check_fits(self)  # before any array is built: sizes the machine cannot hold are refused here

    def resolved(self) -> "RunConfig":
        """The same run with every task option and the checkpoint segment length spelled out."""
        task = task_config(self.task, **self.task_options)
        remat = segment_length(task.n_steps, self.remat) or 0
        return dataclasses.replace(self, task_options=dataclasses.asdict(task), remat=remat)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, **fields: Any) -> "RunConfig":
        """The one way to build a run's configuration from options, resolved (:meth:`resolved`).

        ``options``: any mapping of settings (parsed command-line options, a
        sweep's settings); its keys that name a field and are not None are
        taken, other keys are ignored. ``fields`` are set on top. Fields
        given nowhere keep their defaults.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        chosen = {k: v for k, v in dict(options or {}).items() if k in known and v is not None}
        chosen.update(fields)
        return cls(**chosen).resolved()

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # --- building blocks -------------------------------------------------
    def make_task(self) -> Task:
        return make_task(self.task, **self.task_options)

    def flow(self) -> AbstractFlow:
        return flow_from_name(self.method)

    def backward(self, task: Task) -> SharedBackward:
        """The backward pass of this run on ``task`` (built from this config)."""
        return SharedBackward(remat=self.remat, batch_lanes=task.batch_lanes)

    def optimizer(self):
        return make_optimizer(self.clip, self.learning_rate, adam=self.adam)

    def jnp_dtype(self):
        if self.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise ValueError(
                "dtype float64 needs 64-bit JAX: pass --x64, or call stablebptt.set_float64() (or use 'with stablebptt.float64():') first"
            )
        return {"float32": jax.numpy.float32, "float64": jax.numpy.float64}[self.dtype]

    # --- JSON ----------------------------------------------------------
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self.resolved())
        if data["keep"] == "final":  # the default is left out: configs written before the option are unchanged
            del data["keep"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        validate.known_settings("config", data, (f.name for f in dataclasses.fields(cls)))
        return cls(**data)

    def differences(self, other: "RunConfig") -> list[str]:
        """The settings (``task_options.x`` for task options) where two configs differ: ``["seed (42 vs 1)"]``."""
        return validate.differences(dataclasses.asdict(self.resolved()), dataclasses.asdict(other.resolved()))

