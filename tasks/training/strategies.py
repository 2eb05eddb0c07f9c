"""The distribution strategies Train offers, and how each trains. No TF.

Checked against Keras 3's source and issues: ``model.fit`` works under MirroredStrategy, fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585: it reduces per-replica batches and scalar metrics with
``axis=0``) and has no ClusterCoordinator for ParameterServerStrategy. So ``default`` and ``mirrored`` train with
``model.fit`` (tasks/training/fit.py) and the cluster strategies with tfpipe's own loop (tasks/training/custom_loop.py).
"""

from __future__ import annotations

FIT_STRATEGIES = ("default", "mirrored")
CLUSTER_STRATEGIES = ("multi_worker", "parameter_server")
STRATEGIES = FIT_STRATEGIES + CLUSTER_STRATEGIES

# What the custom loop does not do (Train refuses these combinations with the reason).
CLUSTER_LIMITS = {
    "features": "a head on bottleneck features trains in seconds on one device; use strategy default or mirrored",
    "mixed_precision": "the custom loop has no loss scaling; use mixed precision with strategy default or mirrored",
    "jit_compile": "the custom loop's collective steps are not compiled with XLA; use jit_compile with strategy "
                   "default or mirrored",
    "cpu_devices": "cpu_devices splits one host's CPU for strategy mirrored; a cluster member is one device",
}


def check_strategy(name: str) -> str:
    """``name`` if Train can use it, else ValueError naming the choices."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def is_cluster_strategy(name: str) -> bool:
    return name in CLUSTER_STRATEGIES
