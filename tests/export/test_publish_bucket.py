"""Publishing on a bucket root and ``tfpipe predict s3://...`` (tasks/export/publish_bucket.py,
tasks/export/fetch_model.py), against a real S3 server (SeaweedFS, tests/helpers/s3.py).

A version's number is claimed by creating its publish.json (If-None-Match), its files are uploaded with
saved_model.pb last, and ``current`` ({"version": N}) moves only by a conditional write; a publisher that
loses the race for ``current`` is judged again against the winner, or withdrawn. Most tests publish a fake
freeze artifact (bytes only: no TensorFlow); one trains a small model, publishes it on the bucket and predicts
from its URL as from the local freeze artifact. The variants that train again are marked slow.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines import cli
from tasks.export.fetch_model import fetch_model, parse_model_url
from tasks.export.publish_bucket import Current, current_object, publish, read_current, record_object
from tasks.store.bucket import Bucket
from tasks.store.opened import forget_opened, open_root
from tasks.store.roots import parse_root
from tests.fakes.images import write_class_folder

TRAIN = ["--set", "DecodeImages.image_size=32", "--set", "Train.batch_size=16", "--set", "Train.patience=10"]
FAKE_FILES = {"saved_model/saved_model.pb": b"graph", "saved_model/fingerprint.pb": b"fp",
              "saved_model/variables/variables.index": b"index",
              "saved_model/variables/variables.data-00000-of-00001": b"weights" * 100,
              "labels.txt": b"0:disc\n1:square\n", "frozen_graph.pb": b"frozen", "frozen_graph.json": b"{}",
              "model.keras": b"not published"}
PUBLISHED = ["fingerprint.pb", "frozen_graph.json", "frozen_graph.pb", "labels.txt", "publish.json",
             "saved_model.pb", "variables/variables.data-00000-of-00001", "variables/variables.index"]


# ---- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The server's AWS settings in this process for the whole module, one bucket, and a host cache in a tmp
    folder; open roots forgotten before and after."""
    bucket = f"tfpipe-publish-{uuid.uuid4().hex[:8]}"
    s3_server.make_bucket(bucket)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("host-cache")))
        patch.setattr(s3_server, "bucket", bucket, raising=False)
        forget_opened()
        yield s3_server
        forget_opened()


@pytest.fixture
def fresh_roots() -> Iterator[None]:
    forget_opened()
    yield
    forget_opened()


def _bucket(s3: Any, prefix: str = "unit") -> Bucket:
    return Bucket(parse_root(f"s3://{s3.bucket}/{prefix}"))


def _frozen(folder: Path, weights: bytes = b"weights") -> Path:
    """A fake freeze artifact: the files publish takes, with made-up bytes."""
    for relative, data in FAKE_FILES.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(weights * 100 if relative.endswith("00001") else data)
    return folder


def value_gate(value: float, current: Current | None) -> str:
    """A gate on the stored values alone (these fake models cannot be run): refuse a model worse than current."""
    if current is not None and value < current.value:
        return f"metric {value:.4f} is worse than the current model's {current.value:.4f}"
    return ""


def _publish(bucket: Bucket, name: str, frozen: Path, value: float,
             current_seen: list[float | None] | None = None) -> dict[str, Any]:
    def judge(current: Current | None) -> str:
        if current_seen is not None:
            current_seen.append(current.value if current else None)
        return value_gate(value, current)

    return publish(bucket, name, frozen, judge=judge,
                   record={"metric": "top1_accuracy", "value": value, "freeze_artifact": "freeze/Freeze-0123456789ab"})


def _objects(s3: Any, prefix: str) -> dict[str, Any]:
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: o for o in listed}


def _pointer(bucket: Bucket, name: str) -> dict[str, Any]:
    return json.loads(bucket.read(current_object(name)) or b"null")


