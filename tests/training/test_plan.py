"""The training plan (tasks/training/plan.py): Train's parameters as plain data, resolved against the data.
Train's side (its parameters mapped to a plan) is checked here too; the rest runs without Luigi."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.training.plan import TrainingPlan, shard_files

DEFAULTS = {"model": "mlp", "batch_size": 32, "learning_rate": 0.01, "target_steps": 100, "min_epochs": 2,
            "max_epochs": 20, "patience": 4, "warmup_fraction": 0.1, "flip_left_right": True, "brightness": 0.1,
            "contrast": 0.2, "translate": 0.0}
# Two heads: no class weights, so nothing reads the shards.
INFO = DatasetInfo("toy", (8, 8, 3), num_classes=5, num_heads=2, image_format="png",
                   splits={"train": SplitInfo(320, ("t-0", "t-1")), "validation": SplitInfo(40, ("v-0",))})


def plan(**changes: object) -> TrainingPlan:
    return dataclasses.replace(TrainingPlan(Path("/shards"), dataset_defaults=DEFAULTS), **changes)


def test_every_train_parameter_is_a_plan_field_with_its_default() -> None:
    from tasks.training.task import Train

    fields = {field.name: field for field in dataclasses.fields(TrainingPlan)}
    for name, param in Train.get_params():
        if name == "upstream":
            continue
        assert name in fields, f"Train.{name} is not in TrainingPlan"
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING \
            else fields[name].default
        assert param._default == default, name  # Luigi keeps the declared default there


def test_train_maps_its_parameters_and_inputs_to_the_plan(luigi_config) -> None:
    from tasks.store.task import ArtifactTask
    from tasks.training.task import Train

    class PlanTestShards(ArtifactTask):
        stage = "plan_test_shards"

    shards = PlanTestShards()
    train = Train(upstream={"examples": shards}, dataset_defaults=DEFAULTS, epochs=7, strategy="mirrored",
                  cpu_devices=2, model_options={"hidden_units": [4]}, head_dropout=0.25, cluster_timeout=5.0)
    made = train.training_plan()
    assert made == TrainingPlan(shards.artifact_dir, dataset_defaults=DEFAULTS, epochs=7, strategy="mirrored",
                                cpu_devices=2, model_options={"hidden_units": (4,)}, head_dropout=0.25,
                                cluster_timeout=5.0)
    assert type(made.dataset_defaults) is dict and type(made.model_options) is dict
    assert not made.on_features and made.training_replicas() == 2


def test_the_dataset_fills_what_the_user_left_unset() -> None:
    assert plan().model_name() == "mlp" and plan(model="lenet5").model_name() == "lenet5"
    budget = plan().budget(INFO)
    assert (budget.batch_size, budget.steps_per_epoch, budget.epochs, budget.epochs_from) == (32, 10, 10,
                                                                                              "the budget rule")
    budget = plan(epochs=3, batch_size=64, max_steps=12).budget(INFO)
    assert (budget.batch_size, budget.steps_per_epoch, budget.total_steps, budget.epochs_from) == (64, 5, 12,
                                                                                                   "Train.epochs")
    with pytest.raises(ValueError, match="Train has no dataset default for 'model'; its pipeline passes"):
        plan(dataset_defaults={}).model_name()


def test_the_config_holds_the_budget_the_data_and_the_choices() -> None:
    config = plan(seed=3, augment=False, optimizer="sgd", momentum=0.9, model_options={"dropout": 0.0},
                  checkpoint_every_steps=4).train_config(INFO)
    assert (config.model, config.image_shape, config.num_classes, config.num_heads) == ("mlp", (8, 8, 3), 5, 2)
    assert (config.epochs, config.batch_size, config.learning_rate, config.steps_per_epoch) == (10, 32, 0.01, 10)
    assert (config.warmup_steps, config.patience, config.train_examples, config.validation_examples) == (10, 4, 320,
                                                                                                         40)
    assert (config.seed, config.optimizer, config.momentum, config.checkpoint_every_steps) == (3, "sgd", 0.9, 4)
    assert not config.augment.enabled and config.model_options == {"dropout": 0.0} and config.class_weights == ()
    augmented = plan().train_config(INFO).augment
    assert (augmented.flip_left_right, augmented.brightness, augmented.contrast) == (True, 0.1, 0.2)


def test_the_job_trains_the_splits_shards(tmp_path: Path) -> None:
    assert shard_files(Path("/shards"), INFO) == {"train": ["/shards/t-0", "/shards/t-1"],
                                                  "validation": ["/shards/v-0"]}
    job = plan().job("the config", INFO, tmp_path, model_file=tmp_path / "m.keras")
    assert (job.train_files, job.validation_files, job.image_format) == (("/shards/t-0", "/shards/t-1"),
                                                                         ("/shards/v-0",), "png")
    assert (job.work_dir, job.is_chief, job.scratch_dir, job.sample_images) == (tmp_path, True, None, None)


@pytest.mark.parametrize(("changes", "option"), [
    ({"features_dir": Path("/features")}, "features"), ({"mixed_precision": True}, "mixed_precision"),
    ({"jit_compile": True}, "jit_compile"), ({"cpu_devices": 2}, "cpu_devices")])
def test_a_cluster_refuses_what_the_custom_loop_lacks(changes: dict, option: str) -> None:
    with pytest.raises(ValueError, match=f"Train.strategy=multi_worker with {option}: "):
        plan(strategy="multi_worker", **changes).check_cluster_options()
    plan(strategy="multi_worker").check_cluster_options()


def test_replicas_known_before_tensorflow_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan().training_replicas() == 1 and plan(strategy="mirrored").training_replicas() == 1
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", '
                                    '"index": 1}}')
    assert plan(strategy="multi_worker").training_replicas() == 3
