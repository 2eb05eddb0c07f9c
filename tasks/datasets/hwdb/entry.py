"""The CASIA HWDB1.1 registry entry. No checksum is published for its archives: the user pins the files they
trust (``--checksum train=sha256:<hex>,test=sha256:<hex>``)."""

from tasks.datasets.hwdb.task import DecodeHwdb
from tasks.datasets.spec import Dataset, Source, Training

HWDB_BASE = "http://www.nlpr.ia.ac.cn/databases/download/feature_data/"

ENTRIES = (
    Dataset(
        name="hwdb", title="CASIA HWDB1.1 handwritten Chinese characters (`.gnt`, 3755 classes)",
        decode=DecodeHwdb, model="hwdb_cnn", training=Training(batch_size=128, target_steps=20_000, min_epochs=3),
        sources=(Source("train", HWDB_BASE + "HWDB1.1trn_gnt.zip"),
                 Source("test", HWDB_BASE + "HWDB1.1tst_gnt.zip")),
        source_help="a folder (or archive) holding the train and test folders of .gnt files",
    ),
)