class Spy:
    """Records the bucket calls publish makes, in order: (method, path, tag for replace)."""

    def __init__(self, bucket: Bucket) -> None:
        self.calls: list[tuple[str, str]] = []
        self.tags: list[str | None] = []
        for method in ("create", "upload", "replace", "delete"):
            setattr(bucket, method, self._wrap(method, getattr(bucket, method)))

    def _wrap(self, method: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            where = args[1] if method == "upload" else args[0]
            self.calls.append((method, where if isinstance(where, str) else ",".join(where)))
            if method == "replace":
                self.tags.append(args[2])
            return real(*args)
        return call


# ---- publishing (no TensorFlow) -----------------------------------------------------------------------------
def test_versions_are_claimed_uploaded_saved_model_last_and_current_moves_conditionally(s3: Any,
                                                                                       tmp_path: Path) -> None:
    bucket, name = _bucket(s3), "order"
    spy = Spy(bucket)
    frozen = _frozen(tmp_path / "frozen")
    first = _publish(bucket, name, frozen, 0.8)
    assert first == {"published": True, "published_version": 1, "current_version": None, "current_value": None}
    prefix = "published/order/1/"
    assert spy.calls[0] == ("create", prefix + "publish.json"), "the record claims the number first"
    uploads = [path[len(prefix):] for method, path in spy.calls if method == "upload"]
    assert sorted(uploads) == sorted(set(PUBLISHED) - {"publish.json"}) and uploads[-1] == "saved_model.pb"
    moved = spy.calls.index(("replace", "published/order/current"))
    assert spy.tags == [None] and spy.calls[moved + 1:] == [("create", "published/order/current")], \
        "the first current is created (If-None-Match)"
    assert all(method != "upload" for method, _ in spy.calls[moved:]), "current moves after every upload"
    assert _pointer(bucket, name) == {"version": 1}
    objects = _objects(s3, f"unit/{prefix}")
    assert sorted(objects) == PUBLISHED
    assert max(objects.values(), key=lambda o: o["LastModified"])["LastModified"] == \
        objects["saved_model.pb"]["LastModified"], "saved_model.pb is the newest object of the version"
    record = json.loads(bucket.read(record_object(name, 1)) or b"")
    assert record["version"] == 1 and record["value"] == 0.8
    assert record["freeze_artifact"] == "freeze/Freeze-0123456789ab"
    import hashlib

    assert record["files"]["variables/variables.data-00000-of-00001"] == {
        "size": 700, "sha256": hashlib.sha256(b"weights" * 100).hexdigest()}

    # An equal model: version 2; current replaced with If-Match the ETag read with version 1.
    _, tag = bucket.read_with_tag(current_object(name)) or (b"", "")
    seen: list[float | None] = []
    second = _publish(bucket, name, frozen, 0.8, seen)
    assert second["published_version"] == 2 and second["current_version"] == 1 and seen == [0.8]
    assert spy.tags[-1] == tag and _pointer(bucket, name) == {"version": 2}

    # A worse one is refused against the bucket's current record: nothing uploaded, current stays.
    calls = len(spy.calls)
    third = _publish(bucket, name, frozen, 0.5)
    assert third["published"] is False and "worse than the current model's 0.8000" in third["reason"]
    assert spy.calls[calls:] == [] and _pointer(bucket, name) == {"version": 2}
    assert not _objects(s3, "unit/published/order/3/")


def test_a_taken_number_is_skipped_and_a_stale_etag_cannot_move_current(s3: Any, tmp_path: Path) -> None:
    bucket, name = _bucket(s3), "taken"
    frozen = _frozen(tmp_path / "frozen")
    assert _publish(bucket, name, frozen, 0.7)["published_version"] == 1
    stale = read_current(bucket, name)
    assert stale is not None and stale.version == 1
    # A publisher killed after claiming 2 left its record and no saved_model.pb: the next one takes 3.
    assert bucket.create(record_object(name, 2), b'{"version": 2}')
    assert _publish(bucket, name, frozen, 0.7)["published_version"] == 3
    assert bucket.replace(current_object(name), b'{"version": 1}', stale.tag) is False, "If-Match a stale ETag"
    assert _pointer(bucket, name) == {"version": 3}
    fresh = read_current(bucket, name)
    assert fresh is not None and bucket.replace(current_object(name), b'{"version": 3}', fresh.tag) is True


def _racing_judge(bucket: Bucket, name: str, other: Path, other_value: float, value: float) -> Callable[..., str]:
    """A judge that, the first time it is asked, lets another publisher publish ``other`` (it claims the next
    number and moves current first), then judges ``value`` by `value_gate`."""
    asked: list[float | None] = []

    def judge(current: Current | None) -> str:
        asked.append(current.value if current else None)
        if len(asked) == 1:
            _publish(Bucket(bucket.location), name, other, other_value)
        return value_gate(value, current)

    judge.asked = asked  # type: ignore[attr-defined]
    return judge


@pytest.mark.parametrize(("ours", "theirs", "published"), [(0.9, 0.8, True), (0.7, 0.8, False)])
def test_losing_the_race_for_current_judges_again_against_the_winner(s3: Any, tmp_path: Path, ours: float,
                                                                    theirs: float, published: bool) -> None:
    bucket, name = _bucket(s3), f"race-{int(published)}"
    mine, other = _frozen(tmp_path / "mine", b"mine"), _frozen(tmp_path / "other", b"other")
    assert _publish(bucket, name, mine, 0.5)["published_version"] == 1
    judge = _racing_judge(bucket, name, other, theirs, ours)
    decision = publish(bucket, name, mine, judge=judge, record={"metric": "m", "value": ours})
    assert judge.asked == [0.5, theirs], "judged against version 1, then against the winner's record"  # type: ignore[attr-defined]
    assert decision["current_version"] == 2 and decision["current_value"] == theirs
    if published:
        assert decision["published_version"] == 3 and _pointer(bucket, name) == {"version": 3}
    else:
        assert decision["published"] is False and "worse than the current model's 0.8000" in decision["reason"]
        assert _pointer(bucket, name) == {"version": 2}
        assert not _objects(s3, f"unit/published/{name}/3/"), "the loser's version is withdrawn"


def test_a_newer_version_published_meanwhile_withdraws_ours(s3: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.export.publish_bucket as publish_bucket

    bucket, name = _bucket(s3), "newer"
    mine, other = _frozen(tmp_path / "mine", b"mine"), _frozen(tmp_path / "other", b"other")
    real_upload = publish_bucket.upload_version
    racing = [True]

    def upload_then_lose(bucket_: Bucket, name_: str, version: int, files: Any) -> None:
        real_upload(bucket_, name_, version, files)
        if racing.pop() if racing else False:  # another publisher claims 2 and moves current to it first
            _publish(Bucket(bucket.location), name, other, 0.9)

    monkeypatch.setattr(publish_bucket, "upload_version", upload_then_lose)
    decision = _publish(bucket, name, mine, 0.95)
    assert decision["published"] is False and decision["reason"] == "version 2 was published meanwhile"
    assert _pointer(bucket, name) == {"version": 2} and not _objects(s3, f"unit/published/{name}/1/")


# ---- fetching (no TensorFlow) -------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("s3://b-1/p/q/published/shapes", ("s3://b-1/p/q", "shapes", None, "", "")),
    ("s3://b-1/published/shapes/current", ("s3://b-1", "shapes", None, "", "")),
    ("s3://b-1/p/published/shapes/12", ("s3://b-1/p", "shapes", 12, "", "")),
    ("s3://b-1/p/freeze/Freeze-0123456789ab", ("s3://b-1/p", "", None, "freeze", "Freeze-0123456789ab")),
    ("s3://b-1/p/freeze/Freeze-0123456789ab/host-12-abcd1234/", ("s3://b-1/p", "", None, "freeze",
                                                                 "Freeze-0123456789ab")),
])
def test_model_urls(url: str, expected: tuple[Any, ...]) -> None:
    got = parse_model_url(url)
    assert (got.root, got.name, got.version, got.stage, got.folder) == expected


