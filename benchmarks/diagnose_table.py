"""``stablebptt diagnose`` on every committed setting, against the winner the committed runs measured.

    python benchmarks/diagnose_table.py [--work DIR] [--only NAME,...] [--write]

Runs ``stablebptt diagnose`` (its defaults: 10 warm-up epochs of C at the
paper's protocol, then 8 batches of 8 training states) once per setting of
``results/`` (cart pole 1-4 poles, repulsion rc 1 to 0.001, quantum targets
3-5, Brax's inverted double pendulum and reacher at the committed Brax
comparisons' horizon and training set), each as its own process, and prints a
table: the growths of R's and M's adjoints over the horizon, their sign
agreement and cosine, the suggestion, the measured winner, whether they match
and the seconds the command took (warm-up and compiling included). A
setting's ``diagnosis.json`` already in ``--work`` is reused (delete it to
measure again). ``--write`` also writes ``results/diagnose.md`` and
``results/diagnose.csv``.

The measured winner is the method among R, M and C with the lowest mean final
test loss over the seeds at clip none (the clip mode every setting ran), or the
highest mean final return on Brax, from each folder's ``table.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

# name, the diagnose command's task and options, the results folder and its level
SETTINGS = [
    *[(f"cartpole poles {p}", ["cartpole", "--poles", str(p)], "cartpole", str(p)) for p in (1, 2, 3, 4)],
    *[(f"repulsion rc {rc}", ["repulsion", "--rc", str(rc)], "repulsion", str(rc)) for rc in ("1.0", "0.1", "0.01", "0.001")],
    *[(f"quantum target {k}", ["quantum", "--target", str(k)], "quantum", str(k)) for k in (3, 4, 5)],
    *[(f"brax {env}", ["brax", "--env", env, "--steps", "100", "--n-train", "64"], f"brax/{env}", None) for env in ("inverted_double_pendulum", "reacher")],
]


def measured(folder: str, level: str | None) -> tuple[str, dict]:
    """``(winner, {method: mean final})`` among R, M, C at clip none (Brax: the final return, higher wins)."""
    with open(RESULTS / folder / "table.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if level is None:
        finals = {r["method"]: float(r["final_return_mean"]) for r in rows if r["method"] in "RMC"}
        return max(finals, key=finals.get), finals
    finals = {r["method"]: float(r["final_test_loss_mean"]) for r in rows if r["level"] == level and r["clip"] == "none" and r["method"] in "RMC"}
    return min(finals, key=finals.get), finals


def diagnose(name: str, argv: list[str], work: Path) -> dict:
    out = work / name.replace(" ", "-")
    record = out / "diagnosis.json"
    if not record.is_file():
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "stablebptt.cli", "diagnose", *argv, "--out", str(out)], env=env, capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"{name}: diagnose failed after {time.perf_counter() - start:.0f} s:\n{child.stderr[-2000:]}")
        print(child.stdout.strip(), file=sys.stderr)
    return json.loads(record.read_text(encoding="utf-8"))


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def table(rows: list[dict]) -> str:
    lines = [
        "| setting | R growth | M growth | R/M | sign agreement | cosine | suggestion | measured winner (clip none) | match | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        finals = "; ".join(f"{m} {fmt(v)}" for m, v in r["finals"].items())
        lines.append(
            f"| {r['setting']} | ×{fmt(r['growth_R'])} | ×{fmt(r['growth_M'])} | {fmt(ratio(r['growth_R'], r['growth_M']))} | "
            f"{r['sign_agreement']:.2f} | {r['cosine']:.2f} | {r['suggestion'] or 'none'} | {r['winner']} ({finals}) | "
            f"{'yes' if r['match'] else '**no**'} | {r['seconds']:.0f} |"
        )
    matches = sum(r["match"] for r in rows)
    return "\n".join(lines) + f"\n\nThe suggestion matches the measured winner in {matches} of {len(rows)} settings.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench_out" / "diagnose", help="where each setting's diagnosis is written")
    parser.add_argument("--only", default=None, help="comma-separated setting names (e.g. 'cartpole poles 2')")
    parser.add_argument("--write", action="store_true", help="also write results/diagnose.md and results/diagnose.csv")
    args = parser.parse_args()
    chosen = SETTINGS if args.only is None else [s for s in SETTINGS if s[0] in args.only.split(",")]
    rows = []
    for name, argv, folder, level in chosen:
        found = diagnose(name, argv, args.work)
        winner, finals = measured(folder, level)
        rows.append({
            "setting": name, "growth_R": found["growth"]["R"], "growth_M": found["growth"]["M"], "n_steps": found["n_steps"],
            "sign_agreement": found["sign_agreement"], "cosine": found["cosine"], "update_norm_R": found["update_norm"]["R"],
            "update_norm_M": found["update_norm"]["M"], "update_norm_C": found["update_norm"]["C"], "suggestion": found["suggestion"],
            "winner": winner, "finals": finals, "match": found["suggestion"] == winner, "seconds": found["seconds"],
        })  # fmt: skip
        print(table(rows[-1:]).splitlines()[2], file=sys.stderr)
    text = table(rows)
    print(text, end="")
    if args.write:
        (RESULTS / "diagnose.md").write_text(text, encoding="utf-8")
        buf = io.StringIO()
        fields = [k for k in rows[0] if k != "finals"] + ["final_R", "final_M", "final_C"]
        writer = csv.DictWriter(buf, fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: v for k, v in r.items() if k != "finals"}, **{f"final_{m}": v for m, v in r["finals"].items()}})
        (RESULTS / "diagnose.csv").write_text(buf.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
