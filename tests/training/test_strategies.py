"""Train's strategy parameter refuses what it does not know (tests/test_distributed.py trains with each one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import cli
from pipelines.commands.common import configure
from pipelines.commands.dag import artifact_tasks, top_task
from pipelines.stages import register_wrappers


def test_an_unknown_strategy_is_refused_with_the_choices(tmp_path: Path, luigi_config, capsys) -> None:
    code = cli.main(["run", "captcha", "--artifacts", str(tmp_path / "a"), "--set", "Train.strategy=tpu"])
    assert code == 2
    assert "unknown strategy 'tpu'; choose one of default, mirrored, multi_worker, parameter_server" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("setting", "reason"), [
    ("Train.mixed_precision=true", "mixed_precision: the custom loop has no loss scaling"),
    ("Train.jit_compile=true", "jit_compile: the custom loop's collective steps are not compiled"),
    ("Train.cpu_devices=2", "cpu_devices: cpu_devices splits one host's CPU for strategy mirrored"),
])
@pytest.mark.parametrize("strategy", ["multi_worker", "parameter_server"])
def test_multi_worker_and_parameter_server_refuse_what_the_custom_loop_lacks(
        strategy: str, setting: str, reason: str, tmp_path: Path, luigi_config) -> None:
    from tasks.training.task import Train

    (tmp_path / "src").mkdir()
    args = cli.build_parser().parse_args(["run", "fashion_mnist", "--source", str(tmp_path / "src"), "--set",
                                          f"Train.strategy={strategy}", "--set", setting])
    register_wrappers()
    configure(args)
    [train] = [node for node in artifact_tasks(top_task(args)) if isinstance(node, Train)]
    with pytest.raises(ValueError, match=f"Train.strategy={strategy} with {reason}"):
        train.training_plan().check_cluster_options()
