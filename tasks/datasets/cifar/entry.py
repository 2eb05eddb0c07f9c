"""The CIFAR-10 and CIFAR-100 registry entries: one decode task, two official archives (md5 as published by
their authors)."""

from tasks.datasets.cifar.task import DecodeCifar
from tasks.datasets.spec import RAW_DATA, Augmentation, Dataset, Source, Training

CIFAR_AUGMENTATION = Augmentation(flip_left_right=True, brightness=0.1, contrast=0.2, translate=0.125)
CIFAR_TRAINING = Training(batch_size=128, target_steps=12_000, min_epochs=10, max_epochs=120)

ENTRIES = (
    Dataset(
        name="cifar10", title="CIFAR-10, the official python pickle archive", decode=DecodeCifar,
        model="resnet_cifar", image_size="32x32x3", augmentation=CIFAR_AUGMENTATION,
        training=CIFAR_TRAINING,
        sources=(Source(RAW_DATA, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "md5:c58f30108f718f92721af3b95e74349a", 170498071),),
        decode_params={"variant": "cifar10"},
        source_help="cifar-10-python.tar.gz, or the folder it extracts to",
    ),
    Dataset(
        name="cifar100", title="CIFAR-100 (fine or coarse labels), the official python pickle archive",
        decode=DecodeCifar, model="resnet_cifar", image_size="32x32x3", augmentation=CIFAR_AUGMENTATION,
        training=CIFAR_TRAINING,
        sources=(Source(RAW_DATA, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "md5:eb9058c3a382ffc7106e4002c42a8d85", 169001437),),
        decode_params={"variant": "cifar100"},
        source_help="cifar-100-python.tar.gz, or the folder it extracts to",
    ),
)
