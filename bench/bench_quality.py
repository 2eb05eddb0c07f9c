"""Model quality on real data: tfpipe's defaults against a simple peer trained on the same split.

Usage: .venv/bin/pip install -e '.[bench]'   # scikit-learn: the peer and the digits
       .venv/bin/python bench/bench_quality.py [--cases images,images_imbalanced,mnist,captcha] [--runs 1]
                                               [--tree DIR ...] [--json FILE]

Real data offline: scikit-learn's bundled digits (1,797 real 8x8 scans, 16 grey levels), written
- as a class folder of PNGs upscaled to 32x32 (``images``: ``tfpipe run images --source DIR``), and the same
  folder with digits 5-9 cut to a fifth (``images_imbalanced``: 5x imbalance; balanced accuracy is its figure),
- as the four IDX files of MNIST's layout, upscaled to 28x28, a stratified fifth held out for testing
  (``mnist``: ``tfpipe run mnist --source DIR``);
and the README's main command (``captcha``: ``tfpipe run captcha``, 30,000 generated captchas).

Each case runs ``tfpipe run`` with every default, in a fresh artifact root, timed as a whole command. The peer,
scikit-learn's ``SVC()`` (RBF kernel, its defaults: the baseline a user tries first), is trained on the pixels
of tfpipe's own *train* split, read back from the TFRecords artifact, and scored on the same *test* split: the
same examples tfpipe trained and was tested on, at the same resolution. The captcha case has no peer (a
four-letter sequence is not one class); its figure is whole-captcha accuracy.

``--tree DIR`` (repeatable) runs each case with another checkout's code too (``git worktree add /tmp/old
<commit>``, with its own ``.venv``: see ``tree_python``), interleaved with this one's, so that two versions are
compared on the same machine and minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DIGITS_SIDE_IMAGES = 32
DIGITS_SIDE_MNIST = 28
MNIST_TEST_SHARE = 0.2
IMBALANCED_FROM = 5  # digits from this one on keep one scan in IMBALANCE_KEEP_EVERY
IMBALANCE_KEEP_EVERY = 5


@dataclass
class Outcome:
    case: str
    tree: str
    run: int
    seconds: float
    metric: str
    tfpipe: float
    balanced_accuracy: float | None
    macro_f1: float | None
    peer: float | None
    peer_balanced_accuracy: float | None
    peer_seconds: float | None
    train_examples: int
    test_examples: int
    health: list[str]


def upscaled_digits(side: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (N, side, side) images (bicubic upscaling of the 16-level scans)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(scan).resize((side, side), Image.BICUBIC)) for scan in scans])
    return images, digits.target.astype(np.uint8)


def save_digit_folder(root: Path, keep: Callable[[int, int], bool]) -> Path:
    """The upscaled digits as ``root/digit_<label>/<index>.png``, those for which ``keep(index, label)``."""
    from PIL import Image

    images, labels = upscaled_digits(DIGITS_SIDE_IMAGES)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        if keep(index, int(label)):
            folder = root / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def write_digit_folder(root: Path) -> Path:
    return save_digit_folder(root, lambda index, label: True)


def write_imbalanced_digit_folder(root: Path) -> Path:
    """The digit folder with digits 5-9 cut to a fifth (every fifth scan kept): 5x imbalance."""
    return save_digit_folder(root, lambda index, label: label < IMBALANCED_FROM or index % IMBALANCE_KEEP_EVERY == 0)


def write_digit_idx(root: Path) -> Path:
    from sklearn.model_selection import train_test_split

    from tasks.datasets.mnist.idx import write_idx

    images, labels = upscaled_digits(DIGITS_SIDE_MNIST)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=MNIST_TEST_SHARE,
                                                        stratify=labels, random_state=0)
    root.mkdir(parents=True, exist_ok=True)
    for name, array in {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y,
                        "t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}.items():
        write_idx(root / name, array)
    return root


CASES: dict[str, tuple[str, Callable[[Path], Path] | None]] = {
    "images": ("images", write_digit_folder),
    "images_imbalanced": ("images", write_imbalanced_digit_folder),
    "mnist": ("mnist", write_digit_idx),
    "captcha": ("captcha", None),
}


def tree_python(tree: Path) -> Path:
    """The interpreter of ``tree``'s own virtual environment. An editable install of this checkout would shadow
    another tree's packages even with that tree first on PYTHONPATH, so every tree brings its own venv
    (``python3 -m venv DIR/.venv && DIR/.venv/bin/pip install -e DIR``)."""
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{tree}: no .venv; make one: python3 -m venv {tree}/.venv && "
                         f"{tree}/.venv/bin/pip install -e {tree}")
    return python


def run_tfpipe(tree: Path, pipeline: str, source: Path | None, artifacts: Path, workdir: Path) -> float:
    """Seconds of one ``tfpipe run`` of ``tree``'s code (install excluded)."""
    command = [str(tree_python(tree)), "-m", "pipelines.cli", "run", pipeline, "--artifacts", str(artifacts)]
    if source is not None:
        command += ["--source", str(source)]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(tree / "luigi.cfg")}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log = workdir / f"{pipeline}.log"
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: tfpipe run {pipeline} exited {result.returncode}; log: {log}\n"
                         + (result.stdout + result.stderr)[-3000:])
    return seconds


