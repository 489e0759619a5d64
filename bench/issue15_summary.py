"""Issue 15's tables from the runs of bench/issue15_queue.sh (one JSON per run).

Each fine_tune run gives two strategies: its head phase is feature_extraction_augmented's
training with the same seed and settings (checked: the same per-epoch metrics), so the rules
scoped to the head phase give the augmented strategy's figures and the rules over all epochs
give fine-tuning's. Fast feature extraction has one phase (both scopes are the same).

    python bench/issue15_summary.py docs/benchmarks/issue15/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer_core.stats import comparison_text, mean_interval, paired_comparison  # noqa: E402

RULES = ("min_val_loss", "max_val_accuracy", "last")  # bench/epoch_rules.py's (no keras here)
# views -> path shown (fast extraction has none: "cached features"); a fine_tune run whose
# fine-tuning phase read blends of two views (session 10) is a path of its own
PATHS = {0: "on the fly", 3: "K=3", 10: "K=10", "auto": "auto"}
BLENDS = {0.0: "blended", 0.5: "extrapolated"}  # blend_reach -> name
# fine_tune's default since session 11: the head on the bank, the fine-tuning phase on the
# fly (rows with fine_tune_on_bank false; earlier rows have no such key and read the bank)
HYBRID = "auto, fine-tuning on the fly"
ORDER = ("on the fly", "K=3", "K=10", "K=10 blended", "K=10 extrapolated", "auto", HYBRID)
BANKS = ORDER[1:]  # measured against on the fly
EVERY_PATH = (HYBRID, "auto", *BANKS[:-2], ORDER[0])  # the product's default first
# (strategy shown, strategy run, scope of the rules)
STRATEGIES = [("fast feature extraction", "feature_extraction", "all"),
              ("augmented (head phase of fine_tune)", "fine_tune", "head"),
              ("augmented (own run)", "feature_extraction_augmented", "all"),
              ("fine-tuning (all epochs)", "fine_tune", "all")]


def load(paths) -> list[dict]:
    rows = []
    for path in paths:
        report = json.loads(Path(path).read_text())
        for row in report["runs"]:
            if row["state"] == "finished" and row.get("rules"):
                rows.append({**row, "file": str(path), "commit": report.get("commit")})
    return rows


def head_seconds(row: dict) -> float:
    """The head phase's epochs (training + validation): the augmented strategy's training."""
    return sum(e["seconds"] for e in row["epochs"] if e["phase"] == "head")


def path_of(row: dict) -> str:
    path = PATHS[row["views"]]
    if row["strategy"] == "fine_tune" and row["views"] and row.get("fine_tune_on_bank") is False:
        return f"{path}, fine-tuning on the fly"
    if row.get("blend_views"):
        reach = row.get("blend_reach", 0.0)
        path += " " + BLENDS.get(reach, f"blended (reach {reach})")
    return path


def groups(rows: list[dict]) -> dict:
    found = {}
    for shown, strategy, scope in STRATEGIES:
        for path in ORDER:
            mine = sorted((r for r in rows if r["strategy"] == strategy and path_of(r) == path),
                          key=lambda r: r["seed"])
            if strategy == "feature_extraction":  # no bank: one path
                mine = [r for r in rows if r["strategy"] == strategy] if path == ORDER[0] else []
                path = "cached features"
            if mine:
                found[(shown, path)] = (mine, scope)
    return found


def cell(values) -> str:
    m = mean_interval(values)
    if m.n < 2:
        return f"{100 * m.mean:.2f}% (1 seed)"
    return f"{100 * m.mean:.2f}% ({100 * m.low:.2f}–{100 * m.high:.2f})"


def rule_values(mine, scope, rule) -> list[float]:
    return [r["rules"][f"{rule}/{scope}"]["test_accuracy"] for r in mine]


def tables(rows: list[dict]) -> str:
    found = groups(rows)
    lines = ["| strategy | path | seeds | " + " | ".join(RULES)
             + " | wall | CPU | head epochs | disk |",
             "|---|---|---|" + "---|" * (len(RULES) + 4)]
    for (shown, path), (mine, scope) in found.items():
        wall = sum(r["wall_seconds"] for r in mine) / len(mine)
        head = sum(head_seconds(r) for r in mine) / len(mine)
        disk = sum(r["cache_bytes"] for r in mine) / len(mine)
        cpu = sum(r["process_cpu_seconds"] for r in mine) / len(mine)
        used = {(r.get("view_bank_used") or {}).get("views") for r in mine} - {None}
        path = path + (f" (K={','.join(map(str, sorted(used)))})" if path == "auto" else "")
        lines.append(f"| {shown} | {path} | {','.join(str(r['seed']) for r in mine)} | "
                     + " | ".join(cell(rule_values(mine, scope, rule)) for rule in RULES)
                     + f" | {wall:.0f} s | {cpu:.0f} s | {head:.0f} s | "
                     + (f"{disk / 1e6:.0f} MB |" if disk else "– |"))
    lines += ["", "Kept epochs (global epoch per seed, by rule):", ""]
    for (shown, path), (mine, scope) in found.items():
        picks = "; ".join(f"{rule}: " + ",".join(str(r["rules"][f"{rule}/{scope}"]
                                                     ["global_epoch"]) for r in mine)
                          for rule in RULES)
        lines.append(f"- {shown}, {path}: {picks}")
    lines += ["", *verdicts(found), "", *per_run(rows)]
    return "\n".join(lines)


def per_run(rows: list[dict]) -> list[str]:
    """One line per run: what a mean hides (and the load each ran under)."""
    lines = ["| run | seed | K | wall | CPU | load before → after | phases (s) | "
             + " | ".join(f"{rule} (all)" for rule in RULES) + " | training accuracy, last |",
             "|---|---|---|---|---|---|---|" + "---|" * (len(RULES) + 1)]
    for r in sorted(rows, key=lambda r: (Path(r["file"]).name)):
        k = (r.get("view_bank_used") or {}).get("views", r["views"])
        phases = ", ".join(f"{p} {v:.0f}" for p, v in r["phases"].items() if v)
        lines.append(f"| {Path(r['file']).stem} | {r['seed']} | {k} | {r['wall_seconds']:.0f} s"
                     f" | {r['process_cpu_seconds']:.0f} s | {r['load_average_before'][0]:.1f}"
                     f" → {r['load_average_after'][0]:.1f} | {phases} | "
                     + " | ".join(f"{100 * r['rules'][f'{rule}/all']['test_accuracy']:.2f}%"
                                  for rule in RULES)
                     + f" | {100 * r['epochs'][-1]['accuracy']:.2f}% |")
    return lines


FAST, HEAD, OWN, TUNED = (shown for shown, _, _ in STRATEGIES)


def augmented(found: dict, path: str):
    """The augmented strategy on `path`: its own run where there is one (for "auto" the only
    right one: a fine_tune run's bank has more views, K being chosen from 30 + 30 epochs), else
    a fine_tune run's head phase (the same training on the fly and at a fixed K). Beside
    fine_tune's default (HYBRID) it is the automatic bank's: its head phase is that training."""
    own = "auto" if path == HYBRID else path
    return found.get((OWN, own)) or (None if own == "auto" else found.get((HEAD, path)))


def mean_of(group, key) -> float:
    return sum(r[key] for r in group[0]) / len(group[0])


def verdicts(found: dict) -> list[str]:
    out = []
    for name, pick in (("feature_extraction_augmented", augmented),
                       ("fine_tune", lambda f, p: f.get((TUNED, p)))):
        reference = pick(found, "on the fly")
        for path in BANKS:
            mine = pick(found, path)
            if not (reference and mine):
                continue
            wall = mean_of(reference, "wall_seconds") / mean_of(mine, "wall_seconds")
            cpu = (mean_of(reference, "process_cpu_seconds")
                   / mean_of(mine, "process_cpu_seconds"))
            out.append(f"{name} wall time, on the fly / {path}: {wall:.2f}× "
                       f"(process CPU time: {cpu:.2f}×)")
            for rule in RULES:
                ours = mean_interval(rule_values(*mine, rule)).mean
                ref = mean_interval(rule_values(*reference, rule)).mean
                out.append(f"  {rule}: {path} − on the fly = {100 * (ours - ref):+.2f} points "
                           f"({len(mine[0])} against {len(reference[0])} seeds)")
    for path in EVERY_PATH:
        rungs = [found.get((FAST, "cached features")), augmented(found, path),
                 found.get((TUNED, path))]
        if not all(rungs):
            continue
        for rule in RULES:
            values = [mean_interval(rule_values(*group, rule)).mean for group in rungs]
            holds = values[0] <= values[1] <= values[2]
            out.append(f"chapter order with {path}, rule {rule}: "
                       + " ≤ ".join(f"{100 * v:.2f}%" for v in values)
                       + (" holds" if holds else " does NOT hold"))
        out += paired_rungs(dict(zip(("fast extraction", "augmented", "fine-tuning"), rungs)),
                            path)
    for path in EVERY_PATH:
        out += fine_tuning_effect(found.get((TUNED, path)), path)
    best = best_rule(found)
    if best:
        out.append("mean test accuracy of each rule over every strategy and path measured "
                   "(each group weighs one): "
                   + ", ".join(f"{rule} {100 * v:.2f}%" for rule, v in best))
    return out


def paired_rungs(rungs: dict, path: str, rule: str = "last") -> list[str]:
    """Each two rungs compared seed by seed (stats.paired_comparison) on the seeds both ran."""
    by_seed = {name: {r["seed"]: r["rules"][f"{rule}/{scope}"]["test_accuracy"] for r in mine}
               for name, (mine, scope) in rungs.items()}
    out = []
    for a, b in (("augmented", "fast extraction"), ("fine-tuning", "augmented"),
                 ("fine-tuning", "fast extraction")):
        seeds = sorted(by_seed[a].keys() & by_seed[b].keys())
        if len(seeds) >= 2:
            comparison = paired_comparison([by_seed[a][s] for s in seeds],
                                           [by_seed[b][s] for s in seeds])
            out.append(f"  paired by seed ({path}, {rule}): "
                       + comparison_text(a, b, comparison))
    return out


def fine_tuning_effect(group, path: str) -> list[str]:
    """Per fine_tune seed: validation accuracy and loss at the head phase's last epoch and at
    the run's last, and the test accuracy of those two models (rules last/head and last/all)."""
    if not group:
        return []
    out = [f"fine-tuning's own effect ({path}): validation accuracy / validation loss / test "
           "accuracy, head phase's last epoch → the run's last"]
    for row in group[0]:
        head_end, last = [e for e in row["epochs"] if e["phase"] == "head"][-1], row["epochs"][-1]
        tests = [row["rules"][f"last/{scope}"]["test_accuracy"] for scope in ("head", "all")]
        out.append(f"  seed {row['seed']}: validation {100 * head_end['val_accuracy']:.2f}% → "
                   f"{100 * last['val_accuracy']:.2f}%, loss {head_end['val_loss']:.3f} → "
                   f"{last['val_loss']:.3f}, test {100 * tests[0]:.2f}% → {100 * tests[1]:.2f}%")
    return out


def best_rule(found: dict) -> list[tuple[str, float]]:
    """Each rule's mean test accuracy over every (strategy, path) group, equally weighted; the
    head phase of fine_tune counts only where the augmented strategy has no run of its own."""
    groups_ = [g for (shown, path), g in found.items()
               if shown != HEAD or (OWN, path) not in found]
    if not groups_:
        return []
    return sorted(((rule, sum(mean_interval(rule_values(m, s, rule)).mean for m, s in groups_)
                    / len(groups_)) for rule in RULES), key=lambda x: -x[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    print(tables(load(args.files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
