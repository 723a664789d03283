"""Data parallelism: mini-batches split over two (forced host) devices give one device's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from stablebptt.training.sharding import data_mesh

pytestmark = pytest.mark.long  # a minute or more of compiling: scheduled first (tests/conftest.py)

SCRIPT = r"""
import json
import jax
import numpy as np
import stablebptt as sb
from stablebptt.runs.config import RunConfig
from stablebptt.runs.single import build

assert len(jax.devices()) == 2, jax.devices()
config = RunConfig(task="cartpole", task_options={"n_poles": 1, "n_steps": 30}, method="C", epochs=3, n_train=32, n_test=16).resolved()
out = {}
for name, devices in [("one", [jax.devices()[0]]), ("two", None)]:
    s = build(config)
    single = sb.train(s.policy, s.task.problem, s.train_x, s.test_x, flow=config.flow(), optimizer=config.optimizer(),
                      epochs=3, batch_size=8, devices=devices)
    runs = sb.train_batched([s.policy] * 2, s.task.problem, [s.train_x] * 2, [s.test_x] * 2, flow=config.flow(),
                            optimizer=config.optimizer(), hyperparams=[{}, {"learning_rate": 3e-3}], epochs=3, devices=devices)
    out[name] = {
        "devices": [single.n_devices, runs[0].n_devices],
        "metrics": [[[h[k] for k in ("batch_loss", "train_loss", "test_loss", "update_sq_norm", "cosine_mr")] for h in r.history]
                    for r in [single, *runs]],
        "weights": [np.concatenate([np.ravel(a) for a in jax.tree.leaves(r.policy)]).tolist() for r in [single, *runs]],
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_device_runs():
    # XLA's default emitters, as users' runs compile (the test run's faster-compiling ones reduce in another order)
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_use_fusion_emitters")]
    env = dict(os.environ, XLA_FLAGS=" ".join([*flags, "--xla_force_host_platform_device_count=2"]), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sharded_training_splits_the_batch_over_both_devices(two_device_runs):
    assert two_device_runs["one"]["devices"] == [1, 1]
    assert two_device_runs["two"]["devices"] == [2, 2]


def test_sharded_and_single_device_training_give_the_same_metrics_and_weights(two_device_runs):
    one, two = two_device_runs["one"], two_device_runs["two"]
    for a, b in zip(one["metrics"], two["metrics"], strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5)
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    # the runs did train: the metrics moved, and the batched runs (two learning rates) differ
    assert one["metrics"][0][-1][2] < one["metrics"][0][0][2]
    assert one["weights"][1] != one["weights"][2]


def test_device_choice():
    assert (data_mesh(8) is None) == (len(jax.devices()) == 1)  # one visible device: no mesh
    assert data_mesh(8, [jax.devices()[0]]) is None
    with pytest.raises(ValueError, match="does not split evenly across 3 devices"):
        data_mesh(8, [jax.devices()[0]] * 3)
    with pytest.raises(ValueError, match="devices is empty"):
        data_mesh(8, [])
