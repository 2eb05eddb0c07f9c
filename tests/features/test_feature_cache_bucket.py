"""The feature cache on a bucket root (SeaweedFS, tests/helpers/s3.py): packs one host writes are found by
another, a half-uploaded pack is never read, and a bottleneck run on a second host reuses the first's features."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.features.bucket_packs import BucketPacks
from tasks.features.cache import FeatureCache, cache_root
from tasks.store.bucket import Bucket
from tasks.store.roots import parse_root

NAMESPACE = "00aa11bb22cc33dd"


def len_reused(manifest: dict[str, Any]) -> int:
    return int(manifest["features_reused"])


def _keys(*names: str) -> np.ndarray:
    return np.asarray([name.encode().ljust(32, b"\0") for name in names], dtype="S32")


def _host(server: Any, mirror: Path) -> tuple[BucketPacks, FeatureCache]:
    """One host: its own connection to the bucket and its own mirror's cache folder of ``NAMESPACE``."""
    bucket = Bucket(parse_root(f"s3://{server.bucket}/shared"))
    return BucketPacks(bucket), FeatureCache(cache_root(mirror) / NAMESPACE)


def test_packs_one_host_writes_are_found_by_another(bucket_env: Any, tmp_path: Path) -> None:
    packs_a, cache_a = _host(bucket_env, tmp_path / "host-a")
    packs_b, cache_b = _host(bucket_env, tmp_path / "host-b")
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert packs_a.fetch(cache_a) == []
    written = cache_a.add(_keys("x", "y", "z"), features)
    assert packs_a.publish(cache_a, [written]) == [written]
    assert packs_a.publish(cache_a, [written]) == [], "a pack on the bucket is not uploaded again"
    # A pack whose upload was killed after its features: no keys object, so no host counts it.
    half = cache_a.add(_keys("w"), np.ones((1, 4), np.float32))
    packs_a.bucket.upload(cache_a.directory / f"{half}.features.npy",
                          f".cache/features/{NAMESPACE}/{half}.features.npy")

    with packs_b.bucket.counting() as made:
        assert packs_b.fetch(cache_b) == [written]
    assert made[0] == 1 + 1 + 2, "the bucket check, one listing, the pack's two files"
    found, rows = cache_b.lookup(_keys("y", "w", "x"))
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(rows, features[[1, 0]])
    assert not [p for p in cache_b.directory.iterdir() if p.name.startswith(".")], "no temporary file is left"
    with packs_b.bucket.counting() as made:
        assert packs_b.fetch(cache_b) == []
    assert made[0] == 0, "a namespace is listed once per run; the mirror holds the pack"

    # Host b's new pack reaches host a (a fresh run of it), and a's own packs are not downloaded again.
    mine = cache_b.add(_keys("v"), np.full((1, 4), 7, np.float32))
    packs_b.publish(cache_b, [mine])
    again, cache_a = _host(bucket_env, tmp_path / "host-a")
    assert again.fetch(cache_a) == [mine]
    assert cache_a.lookup(_keys("v"))[1].tolist() == [[7.0] * 4]


@pytest.mark.slow  # ~25 s: two bottleneck runs (TensorFlow) on two hosts of one bucket
def test_a_second_host_reuses_the_features_the_first_computed(bucket_env: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, luigi_config: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pipelines import cli
    from tasks.store.opened import forget_opened
    from tests.fakes.images import write_class_folder
    from tests.test_bottleneck_pipeline import SIZE, tiny_backbone

    photos = tmp_path / "photos"
    write_class_folder(photos, {"disc": 30, "square": 30, "triangle": 30}, size=(48, 36), seed=3)
    backbone = tiny_backbone(tmp_path / "backbone.keras")
    root = f"s3://{bucket_env.bucket}/features"
    command = ["run", "images", "--source", str(photos), "--artifacts", root, "--backbone", str(backbone),
               "--until", "bottleneck", *SIZE]
    assert cli.main(command) == 0
    assert "features: 90 computed, 0 reused" in capsys.readouterr().out
    write_class_folder(tmp_path / "more", {"disc": 5}, size=(48, 36), seed=11)
    for path in (tmp_path / "more" / "disc").iterdir():
        shutil.copy(path, photos / "disc" / f"new_{path.name}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "host-b"))  # another host: an empty mirror
    forget_opened()
    assert cli.main(command) == 0
    assert "features: 5 computed, 90 reused from the cache" in capsys.readouterr().out
    client = bucket_env.client()
    listed = client.list_objects_v2(Bucket=bucket_env.bucket, Prefix="features/")["Contents"]
    keys = [o["Key"] for o in listed]
    packs = {k.rsplit("/", 1)[-1].split(".")[0] for k in keys if "/.cache/features/" in k and k.endswith(".keys.npy")}
    manifests = [json.loads(client.get_object(Bucket=bucket_env.bucket, Key=k)["Body"].read())
                 for k in keys if "/bottleneck/" in k and k.endswith("/MANIFEST.json")]
    named = [{pack.split("/")[1] for pack in m["cache_packs"]} for m in sorted(manifests, key=len_reused)]
    assert len(manifests) == 2 and named[0] < named[1] == packs, (packs, named)
    assert cli.main(["gc", "--keep", "1", "--artifacts", root]) == 0
    out = capsys.readouterr().out
    assert "feature pack" not in out, "both packs are named by the kept bottleneck artifact"
