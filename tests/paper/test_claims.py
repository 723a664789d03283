"""The claims table: paired per seed, the verdict rule, and prose that cites only generated numbers."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest

from stablebptt.paper import claims
from stablebptt.runs import rundir

from ..helpers import without_brax

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


def outcome(final, best=None, initial=1.0):
    return {"final": final, "best": final if best is None else best, "initial": initial}


def test_pairs_are_within_a_seed():
    win = {42: outcome(0.1), 43: outcome(0.5), 44: outcome(0.2)}
    lose = {42: outcome(0.3), 43: outcome(0.4), 45: outcome(9.0)}  # seed 45 has no partner; 44 neither
    row = claims._pair_row("c", "t", 2, True, "clip none", ("C", "none", win), ("R", "none", lose))
    assert row["seeds"] == 2 and row["wins"] == 1
    assert row["winner_finals"] == "0.1;0.5" and row["loser_finals"] == "0.3;0.4" and row["ratios"] == "3;0.8"
    assert row["winner_mean"] == pytest.approx(0.3) and row["loser_std"] == pytest.approx(0.05)
    returns = claims._pair_row("b", "t", 100, True, "C vs R", ("C", "none", win), ("R", "none", lose), higher_wins=True)
    assert returns["wins"] == 1  # seed 43: 0.5 > 0.4
    assert claims._pair_row("c", "t", 2, True, "x", ("C", "none", {42: outcome(1)}), ("R", "none", {43: outcome(1)})) is None


def test_a_diverged_run_loses_its_pair():
    row = claims._pair_row("c", "t", 2, True, "x", ("C", "none", {42: outcome(5.0)}), ("R", "none", {42: outcome(math.inf)}))
    assert row["wins"] == 1


def test_best_clip_is_the_lowest_mean_final_loss():
    outcomes = {
        (2, "R", "none"): {42: outcome(0.9), 43: outcome(0.7)},
        (2, "R", "value"): {42: outcome(0.2), 43: outcome(0.8)},  # mean 0.5: the best
        (2, "R", "norm"): {42: outcome(0.1), 43: outcome(1.0)},  # mean 0.55
    }
    assert claims._best_clip(outcomes, 2, "R", ["none", "value", "norm"]) == "value"
    assert claims._best_clip(outcomes, 2, "C", ["none", "value", "norm"]) is None
    # more seeds of one mode: the modes are compared on the seeds they share (value's 0.5 against none's 0.8),
    # not none's mean over all its seeds (0.2), which would judge it on other data
    outcomes[(2, "R", "none")] |= {s: outcome(0.0) for s in range(44, 50)}
    assert claims._best_clip(outcomes, 2, "R", ["none", "value", "norm"]) == "value"
    # modes with no seed in common: each on its own seeds
    apart = {(1, "C", "none"): {42: outcome(0.3)}, (1, "C", "value"): {43: outcome(0.2)}}
    assert claims._best_clip(apart, 1, "C", ["none", "value", "norm"]) == "value"


@pytest.mark.parametrize(
    "pairs, wins, expected",
    [(9, 9, "holds"), (9, 8, "holds in part"), (9, 5, "holds in part"), (10, 5, "does not hold"), (3, 0, "does not hold"), (0, 0, "not run")],
)
def test_the_rule(pairs, wins, expected):
    assert claims.verdict(pairs, wins) == expected


def test_verdicts_pool_the_clip_modes_and_count_only_named_levels():
    row = lambda level, counted, comparison, seeds, wins: {  # noqa: E731
        "claim": "harder", "task": "cartpole", "level": level, "counted": counted, "comparison": comparison, "seeds": seeds, "wins": wins,
    }  # fmt: skip
    rows = [row(1, False, "clip none", 3, 0), row(2, True, "clip none", 3, 3), row(2, True, "clip norm", 3, 1), row(2, True, "best clip", 3, 2)]
    got = {v["comparison"]: (v["pairs"], v["wins"], v["verdict"]) for v in claims.verdicts(rows)}
    assert got == {"clip none": (3, 3, "holds"), "clip norm": (3, 1, "does not hold"), "best clip": (3, 2, "holds in part"), "same clip": (6, 4, "holds in part")}


def test_clipping_never_acted_where_clip_value_and_clip_norm_runs_are_identical(tmp_path):
    """On copies of committed runs (cart pole, 1 pole, S: seeds 42 and 43 identical, 44 not), changed by one digit."""
    import shutil

    source = RESULTS / "cartpole"
    shutil.copy(source / "sweep.json", tmp_path / "sweep.json")
    for clip in ("value", "norm"):
        for seed in (42, 43, 44):
            shutil.copytree(source / f"runs/poles1/S-{clip}-seed{seed}", tmp_path / f"runs/poles1/S-{clip}-seed{seed}")
    expected = {"task": "cartpole", "level": 1, "method": "S", "identical": [42, 43], "pairs": [42, 43, 44]}
    assert claims.unclipped_pairs(tmp_path) == [expected]

    def edit(run: str, column: str, change) -> None:
        path = tmp_path / "runs/poles1" / run / rundir.METRICS
        rows = rundir.read_metrics(path)
        rows[-1][column] = change(rows[-1][column])
        path.write_text(rundir.csv_text(tuple(rows[0]), rows))

    edit("S-norm-seed42", "seconds", lambda v: v + 1.0)  # wall times aside
    assert claims.unclipped_pairs(tmp_path) == [expected]
    edit("S-norm-seed43", "test_loss", lambda v: float(np.nextafter(np.float32(v), np.float32(1))))  # one float32 step
    assert claims.unclipped_pairs(tmp_path) == [{**expected, "identical": [42]}]
    (tmp_path / "runs/poles1/S-value-seed42" / "summary.json").unlink()  # not finished: no pair
    assert claims.unclipped_pairs(tmp_path) == [{**expected, "identical": [], "pairs": [43, 44]}]
    assert "| cartpole | 1 | S | 2 of 3 | 42, 43 |" in claims.claims_markdown([], [], [expected])
    assert "Where clipping never acted" not in claims.claims_markdown([], [], [{**expected, "identical": []}])


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_claims_regenerated_from_the_committed_runs_equal_the_committed_ones(monkeypatch):
    without_brax(monkeypatch)  # reading committed Brax comparisons needs no Brax
    rows = claims.claim_rows(RESULTS)
    judged = claims.verdicts(rows) + claims.lq_verdicts(RESULTS / "lq")
    assert rundir.csv_text(claims.CLAIM_COLUMNS, rows) == (RESULTS / "claims.csv").read_bytes().decode()
    assert rundir.csv_text(claims.VERDICT_COLUMNS, judged) == (RESULTS / "verdicts.csv").read_bytes().decode()
    assert claims.claims_markdown(rows, judged, claims.unclipped_rows(RESULTS)) == (RESULTS / "claims.md").read_text(encoding="utf-8")
    block = claims.verdicts_markdown(rows, judged, claims.protocol_text(RESULTS))
    for readme in (RESULTS / "README.md", ROOT / "README.md"):  # the printed verdicts are the generated ones
        text = readme.read_text(encoding="utf-8")
        start, end = claims.MARK.format("verdicts", "start"), claims.MARK.format("verdicts", "end")
        assert text.split(start, 1)[1].split(end, 1)[0].strip("\n") == block.strip("\n"), readme


def test_the_rule_applied_to_the_committed_claims_gives_every_printed_verdict():
    for v in read_csv(RESULTS / "verdicts.csv"):
        if v["claim"] == "lq_minima":
            continue
        assert claims.verdict(int(v["pairs"]), int(v["wins"])) == v["verdict"], v
    rows = read_csv(RESULTS / "claims.csv")
    for v in read_csv(RESULTS / "verdicts.csv"):
        if v["claim"] == "lq_minima" or v["comparison"] == "same clip":
            continue
        mine = [r for r in rows if (r["claim"], r["task"], r["comparison"], r["counted"]) == (v["claim"], v["task"], v["comparison"], "True")]
        assert sum(int(r["seeds"]) for r in mine) == int(v["pairs"]) and sum(int(r["wins"]) for r in mine) == int(v["wins"])


NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")


def generated_numbers() -> list[float]:
    found = []
    for name in ("claims.csv", "verdicts.csv"):
        for row in read_csv(RESULTS / name):
            for cell in row.values():
                for part in str(cell).replace(",", ";").split(";"):
                    try:
                        found.append(float(part))
                    except ValueError:
                        pass
    return found


def printed_as(value: float, text: str) -> bool:
    digits = len(text.lstrip("-−").replace(".", "").split("e")[0].lstrip("0")) or 1
    return math.isfinite(value) and float(f"{value:.{digits}g}") == float(text.replace("−", "-"))


def prose(path: Path, heading: str) -> str:
    """The section under ``heading`` without its generated blocks, links, images and code."""
    text = path.read_text(encoding="utf-8").split(heading, 1)[1].split("\n", 1)[1]  # below the heading's line
    text = re.split(r"\n## ", text, maxsplit=1)[0]
    text = re.sub(r"<!-- generated: (\w+) start -->.*?<!-- generated: \1 end -->", "", text, flags=re.S)
    text = re.sub(r"!?\[[^\]]*\]\([^)]*\)", "", text)
    return re.sub(r"`[^`]*`", "", text)


@pytest.mark.parametrize("path, heading", [(RESULTS / "README.md", "## Verdicts"), (ROOT / "README.md", "## Results")], ids=["results", "readme"])
def test_every_number_in_the_verdict_prose_is_a_generated_one(path, heading):
    numbers = generated_numbers()
    text = prose(path, heading)
    missing = [n for n in NUMBER.findall(text) if not any(printed_as(v, n) for v in numbers)]
    assert not missing, f"{path.name}: numbers not in claims.csv or verdicts.csv: {missing}"
