"""The tfpipe write path of several checkouts, in turn, on the same CIFAR-format batches: tells a code change
from the machine's mood, since every tree runs in the same minutes.

Usage: .venv/bin/python bench/compare_trees.py TREE [TREE ...] [--rounds 7] [--images 60000] [--settle 5]

Each TREE is a checkout (``git worktree add /tmp/old <commit>``) whose ``bench/bench_shards.py`` has a
``--child`` mode; its ``tfpipe`` child (and ``tfpipe_py2`` where the tree has it) runs in a fresh process with
that tree on ``PYTHONPATH``, after ``--settle`` idle seconds. Prints each tree's median images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_shards import make_batches  # noqa: E402

METHODS = ("tfpipe", "tfpipe_py2")


def child_rate(tree: Path, method: str, root: Path) -> float | None:
    """Images/s of one child of ``tree``, or None when that tree's benchmark has no such method."""
    result = subprocess.run([sys.executable, str(tree / "bench" / "bench_shards.py"), "--child", method, "--root",
                             str(root)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    if result.returncode == 2 and "invalid choice" in result.stderr:
        return None
    if result.returncode != 0:
        raise SystemExit(f"{tree}: the {method} child failed:\n{result.stderr[-2000:]}")
    return float(json.loads(result.stdout.splitlines()[-1])["write"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before each child")
    args = parser.parse_args()
    rates: dict[tuple[Path, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_batches(root, args.images)
        for round_number in range(args.rounds):
            for tree in args.trees:
                for method in METHODS:
                    time.sleep(args.settle)
                    rate = child_rate(tree.resolve(), method, root)
                    if rate is not None:
                        rates.setdefault((tree, method), []).append(rate)
            latest = ", ".join(f"{tree.name} {method} {values[-1]:,.0f}" for (tree, method), values in rates.items())
            print(f"round {round_number + 1}: {latest}", flush=True)
    print("\n| tree | method | images/s per round | median |\n|---|---|---|---:|")
    for (tree, method), values in rates.items():
        print(f"| {tree} | {method} | {', '.join(f'{v:,.0f}' for v in values)} | {statistics.median(values):,.0f} |")


if __name__ == "__main__":
    main()
