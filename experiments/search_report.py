"""reports/cifar10/search.md from the studies of experiments/cifar10_search.py (issue 18).

    python experiments/search_report.py --studies studies/cifar10 --out reports/cifar10/search.md

For each exercise config: its search (trials, their statuses and compute, the winner), its winner
over seeds (validation accuracy mean ± sample std and min), the hand-tuned config before it (3 seeds,
reports/cifar10/README.md) with Welch's t of the difference, the target, and the exercise's questions
with their uncertainty (BN's gain, MC dropout's gain, each against the seeds' spread).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

# name: (the hand-tuned config's seeds 0-2 before this search, reports/cifar10/README.md (alpha_dropout:
# MC dropout); the target on the mean of 5 seeds, issue 18)
BEFORE = {"batchnorm": ([0.5490, 0.5422, 0.5474], 0.555), "selu": ([0.5076, 0.5084, 0.5102], 0.52),
          "alpha_dropout": ([0.5150, 0.5092, 0.4996], 0.52), "onecycle": ([0.5520, 0.5574, 0.5602], 0.565),
          "best": ([0.5792, 0.5874, 0.5862], 0.595)}
BASELINE = [0.4854, 0.4928, 0.4844]  # configs/cifar10/baseline.yaml, seeds 0-2 (reports/cifar10/README.md)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def stats(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{pct(statistics.mean(values))} ± {100 * std:.2f} ({pct(min(values))})"


def welch_t(a: list[float], b: list[float]) -> float:
    """(mean a - mean b) over the standard error of that difference (unequal variances)."""
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return (statistics.mean(a) - statistics.mean(b)) / se if se else math.nan


def results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("**/result.json"))]


def search_row(name: str, root: Path, seeds_folder: str = "seeds") -> dict | None:
    """The search of ``name`` and its winner's seeds in ``seeds_folder`` (``seeds<E>``: the winner
    rerun at E epochs, a row of its own). ``<config>_full``: the config's full-budget search."""
    search, seeds = root / name / "search", root / name / seeds_folder
    if not (search / "trials.csv").exists():
        return None
    with open(search / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    compute = sum(r["history"][-1]["wall_s"] for r in results(search / "trials") if r.get("history"))
    runs = [r for r in results(seeds / "runs") if r.get("status") == "ok"] if seeds.exists() else []
    winner = json.loads((root / name / "winner.json").read_text()) if (root / name / "winner.json").exists() else {}
    statuses = {s: sum(t["status"] == s for t in trials) for s in dict.fromkeys(t["status"] for t in trials)}
    config = name.removesuffix("_full")
    label = config + (", full-budget search" if name != config else "")
    label += f", {seeds_folder.removeprefix('seeds')} epochs" if seeds_folder != "seeds" else ""
    return {"name": name, "config": config, "label": label, "trials": len(trials), "statuses": statuses, "compute_s": compute,
            "winner": winner, "best_search": max((float(t["val_acc"]) for t in trials if math.isfinite(float(t["val_acc"]))), default=math.nan),
            "val": [r["val_acc"] for r in runs], "mc": [r["mc_val_acc"] for r in runs if "mc_val_acc" in r],
            "seeds_compute_s": sum(r["history"][-1]["wall_s"] for r in runs if r.get("history"))}


def short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> list[str]:
    lines = ["| config | before: hand-tuned, 3 seeds | search: trials (statuses), compute | winner | after: winner, seeds, mean ± std (min) | after − before (Welch t) | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        before, target = BEFORE[row["config"]]
        metric = row["mc"] if row["config"] == "alpha_dropout" and row["mc"] else row["val"]
        mc = " (MC)" if metric is row["mc"] else ""
        after = f"{len(metric)}: {stats(metric)}{mc}" if metric else "–"
        change = (f"{100 * (statistics.mean(metric) - statistics.mean(before)):+.2f} ({welch_t(metric, before):+.1f})"
                  if len(metric) > 1 else "–")
        met = "yes" if metric and statistics.mean(metric) >= target else "no"
        statuses = ", ".join(f"{n} {s}" for s, n in row["statuses"].items())
        winner = ", ".join(f"{short(k)} {value(v)}" for k, v in row["winner"].items())
        lines.append(f"| {row['label']} | {stats(before)}{' (MC)' if row['config'] == 'alpha_dropout' else ''} | {row['trials']} ({statuses}), "
                     f"{row['compute_s'] / 60:.0f} min + seeds {row['seeds_compute_s'] / 60:.0f} min | {winner} | {after} | {change} "
                     f"| ≥ {pct(target)} | {met} |")
    return lines


def questions(rows: dict[str, dict]) -> list[str]:
    lines = []
    bn = rows.get("batchnorm")
    if bn and bn["val"]:
        gain = statistics.mean(bn["val"]) - statistics.mean(BASELINE)
        lines.append(f"- **Is batch norm's gain larger than seed noise?** BN's searched config: {stats(bn['val'])}; the "
                     f"baseline's 3 seeds (reports/cifar10/README.md): {stats(BASELINE)}. The gain, {100 * gain:.2f} points, "
                     f"is {welch_t(bn['val'], BASELINE):.0f} standard errors (Welch); BN's worst seed beats the baseline's "
                     f"best by {100 * (min(bn['val']) - max(BASELINE)):.2f} points. Yes.")
    ad = rows.get("alpha_dropout")
    if ad and ad["mc"] and len(ad["mc"]) == len(ad["val"]) > 1:
        diffs = [m - v for m, v in zip(ad["mc"], ad["val"])]
        mean, sem = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
        lines.append(f"- **Is MC dropout's gain larger than seed noise?** Per seed, MC (30 samples) minus the "
                     f"deterministic accuracy: {', '.join(f'{100 * d:+.2f}' for d in diffs)} points; mean "
                     f"{100 * mean:+.2f} ± {100 * sem:.2f} (standard error), i.e. {mean / sem:+.1f} standard errors "
                     f"({'larger than' if abs(mean) > 2 * sem else 'within'} the noise of {len(diffs)} seeds).")
    return lines


HEADER = """# CIFAR-10: searched hyperparameters for the exercise configs (issue 18)

Each exercise config of [the study](README.md) was searched with `deeptrain tune` over its space in
`configs/search/` (Optuna TPE on Ray Tune, one torch thread per trial, validation accuracy on the
5,000 held-out training images; the short-budget searches ran one trial at a time and stop bad trials
early with ASHA; the full-budget ones ran two at a time, train every trial to early stopping, and
start from the config itself), then its winner ran over 5 seeds with `deeptrain compare` at the
config's full budget. "before" is the hand-tuned config of reports/cifar10/README.md on seeds 0-2;
Welch's t is the difference of the means over its standard error (|t| > 2: larger than the seeds'
noise). Validation only: no test split here. Compute: the sum of the trials' or seeds' wall times on
the shared 2-core machine, both cores training.

    python experiments/cifar10_search.py batchnorm selu alpha_dropout onecycle best --out studies/cifar10
    python experiments/cifar10_search.py selu_full alpha_dropout_full batchnorm_full --out studies/cifar10 --concurrent 2
    python experiments/search_report.py --studies studies/cifar10 --out reports/cifar10/search.md

"""


NOTES = "## What the searches say"  # a section written by hand below the tables, kept on rebuilds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", default="studies/cifar10", help="the --out of experiments/cifar10_search.py")
    parser.add_argument("--out", default="reports/cifar10/search.md", help="the report (its hand-written notes section is kept)")
    args = parser.parse_args()
    root = Path(args.studies)
    names = [n for config in BEFORE for n in (config, f"{config}_full")]
    rows = {name: row for name in names if (row := search_row(name, root))}
    longer = [search_row(name, root, p.name) for name in rows for p in sorted((root / name).glob("seeds?*"))]
    # a full-budget search with seeds supersedes the short one
    latest = {c: rows[f"{c}_full"] if rows.get(f"{c}_full", {}).get("val") else rows.get(c) for c in BEFORE}
    text = HEADER + "\n".join(table([*rows.values(), *longer]) + ["", "## The exercise's questions", ""]
                              + questions({c: row for c, row in latest.items() if row})) + "\n"
    out = Path(args.out)
    if out.exists() and NOTES in out.read_text():  # the hand-written reading survives a rebuild
        text += "\n" + NOTES + out.read_text().split(NOTES, 1)[1]
    print(text)
    out.write_text(text)


if __name__ == "__main__":
    main()