def only_artifact(artifacts: Path, stage: str) -> Path:
    found = [path for path in (artifacts / stage).glob("*-*") if (path / "MANIFEST.json").exists()]
    if len(found) != 1:
        raise SystemExit(f"{artifacts / stage}: expected one finished artifact, found {len(found)}")
    return found[0]


def peer_score(shards: Path) -> tuple[float, float, float, int, int]:
    """(SVC test accuracy, its balanced accuracy, its seconds, train and test sizes) on the pixels of tfpipe's own
    splits."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.svm import SVC

    from tasks.data.shards import load_split_arrays

    train_x, train_y = load_split_arrays(shards, "train")
    test_x, test_y = load_split_arrays(shards, "test")
    started = time.perf_counter()
    peer = SVC().fit(train_x.reshape(len(train_x), -1) / 255.0, train_y.reshape(-1))
    predicted = peer.predict(test_x.reshape(len(test_x), -1) / 255.0)
    accuracy = float((predicted == test_y.reshape(-1)).mean())
    balanced = float(balanced_accuracy_score(test_y.reshape(-1), predicted))
    return accuracy, balanced, time.perf_counter() - started, len(train_x), len(test_x)


def run_case(case: str, tree: Path, run: int, scratch: Path) -> Outcome:
    pipeline, write_source = CASES[case]
    work = scratch / f"{case}-{tree.name}-{run}"
    work.mkdir(parents=True)
    source = write_source(work / "data") if write_source else None
    artifacts = work / "artifacts"
    seconds = run_tfpipe(tree, pipeline, source, artifacts, work)
    metrics = json.loads((only_artifact(artifacts, "evaluate") / "metrics.json").read_text())
    metric = "sequence_accuracy" if case == "captcha" else "top1_accuracy"
    peer = peer_balanced = peer_seconds = None
    shards = only_artifact(artifacts, "tfrecords")
    if case != "captcha":
        peer, peer_balanced, peer_seconds, train_n, test_n = peer_score(shards)
    else:
        info = json.loads((shards / "tfpipe_info.json").read_text())
        train_n, test_n = (int(info["splits"][s]["count"]) for s in ("train", "test"))
    health = metrics.get("health", {}).get("warnings", []) if isinstance(metrics.get("health"), dict) else []
    outcome = Outcome(case, str(tree), run, round(seconds, 1), metric, float(metrics[metric]),
                      metrics.get("balanced_accuracy"), metrics.get("macro_f1"), peer, peer_balanced,
                      None if peer_seconds is None else round(peer_seconds, 2), train_n, test_n, health)
    shutil.rmtree(work, ignore_errors=True)
    return outcome


def summary(outcomes: list[Outcome]) -> str:
    rows = ["| case | tree | runs | tfpipe top-1 / sequence (median) | balanced accuracy | macro-F1 | "
            "peer SVC (median) | peer balanced | tfpipe - peer | wall time (median) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.case, outcome.tree), []).append(outcome)
    for (case, tree), group in groups.items():
        ours = statistics.median(o.tfpipe for o in group)
        peers = [o.peer for o in group if o.peer is not None]
        peer = statistics.median(peers) if peers else None
        gap = "" if peer is None else f"{100 * (ours - peer):+.1f} points"
        balanced = [o.balanced_accuracy for o in group if o.balanced_accuracy is not None]
        macro = [o.macro_f1 for o in group if o.macro_f1 is not None]
        rows.append(f"| {case} ({group[0].metric}) | {Path(tree).name} | {len(group)} | {ours:.4f} | "
                    f"{f'{statistics.median(balanced):.4f}' if balanced else ''} | "
                    f"{f'{statistics.median(macro):.4f}' if macro else ''} | "
                    f"{'' if peer is None else f'{peer:.4f}'} | "
                    f"{'' if peer is None else f'{statistics.median(o.peer_balanced_accuracy for o in group):.4f}'} | "
                    f"{gap} | "
                    f"{statistics.median(o.seconds for o in group):.0f} s |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout, with its own .venv, to run beside this one")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args()
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    trees = [REPO, *(tree.resolve() for tree in args.tree)]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="tfpipe-quality-") as scratch:
        for run in range(args.runs):
            for case in cases:
                for tree in trees:  # interleaved: every tree runs in the same minutes
                    outcome = run_case(case, tree, run, Path(scratch))
                    outcomes.append(outcome)
                    print(json.dumps(asdict(outcome)), flush=True)
    print(summary(outcomes))
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")


if __name__ == "__main__":
    main()
