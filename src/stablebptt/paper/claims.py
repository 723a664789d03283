"""The paper's claims (docs/method.md, "What the paper reports") against the committed runs: outcomes paired per seed, and the rule that gives each verdict.

Every number a verdict cites is computed here from the runs' own files, so
prose cannot drift from the data. The same seed means the same data and
initial weights for every method and clip mode, so two settings are compared
within a seed: "C ends below R in k of n seeds", with the ratio per seed.

A *comparison* pits a claimed winner against a loser at one difficulty:
both at the same clip mode (``clip none``, ``clip value``, ``clip norm``),
or each at its own best clip mode (``best clip``: the lowest mean final test
loss of the clip modes it ran, chosen per difficulty over the seeds that all
those modes ran, so that a mode with more seeds is not judged on other data)
— R as a practitioner would run it. Brax comparisons compare returns (higher wins) of one setting.

The rule (:data:`RULE`), applied by :func:`verdict`: a claim *holds* when the
claimed winner ends lower in every paired seed at every difficulty the claim
names; it *holds in part* when it ends lower in more than half of those
pairs; otherwise it *does not hold*.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import tables
from ..atomic import atomic_write_text
from ..runs import rundir
from ..sweeps.presets import EXPERIMENTS
from ..sweeps.spec import SWEEP_CONFIG, read_sweep

__all__ = [
    "RULE",
    "CLAIMS",
    "CLAIM_COLUMNS",
    "VERDICT_COLUMNS",
    "Claim",
    "seed_outcomes",
    "claim_rows",
    "verdict",
    "verdicts",
    "write_claims",
    "result_folders",
    "readme_blocks",
    "rewrite_blocks",
    "verdicts_markdown",
    "lq_verdicts",
    "unclipped_pairs",
    "unclipped_rows",
    "fmt",
]

RULE = (
    "A claim **holds** when the claimed winner ends with the lower final test loss (the higher return on Brax) "
    "in every paired seed at every difficulty the claim names; it **holds in part** when it ends lower in more "
    "than half of those pairs; otherwise it **does not hold**. Pairs are within a seed (same data, same initial "
    "weights). Verdicts are given for each clip mode on its own, for the three clip modes pooled "
    "(`same clip`), and for each method at its own best clip mode (`best clip`: the clip mode with the lowest "
    "mean final test loss at that difficulty, over the seeds all its clip modes ran), which compares with R as a "
    "practitioner would run it."
)

CLAIM_COLUMNS = (
    "claim", "task", "level", "counted", "comparison", "winner", "winner_clip", "loser", "loser_clip",
    "seeds", "wins", "winner_finals", "loser_finals", "ratios",
    "winner_mean", "winner_std", "loser_mean", "loser_std", "winner_best_mean", "loser_best_mean",
    "winner_initial_mean", "loser_initial_mean",
)  # fmt: skip
"""Columns of ``claims.csv``: one row per claim × task × difficulty × comparison.

counted: whether the difficulty is one the claim names (only those enter the
verdict). winner/loser: the claimed winner and loser, each with its clip mode.
wins: in how many of the paired ``seeds`` the winner ends lower (higher return
on Brax). *_finals: the final test loss (Brax: return) per seed, ``;``-joined in
seed order. ratios: loser / winner per seed. *_best_mean: the lowest test loss
over the epochs, mean over seeds. *_initial_mean: the loss before training.
"""

VERDICT_COLUMNS = ("claim", "task", "comparison", "levels", "pairs", "wins", "verdict")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the paper's statements: ``winner`` ends below ``loser`` at the difficulties it names.

    levels: ``"all"``, or ``"harder"`` (every level but the easiest: "as a task gets harder").
    """

    key: str
    text: str
    winner: str
    loser: str
    levels: str = "all"


CLAIMS = (
    Claim("harder", "As a task gets harder, R no longer gives precise control while C still solves it", "C", "R", "harder"),
    Claim("c_beats_m", "C beats M", "C", "M"),
    Claim("s_fails", "S cannot learn tasks whose loss needs feedback across many steps: S ends above C", "C", "S"),
)

BRAX_PAIRS = (("C", "R"), ("C", "M"), ("C", "APG-default"), ("R", "APG-default"))
TEXTS = {c.key: c.text for c in CLAIMS} | {
    "brax": "Not in the paper: Brax, whole-episode return (higher wins)",
    "lq_minima": "The minima are unchanged (linear-quadratic task)",
}


