"""The feature cache: content-keyed lookups across packs, atomic packs, namespaces per backbone and
preprocessing; seeded augmented views are the same on every run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tasks.data.input_pipeline import AugmentConfig
from tasks.features.cache import FeatureCache, namespace, packs_used
from tasks.features.extract import augmented_view
from tasks.features.files import FEATURES_SUFFIX


def digests(count: int, start: int = 0) -> np.ndarray:
    return np.asarray([hashlib.sha256(str(i).encode()).digest() for i in range(start, start + count)], dtype="S32")


def test_lookup_finds_rows_of_every_pack_in_request_order(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "ns")
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    first = cache.add(digests(6), rows[:6])
    second = cache.add(digests(4, start=6), rows[6:])
    fresh = FeatureCache(tmp_path / "ns")  # another process: reads the packs from disk
    wanted = digests(10)[[9, 0, 3]]
    found, cached = fresh.lookup(np.concatenate([wanted, digests(2, start=100)]))
    assert found.tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(cached, rows[[9, 0, 3]])
    assert packs_used(fresh, wanted) == sorted([first, second])


def test_a_pack_without_its_keys_file_does_not_count(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "ns")
    pack = cache.add(digests(3), np.ones((3, 2), np.float32))
    (tmp_path / "ns" / "pack-half.features.npy").write_bytes(b"half written")  # a killed writer's leftover
    assert FeatureCache(tmp_path / "ns").packs() == [pack]
    (tmp_path / "ns" / f"{pack}.keys.npy").unlink()
    found, cached = FeatureCache(tmp_path / "ns").lookup(digests(3))
    assert not found.any() and cached is None
    assert (tmp_path / "ns" / f"{pack}{FEATURES_SUFFIX}").exists()


def test_namespaces_differ_by_backbone_and_preprocessing() -> None:
    base = namespace("sha256:aa", {"image_shape": [32, 32, 3], "view": 0})
    assert base == namespace("sha256:aa", {"view": 0, "image_shape": [32, 32, 3]})
    assert base != namespace("sha256:ab", {"image_shape": [32, 32, 3], "view": 0})
    assert base != namespace("sha256:aa", {"image_shape": [32, 32, 3], "view": 1})


def test_augmented_views_are_seeded_by_content_view_and_seed() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    keys = digests(5)
    augment = AugmentConfig(flip_left_right=True, brightness=0.2, contrast=0.2)
    one = augmented_view(images, keys, 1, 0, augment)
    np.testing.assert_array_equal(one, augmented_view(images, keys, 1, 0, augment))
    np.testing.assert_array_equal(one[2:], augmented_view(images[2:], keys[2:], 1, 0, augment))  # per image
    assert not np.array_equal(one, augmented_view(images, keys, 2, 0, augment))
    assert not np.array_equal(one, augmented_view(images, keys, 1, 7, augment))
    np.testing.assert_array_equal(augmented_view(images, keys, 0, 0, augment), images)
