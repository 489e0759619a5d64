"""Print a study's results as the Markdown table of docs/LADDER.md.

    TRANSFER_LAB_WORKSPACE=WS python bench/ladder.py NAME [--json OUT]

Reads workspace/studies/NAME (made by `python -m transfer_core compare … --name NAME`),
evaluates each finished run on the test split (kept in its evaluation.json, so a second call
costs nothing) and prints, per strategy, each seed's test accuracy and wall time, the mean with
its 95% t interval, and the paired comparisons; then the study's wall time, from the first
run's start to the last run's end. A study cut short prints what finished.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer_core import config
from transfer_core.studies import find_study


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    study = find_study(config.workspace_dir(), args.name)
    if study is None:
        print(f"no study {args.name!r}", file=sys.stderr)
        return 1
    results = study.results(progress=lambda run: print(f"evaluating {run}…", file=sys.stderr))
    times = [(s.get("started"), s.get("finished")) for s in
             (study.run_of(e).status() for e in study.entries() if study.run_of(e))]
    starts = [a for a, _ in times if a]
    ends = [b for _, b in times if b]
    results["study_wall_seconds"] = max(ends) - min(starts) if starts and ends else None
    results["machine"] = {"cpu": platform.processor() or platform.machine(),
                          "cores": __import__("os").cpu_count()}
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def markdown(results: dict) -> str:
    lines = ["| strategy | seed 1 | seed 2 | seed 3 | mean (95% t interval) | mean wall time |",
             "|---|---|---|---|---|---|"]
    for row in results["strategies"]:
        cells = []
        for run in row["runs"]:
            if run["accuracy"] is None:
                cells.append(run["state"])
            else:
                cells.append(f"{100 * run['accuracy']:.2f}% ({run['seconds']:.0f} s)")
        seconds = row["mean_seconds"]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells + [""] * (3 - len(cells)))
                     + f" | {row['interval_text']} | "
                     + ("–" if seconds is None else f"{seconds / 60:.1f} min") + " |")
    lines.append("")
    lines += [f"- {pair['text']}" for pair in results["pairs"]]
    wall = results.get("study_wall_seconds")
    if wall:
        lines.append(f"\nStudy wall time (first run's start to last run's end): "
                     f"{wall / 60:.1f} min; {results['runs_scored']} of "
                     f"{results['runs_total']} runs scored.")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