@pytest.mark.parametrize("url", ["s3://b-1/p/freeze", "s3://b-1", "gs://b-1/p/published/x"])
def test_urls_naming_no_model_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="names no model|not served|not a bucket URL"):
        parse_model_url(url)


def test_a_published_version_is_fetched_verified_and_reused(s3: Any, tmp_path: Path, fresh_roots: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, name = _bucket(s3, "fetch"), "fetched"
    _publish(bucket, name, _frozen(tmp_path / "frozen"), 0.8)
    cache = tmp_path / "cache"
    local = fetch_model(f"s3://{s3.bucket}/fetch/published/{name}", str(cache))
    assert local == cache / "s3" / s3.bucket / "fetch" / "published" / name / "1"
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == PUBLISHED
    assert (local / "variables" / "variables.data-00000-of-00001").read_bytes() == b"weights" * 100
    opened = open_root(f"s3://{s3.bucket}/fetch", str(cache))
    assert opened.bucket is not None
    with opened.bucket.counting() as made:
        assert fetch_model(f"s3://{s3.bucket}/fetch/published/{name}/current", str(cache)) == local
    assert made[0] == 2, "unchanged: current and its record read, nothing downloaded"

    # Bytes changed on the bucket behind the record's back: a fresh cache refuses them.
    s3.client().put_object(Bucket=s3.bucket, Key=f"fetch/published/{name}/1/labels.txt", Body=b"0:evil\n1:ones\n")
    with pytest.raises(OSError, match="differ from the sha256"):
        fetch_model(f"s3://{s3.bucket}/fetch/published/{name}/1", str(tmp_path / "other-cache"))
    assert not (tmp_path / "other-cache" / "s3" / s3.bucket / "fetch" / "published" / name / "1").exists()

    # A version copied as it is (a local publish.json: no file list) is fetched as listed.
    for relative, data in {"saved_model.pb": b"g", "labels.txt": b"0:a\n", "publish.json": b'{"version": 3}'}.items():
        s3.client().put_object(Bucket=s3.bucket, Key=f"fetch/published/{name}/3/{relative}", Body=data)
    copied = fetch_model(f"s3://{s3.bucket}/fetch/published/{name}/3", str(cache))
    assert sorted(p.name for p in copied.iterdir()) == ["labels.txt", "publish.json", "saved_model.pb"]

    # A version whose saved_model.pb is not there (yet) is not taken.
    bucket.create(record_object(name, 2), json.dumps({"version": 2, "value": 1.0, "files": {
        "saved_model.pb": {"size": 1, "sha256": "0" * 64}}}).encode())
    with pytest.raises(FileNotFoundError, match="not a whole version: no saved_model.pb"):
        fetch_model(f"s3://{s3.bucket}/fetch/published/{name}/2", str(cache))


def _predict_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    forget_opened()
    capsys.readouterr()
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfpipe: error: ") and not captured.out, captured
    return lines[0]


def test_predict_errors_are_one_line_and_exit_2(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str], fresh_roots: None) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(b"not read: the model is missing")
    root = f"s3://{s3.bucket}/errors"
    assert "nothing published under 'nope'" in _predict_error(["predict", f"{root}/published/nope", str(image)],
                                                               capsys)
    assert "no such published version" in _predict_error(["predict", f"{root}/published/nope/4", str(image)],
                                                          capsys)
    assert "not built" in _predict_error(["predict", f"{root}/freeze/Freeze-0123456789ab", str(image)], capsys)
    assert "does not exist" in _predict_error(["predict", "s3://no-such-bucket-here/published/x", str(image)],
                                              capsys)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert "access denied" in _predict_error(["predict", f"{root}/published/nope", str(image)], capsys)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.env["AWS_SECRET_ACCESS_KEY"])
    from tests.helpers.s3 import _free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_ports(1)[0]}")
    assert "cannot reach the server" in _predict_error(["predict", f"{root}/published/nope", str(image)], capsys)


