"""MNIST and Fashion-MNIST: the four official files served over loopback (real IDX bytes, pinned sha256),
`--source DIR`, malformed files with a named error and no artifact, and training well above chance."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli
from pipelines.registry import DATASETS, get_dataset
from tasks.formats.examples import load_split
from tests.fakes.idx import write_fake_mnist
from tests.helpers.http import LoopbackServer

TINY_TRAIN = ["--set", "Train.epochs=3", "--set", "Train.batch_size=32"]


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirrored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201 - yields (fake, server)
    """The registry's mnist entry pointed at a loopback server holding fake official files, pinned by sha256."""
    www = tmp_path / "www"
    fake = write_fake_mnist(www, n_train=600, n_test=200, seed=1)
    with LoopbackServer(www) as server:
        entry = get_dataset("mnist")
        sources = tuple(dataclasses.replace(s, url=server.url + s.url.rsplit("/", 1)[1],
                                            checksum=sha256(www / s.url.rsplit("/", 1)[1])) for s in entry.sources)
        monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(entry, sources=sources))
        yield fake, server


def test_official_sources_are_the_tfds_pinned_files() -> None:
    for name in ("mnist", "fashion_mnist"):
        entry = get_dataset(name)
        assert sorted(s.role for s in entry.sources) == ["test_images", "test_labels", "train_images", "train_labels"]
        assert all(s.checksum.startswith("sha256:") and len(s.checksum) == 71 for s in entry.sources)
    train_images = get_dataset("mnist").sources[0]
    assert train_images.checksum == "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"


@pytest.mark.parametrize("model", ["mlp", pytest.param("lenet5", marks=pytest.mark.slow)])  # lenet5: the same
# pipeline again with another model; lenet5 builds and learns in tests/models/test_models.py
def test_mnist_from_loopback_trains_well_above_chance(model: str, mirrored, tmp_path: Path, luigi_config) -> None:
    fake, server = mirrored
    root = tmp_path / "artifacts"
    assert cli.main(["run", "mnist", "--artifacts", str(root), "--set", f"Train.model={model}", *TINY_TRAIN]) == 0
    downloads = stage_dirs(root, "download")
    assert len(downloads) == 4  # four Downloads, four keys
    [decoded] = stage_dirs(root, "decode")
    manifest = json.loads((decoded / "MANIFEST.json").read_text())
    assert set(manifest["upstream"]) == {"train_images", "train_labels", "test_images", "test_labels"}
    test = load_split(decoded, "test")
    np.testing.assert_array_equal(test["image"][..., 0], fake["test_images"])
    np.testing.assert_array_equal(test["label"], fake["test_labels"])
    assert test["sha256"][5] == hashlib.sha256(fake["test_images"][5].tobytes()).digest()
    metrics = json.loads((stage_dirs(root, "evaluate")[0] / "metrics.json").read_text())
    assert metrics["examples"] == 200
    assert metrics["top1_accuracy"] > 0.5, metrics["top1_accuracy"]  # chance: 0.1
    trained = json.loads((stage_dirs(root, "train")[0] / "train_info.json").read_text())
    assert trained["model"] == model


@pytest.mark.slow  # the mnist pipeline trained again, on its other dataset. In the default suite: mnist end to end
# (above), and this folder's decoding (test_fashion_mnist_decodes_a_folder_of_plain_idx_files, below)
def test_fashion_mnist_from_a_folder_of_plain_idx_files(tmp_path: Path, luigi_config) -> None:
    fake = write_fake_mnist(tmp_path / "fashion", n_train=500, n_test=150, gzip=False, fashion=True, seed=2)
    root = tmp_path / "artifacts"
    assert cli.main(["run", "fashion_mnist", "--source", str(tmp_path / "fashion"), "--artifacts", str(root),
                     *TINY_TRAIN]) == 0
    [decoded] = stage_dirs(root, "decode")
    assert (decoded / "labels.txt").read_text().splitlines()[9] == "9:Ankle boot"
    np.testing.assert_array_equal(load_split(decoded, "train")["label"], fake["train_labels"])
    metrics = json.loads((stage_dirs(root, "evaluate")[0] / "metrics.json").read_text())
    assert metrics["top1_accuracy"] > 0.5


def test_fashion_mnist_decodes_a_folder_of_plain_idx_files(tmp_path: Path, luigi_config) -> None:
    """The decoding the slow test above checks, without training: Fashion-MNIST's class names and labels from a
    folder of plain (not gzipped) IDX files."""
    fake = write_fake_mnist(tmp_path / "fashion", n_train=500, n_test=150, gzip=False, fashion=True, seed=2)
    root = tmp_path / "artifacts"
    assert cli.main(["run", "fashion_mnist", "--source", str(tmp_path / "fashion"), "--artifacts", str(root),
                     "--until", "decode"]) == 0
    [decoded] = stage_dirs(root, "decode")
    assert (decoded / "labels.txt").read_text().splitlines()[9] == "9:Ankle boot"
    np.testing.assert_array_equal(load_split(decoded, "train")["label"], fake["train_labels"])


def rewrite_gzip(path: Path, change) -> None:  # noqa: ANN001 - a bytes -> bytes function
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


CASES = {
    "wrong magic": ("train-labels-idx1-ubyte.gz", lambda b: b"\x00\x00\x08\x03" + b[4:], "magic"),
    "count mismatch": ("t10k-labels-idx1-ubyte.gz", lambda b: b[:4] + (49).to_bytes(4, "big") + b[8:57], "count"),
    "truncated": ("train-images-idx3-ubyte.gz", lambda b: b[:-100], "truncated"),
    "dimensions disagree with size": ("t10k-images-idx3-ubyte.gz",
                                      lambda b: b[:8] + (27).to_bytes(4, "big") + b[12:], "byte"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_idx_fails_with_a_named_error_and_no_artifact(case: str, tmp_path: Path, luigi_config,
                                                               capsys) -> None:
    name, change, word = CASES[case]
    folder = tmp_path / "mnist"
    write_fake_mnist(folder, n_train=60, n_test=50, seed=3)
    rewrite_gzip(folder / name, change)
    root = tmp_path / "artifacts"
    assert cli.main(["run", "mnist", "--source", str(folder), "--until", "decode", "--artifacts", str(root)]) == 30
    err = capsys.readouterr().err
    assert any(line.startswith("tfpipe: DecodeMnist failed") for line in err.splitlines()), err
    assert name in err and "offset" in err and word in err.lower(), err
    assert stage_dirs(root, "decode") == []
    assert "Traceback" not in err


def test_folder_missing_a_file_says_which(tmp_path: Path, luigi_config, capsys) -> None:
    folder = tmp_path / "mnist"
    write_fake_mnist(folder, n_train=20, n_test=20, seed=4)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert cli.main(["run", "mnist", "--source", str(folder), "--until", "decode",
                     "--artifacts", str(tmp_path / "a")]) == 30
    assert "test_labels: t10k-labels-idx1-ubyte.gz" in capsys.readouterr().err