def fmt(x: float) -> str:
    """How the claims print a number: 3 significant digits (``nan`` as ``—``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.3g}"


def seed_outcomes(folder: Path) -> dict[tuple, dict[int, dict]]:
    """``(level, method, clip) -> {seed: {"final", "best", "initial"}}`` for every finished run of a sweep folder
    (a diverged run's final loss is ``inf``: it ended worse than any finite loss)."""
    spec = read_sweep(folder)
    found: dict[tuple, dict[int, dict]] = {}
    for run in spec.grid():
        path = Path(folder) / run.path
        summary = _ended(path)
        if summary is None:
            continue
        history = rundir.read_metrics(path / rundir.METRICS)
        finite = [r["test_loss"] for r in history if math.isfinite(r["test_loss"])]
        found.setdefault((run.level, run.method, run.clip), {})[run.seed] = {
            "final": history[-1]["test_loss"] if summary["status"] == "finished" else math.inf,
            "best": min(finite) if finite else math.inf,
            "initial": (summary.get("initial") or {}).get("test_loss", math.nan),
        }
    return found


def _ended(path: Path) -> dict | None:
    """A run's summary if it finished or diverged, else None (not started, or still training)."""
    summary = rundir.read_summary(path)
    return summary if summary is not None and summary.get("status") in ("finished", "diverged") else None


def _trained_numbers(path: Path) -> list[dict] | None:
    """An ended run's :func:`~stablebptt.runs.rundir.trained_numbers`, else None."""
    return rundir.trained_numbers(path / rundir.METRICS) if _ended(path) is not None else None


def unclipped_pairs(folder: Path) -> list[dict]:
    """Where clipping never acted: per difficulty × method, the seeds whose clip value and clip norm runs
    are identical epoch by epoch (every metric, wall times aside).

    The two runs differ only in their clip limits (each component to ±1, the norm to 1), so they can
    only be identical if neither limit was ever reached; a difference between such a run and its clip
    none run is then not clipping's doing. Rows: ``task``, ``level``, ``method``, ``identical`` (the
    seeds, in order), ``pairs`` (seeds with both runs finished).
    """
    spec = read_sweep(folder)
    runs = {(run.level, run.method, run.seed, run.clip): run for run in spec.grid()}
    found: dict[tuple, dict[str, list[int]]] = {}
    for (level, method, seed, clip), run in runs.items():
        if clip != "value" or (level, method, seed, "norm") not in runs:
            continue
        value = _trained_numbers(Path(folder) / run.path)
        norm = _trained_numbers(Path(folder) / runs[(level, method, seed, "norm")].path)
        if value is None or norm is None:
            continue
        entry = found.setdefault((level, method), {"identical": [], "pairs": []})
        entry["pairs"].append(seed)
        if value == norm:
            entry["identical"].append(seed)
    return [
        dict(task=spec.experiment, level=level, method=method, identical=entry["identical"], pairs=entry["pairs"])
        for (level, method), entry in found.items()
    ]


def unclipped_rows(results: Path) -> list[dict]:
    """:func:`unclipped_pairs` of every committed sweep folder under ``results``."""
    return [u for folder in _sweep_folders(results) for u in unclipped_pairs(folder)]


def _best_clip(outcomes: dict, level: Any, method: str, clips: Iterable[str]) -> str | None:
    """The clip mode of ``method`` with the lowest mean final test loss, over the seeds every one of its modes ran
    (over each mode's own seeds where they share none); the first on a tie."""
    ran = {c: outcomes[(level, method, c)] for c in clips if (level, method, c) in outcomes}
    shared = set.intersection(*(set(by_seed) for by_seed in ran.values())) if ran else set()
    means = {c: np.mean([o["final"] for s, o in by_seed.items() if not shared or s in shared]) for c, by_seed in ran.items()}
    return min(means, key=lambda c: (means[c], list(means).index(c))) if means else None


def _pair_row(claim: str, task: str, level: Any, counted: bool, comparison: str, win: tuple, lose: tuple, higher_wins: bool = False) -> dict | None:
    """One comparison: ``win``/``lose`` are ``(method, clip, {seed: outcome})``."""
    (wm, wc, w), (lm, lc, l) = win, lose
    seeds = sorted(set(w) & set(l))
    if not seeds:
        return None
    wf, lf = [w[s]["final"] for s in seeds], [l[s]["final"] for s in seeds]
    std = lambda xs: float(np.std(xs)) if all(map(math.isfinite, xs)) else math.nan  # noqa: E731 — a diverged seed has no spread
    wins = sum((a > b) if higher_wins else (a < b) for a, b in zip(wf, lf, strict=True))
    ratio = lambda a, b: b / a if a not in (0.0,) and math.isfinite(a) and math.isfinite(b) else math.nan  # noqa: E731
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    return {
        "claim": claim, "task": task, "level": level, "counted": counted, "comparison": comparison,
        "winner": wm, "winner_clip": wc, "loser": lm, "loser_clip": lc, "seeds": len(seeds), "wins": wins,
        "winner_finals": ";".join(fmt(x) for x in wf), "loser_finals": ";".join(fmt(x) for x in lf),
        "ratios": ";".join(fmt(ratio(a, b)) for a, b in zip(wf, lf, strict=True)),
        "winner_mean": mean(wf), "winner_std": std(wf), "loser_mean": mean(lf), "loser_std": std(lf),
        "winner_best_mean": mean([w[s]["best"] for s in seeds]), "loser_best_mean": mean([l[s]["best"] for s in seeds]),
        "winner_initial_mean": mean([w[s]["initial"] for s in seeds]), "loser_initial_mean": mean([l[s]["initial"] for s in seeds]),
    }  # fmt: skip


def sweep_claim_rows(folder: Path) -> list[dict]:
    """Every claim's comparisons in one sweep folder (cart pole, repulsion or quantum)."""
    spec = read_sweep(folder)
    outcomes = seed_outcomes(folder)
    easiest = EXPERIMENTS[spec.experiment].levels[0]
    rows = []
    for claim in CLAIMS:
        for level in spec.levels:
            counted = claim.levels == "all" or level != easiest
            clips = [c for c in spec.clips if (level, claim.winner, c) in outcomes or (level, claim.loser, c) in outcomes]
            for clip in clips:
                win, lose = outcomes.get((level, claim.winner, clip), {}), outcomes.get((level, claim.loser, clip), {})
                row = _pair_row(claim.key, spec.experiment, level, counted, f"clip {clip}", (claim.winner, clip, win), (claim.loser, clip, lose))
                rows += [row] if row else []
            wc, lc = _best_clip(outcomes, level, claim.winner, clips), _best_clip(outcomes, level, claim.loser, clips)
            if wc and lc:
                row = _pair_row(
                    claim.key, spec.experiment, level, counted, "best clip",
                    (claim.winner, wc, outcomes[(level, claim.winner, wc)]), (claim.loser, lc, outcomes[(level, claim.loser, lc)]),
                )  # fmt: skip
                rows += [row] if row else []
    return rows


def brax_claim_rows(folder: Path) -> list[dict]:
    """Paired returns of a Brax comparison (``peer.json``): C against R, M and Brax's APG, R against APG."""
    from .brax_peer import PeerSpec, _results

    spec = PeerSpec.read(folder)
    found = {m: {r["seed"]: {"final": r["final_return"], "best": max(r["returns"]), "initial": r["returns"][0]} for r in runs}
             for m, runs in _results(spec, folder).items()}  # fmt: skip
    rows = []
    for a, b in BRAX_PAIRS:
        if a in found and b in found:
            row = _pair_row("brax", f"brax {spec.env}", spec.n_steps, True, f"{a} vs {b}", (a, "none", found[a]), (b, "none", found[b]), higher_wins=True)
            rows += [row] if row else []
    return rows


def result_folders(results: Path) -> list[Path]:
    """The sweep and Brax comparison folders under ``results`` (``NAME/sweep.json``, ``brax/ENV/peer.json``)."""
    results = Path(results)
    return sorted(p.parent for p in [*results.glob(f"*/{SWEEP_CONFIG}"), *results.glob("brax/*/peer.json")])


def _sweep_folders(results: Path) -> list[Path]:
    """The committed sweep folders under ``results`` (``NAME/sweep.json``), in the experiments' order."""
    return [Path(results) / name for name in EXPERIMENTS if (Path(results) / name / SWEEP_CONFIG).is_file()]


def claim_rows(results: Path) -> list[dict]:
    """Every comparison of every committed folder under ``results`` (sweeps first, then Brax)."""
    results = Path(results)
    rows = [row for folder in _sweep_folders(results) for row in sweep_claim_rows(folder)]
    for folder in sorted(p.parent for p in results.glob("brax/*/peer.json")):
        rows += brax_claim_rows(folder)
    return rows


def verdict(pairs: int, wins: int) -> str:
    """The rule: every pair → holds; more than half → holds in part; else does not hold (no pair: not run)."""
    if pairs == 0:
        return "not run"
    if wins == pairs:
        return "holds"
    return "holds in part" if 2 * wins > pairs else "does not hold"


def verdicts(rows: list[dict]) -> list[dict]:
    """The rule applied per claim × task × comparison to the counted rows, plus ``same clip`` (the clip modes pooled)."""
    out = []
    keys = dict.fromkeys((r["claim"], r["task"]) for r in rows)
    for claim, task in keys:
        mine = [r for r in rows if r["claim"] == claim and r["task"] == task and r["counted"]]
        comparisons = list(dict.fromkeys(r["comparison"] for r in mine))
        groups = [(c, [r for r in mine if r["comparison"] == c]) for c in comparisons]
        clipped = [r for r in mine if r["comparison"].startswith("clip ")]
        if len({r["comparison"] for r in clipped}) > 1:
            groups.append(("same clip", clipped))
        for comparison, chosen in groups:
            pairs, wins = sum(r["seeds"] for r in chosen), sum(r["wins"] for r in chosen)
            levels = ",".join(dict.fromkeys(str(r["level"]) for r in chosen))
            out.append({"claim": claim, "task": task, "comparison": comparison, "levels": levels, "pairs": pairs, "wins": wins, "verdict": verdict(pairs, wins)})
    return out


LQ_FIXED, LQ_REACHED = 1e-9, 1e-3
"""The LQ check's thresholds: θ* is a fixed point of a method when its update there has norm below
``LQ_FIXED``; a method reaches θ* when it ends within ``LQ_REACHED`` of it from every start."""

LQ_TEXT = (
    "Reviewers: a linear-quadratic case with a known answer. The abstract: modifications of the backward pass "
    f"leave the positions of the minima unchanged. θ* is a fixed point of a method when its update there has norm "
    f"below {LQ_FIXED:g}; the claim **holds** for a method when θ* is a fixed point at every control cost ρ, "
    "**holds in part** at some, and **does not hold** at none. Whether training from the zero gain and from θ* + 0.1 "
    f"then reaches θ* (ends within {LQ_REACHED:g}) is shown beside it"
)


def lq_verdicts(folder: Path) -> list[dict]:
    """The abstract's claim on the linear-quadratic task, per method M and C over the control costs ρ:
    ``pairs`` settings, ``wins`` of them with θ* a fixed point; ``settings`` holds the numbers per ρ."""
    import csv

    path = Path(folder) / "table.csv"
    if not path.is_file():
        return []
    table = list(csv.DictReader(path.open(encoding="utf-8")))
    out = []
    for method in ("M", "C"):
        settings = []
        for rho in dict.fromkeys(r["control_cost"] for r in table):
            mine = [r for r in table if r["control_cost"] == rho and r["method"] == method]
            if mine:
                at_optimum = max(float(r["update_norm_at_optimum"]) for r in mine)
                farthest = max(float(r["distance"]) for r in mine)
                settings.append({"rho": float(rho), "update_at_optimum": at_optimum, "farthest": farthest,
                                 "fixed": at_optimum < LQ_FIXED, "reached": farthest < LQ_REACHED})  # fmt: skip
        if not settings:
            continue
        fixed = sum(s["fixed"] for s in settings)
        out.append({
            "claim": "lq_minima", "task": "lq", "comparison": method, "levels": ",".join(fmt(s["rho"]) for s in settings),
            "pairs": len(settings), "wins": fixed,
            "verdict": "holds" if fixed == len(settings) else "holds in part" if fixed else "does not hold",
            "settings": settings,
        })  # fmt: skip
    return out


def claims_markdown(rows: list[dict], judged: list[dict], unclipped: Iterable[dict] = ()) -> str:
    """``claims.md``: the rule, the verdicts, every comparison with its per-seed numbers, and where clipping
    never acted (:func:`unclipped_pairs`, the rows with an identical seed)."""
    texts = TEXTS
    lines = ["# The paper's claims, paired per seed", "", "Generated by `stablebptt report results` from the committed runs; do not edit.", "", RULE, ""]
    lines += ["## Verdicts", ""]
    lines.append(tables.render(
        ("claim", "task", "comparison", "difficulties", "claimed winner lower in", "verdict"),
        ((texts[v["claim"]], v["task"], v["comparison"], v["levels"], f"{v['wins']} of {v['pairs']}", f"**{v['verdict']}**") for v in judged),
    ))  # fmt: skip
    lines += ["", "## Comparisons", "", "Final test loss (Brax: return) per seed, in seed order; ratio = loser / winner; `*`: a difficulty the claim does not name.", ""]
    lines.append(tables.render(
        ("claim", "task", "difficulty", "comparison", "winner", "loser", "wins", "winner per seed", "loser per seed", "ratio",
         "winner mean ± std", "loser mean ± std"),
        (
            (r["claim"], r["task"], f"{r['level']}" + ("" if r["counted"] else " *"), r["comparison"], f"{r['winner']} ({r['winner_clip']})",
             f"{r['loser']} ({r['loser_clip']})", f"{r['wins']}/{r['seeds']}", r["winner_finals"], r["loser_finals"], r["ratios"],
             f"{fmt(r['winner_mean'])} ± {fmt(r['winner_std'])}", f"{fmt(r['loser_mean'])} ± {fmt(r['loser_std'])}")
            for r in rows
        ),
    ))  # fmt: skip
    if any(u["identical"] for u in unclipped):
        lines += ["", "## Where clipping never acted", "",
                  "Seeds whose clip value and clip norm runs are identical epoch by epoch (every metric): neither "
                  "clip limit was ever reached, so those runs' difference from clip none is not clipping's doing "
                  "(a program of another size rounds differently, and the differences grow over training).", ""]  # fmt: skip
        lines.append(tables.render(
            ("task", "difficulty", "method", "identical in", "seeds"),
            ((u["task"], u["level"], u["method"], f"{len(u['identical'])} of {len(u['pairs'])}", ", ".join(map(str, u["identical"])))
             for u in unclipped if u["identical"]),
        ))  # fmt: skip
    return "\n".join(lines) + "\n"


def write_claims(results: Path) -> tuple[list[dict], list[dict]]:
    """Write ``claims.csv``, ``verdicts.csv`` and ``claims.md`` into ``results``; returns the rows and verdicts."""
    results = Path(results)
    rows = claim_rows(results)
    judged = verdicts(rows) + lq_verdicts(results / "lq")
    atomic_write_text(results / "claims.csv", rundir.csv_text(CLAIM_COLUMNS, rows))
    atomic_write_text(results / "verdicts.csv", rundir.csv_text(VERDICT_COLUMNS, judged))
    atomic_write_text(results / "claims.md", claims_markdown(rows, judged, unclipped_rows(results)))
    return rows, judged


def _judged(judged: list[dict], claim: str, task: str, comparison: str) -> str:
    for v in judged:
        if (v["claim"], v["task"], v["comparison"]) == (claim, task, comparison):
            return f"{v['wins']}/{v['pairs']} {v['verdict']}"
    return "—"


def protocol_text(results: Path) -> str:
    """The sweeps' shared protocol in one sentence, read from their ``sweep.json``."""
    specs = [read_sweep(f) for f in result_folders(results) if (f / SWEEP_CONFIG).is_file()]
    settings = {(s.epochs, s.n_train, s.n_test, s.batch_size, s.learning_rate, s.adam) for s in specs}
    if len(settings) != 1:
        return "The sweeps differ in their protocol: see each folder's `sweep.json`."
    ((epochs, n_train, n_test, batch, lr, adam),) = settings
    seeds = ", ".join(f"{s.experiment} {len(s.seeds)}" for s in specs)
    return (
        f"Protocol of every sweep: {epochs} epochs, {n_train} training and {n_test} test initial states, mini-batches of "
        f"{batch}, {adam}-form Adam with learning rate {lr:g}; seeds: {seeds} (the most any setting has)."
    )


def verdicts_markdown(rows: list[dict], judged: list[dict], protocol: str = "") -> str:
    """The verdict tables the READMEs show (between markers that :func:`rewrite_blocks` fills)."""
    lines = ["Generated from the committed runs by `stablebptt report results`. " + protocol, "", RULE, ""]
    tasks = list(dict.fromkeys(r["task"] for r in rows if not r["task"].startswith("brax")))
    comparisons = ["clip none", "clip value", "clip norm", "same clip", "best clip"]
    named = [(claim, task, levels) for claim in CLAIMS for task in tasks
             if (levels := next((v["levels"] for v in judged if (v["claim"], v["task"]) == (claim.key, task)), None)) is not None]  # fmt: skip
    lines.append(tables.render(
        ("claim", "task", "difficulties", *comparisons),
        ((claim.text, task, levels, *(_judged(judged, claim.key, task, c) for c in comparisons)) for claim, task, levels in named),
    ))  # fmt: skip
    lines += ["", "Each at its best clip mode, per difficulty (final test loss, mean over the paired seeds):", ""]
    lines.append(tables.render(
        ("claim", "task", "difficulty", "winner", "loser", "winner lower in", "winner final", "loser final"),
        (
            (r["claim"], r["task"], f"{r['level']}" + ("" if r["counted"] else " (not named)"), f"{r['winner']} (clip {r['winner_clip']})",
             f"{r['loser']} (clip {r['loser_clip']})", f"{r['wins']} of {r['seeds']}", fmt(r["winner_mean"]), fmt(r["loser_mean"]))
            for r in rows
            if r["comparison"] == "best clip"
        ),
    ))  # fmt: skip
    brax = [r for r in rows if r["claim"] == "brax"]
    if brax:
        lines += ["", f"{TEXTS['brax']}, per seed in seed order:", ""]
        lines.append(tables.render(
            ("task", "episode steps", "comparison", "first wins in", "first per seed", "second per seed", "first mean", "second mean", "verdict"),
            (
                (r["task"], r["level"], f"{r['winner']} vs {r['loser']}", f"{r['wins']} of {r['seeds']}", r["winner_finals"], r["loser_finals"],
                 fmt(r["winner_mean"]), fmt(r["loser_mean"]), verdict(r["seeds"], r["wins"]))
                for r in brax
            ),
        ))  # fmt: skip
    lq = [v for v in judged if v["claim"] == "lq_minima"]
    if lq:
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        lines += ["", LQ_TEXT + ":", ""]
        lines.append(tables.render(
            ("method", "ρ", "‖update‖ at θ*", "θ* a fixed point", "farthest end from θ*", "reaches θ*", "verdict"),
            (
                (v["comparison"], fmt(st["rho"]), fmt(st["update_at_optimum"]), yes(st["fixed"]), fmt(st["farthest"]), yes(st["reached"]),
                 f"{v['wins']} of {v['pairs']}: **{v['verdict']}**" if i == 0 else "")
                for v in lq
                for i, st in enumerate(v["settings"])
            ),
        ))  # fmt: skip
    return "\n".join(lines) + "\n"


MARK = "<!-- generated: {} {} -->"


def readme_blocks(rows: list[dict], judged: list[dict], protocol: str = "") -> dict[str, str]:
    """The generated blocks a README may mark: ``verdicts`` (the protocol and every verdict table)."""
    return {"verdicts": verdicts_markdown(rows, judged, protocol)}


def rewrite_blocks(path: Path, blocks: dict[str, str]) -> bool:
    """Replace the text between ``<!-- generated: NAME start -->`` and ``<!-- generated: NAME end -->``
    in ``path`` by ``blocks[NAME]`` for every block the file marks; returns whether it changed.

    Raises a one-line ValueError for a start marker without its end.
    """
    path = Path(path)
    text = original = path.read_text(encoding="utf-8")
    for name, body in blocks.items():
        start, end = MARK.format(name, "start"), MARK.format(name, "end")
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        if end not in rest:
            raise ValueError(f"{path} marks the start of the generated block {name!r} but not its end ({end}); add it")
        text = head + start + "\n" + body.rstrip("\n") + "\n" + end + rest.split(end, 1)[1]
    if text != original:
        atomic_write_text(path, text)
    return text != original