# ---- a trained model, end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A small images model trained, frozen and published on ``s3://<bucket>/p`` (as tests/test_publish.py does
    on a local root); yields the root, the photos, the run's output and this host's mirror."""
    from tasks.store.roots import default_cache_dir
    from tests.conftest import isolated_luigi_config

    base = tmp_path_factory.mktemp("publish-bucket")
    photos = base / "photos"
    write_class_folder(photos, {"disc": 40, "square": 40, "triangle": 40}, size=(40, 40), seed=2)
    root = f"s3://{s3.bucket}/p"
    with isolated_luigi_config(Path("unused")):
        forget_opened()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):  # capsys is per test: the run's output, kept for the tests
            code = cli.main(["run", "images", "--source", str(photos), "--artifacts", root, "--publish", *TRAIN,
                             "--set", "Train.epochs=5"])
        assert code == 0, out.getvalue()
        yield {"root": root, "photos": photos, "out": out.getvalue(), "base": base,
               "mirror": parse_root(root).mirror(default_cache_dir())}


def _predict(model: str, images: list[Path], capsys: pytest.CaptureFixture[str]) -> str:
    forget_opened()
    capsys.readouterr()
    assert cli.main(["predict", model, *map(str, images)]) == 0
    return capsys.readouterr().out


def test_publish_on_a_bucket_and_predict_from_its_url(trained: dict[str, Any], s3: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bucket = Bucket(parse_root(trained["root"]))
    assert "note: Publish: published images version 1" in trained["out"], trained["out"]
    assert _pointer(bucket, "images") == {"version": 1}
    objects = _objects(s3, "p/published/images/1/")
    assert {"saved_model.pb", "labels.txt", "frozen_graph.pb", "publish.json"} <= set(objects)
    assert any(name.startswith("variables/") for name in objects)
    assert objects["saved_model.pb"]["LastModified"] == max(o["LastModified"] for o in objects.values())
    record = json.loads(bucket.read(record_object("images", 1)) or b"")
    assert record["freeze_artifact"].startswith("freeze/Freeze-") and record["value"] > 0.6
    assert bucket.read(f"{record['freeze_artifact']}/MANIFEST.json") is not None, "gc can find the freeze artifact"
    assert not (trained["mirror"] / "published").exists(), "nothing published in this host's mirror"

    images = sorted((trained["photos"] / "disc").glob("*.jpg"))[:2] + sorted(
        (trained["photos"] / "square").glob("*.jpg"))[:1]
    frozen = trained["mirror"] / record["freeze_artifact"]
    local = _predict(str(frozen), images, capsys)
    assert len(local.strip().splitlines()) == 3
    assert _predict(f"{trained['root']}/published/images", images, capsys) == local
    assert (trained["mirror"] / "published" / "images" / "1" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_predict_from_a_version_and_a_freeze_artifact_url(trained: dict[str, Any],
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    images = sorted((trained["photos"] / "triangle").glob("*.jpg"))[:2]
    # Another host: its own empty cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(trained["base"] / "other-host"))
    expected = _predict(f"{trained['root']}/published/images/1", images, capsys)
    bucket = Bucket(parse_root(trained["root"]))
    freeze = json.loads(bucket.read(record_object("images", 1)) or b"")["freeze_artifact"]
    manifest = json.loads(bucket.read(f"{freeze}/MANIFEST.json") or b"")
    freeze_url = f"{trained['root']}/{freeze}"
    assert _predict(freeze_url, images, capsys) == expected
    # With its upload folder: the ``model:`` URL ``tfpipe run`` prints for a run that ends at freeze.
    assert _predict(f"{freeze_url}/{manifest['upload']}", images, capsys) == expected


@pytest.mark.slow
def test_a_second_publish_makes_version_2_and_moves_current(trained: dict[str, Any], s3: Any,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import isolated_luigi_config

    bucket = Bucket(parse_root(trained["root"]))
    _, tag = bucket.read_with_tag(current_object("images")) or (b"", "")
    with isolated_luigi_config(Path("unused")):
        forget_opened()
        assert cli.main(["run", "images", "--source", str(trained["photos"]), "--artifacts", trained["root"],
                         "--publish", *TRAIN, "--set", "Train.epochs=6", "--set", "Publish.significance=0"]) == 0
    assert "published images version 2" in capsys.readouterr().out
    assert _pointer(bucket, "images") == {"version": 2}
    # Compared with version 1 first, fetched into this host's cache with the list of what it trained on.
    decisions = [json.loads(path.read_text())
                 for path in (trained["mirror"] / "publish").glob("Publish-*/publish.json")]
    comparison = next(d for d in decisions if d.get("published_version") == 2)["comparison"]
    assert comparison["champion_version"] == 1 and comparison["trained_on_known"] is True
    assert comparison["left_out"] == {"trained_on": 0, "unknown_class": 0} and comparison["examples"] > 10
    assert (trained["mirror"] / "published" / "images" / "1" / "trained_on_sha256.txt").is_file()
    assert bucket.replace(current_object("images"), b'{"version": 1}', tag) is False, "a stale ETag"
    record = json.loads(bucket.read(record_object("images", 2)) or b"")
    assert record["version"] == 2 and record["freeze_artifact"] != json.loads(
        bucket.read(record_object("images", 1)) or b"")["freeze_artifact"]
    images = sorted((trained["photos"] / "disc").glob("*.jpg"))[:1]
    assert _predict(f"{trained['root']}/published/images", images, capsys) == _predict(
        str(trained["mirror"] / record["freeze_artifact"]), images, capsys)
