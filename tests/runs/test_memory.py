"""A run's memory estimate: its closed form, linear in the states and the steps; the paper's settings fit; a size beyond
the machine is refused in one line naming the setting that saves the most, before anything is built."""

from __future__ import annotations

import math

import pytest

from stablebptt.engine.networks import dense_size
from stablebptt.paper.brax_peer import PeerSpec
from stablebptt.paper.lq import LQSpec
from stablebptt.runs import memory
from stablebptt.runs.config import RunConfig
from stablebptt.sweeps.spec import SweepSpec
from stablebptt.tools.bench import run_bench

# cart pole with 2 poles: a state of 2·3 numbers, two hidden layers of 100, a 6 → 100 → 100 → 1 network
STATE, INTERMEDIATES, WEIGHTS = 6, 200, 6 * 100 + 100 + 100 * 100 + 100 + 100 + 1


def closed_form(n_train=256, n_test=256, batch=8, n_steps=100, kept=None, epochs=1000, itemsize=4) -> int:
    """The module's formula written out for cart pole with 2 poles."""
    kept = n_steps + 1 if kept is None else kept
    per_step = STATE + INTERMEDIATES
    return itemsize * ((n_train + n_test) * per_step + batch * kept * per_step + 4 * WEIGHTS) + 16 * n_steps + 400 * epochs


def config(**fields) -> RunConfig:
    steps = fields.pop("n_steps", 100)
    return RunConfig.from_options(task="cartpole", task_options={"n_poles": 2, "n_steps": steps}, **fields)


def test_the_estimate_is_the_closed_form_and_grows_linearly_in_states_and_steps():
    assert WEIGHTS == dense_size(6, 1, (100, 100))
    assert memory.estimate(config()) == closed_form()
    for n in (256, 512, 4096, 2**20):
        assert memory.estimate(config(n_train=n)) == closed_form(n_train=n)
        assert memory.estimate(config(n_test=n)) == closed_form(n_test=n)
    for steps in (10, 100, 1000, 10**5):
        assert memory.estimate(config(n_steps=steps)) == closed_form(n_steps=steps)
    # linear: equal steps in n_train or n_steps add equal bytes, 4 bytes per number (8 in float64)
    per_sample = [memory.estimate(config(n_train=n)) for n in (256, 512, 768, 1024)]
    assert {b - a for a, b in zip(per_sample, per_sample[1:])} == {4 * 256 * (STATE + INTERMEDIATES)}
    per_step = [memory.estimate(config(n_steps=s)) for s in (100, 200, 300)]
    assert {b - a for a, b in zip(per_step, per_step[1:])} == {100 * (4 * 8 * (STATE + INTERMEDIATES) + 16)}
    assert memory.estimate(config(dtype="float64")) - closed_form(itemsize=8) == 0
    # checkpointed segments of k steps keep ceil(n / k) starts and one segment
    assert memory.estimate(config(n_steps=100, remat=7)) == closed_form(kept=math.ceil(100 / 7) + 7)
    assert memory.estimate(config(n_steps=10**4, remat=True)) == closed_form(n_steps=10**4, kept=2 * 100)
    # copies trained together multiply everything; runs one after another only their metrics
    assert memory.estimate(config(), together=3, apart=5) == 3 * (closed_form(epochs=0) + 5 * 400 * 1000)


@pytest.mark.parametrize(
    "task, options",
    [("cartpole", {"n_poles": 4}), ("repulsion", {"rc": 0.001}), ("quantum", {"target": 5}), ("linear", {}), ("brax", {})],
)
def test_the_papers_settings_and_brax_defaults_fit_in_little_memory(task, options):
    run = RunConfig.from_options(task=task, task_options=options)  # 256/256 states, 1000 epochs
    assert (run.n_train, run.n_test, run.epochs) == (256, 256, 1000)
    assert memory.estimate(run) < 16 * 2**20  # far below any machine's memory: accepted everywhere


def test_the_papers_sweeps_comparisons_and_checks_are_accepted():
    for experiment in ("cartpole", "repulsion", "quantum"):
        spec = SweepSpec.from_preset(experiment, "paper")
        assert spec.epochs == 1000 and spec.n_train == spec.n_test == 256 and len(spec.seeds) == 3
    assert PeerSpec().seeds == (42, 43, 44) and LQSpec().epochs == 4000


def test_the_limit_is_the_machines_memory_and_the_setting_that_saves_most_is_named(monkeypatch):
    need = memory.estimate(config())
    monkeypatch.setattr(memory, "machine_memory", lambda: need)
    config()  # exactly fits
    monkeypatch.setattr(memory, "machine_memory", lambda: need - 1)
    with pytest.raises(ValueError) as err:
        config()
    assert str(err.value).startswith(f"these settings need about {memory.format_bytes(need)} of memory")  # all at their defaults
    monkeypatch.setattr(memory, "machine_memory", lambda: 10 * 2**30)
    # n_train 2·10**6 adds 1.5 GiB, 10**7 steps add 61 GiB: the steps are named, and remat would make them fit
    need = memory.format_bytes(closed_form(n_train=2 * 10**6, n_steps=10**7))
    with pytest.raises(ValueError) as err:
        config(n_train=2 * 10**6, n_steps=10**7)
    assert str(err.value) == (
        f"cartpole: n_steps=10000000 needs about {need} of memory (states, the rollout kept for the backward pass, weights, metrics), "
        "more than this machine's 10 GiB; give a smaller --steps or add --remat (checkpointed rollouts)"
    )
    # n_train 10**8 adds 77 GiB, 10**6 steps 6.1 GiB: n_train is named; remat would not make it fit
    with pytest.raises(ValueError, match=r"^n_train=100000000 needs about .* GiB .*; give a smaller --n-train$"):
        config(n_train=10**8, n_steps=10**6)
    with pytest.raises(ValueError, match=r"^epochs=100000000 needs about 37.3 GiB .*; give a smaller --epochs$"):
        config(epochs=10**8)  # one metrics row per epoch


def test_a_sweeps_group_is_its_seeds_and_clips_together(monkeypatch):
    sweep = lambda seeds: SweepSpec.from_preset("cartpole", epochs=10, seeds=seeds, levels=(1,))  # noqa: E731
    one = memory.estimate(sweep(1).run_config(1, "R", "none", 42))
    monkeypatch.setattr(memory, "machine_memory", lambda: 3 * 4 * one)  # 3 clip modes × 4 seeds
    assert len(sweep(4).grid()) == 4 * 3 * 4  # methods × clips × seeds
    with pytest.raises(ValueError, match=r"^seeds=5 needs about .*; give a smaller --seeds( or add --remat .*)?$"):
        sweep(5)


def test_bench_runs_are_refused_before_any_program_is_built():
    with pytest.raises(ValueError, match=r"^runs=1000000000000 needs about .*; give a smaller --runs$"):
        run_bench("cartpole", "R", runs=10**12, peak={"size": 1, "gflops_per_second": 1.0})


def test_bytes_are_written_in_binary_units():
    assert [memory.format_bytes(n) for n in (0, 1000, 1023, 1024, 1536, 2**30 * 23.5, 2**40 * 749, 2**60 * 1e4)] == [
        "0 bytes", "1000 bytes", "1023 bytes", "1 KiB", "1.5 KiB", "23.5 GiB", "749 TiB", "1e+04 EiB",
    ]  # fmt: skip
    assert memory.machine_memory() > 2**20
