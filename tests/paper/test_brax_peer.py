"""The Brax comparison's table and figure are derived from what its runs wrote; bad budgets are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stablebptt.paper import brax_peer
from stablebptt.runs import rundir
from stablebptt.paper.brax_peer import PeerSpec


def fake_outputs(spec: PeerSpec, out):
    """APG result files and stablebptt run folders with known numbers."""
    rng = np.random.default_rng(0)
    want = {}
    for method in brax_peer.APG_VARIANTS + spec.methods:
        want[method] = []
        for seed in spec.seeds:
            final = float(rng.normal(100, 10))
            want[method].append(final)
            if method.startswith("APG"):
                path = out / "apg" / f"{method}-seed{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                curve = [{"simulator_steps": 0, "return": 1.0}, {"simulator_steps": spec.simulator_steps, "return": final}]
                path.write_text(json.dumps({"final_return": final, "wall_seconds": 2.0, "curve": curve}))
            else:
                run = out / "runs" / f"{method}-seed{seed}"
                run.mkdir(parents=True)
                rows = [{"epoch": e, "batch_loss": 0.0, "train_loss": 0.0, "test_loss": -final + (spec.epochs - e), "update_sq_norm": float(e * (seed - 41)), "cosine_mr": 0.0, "seconds": 0.1} for e in range(1, spec.epochs + 1)]
                (run / rundir.METRICS).write_text(rundir.csv_text(rows[0].keys(), rows))
                (run / rundir.SUMMARY).write_text(json.dumps({"status": "finished", "initial": {"test_loss": 0.0}, "wall_seconds": 3.0}))
    return want


@pytest.fixture(scope="module")
def spec():
    return PeerSpec(env="reacher", n_steps=32, epochs=2, n_train=8, seeds=(42, 43))


def test_table_is_the_mean_and_std_of_each_methods_runs(spec, tmp_path):
    want = fake_outputs(spec, tmp_path)
    rows = brax_peer.peer_table(spec, tmp_path)
    assert [r["method"] for r in rows] == ["APG-default", "APG-matched", "R", "M", "C"]
    for row in rows:
        assert row["seeds"] == 2 and row["simulator_steps"] == 2 * 8 * 32
        assert row["final_return_mean"] == pytest.approx(np.mean(want[row["method"]]), rel=1e-12)
        assert row["final_return_std"] == pytest.approx(np.std(want[row["method"]]), rel=1e-9)
    markdown = brax_peer.peer_table_markdown(spec, rows)
    assert f"| R | {rows[2]['final_return_mean']:.4g} ± {rows[2]['final_return_std']:.2g} | 3 | 512 |" in markdown
    fig = brax_peer.peer_figure(spec, tmp_path)
    assert len(fig.axes[0].lines) == 5
    assert [line.get_label() for line in fig.axes[1].lines] == ["R", "M", "C"]  # APG logs no update sizes
    epochs = np.arange(1, spec.epochs + 1)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), epochs * np.sqrt(1 * 2), rtol=1e-12)  # seeds' sizes e·1, e·2


def test_budgets_that_do_not_split_into_apg_updates_are_refused():
    with pytest.raises(ValueError, match="not a whole number of APG updates of 8 environments × 32 steps"):
        PeerSpec(env="reacher", n_steps=100, epochs=3, n_train=32)
