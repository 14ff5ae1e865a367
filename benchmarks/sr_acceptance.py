"""Issue 15's acceptance table from SR run folders: each set's PSNR beside the full set, the random subset
of the same size and its own zero-step start, with each target and by how much it is met or missed.

    python benchmarks/sr_acceptance.py --start outputs/sr15/start --distilled outputs/sr15/gm [--test set5]

Both folders hold a report.json written by `latentdistill run` or `evaluate` under one protocol (same
seeds): the start is the same config with distill.iterations=0 (its row is "pool"). A baseline row (full,
random, pruned, bicubic) is read from the first report that holds it: the distilled one, the start, then each
--baselines folder, so evaluations that split the baselines between them (sr.baselines=[...]) make one table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (what, target in dB, budget it applies to or None for every budget)
TARGETS = (("distilled - full", -0.3, 0.01), ("distilled - full", -0.1, 0.1), ("distilled - random", 0.3, 0.01),
           ("distilled - start", 0.1, None))


def psnr(report: dict, row: str, test: str) -> tuple[float, float]:
    entry = report["results"][row][test]["psnr"]
    return entry["mean"], entry["std"]


def read_report(folder: Path) -> dict:
    try:
        return json.loads((folder / "report.json").read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"{folder / 'report.json'}: not a readable report ({error.__class__.__name__})") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, type=Path)
    parser.add_argument("--distilled", required=True, type=Path)
    parser.add_argument("--baselines", nargs="*", type=Path, default=[], help="more report folders for baseline rows")
    parser.add_argument("--test", default="set5")
    args = parser.parse_args()
    start = read_report(args.start)
    distilled = read_report(args.distilled)
    others = [read_report(folder) for folder in args.baselines]
    training = ("name", "iterations", "batch_size", "lr", "decay_at", "runs", "patch_size")
    for folder, report in zip([args.start, *args.baselines], [start, *others]):
        if any(report["protocol"].get(key) != distilled["protocol"].get(key) for key in training):
            raise SystemExit(f"{folder} and {args.distilled} were made under different protocols")
    own = next((row for row in distilled["results"] if row in ("distilled", "set")), None)
    if own is None or "pool" not in start["results"]:
        raise SystemExit(f"{args.distilled} must hold a set that took matching steps, {args.start} its zero-step start")
    tests = list(distilled["results"][own])

    def holder(row: str) -> dict:  # the first report with this baseline row (or the distilled one, which lacks it)
        return next((r for r in (distilled, start, *others) if row in r["results"]), distilled)

    rows = {"full": (holder("full"), "full"), "random": (holder("random"), "random"),
            "pruned": (holder("pruned"), "pruned"), "start": (start, "pool"), "distilled": (distilled, own),
            "bicubic": (holder("bicubic"), "bicubic")}
    budget = distilled["budget"]
    print(f"x{distilled['scale']} {distilled['net']}, {distilled['protocol']['name']} protocol, budget {budget:.2%}, "
          f"{distilled['protocol']['runs']} runs (mean ± std PSNR, dB)\n")
    print("| set | patches | " + " | ".join(tests) + " |")
    print("|---|---|" + "---|" * len(tests))
    for name, (report, row) in rows.items():
        if row not in report["results"]:
            continue
        cells = [f"{psnr(report, row, t)[0]:.2f} ± {psnr(report, row, t)[1]:.2f}" for t in tests]
        print(f"| {report.get('labels', {}).get(row, name)} | {report['patches'].get(row, '')} | " + " | ".join(cells) + " |")
    print(f"\n| target ({args.test}) | wanted | measured | verdict |\n|---|---|---|---|")
    value = {name: psnr(report, row, args.test)[0] for name, (report, row) in rows.items() if row in report["results"]}
    for what, wanted, applies in TARGETS:
        if applies is not None and abs(budget - applies) > applies / 2:
            continue
        other = what.split(" - ")[1]
        measured = value["distilled"] - value[other]
        gap = measured - wanted
        verdict = "met" if gap >= 0 else f"missed by {-gap:.2f} dB"
        print(f"| {what} | >= {wanted:+.1f} dB | {measured:+.2f} dB | {verdict} |")
    # The runs share their seeds, so the per-seed difference says whether a gain is one lucky run.
    seeds = [mine - began for mine, began in zip(distilled["results"][own][args.test]["psnr"]["runs"],
                                   start["results"]["pool"][args.test]["psnr"]["runs"])]
    print(f"\ndistilled - start per seed ({args.test}): " + ", ".join(f"{gain:+.2f}" for gain in seeds) + " dB")


if __name__ == "__main__":
    main()
