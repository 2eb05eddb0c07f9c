"""`tfpipe gc`, `tfpipe history` and `tfpipe explain` on a bucket root (SeaweedFS, tests/helpers/s3.py): gc keeps
the last runs, published versions, leased artifacts and what they read, and sweeps the rest, killed uploads and
unused feature packs, in a handful of requests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines import cli
from tasks.store.artifacts import MANIFEST_FORMAT
from tasks.store.bucket import Bucket
from tasks.store.bucket_gc import apply_bucket_gc, plan_bucket_gc
from tasks.store.opened import forget_opened, open_root
from tasks.store.roots import parse_root
from tasks.store.runlog import lease

TINY = ["--until", "tfrecords"]


def _objects(server: Any, bucket: str, prefix: str) -> list[str]:
    client = server.client()
    found, token = [], None
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        found += [entry["Key"][len(prefix):] for entry in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return sorted(found)
        token = page["NextContinuationToken"]


def _artifacts(objects: list[str]) -> set[str]:
    """``<stage>/<Family>-<key>`` of every committed artifact among ``objects``."""
    return {o.rsplit("/", 1)[0] for o in objects if o.endswith("/MANIFEST.json") and o.count("/") == 2}


def _run(root: str, count: int) -> int:
    return cli.main(["run", "captcha", "--artifacts", root, "--set", f"GenerateCaptchas.count={count}", *TINY])


@pytest.fixture(scope="module")
def two_runs(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Two tiny captcha runs (40, then 48 captchas, up to tfrecords) on one bucket root; each run's artifacts."""
    from tests.conftest import isolated_luigi_config

    base = tmp_path_factory.mktemp("gc-bucket")
    bucket = f"tfpipe-gc-{uuid.uuid4().hex[:10]}"
    s3_server.make_bucket(bucket)
    root = f"s3://{bucket}/g"
    with pytest.MonkeyPatch.context() as patch, isolated_luigi_config(root):  # type: ignore[arg-type]
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        patch.setenv("XDG_CACHE_HOME", str(base / "host-cache"))
        patch.chdir(base)
        forget_opened()
        runs = []
        for count in (40, 48):
            before = _artifacts(_objects(s3_server, bucket, "g/"))
            assert _run(root, count) == 0
            runs.append(_artifacts(_objects(s3_server, bucket, "g/")) - before)
        assert all(len(made) == 4 for made in runs), runs
        yield SimpleNamespace(server=s3_server, bucket=bucket, root=root, first=runs[0], second=runs[1])
    forget_opened()


