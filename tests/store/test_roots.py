"""Artifact roots: a local folder or s3://bucket/prefix; anything else is refused in one line, never taken for
a local folder. A local root never loads s3fs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from tasks.store.roots import RootError, parse_root
from tests.conftest import REPO


@pytest.mark.parametrize(("text", "scheme", "path", "bucket", "prefix"), [
    ("artifacts", "", "artifacts", "", ""),
    ("/srv/tfpipe/artifacts", "", "/srv/tfpipe/artifacts", "", ""),
    ("file:///srv/a", "", "/srv/a", "", ""),
    ("s3://my-bucket", "s3", "", "my-bucket", ""),
    ("s3://my-bucket/", "s3", "", "my-bucket", ""),
    ("s3://my.bucket-2/team/tfpipe/", "s3", "", "my.bucket-2", "team/tfpipe"),
])
def test_roots_that_are_served(text: str, scheme: str, path: str, bucket: str, prefix: str) -> None:
    root = parse_root(text)
    assert (root.scheme, root.path, root.bucket, root.prefix) == (scheme, path, bucket, prefix)
    if scheme:
        assert root.url == f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
        assert root.key("train/MANIFEST.json") == "/".join(p for p in (bucket, prefix, "train/MANIFEST.json") if p)
        assert root.mirror(Path("/cache")) == Path("/cache/s3") / bucket / prefix


@pytest.mark.parametrize(("text", "says"), [
    ("gs://bucket/prefix", "gs:// is not served"),
    ("hdfs://namenode/path", "hdfs:// is not served"),
    ("S3:/bucket/prefix", "a bucket URL is s3://bucket/prefix"),
    ("s3:bucket", "a bucket URL is s3://bucket/prefix"),
    ("s3://", "is not a bucket name"),
    ("s3://UPPER/x", "is not a bucket name"),
    ("s3://ab/x", "is not a bucket name"),
    ("s3://bucket/a/../b", "'..' part"),
    ("file:relative", "file:///absolute/path"),
    ("", "empty"),
])
def test_roots_that_are_refused(text: str, says: str) -> None:
    with pytest.raises(RootError, match=".*") as raised:
        parse_root(text)
    message = str(raised.value)
    assert says in message and "\n" not in message


def test_an_unserved_url_is_refused_by_every_command_and_no_local_folder_appears(tmp_path: Path, monkeypatch,
                                                                                 luigi_config, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["status", "captcha"], ["run", "captcha", "--until", "generate"], ["history", "captcha"],
                    ["gc"]):
        assert cli.main([*command, "--artifacts", "gs://bucket/prefix"]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "gs:// is not served" in err[0], (command, err)
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused root"


def test_a_local_root_never_loads_s3fs(tmp_path: Path) -> None:
    code = ("import sys\nfrom pipelines import cli\n"
            f"code = cli.main(['status', 'captcha', '--artifacts', {str(tmp_path / 'a')!r}])\n"
            "print(code, 's3fs' in sys.modules, 'botocore' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "0 False False", result.stderr[-2000:]
