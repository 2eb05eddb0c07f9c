"""What the data check does about each kind of finding: fail the run, warn, or drop the examples concerned.
Plain Python (no Luigi, no TensorFlow).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

FAIL, WARN, DROP = "fail", "warn", "drop"
POLICIES = (FAIL, WARN, DROP)
# Kinds of finding, the policies each accepts, and its default (leaks and label conflicts stop a run).
FINDING_POLICIES: dict[str, tuple[str, ...]] = {
    "leak": POLICIES, "conflict": POLICIES, "duplicate": POLICIES, "degenerate": POLICIES,
    "near_duplicate": POLICIES, "imbalance": (FAIL, WARN), "drift": (FAIL, WARN),
}
DEFAULT_POLICIES = {"leak": FAIL, "conflict": FAIL, "duplicate": WARN, "degenerate": WARN, "near_duplicate": WARN,
                    "imbalance": WARN, "drift": WARN}
# What ``drop`` removes, for the report.
DROP_MEANING = {
    "leak": "the validation and test copies (the copy in the earliest split of train, validation, test stays)",
    "conflict": "every copy of an image found under two classes",
    "duplicate": "the second and later copies within a split",
    "degenerate": "the constant or nearly blank images",
    "near_duplicate": "the copy in the later split of each pair",
}


@dataclass(frozen=True)
class CheckSettings:
    """The data check's thresholds and policies (``DataCheck`` parameters; all part of its key)."""

    on_leak: str = DEFAULT_POLICIES["leak"]
    on_conflict: str = DEFAULT_POLICIES["conflict"]
    on_duplicate: str = DEFAULT_POLICIES["duplicate"]
    on_degenerate: str = DEFAULT_POLICIES["degenerate"]
    on_near_duplicate: str = DEFAULT_POLICIES["near_duplicate"]
    on_imbalance: str = DEFAULT_POLICIES["imbalance"]
    near_duplicate_distance: int = 4  # bits of 64 in which two perceptual hashes may differ
    degenerate_std: float = 2.0  # an image whose pixels spread less than this (0-255 scale) is constant or blank
    imbalance_ratio: float = 10.0  # largest / smallest class in a split above this is imbalance

    def __post_init__(self) -> None:
        for kind in FINDING_POLICIES:
            if kind == "drift":
                continue
            check_policy(kind, self.policy(kind))
        if not 0 <= self.near_duplicate_distance < 64:
            raise ValueError(f"DataCheck.near_duplicate_distance must be in [0, 63] bits, "
                             f"got {self.near_duplicate_distance}")
        if self.degenerate_std < 0:
            raise ValueError(f"DataCheck.degenerate_std must be >= 0, got {self.degenerate_std}")
        if self.imbalance_ratio < 1:
            raise ValueError(f"DataCheck.imbalance_ratio must be >= 1, got {self.imbalance_ratio}")

    def policy(self, kind: str) -> str:
        return str(getattr(self, f"on_{kind}"))

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def check_policy(kind: str, policy: str) -> None:
    """A clear error for a policy a kind of finding does not take (``drop`` means nothing for imbalance)."""
    allowed = FINDING_POLICIES[kind]
    if policy not in allowed:
        raise ValueError(f"DataCheck.on_{kind} must be one of {', '.join(allowed)}, got {policy!r}")
