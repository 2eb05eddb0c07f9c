"""The data check's findings and policies on small hand-made splits (tasks/datacheck/checks.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tasks.datacheck.checks import check_examples
from tasks.datacheck.duplicates import near_duplicate_pairs
from tasks.datacheck.policies import CheckSettings
from tasks.datacheck.scan import HashProjection, SplitExamples

CLASSES = ["a", "b", "c"]


def textured(seed: int, size: int = 16) -> np.ndarray:
    """An image with structure at every scale (no two seeds alike)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4))
    return np.clip(np.kron(coarse, np.ones((size // 4, size // 4))) + rng.normal(0, 20, (size, size)), 0, 255
                   ).astype(np.uint8)[..., None]


def make_splits(images: list[np.ndarray], labels: list[int], split_of: list[str]) -> list[SplitExamples]:
    pixels = np.stack(images)
    keys = np.asarray([f"img{i}.png".encode() for i in range(len(images))])
    digests = np.asarray([hashlib.sha256(p.tobytes()).digest() for p in pixels], dtype="S32")
    label_array = np.asarray(labels, dtype=np.int32)
    names = [n for n in ("train", "validation", "test") if n in split_of]
    return [SplitExamples(name, pixels, label_array, keys, digests,
                          np.asarray([i for i, s in enumerate(split_of) if s == name])) for name in names]


def base_examples(count: int = 12) -> tuple[list[np.ndarray], list[int], list[str]]:
    images = [textured(i) for i in range(count)]
    labels = [i % 3 for i in range(count)]
    split_of = ["train"] * (count - 3) + ["test"] * 3
    return images, labels, split_of


def test_clean_data_passes_with_counts_and_pixel_statistics() -> None:
    images, labels, split_of = base_examples()
    result = check_examples(make_splits(images, labels, split_of), CLASSES, CheckSettings())
    report = result.report
    assert report["passed"] and not report["warnings"] and not report["failures"]
    assert report["splits"]["train"]["class_counts"] == [3, 3, 3]
    assert report["splits"]["test"]["examples"] == 3
    pixels = np.stack(images[:9]).astype(np.float64)
    assert report["splits"]["train"]["pixels"]["mean"][0] == pytest.approx(pixels.mean(), abs=1e-3)
    assert report["splits"]["train"]["pixels"]["std"][0] == pytest.approx(pixels.std(), abs=1e-3)


def test_a_leak_fails_by_default_and_is_named_by_both_files() -> None:
    images, labels, split_of = base_examples()
    images[10] = images[2].copy()  # test copy of a train image
    labels[10] = labels[2]
    result = check_examples(make_splits(images, labels, split_of), CLASSES, CheckSettings())
    assert not result.report["passed"]
    (line,) = result.failures
    assert "1 images leak across splits (1 train/test)" in line and "img2.png" in line and "img10.png" in line


def test_on_leak_drop_removes_only_the_later_split_copy() -> None:
    images, labels, split_of = base_examples()
    images[10] = images[2].copy()
    labels[10] = labels[2]
    splits = make_splits(images, labels, split_of)
    result = check_examples(splits, CLASSES, CheckSettings(on_leak="drop"))
    assert result.report["passed"]
    assert result.dropped["train"].tolist() == [] and result.dropped["test"].tolist() == [1]  # img10: test's 2nd
    assert result.report["findings"]["leak"]["dropped"] == 1 and result.report["dropped"] == {"train": 0, "test": 1}


def test_a_label_conflict_drops_every_copy() -> None:
    images, labels, split_of = base_examples()
    images[4] = images[1].copy()
    labels[4] = (labels[1] + 1) % 3  # the same pixels, another class, both in train
    result = check_examples(make_splits(images, labels, split_of), CLASSES,
                            CheckSettings(on_conflict="drop", on_duplicate="warn"))
    conflict = result.report["findings"]["conflict"]
    assert conflict["count"] == 1 and conflict["items"][0]["labels"] == ["b", "c"]
    assert result.dropped["train"].tolist() == [1, 4]
    assert result.report["findings"]["duplicate"]["count"] == 1  # also a copy within train: warned


def test_duplicates_within_a_split_keep_the_first_copy_when_dropped() -> None:
    images, labels, split_of = base_examples()
    images[5] = images[3].copy()
    images[6] = images[3].copy()
    labels[5] = labels[6] = labels[3]
    result = check_examples(make_splits(images, labels, split_of), CLASSES, CheckSettings(on_duplicate="drop"))
    assert result.report["findings"]["duplicate"]["count"] == 2
    assert result.dropped["train"].tolist() == [5, 6]


def test_blank_and_constant_images_are_degenerate() -> None:
    images, labels, split_of = base_examples()
    images[0] = np.full_like(images[0], 255)
    images[11] = np.full_like(images[11], 7)
    images[11][0, 0] = 9  # nearly constant
    result = check_examples(make_splits(images, labels, split_of), CLASSES, CheckSettings())
    degenerate = result.report["findings"]["degenerate"]
    assert degenerate["count"] == 2 and {i["key"] for i in degenerate["items"]} == {"img0.png", "img11.png"}
    assert degenerate["policy"] == "warn" and result.report["passed"]
    assert any("constant or nearly blank" in w for w in result.warnings)


def test_near_duplicates_across_splits_are_found_and_copies_within_are_not() -> None:
    images, labels, split_of = base_examples()
    noisy = images[2].astype(np.int16) + np.random.default_rng(0).integers(-3, 4, images[2].shape)
    images[10] = np.clip(noisy, 0, 255).astype(np.uint8)  # a slightly changed copy, in test
    result = check_examples(make_splits(images, labels, split_of), CLASSES, CheckSettings())
    near = result.report["findings"]["near_duplicate"]
    assert near["count"] == 1
    assert {near["items"][0]["first"]["key"], near["items"][0]["second"]["key"]} == {"img2.png", "img10.png"}
    assert result.report["findings"]["leak"]["count"] == 0  # not the same pixels: not a leak


def test_missing_classes_and_imbalance_warn() -> None:
    images, labels, split_of = base_examples()
    labels[9:] = [0, 0, 0]  # test holds only class a
    result = check_examples(make_splits(images, labels, split_of), CLASSES, CheckSettings(imbalance_ratio=1.5))
    imbalance = result.report["findings"]["imbalance"]
    assert imbalance["count"] == 1 and imbalance["items"][0] == {"split": "test", "missing_classes": ["b", "c"]}
    assert "test lacks 2 classes (b, c)" in imbalance["line"]


@pytest.mark.parametrize("field, value", [("on_imbalance", "drop"), ("on_leak", "ignore"),
                                          ("near_duplicate_distance", 64), ("imbalance_ratio", 0.5)])
def test_settings_refuse_what_cannot_work(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        CheckSettings(**{field: value})


def test_the_perceptual_hash_ignores_small_changes_and_tells_images_apart() -> None:
    projection = HashProjection.for_shape(16, 16)
    first, other = textured(1)[..., 0].astype(np.float32), textured(2)[..., 0].astype(np.float32)
    hashes = projection.hashes(np.stack([first, first + 2.0, other]))
    assert np.bitwise_count(hashes[0] ^ hashes[1]) == 0
    assert np.bitwise_count(hashes[0] ^ hashes[2]) > 12


def test_near_duplicate_search_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, 400, dtype=np.int64).astype(np.uint64)
    hashes[200:260] = hashes[:60] ^ (np.uint64(1) << rng.integers(0, 64, 60).astype(np.uint64))  # 1 bit off
    split_of = np.asarray([0] * 200 + [1] * 200)
    found = near_duplicate_pairs(hashes, split_of, distance=6)
    bits = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero((bits <= 6) & (split_of[:, None] != split_of[None, :]))
    expected = {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True) if a < b}
    assert {(int(a), int(b)) for a, b, _ in found} == expected and len(expected) >= 60


def test_original_sizes_are_summarised_where_the_decoder_recorded_them() -> None:
    images, labels, split_of = base_examples()
    splits = make_splits(images, labels, split_of)
    sizes = np.asarray([[40, 30], [64, 64], [17, 90]] * 4, dtype=np.int32)
    with_sizes = [SplitExamples(s.name, s.images, s.labels, s.keys, s.digests, s.rows, sizes) for s in splits]
    report = check_examples(with_sizes, CLASSES, CheckSettings()).report
    train = report["splits"]["train"]["original_sizes"]
    assert train["distinct_sizes"] == 3 and train["varies"] is True
    assert train["height"] == {"min": 17.0, "median": 40.0, "max": 64.0}
    assert train["aspect_ratio"]["max"] == pytest.approx(90 / 17, abs=1e-3)
    assert check_examples(splits, CLASSES, CheckSettings()).report["splits"]["train"]["original_sizes"] is None
