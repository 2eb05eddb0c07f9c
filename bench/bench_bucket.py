"""Artifacts on a bucket against a local root, and tfpipe's transfers against a plain boto3 copy.

Starts a SeaweedFS S3 server on loopback (tests/helpers/s3.py; ``pip install -e '.[test,bench]'``) and measures,
in one run, medians of ``--repeats``:

1. the captcha pipeline (``--count`` captchas, 2 epochs) on a local root and on ``s3://``, each from scratch;
2. the no-op rerun and ``tfpipe status`` of the finished pipeline on both (and the requests they make);
3. upload and download throughput of an artifact's files: tfpipe's commit (``BucketArtifacts.push``) and pull
   (``BucketArtifacts.pull``, sha256-verified) against boto3's ``TransferManager`` copying the same files with
   ``aws s3 cp --recursive``'s defaults (10 threads), for many small files and for a few large ones.

    .venv/bin/python bench/bench_bucket.py --repeats 3
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.store import artifacts as store  # noqa: E402
from tasks.store.bucket import Bucket  # noqa: E402
from tasks.store.mirror import BucketArtifacts  # noqa: E402
from tasks.store.roots import parse_root  # noqa: E402
from tests.helpers.s3 import seaweed  # noqa: E402


def tfpipe(args: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"tfpipe {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def pipeline_times(server: object, work: Path, count: int, repeats: int) -> dict[str, object]:
    settings = ["--set", f"GenerateCaptchas.count={count}", "--set", "Train.epochs=2", "--set", "Train.batch_size=32"]
    env = {**os.environ, **server.env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}  # type: ignore
    runs: dict[str, list[float]] = {"local run": [], "bucket run": [], "local no-op": [], "bucket no-op": [],
                                    "local status": [], "bucket status": []}
    for repeat in range(repeats):
        for where in ("local", "bucket"):  # taking turns: each pair measured back to back
            root = str(work / f"local-{repeat}") if where == "local" else f"s3://bench/pipeline-{repeat}"
            env["XDG_CACHE_HOME"] = str(work / f"cache-{where}-{repeat}")
            runs[f"{where} run"].append(tfpipe(["run", "captcha", "--artifacts", root, *settings], env, work))
            runs[f"{where} no-op"].append(tfpipe(["run", "captcha", "--artifacts", root, *settings], env, work))
            runs[f"{where} status"].append(tfpipe(["status", "captcha", "--artifacts", root, *settings], env, work))
    result: dict[str, object] = {name: round(median(samples), 2) for name, samples in runs.items()}
    result["bucket / local, whole run"] = round(median([b / a for a, b in zip(runs["local run"], runs["bucket run"],
                                                                                strict=True)]), 2)
    return result


def file_set(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        path = folder / f"part-{index:05d}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


def as_artifact(root: Path, files: list[Path], key: str) -> tuple[store.ArtifactIdentity, Path]:
    identity = store.ArtifactIdentity("Bench", "bench", key, 1, {}, {})
    with store.building(root, identity) as (temp, _):
        for path in files:
            shutil.copy(path, temp / path.name)
    return identity, identity.directory(root)


def boto3_copy(files: list[Path], prefix: str, download_to: Path | None) -> float:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from s3transfer.manager import TransferManager

    client = boto3.client("s3")
    config = TransferConfig(max_concurrency=10)  # aws s3 cp's default
    started = time.perf_counter()
    with TransferManager(client, config) as manager:
        for path in files:
            if download_to is None:
                manager.upload(str(path), "bench", f"{prefix}/{path.name}")
            else:
                manager.download("bench", f"{prefix}/{path.name}", str(download_to / path.name))
    return time.perf_counter() - started


def transfer_times(work: Path, label: str, count: int, size: int, repeats: int) -> dict[str, object]:
    files = file_set(work / f"files-{label}", count, size)
    total_mb = count * size / 1e6
    samples: dict[str, list[float]] = {"boto3 upload": [], "tfpipe push": [], "boto3 download": [], "tfpipe pull": []}
    for repeat in range(repeats):
        samples["boto3 upload"].append(boto3_copy(files, f"boto3-{label}-{repeat}", None))
        identity, local = as_artifact(work / f"mirror-{label}-{repeat}", files, f"{repeat:012x}")
        artifacts = BucketArtifacts(Bucket(parse_root(f"s3://bench/push-{label}")), work / f"mirror-{label}-{repeat}")
        started = time.perf_counter()
        artifacts.push(identity, local)
        samples["tfpipe push"].append(time.perf_counter() - started)
        target = work / f"down-{label}-{repeat}"
        target.mkdir()
        samples["boto3 download"].append(boto3_copy(files, f"boto3-{label}-{repeat}", target))
        reader = BucketArtifacts(Bucket(parse_root(f"s3://bench/push-{label}")), work / f"pull-{label}-{repeat}")
        started = time.perf_counter()
        reader.pull(identity)
        samples["tfpipe pull"].append(time.perf_counter() - started)
    result: dict[str, object] = {"files": count, "MB": round(total_mb, 1)}
    for name, values in samples.items():
        result[f"{name} MB/s"] = round(total_mb / median(values), 1)
    ratio: Callable[[str, str], float] = lambda ours, theirs: round(median(  # noqa: E731
        [t / o for o, t in zip(samples[ours], samples[theirs], strict=True)]), 2)
    result["push / boto3 upload (speed)"] = ratio("tfpipe push", "boto3 upload")
    result["pull / boto3 download (speed)"] = ratio("tfpipe pull", "boto3 download")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000, help="captchas in the pipeline runs")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-transfers", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        with seaweed(work / "weed") as server:
            os.environ.update(server.env)
            server.make_bucket("bench")
            report: dict[str, object] = {"repeats": args.repeats}
            if not args.skip_transfers:
                report["small files (2,000 x 4 KB)"] = transfer_times(work, "small", 2000, 4096, args.repeats)
                report["large files (8 x 32 MB)"] = transfer_times(work, "large", 8, 32 * 2**20, args.repeats)
            if not args.skip_pipeline:
                report[f"captcha pipeline ({args.count} captchas, 2 epochs), seconds"] = pipeline_times(
                    server, work, args.count, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
