"""Fake CIFAR files in the official pickle layout: Python 2 BINSTRINGs, numpy.core names, cPickle's memo."""

from __future__ import annotations

import pickletools
from pathlib import Path

import numpy as np
import pytest

from tasks.datasets.cifar.codec import CIFAR100, read_cifar_batch
from tasks.formats.safe_pickle import load_restricted
from tests.conftest import FIXTURES
from tests.fakes.cifar import write_cifar_batch
from tests.fakes.py2_pickle import dumps_python2

REAL_META = FIXTURES / "cifar10_real_meta" / "batches.meta"


@pytest.mark.skipif(not REAL_META.exists(), reason="needs ../shared/fixtures")
def test_the_real_batches_meta_is_reproduced_byte_for_byte() -> None:
    assert dumps_python2(load_restricted(REAL_META)) == REAL_META.read_bytes()


def test_a_python2_batch_uses_binstrings_and_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels, coarse = rng.integers(0, 100, 12), rng.integers(0, 20, 12)
    path = tmp_path / "train"
    write_cifar_batch(path, images, labels, spec=CIFAR100, coarse_labels=coarse, python2=True)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes())]
    assert ops[0] == ("PROTO", 2)
    assert {name for name, _ in ops} >= {"BINSTRING", "SHORT_BINSTRING", "GLOBAL"}
    assert not {"BINBYTES", "SHORT_BINBYTES", "BINUNICODE"} & {name for name, _ in ops}
    assert [arg for name, arg in ops if name == "GLOBAL"] == ["numpy.core.multiarray _reconstruct", "numpy ndarray",
                                                              "numpy dtype"]
    batch = read_cifar_batch(path, num_classes=100, label_key="fine_labels", num_coarse_classes=20)
    np.testing.assert_array_equal(batch.images, images)
    np.testing.assert_array_equal(batch.labels, labels)
    np.testing.assert_array_equal(batch.coarse_labels, coarse)


def test_text_outside_latin1_stays_unicode_and_repeats_are_memoized() -> None:
    value = ["naïve", "中文", "naïve"]
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(dumps_python2(value))]
    assert ("SHORT_BINSTRING", "naïve") in ops  # pickletools shows Python 2 strings decoded as latin-1
    assert ("BINUNICODE", "中文") in ops
    assert sum(name == "BINGET" for name, _ in ops) == 1  # the second "naïve" refers back to the first
