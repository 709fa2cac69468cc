"""A/B of ``pixelwise evaluate`` between two source trees: did a change alter scores or speed?

Runs ``python -m pixelwise.cli evaluate`` alternately from this checkout and from another tree (a
``git worktree`` of an earlier commit, say), each in a fresh process with that tree first on
``PYTHONPATH``, and prints each run's mIoU, precision and seconds (the report's own timing of the
split) and the median ratio. Alternating A and B spreads this VM's swings over both.

    git worktree add /tmp/old 72df47d
    python bench/ab_evaluate.py --old /tmp/old --data configs/data/camvid.yaml --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import report_head

REPO = Path(__file__).resolve().parents[1]


def _evaluate(tree: Path, data: Path, split: str, extra: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "pixelwise.cli", "evaluate", "--data", str(data)]
    cmd += ["--split", split, "--quiet", "--out", str(out), *extra]
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="the other source tree (B)")
    ap.add_argument("--data", type=Path, default=REPO / "configs/data/camvid.yaml")
    ap.add_argument("--split", default="test")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more evaluate options")
    args = ap.parse_args()
    data = args.data.resolve()
    seconds: dict[str, list[float]] = {"this tree": [], "old tree": []}
    print("\n".join(report_head("evaluate A/B", __file__, None)))
    print("| run | tree | mIoU % | amp | seconds |\n| ---: | --- | ---: | --- | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.runs + 1):
            for name, tree in (("old tree", args.old.resolve()), ("this tree", REPO)):
                rep = _evaluate(tree, data, args.split, args.extra, Path(tmp) / f"{i}.json")
                seconds[name].append(rep["seconds"])
                print(
                    f"| {i} | {name} | {100 * rep['miou']:.3f} | {rep['amp']} | {rep['seconds']:.2f} |"
                )
    new, old = (statistics.median(seconds[k]) for k in ("this tree", "old tree"))
    print(f"\nmedian seconds: this tree {new:.2f}, old tree {old:.2f}, ratio {new / old:.3f}")


if __name__ == "__main__":
    main()
