"""Artifacts on a real S3 server (SeaweedFS, tests/helpers/s3.py): conditional commits, races, killed uploads,
refused credentials, an unreachable server, and a whole pipeline with its no-op rerun and status counted in
requests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines import cli
from tasks.store import artifacts as store
from tasks.store.bucket import Bucket
from tasks.store.mirror import UPLOAD_FIELD, BucketArtifacts, NotBuiltError
from tasks.store.opened import forget_opened, open_root
from tasks.store.roots import parse_root
from tests.conftest import CAPTCHA_TINY

IDENTITY = store.ArtifactIdentity("Toy", "toy", "0123456789ab", 1, {}, {})


def _bucket(server: Any, prefix: str = "unit") -> Bucket:
    return Bucket(parse_root(f"s3://{server.bucket}/{prefix}"))


def _built(folder: Path, content: bytes) -> Path:
    """A finished local artifact of ``IDENTITY`` holding one file."""
    with store.building(folder, IDENTITY) as (temp, _):
        (temp / "data.bin").write_bytes(content)
        (temp / "sub").mkdir()
        (temp / "sub" / "more.txt").write_text("x")
    return IDENTITY.directory(folder)


def test_objects_and_conditional_writes(bucket_env: Any) -> None:
    bucket = _bucket(bucket_env)
    assert bucket.read("a/b.json") is None
    assert bucket.create("a/b.json", b"first") is True
    assert bucket.create("a/b.json", b"second") is False, "If-None-Match: the first create wins"
    data, tag = bucket.read_with_tag("a/b.json") or (b"", "")
    assert data == b"first"
    assert bucket.replace("a/b.json", b"third", tag) is True
    assert bucket.replace("a/b.json", b"fourth", tag) is False, "If-Match with a stale tag is refused"
    assert bucket.read("a/b.json") == b"third"
    assert bucket.list("a") == ["a/b.json"] and bucket.list("nothing") == []
    bucket.delete(["a/b.json"])
    assert bucket.read("a/b.json") is None


def test_two_workers_committing_one_artifact_one_wins_and_the_other_adopts_it(bucket_env: Any,
                                                                              tmp_path: Path) -> None:
    first = BucketArtifacts(_bucket(bucket_env, "race"), tmp_path / "host-a")
    second = BucketArtifacts(_bucket(bucket_env, "race"), tmp_path / "host-b")
    ours = _built(first.mirror, b"built on host a")
    theirs = _built(second.mirror, b"built on host b: other bytes, as a retrained model has")
    won = first.push(IDENTITY, ours)
    adopted = second.push(IDENTITY, theirs)
    assert adopted[UPLOAD_FIELD] == won[UPLOAD_FIELD], "the loser adopts the winner's commit"
    assert (theirs / "data.bin").read_bytes() == b"built on host a", "and its mirror holds the winner's files"
    objects = first.bucket.list(IDENTITY.stage)
    manifests = [o for o in objects if o.endswith(store.MANIFEST_NAME)]
    uploads = {o.split("/")[2] for o in objects if not o.endswith(store.MANIFEST_NAME)}
    assert len(manifests) == 1 and uploads == {won[UPLOAD_FIELD]}, objects
    assert store.verify_artifact(theirs) == []


def test_a_killed_upload_counts_as_nothing_and_the_next_commit_succeeds(bucket_env: Any, tmp_path: Path) -> None:
    artifacts = BucketArtifacts(_bucket(bucket_env, "killed"), tmp_path / "host")
    local = _built(artifacts.mirror, b"payload")
    # A worker killed mid-upload leaves files under its upload folder and no manifest.
    artifacts.bucket.upload(local / "data.bin", f"{artifacts.prefix(IDENTITY)}/dead-upload/data.bin")
    assert artifacts.manifest(IDENTITY) is None
    with pytest.raises(NotBuiltError, match="not built"):
        artifacts.pull(IDENTITY)
    committed = artifacts.push(IDENTITY, local)
    assert artifacts.manifest(IDENTITY) == committed and committed[UPLOAD_FIELD] != "dead-upload"


def test_a_pull_verifies_every_file_and_reuses_an_unchanged_mirror(bucket_env: Any, tmp_path: Path) -> None:
    writer = BucketArtifacts(_bucket(bucket_env, "pull"), tmp_path / "host-a")
    committed = writer.push(IDENTITY, _built(writer.mirror, b"payload"))
    reader = BucketArtifacts(_bucket(bucket_env, "pull"), tmp_path / "host-b")
    local = reader.pull(IDENTITY)
    assert (local / "data.bin").read_bytes() == b"payload" and store.verify_artifact(local) == []
    with reader.bucket.counting() as made:
        assert reader.pull(IDENTITY) == local
    assert made[0] <= 1, "an unchanged mirror costs at most the manifest read"
    # The bucket's bytes differ from the manifest (a corrupted object): refused, and nothing half-pulled stays.
    forged = f"{writer.prefix(IDENTITY)}/{committed[UPLOAD_FIELD]}/data.bin"
    writer.bucket.write(forged, b"PAYLOAD")
    third = BucketArtifacts(_bucket(bucket_env, "pull"), tmp_path / "host-c")
    with pytest.raises(OSError, match="differ from the manifest"):
        third.pull(IDENTITY)
    assert not IDENTITY.directory(third.mirror).exists()


def test_the_mirror_stays_within_its_bound(bucket_env: Any, tmp_path: Path) -> None:
    writer = BucketArtifacts(_bucket(bucket_env, "bound"), tmp_path / "host-a")
    identities = [store.ArtifactIdentity("Toy", "toy", f"{i:012x}", 1, {}, {}) for i in range(3)]
    for identity in identities:
        with store.building(writer.mirror, identity) as (temp, _):
            (temp / "data.bin").write_bytes(bytes(1000))
        writer.push(identity, identity.directory(writer.mirror))
    one = sum(p.stat().st_size for p in identities[0].directory(writer.mirror).rglob("*") if p.is_file())
    reader = BucketArtifacts(_bucket(bucket_env, "bound"), tmp_path / "host-b", max_bytes=2 * one + 500)
    for identity in identities:
        reader.pull(identity)
        time.sleep(0.01)
    held = [i for i in identities if i.directory(reader.mirror).exists()]
    assert held == identities[1:], "the least recently used artifact went first"


def test_refused_credentials_and_an_unreachable_server_are_one_line(bucket_env: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = f"s3://{bucket_env.bucket}/creds"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert cli.main(["status", "captcha", "--artifacts", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "access denied" in err[0] and bucket_env.endpoint in err[0], err

    forget_opened()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bucket_env.env["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    started = time.monotonic()
    assert cli.main(["status", "captcha", "--artifacts", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the server" in err[0] and "127.0.0.1:9" in err[0], err
    assert time.monotonic() - started < 60

    forget_opened()
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket_env.endpoint)
    assert cli.main(["status", "captcha", "--artifacts", "s3://no-such-bucket-here/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err


def _requests(root: str) -> int:
    bucket = open_root(root).bucket
    assert bucket is not None
    return bucket.requests


def test_a_whole_pipeline_on_a_bucket_then_a_no_op_rerun_and_status_in_few_requests(
        bucket_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, luigi_config: object,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = f"s3://{bucket_env.bucket}/pipeline"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "captcha", "--artifacts", root, *CAPTCHA_TINY]) == 0
    printed = capsys.readouterr().out
    stages = [line.split() for line in printed.splitlines() if line.startswith("  ")]
    assert len(stages) == 8 and all(url.startswith(f"{root}/{stage}/") for stage, url in stages), printed
    objects = bucket_env.client().list_objects_v2(Bucket=bucket_env.bucket, Prefix="pipeline/")["Contents"]
    manifests = [o["Key"] for o in objects if o["Key"].endswith("/MANIFEST.json")]
    assert len(manifests) == 8
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "s3:").exists(), "nothing local but the mirror"
    freeze = json.loads(bucket_env.client().get_object(
        Bucket=bucket_env.bucket, Key=next(m for m in manifests if "/freeze/" in m))["Body"].read())
    assert freeze["files"] and freeze[UPLOAD_FIELD]

    # Another host (its own empty cache) sees the same pipeline done, asking the bucket, in a few requests.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-host"))
    for command in (["run", "captcha"], ["status", "captcha"]):
        forget_opened()
        started = time.monotonic()
        assert cli.main([*command, "--artifacts", root, *CAPTCHA_TINY]) == 0
        seconds = time.monotonic() - started
        made = _requests(root)
        out = capsys.readouterr().out
        assert "up to date" in out, out
        assert made <= 2 + 2 * len(stages), f"{command[0]}: {made} requests for {len(stages)} stages"
        assert seconds < 10, f"{command[0]} took {seconds:.1f} s"
    assert not (tmp_path / "other-host" / "tfpipe" / "s3" / bucket_env.bucket / "pipeline" / "train").exists(), \
        "a completion check downloads nothing"


def test_cluster_training_is_refused_on_a_bucket_root(bucket_env: Any, luigi_config: Any) -> None:
    """Its members meet in a folder all their hosts share; on a bucket each host has its own mirror."""
    from tasks.training.task import Train

    luigi_config.set("ArtifactStore", "root", f"s3://{bucket_env.bucket}/cluster")
    with pytest.raises(ValueError, match="is a bucket: use a shared local root"):
        Train(strategy="multi_worker").rendezvous()
    assert Train(strategy="default").rendezvous().name.startswith("Train-")
