"""Train's strategy parameter refuses what it does not know (tests/test_distributed.py trains with each one)."""

from __future__ import annotations

from pathlib import Path

from pipelines import cli


def test_an_unknown_strategy_is_refused_with_the_choices(tmp_path: Path, luigi_config, capsys) -> None:
    code = cli.main(["run", "captcha", "--artifacts", str(tmp_path / "a"), "--set", "Train.strategy=tpu"])
    assert code == 2
    assert "unknown strategy 'tpu'; choose one of default, mirrored, multi_worker, parameter_server" in \
        capsys.readouterr().err