def test_history_lists_both_runs_on_a_bucket(two_runs: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["history", "captcha", "--artifacts", two_runs.root, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [set(run["artifacts"]) for run in runs] == [two_runs.first, two_runs.second]
    assert all(run["exit_code"] == 0 for run in runs)
    assert cli.main(["history", "captcha", "--artifacts", two_runs.root]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_gc_keeps_the_last_run_and_sweeps_the_rest_in_a_few_requests(
        two_runs: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    server, bucket, root = two_runs.server, two_runs.bucket, two_runs.root
    client = server.client()
    kept_tfrecords = next(p for p in two_runs.second if p.startswith("tfrecords/"))
    leftovers = {f"{kept_tfrecords}/dead-upload/train-00000.tfrecord": b"killed",  # an upload no manifest names
                 "decode/DecodeCaptcha-0123456789ab/host-1-cafe0000/images.npy": b"old",  # a killed upload
                 ".cache/features/0011223344556677/pack-old.features.npy": b"f",  # a pack no artifact uses
                 ".cache/features/0011223344556677/pack-old.keys.npy": b"k"}
    for key, data in leftovers.items():
        client.put_object(Bucket=bucket, Key=f"g/{key}", Body=data)
    before = _objects(server, bucket, "g/")

    capsys.readouterr()
    assert cli.main(["gc", "--keep", "1", "--dry-run", "--artifacts", root]) == 0
    dry = capsys.readouterr().out
    assert _objects(server, bucket, "g/") == before, "a dry run removes nothing"
    assert dry.startswith("would remove") and "would free" in dry
    for prefix in two_runs.first:
        assert f"{root}/{prefix} (artifact" in dry, dry
    assert f"{root}/{kept_tfrecords}/dead-upload (stray upload" in dry
    assert "DecodeCaptcha-0123456789ab" not in dry, "younger than the grace period: maybe an upload in progress"

    assert cli.main(["gc", "--keep", "1", "--grace-hours", "0", "--artifacts", root]) == 0
    out = capsys.readouterr().out
    after = _objects(server, bucket, "g/")
    assert _artifacts(after) == two_runs.second
    assert not [o for o in after if any(o.startswith(p + "/") for p in two_runs.first)], "every object of run 1 goes"
    assert not set(leftovers) & set(after)
    assert len([o for o in after if o.startswith("runs/captcha/")]) == 2, "the run log stays"
    # The second run's artifacts are whole: every object that was there is still there.
    assert [o for o in before if any(o.startswith(p + "/") for p in two_runs.second)
            and "/dead-upload/" not in o] == [o for o in after if not o.startswith("runs/")]
    # One listing, one run record, the four kept manifests, two batches of deletions (and the bucket check).
    requests = int(out.strip().splitlines()[-1].split(" request(s)")[0].rsplit(" ", 1)[-1])
    assert requests == 8, out
    artifacts = open_root(root).artifacts
    assert artifacts is not None and not two_runs.first & set(artifacts.committed), "removed commits forgotten"

    assert _run(root, 48) == 0
    assert "up to date" in capsys.readouterr().out, "the kept run is whole"
    assert _run(root, 40) == 0, "the removed run is built (or pushed from this host's mirror) again"
    assert two_runs.first <= _artifacts(_objects(server, bucket, "g/"))


def test_explain_on_a_bucket_names_the_newest_artifact_of_each_family(
        two_runs: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["explain", "captcha", "--artifacts", two_runs.root, "--set", "GenerateCaptchas.count=44",
                     *TINY]) == 0
    out = capsys.readouterr().out
    assert "parameter count: '40' -> '44'" in out or "parameter count: '48' -> '44'" in out, out
    assert "never built" not in out


# ---- the plan on a laid-out bucket ------------------------------------------------------------------------------
def _manifest(bucket: Bucket, prefix: str, upstream: dict[str, str] | None = None, **extra: Any) -> None:
    family, key = prefix.split("/")[1].rsplit("-", 1)
    bucket.write(f"{prefix}/up-1/data.bin", b"x" * 10)
    bucket.write(f"{prefix}/MANIFEST.json", json.dumps({
        "format": MANIFEST_FORMAT, "family": family, "stage": prefix.split("/")[0], "key": key, "upload": "up-1",
        "upstream": upstream or {}, "files": {"data.bin": {"size": 10, "sha256": "-"}}, **extra}).encode())


def test_gc_keeps_published_leased_and_upstream_artifacts_and_the_packs_they_use(bucket_env: Any) -> None:
    bucket = Bucket(parse_root(f"s3://{bucket_env.bucket}/laid"))
    frozen, trained, features = "freeze/Freeze-aaaaaaaaaaaa", "train/Train-bbbbbbbbbbbb", "bottleneck/Bottleneck-cccc"
    _manifest(bucket, frozen, {"model": "bbbbbbbbbbbb", "source:x": "cccc"})
    _manifest(bucket, trained, {"features": "cccc"})
    _manifest(bucket, features, cache_packs=["ns/pack-used"])
    _manifest(bucket, "freeze/Freeze-eeeeeeeeeeee")  # published from a local root: a path names it
    _manifest(bucket, "train/Train-dddddddddddd")  # what a run in progress reads
    _manifest(bucket, "train/Train-ffffffffffff")  # nothing needs it
    bucket.write("published/m/1/publish.json", json.dumps({"freeze_artifact": frozen}).encode())
    bucket.write("published/m/2/publish.json",
                 json.dumps({"freeze_artifact": "/srv/artifacts/freeze/Freeze-eeeeeeeeeeee"}).encode())
    bucket.write("published/m/current", b'{"version": 2}')
    for pack in ("pack-used", "pack-old"):
        bucket.write(f".cache/features/ns/{pack}.features.npy", b"f")
        bucket.write(f".cache/features/ns/{pack}.keys.npy", b"k")
    bucket.write(".cache/features/ns/pack-uploading.features.npy", b"f")  # its keys are not uploaded yet

    from tasks.features.bucket_packs import unused_bucket_packs

    with lease(bucket, ["train/Train-dddddddddddd"]):
        leased = plan_bucket_gc(bucket, 1, (unused_bucket_packs,))
    assert [r.prefix for r in leased.remove] == ["train/Train-ffffffffffff"] and leased.packs_skipped_reason

    plan = plan_bucket_gc(bucket, 1, (unused_bucket_packs,))
    # One listing, two publish records, four kept manifests: no request per object.
    assert plan.requests == 7, plan.requests
    assert plan.kept == 4
    by_prefix = {r.prefix: r for r in plan.remove}
    assert set(by_prefix) == {"train/Train-dddddddddddd", "train/Train-ffffffffffff",
                              ".cache/features/ns/pack-old"}, by_prefix
    assert by_prefix[".cache/features/ns/pack-old"].first == [".cache/features/ns/pack-old.keys.npy"]
    assert by_prefix["train/Train-ffffffffffff"].first == ["train/Train-ffffffffffff/MANIFEST.json"]
    assert apply_bucket_gc(plan, bucket) == 2, "manifests and keys in one batch, the files in another"
    left = bucket.list("")
    assert not [o for o in left if o.startswith(("train/Train-d", "train/Train-f", ".cache/features/ns/pack-old"))]
    assert {"published/m/1/publish.json", "published/m/2/publish.json", "published/m/current",
            ".cache/features/ns/pack-used.keys.npy", ".cache/features/ns/pack-uploading.features.npy"} <= set(left)

    later = plan_bucket_gc(bucket, 1, (unused_bucket_packs,), now=time.time() + 2 * 24 * 3600)
    assert [r.prefix for r in later.remove] == [".cache/features/ns/pack-uploading"], "a killed pack upload"


def test_gc_leaves_a_bucket_without_runs_alone(bucket_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root = f"s3://{bucket_env.bucket}/empty"
    assert cli.main(["gc", "--keep", "2", "--artifacts", root]) == 0
    out = capsys.readouterr().out
    assert "freed 0.0 MiB in 0 object(s)" in out and "; 2 request(s)" in out, "the bucket check and one listing"
