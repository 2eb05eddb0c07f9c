"""CIFAR data stages end to end: loopback download -> decode -> image dirs -> TFRecord shards."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli
from tasks.datasets.cifar.codec import CIFAR10, CIFAR100
from tests.fakes.cifar import write_cifar_archive
from tests.helpers.http import LoopbackServer

REPO = Path(__file__).resolve().parents[1]


def make_archive(directory: Path, spec=CIFAR10, n_train: int = 300, n_test: int = 60) -> tuple[Path, dict]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / spec.archive_name
    source = write_cifar_archive(path, spec, n_train, n_test, seed=7)
    return path, source


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted(p for p in (root / stage).glob("*-*") if not p.name.startswith("."))


def source_image(source: dict, key: bytes, spec=CIFAR10) -> tuple[np.ndarray, int]:
    """The generated image behind a key ``<split>/<batch>/<index>``."""
    split, batch, index = key.decode().split("/")
    names = spec.batches(split)
    total = len(source[f"{split}_labels"])
    bounds = np.linspace(0, total, len(names) + 1).astype(int)
    row = bounds[names.index(batch)] + int(index)
    return source[f"{split}_images"][row], int(source[f"{split}_labels"][row])


def run_cli(*args: str) -> int:
    return cli.main(list(args))


@pytest.fixture
def served_cifar(tmp_path: Path):
    archive, source = make_archive(tmp_path / "www")
    with LoopbackServer(tmp_path / "www") as server:
        yield f"{server.url}{archive.name}", sha256(archive), source, server


def test_loopback_to_shards_equal_source_exactly(served_cifar, tmp_path: Path, luigi_config) -> None:
    tf = pytest.importorskip("tensorflow")
    url, checksum, source, _ = served_cifar
    root = tmp_path / "artifacts"
    assert run_cli("run", "cifar10", "--source", url, "--checksum", checksum, "--until", "tfrecords",
                   "--artifacts", str(root)) == 0
    [shard_dir] = stage_dirs(root, "tfrecords")
    info = json.loads((shard_dir / "tfpipe_info.json").read_text())
    assert info["image_format"] == "raw"
    assert (shard_dir / "labels.txt").read_text().splitlines()[0] == "0:airplane"
    counts = {split: spec["count"] for split, spec in info["splits"].items()}
    assert counts["train"] + counts["validation"] == 300 and counts["test"] == 60
    assert 10 <= counts["validation"] <= 55  # 10 % by stable hash
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([1], tf.int64),
        "image/key": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
    }
    seen = set()
    for split, spec in info["splits"].items():
        files = [str(shard_dir / f) for f in spec["files"]]
        assert all(Path(f).name.startswith(f"cifar10-{split}.tfrecord-") for f in files)
        for record in tf.data.TFRecordDataset(files):
            example = tf.io.parse_single_example(record, features)
            key = example["image/key"].numpy()
            image = tf.reshape(tf.io.decode_raw(example["image/encoded"], tf.uint8), (32, 32, 3)).numpy()
            expected_image, expected_label = source_image(source, key)
            np.testing.assert_array_equal(image, expected_image)
            assert int(example["image/class/label"][0]) == expected_label
            assert int(example["image/height"]) == 32
            seen.add(key)
    assert len(seen) == 360
    # image dirs: <split>/<class_name>/<n>.png, PNGs equal to the source pixels
    [image_dirs] = stage_dirs(root, "imagedirs")
    pngs = sorted((image_dirs / "test").glob("*/*.png"))
    assert len(pngs) == 60 and {p.parent.name for p in pngs} <= set(CIFAR10.label_names)


def test_rerun_is_a_no_op_without_tensorflow(served_cifar, tmp_path: Path) -> None:
    url, checksum, _, server = served_cifar
    root = tmp_path / "artifacts"
    command = [sys.executable, "-c",
               "import sys; from pipelines.cli import main; code = main(sys.argv[1:]); "
               "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED'); sys.exit(code)",
               "run", "cifar10", "--source", url, "--checksum", checksum, "--until", "tfrecords",
               "--artifacts", str(root)]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert first.returncode == 0, first.stderr
    manifests = {p: (p / "MANIFEST.json").stat().st_mtime_ns for s in ("download", "decode", "imagedirs",
                                                                      "tfrecords") for p in stage_dirs(root, s)}
    assert len(manifests) == 4
    requests_before = len(server.requests)
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "TF_NOT_LOADED" in second.stdout
    assert {p: (p / "MANIFEST.json").stat().st_mtime_ns for p in manifests} == manifests
    assert len(server.requests) == requests_before  # nothing downloaded again


def test_changed_validation_fraction_reruns_only_later_stages(served_cifar, tmp_path: Path, luigi_config) -> None:
    url, checksum, _, _ = served_cifar
    root = tmp_path / "artifacts"
    base = ["run", "cifar10", "--source", url, "--checksum", checksum, "--until", "tfrecords", "--artifacts",
            str(root)]
    assert run_cli(*base) == 0
    first = {s: stage_dirs(root, s) for s in ("download", "decode", "imagedirs", "tfrecords")}
    assert run_cli(*base, "--set", "ImageDirs.validation_fraction=0.3") == 0
    second = {s: stage_dirs(root, s) for s in first}
    assert second["download"] == first["download"] and second["decode"] == first["decode"]
    assert len(second["imagedirs"]) == 2 and len(second["tfrecords"]) == 2


def test_checksum_mismatch_fails_before_decode(served_cifar, tmp_path: Path, luigi_config) -> None:
    url, _, _, _ = served_cifar
    root = tmp_path / "artifacts"
    code = run_cli("run", "cifar10", "--source", url, "--checksum", "sha256:" + "0" * 64,
                   "--until", "tfrecords", "--artifacts", str(root))
    assert code == 30  # [retcode] task_failed in luigi.cfg
    for stage in ("download", "decode", "imagedirs", "tfrecords"):
        assert stage_dirs(root, stage) == []
    assert not list((root / "download").rglob("*.tar.gz"))


def test_unpinned_url_is_refused(served_cifar, tmp_path: Path, luigi_config, capsys) -> None:
    url, _, _, _ = served_cifar
    code = run_cli("status", "cifar10", "--source", url, "--artifacts", str(tmp_path / "a"))
    assert code == 2
    assert "pinned checksum" in capsys.readouterr().err


def test_status_and_explain(served_cifar, tmp_path: Path, luigi_config, capsys) -> None:
    url, checksum, _, _ = served_cifar
    base = ["--source", url, "--checksum", checksum, "--until", "tfrecords", "--artifacts", str(tmp_path / "a")]
    assert run_cli("status", "cifar10", *base) == 0
    assert capsys.readouterr().out.count("to-do") == 4
    assert run_cli("run", "cifar10", *base) == 0
    capsys.readouterr()
    assert run_cli("status", "cifar10", *base) == 0
    out = capsys.readouterr().out
    assert "up to date: every stage is done" in out and out.count("done ") == 4
    assert run_cli("explain", "cifar10", *base, "--set", "TFRecords.num_shards=3") == 0
    out = capsys.readouterr().out
    assert "parameter num_shards: '0' -> '3'" in out and "imagedirs" not in out


def test_cifar100_local_archive_with_coarse_labels(tmp_path: Path, luigi_config) -> None:
    archive, source = make_archive(tmp_path / "src", CIFAR100, n_train=120, n_test=30)
    root = tmp_path / "artifacts"
    assert run_cli("run", "cifar100", "--source", str(archive), "--until", "tfrecords", "--artifacts",
                   str(root)) == 0
    [decoded] = stage_dirs(root, "decode")
    assert len((decoded / "labels.txt").read_text().splitlines()) == 100
    assert len((decoded / "coarse_labels.txt").read_text().splitlines()) == 20
    [shards] = stage_dirs(root, "tfrecords")
    info = json.loads((shards / "tfpipe_info.json").read_text())
    assert info["num_classes"] == 100 and info["splits"]["test"]["count"] == 30
    assert run_cli("run", "cifar100", "--source", str(archive), "--until", "decode", "--artifacts", str(root),
                   "--set", "DecodeCifar.label_mode=coarse") == 0
    [coarse] = [d for d in stage_dirs(root, "decode") if d != decoded]
    assert (coarse / "labels.txt").read_text() == (decoded / "coarse_labels.txt").read_text()
    from tasks.formats.examples import load_split

    np.testing.assert_array_equal(load_split(coarse, "test")["label"], source["test_coarse_labels"])
    np.testing.assert_array_equal(load_split(decoded, "test")["label"], source["test_labels"])


def comparable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("started_at", "finished_at", "seconds", "libraries")}


@pytest.mark.slow  # the same as the default suite's fault injection on CIFAR-10's data stages: kill -9 mid-stage,
# rerun, files equal to an uninterrupted run's (tests/reliability/test_faults.py::
# test_fault_then_rerun_rebuilds_the_reference[cifar10-imagedirs-pre_commit], [cifar10-decode-mid_write], ...)
def test_kill_9_mid_stage_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    archive, _ = make_archive(tmp_path / "src", n_train=6000, n_test=500)
    args = ["run", "cifar10", "--source", str(archive), "--until", "tfrecords"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    tfpipe = [sys.executable, "-m", "pipelines.cli"]
    subprocess.run([*tfpipe, *args, "--artifacts", str(clean)], check=True, cwd=REPO, env=env, timeout=300,
                   capture_output=True)
    process = subprocess.Popen([*tfpipe, *args, "--artifacts", str(killed)], cwd=REPO, env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "imagedirs").glob(".tmp-*/train/*/*.png")):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list((killed / "imagedirs").glob(".tmp-*")), "the kill should land inside the image-dirs stage"
    assert stage_dirs(killed, "imagedirs") == []  # nothing counts as done
    subprocess.run([*tfpipe, *args, "--artifacts", str(killed)], check=True, cwd=REPO, env=env, timeout=300,
                   capture_output=True)
    assert not list((killed / "imagedirs").glob(".tmp-*")), "the killed run's temporary dir is swept"
    for stage in ("download", "decode", "imagedirs", "tfrecords"):
        [a], [b] = stage_dirs(clean, stage), stage_dirs(killed, stage)
        assert a.name == b.name
        assert comparable(json.loads((a / "MANIFEST.json").read_text())) == comparable(
            json.loads((b / "MANIFEST.json").read_text()))


def test_plain_luigi_command_runs_the_same_tasks(tmp_path: Path) -> None:
    archive, _ = make_archive(tmp_path / "src", n_train=100, n_test=20)
    root = tmp_path / "artifacts"
    luigi_bin = Path(sys.executable).with_name("luigi")
    base = [str(luigi_bin), "--module", "pipelines.cifar10", "Cifar10", "--until", "tfrecords",
            "--ArtifactStore-root", str(root), "--local-scheduler"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([*base, "--source", str(archive)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(stage_dirs(root, "tfrecords")) == 1
    bad = subprocess.run([*base, "--source", str(archive), "--checksum", "sha256:" + "1" * 64], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 30, bad.stderr[-2000:]  # [retcode] task_failed from luigi.cfg
    assert "ChecksumError" in bad.stderr


def test_central_luigid_with_two_workers(tmp_path: Path) -> None:
    from tests.helpers.processes import luigid

    archive, _ = make_archive(tmp_path / "src", n_train=100, n_test=20)
    with luigid(tmp_path) as url:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "cifar10", "--source", str(archive),
                                 "--until", "tfrecords", "--artifacts", str(tmp_path / "artifacts"),
                                 "--scheduler-url", url, "--workers", "2"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(stage_dirs(tmp_path / "artifacts", "tfrecords")) == 1


def test_cifar10_trains_evaluates_freezes_and_predicts_fixture_jpegs(
        tmp_path: Path, luigi_config, capsys: pytest.CaptureFixture) -> None:
    from tests.conftest import FIXTURES

    archive, _ = make_archive(tmp_path / "src", n_train=400, n_test=80)
    root = tmp_path / "artifacts"
    assert run_cli("run", "cifar10", "--source", str(archive), "--artifacts", str(root), "--set", "Train.model=mlp",
                   "--set", "Train.epochs=2", "--set", "Train.batch_size=32") == 0
    metrics = json.loads((stage_dirs(root, "evaluate")[0] / "metrics.json").read_text())
    assert metrics["examples"] == 80 and metrics["top1_accuracy"] <= metrics["top_k_accuracy"]
    assert metrics["top_k"] == 3 and len(metrics["per_class"]) == 10
    # Evaluate streams batch by batch; the same numbers as the whole split predicted in memory.
    import keras
    import numpy as np

    from tasks.data.shards import load_split_arrays
    from tasks.evaluation.report import classification_metrics
    from tasks.evaluation.task import predict_in_batches
    from tasks.training.files import MODEL_FILE

    [shards], [trained] = stage_dirs(root, "tfrecords"), stage_dirs(root, "train")
    images, labels = load_split_arrays(shards, "test")
    model = keras.models.load_model(trained / MODEL_FILE, compile=False)
    whole = classification_metrics(labels, predict_in_batches(model, images, 256), top_k=3,
                                   class_names=[row["class"] for row in metrics["per_class"]])
    assert whole["confusion_matrix"] == metrics["confusion_matrix"]
    assert whole["top_k_accuracy"] == pytest.approx(metrics["top_k_accuracy"])
    np.testing.assert_array_equal(np.load(stage_dirs(root, "evaluate")[0] / "confusion_matrix.npy"),
                                  np.asarray(metrics["confusion_matrix"]))
    [frozen] = stage_dirs(root, "freeze")
    assert json.loads((frozen / "MANIFEST.json").read_text())["max_abs_diff"] <= 1e-5
    jpegs = sorted((FIXTURES / "imagefolder_hf_beans_dummy" / "train").glob("*/*.jpg"))
    if not jpegs:
        pytest.skip(f"no fixture JPEGs under {FIXTURES}")
    capsys.readouterr()
    assert run_cli("predict", str(frozen), *map(str, jpegs)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(jpegs)
    for line, jpeg in zip(lines, jpegs, strict=True):
        assert line.startswith(str(jpeg))
        found = re.findall(r"(\w+) \((\d\.\d+)\)", line)
        assert len(found) == 3 and all(name in CIFAR10.label_names for name, _ in found)
        probabilities = [float(p) for _, p in found]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001


@pytest.mark.parametrize("missing", ["batches.meta", "data_batch_3"])
def test_an_archive_without_a_member_names_the_archive_and_the_member(missing: str, tmp_path: Path, luigi_config,
                                                                      capsys) -> None:
    archive = tmp_path / "src" / CIFAR10.archive_name
    archive.parent.mkdir()
    write_cifar_archive(archive, CIFAR10, 50, 10, seed=7, leave_out=(missing,))
    root = tmp_path / "artifacts"
    assert run_cli("run", "cifar10", "--source", str(archive), "--until", "decode", "--artifacts", str(root)) == 30
    [line] = [text for text in capsys.readouterr().err.splitlines() if text.startswith("tfpipe: ")]
    assert line.startswith("tfpipe: DecodeCifar failed: ")
    assert line.endswith(f"/cifar-10-python.tar.gz: no member cifar-10-batches-py/{missing} (a CIFAR-10 python "
                         "archive holds batches.meta, data_batch_1..5, test_batch)"), line
    assert ".extract" not in line and ".tmp-" not in line
    assert stage_dirs(root, "decode") == []
