"""The distribution strategies Train offers, and the ones this stack cannot train with (and why). No TF.

Checked against Keras 3's source and issues: ``model.fit`` works under MirroredStrategy, fails under
MultiWorkerMirroredStrategy and has no ClusterCoordinator for ParameterServerStrategy.
"""

from __future__ import annotations

STRATEGIES = ("default", "mirrored")
UNSUPPORTED_STRATEGIES = {
    "multi_worker": "Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585: it "
                    "reduces per-replica batches and scalar metrics with axis=0)",
    "parameter_server": "Keras 3 has no ClusterCoordinator, so model.fit does not support ParameterServerStrategy",
}


def check_strategy(name: str) -> str:
    """``name`` if Train can use it, else ValueError saying why not."""
    if name in UNSUPPORTED_STRATEGIES:
        raise ValueError(f"strategy {name} is not supported: {UNSUPPORTED_STRATEGIES[name]}; use one of "
                         f"{', '.join(STRATEGIES)}")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name
