"""The MNIST and Fashion-MNIST registry entries: one IDX decode task, four official files each (sha256 and
sizes as in tensorflow/datasets, ``tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt``)."""

from tasks.datasets.mnist.task import DecodeMnist, idx_file_names
from tasks.datasets.spec import Augmentation, Dataset, Source

MNIST_BASE = "https://storage.googleapis.com/cvdf-datasets/mnist/"
FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IDX_SOURCE_HELP = "a folder holding the four IDX files (gzip or plain)"


def idx_sources(base_url: str, pins: dict[str, tuple[str, int]]) -> tuple[Source, ...]:
    """The four official IDX files under ``base_url`` (their usual gzip names), from ``role: (sha256, bytes)``."""
    return tuple(Source(role, base_url + idx_file_names(role)[0], f"sha256:{digest}", size)
                 for role, (digest, size) in pins.items())


ENTRIES = (
    Dataset(
        name="mnist", title="MNIST handwritten digits (IDX files)", decode=DecodeMnist, model="small_cnn",
        image_size="28x28x1", decode_params={"variant": "mnist"}, augmentation=Augmentation(translate=0.1),
        sources=idx_sources(MNIST_BASE, {
            "train_images": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            "train_labels": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            "test_images": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            "test_labels": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        }),
        source_help=IDX_SOURCE_HELP,
    ),
    Dataset(
        name="fashion_mnist", title="Fashion-MNIST clothing images (IDX files)", decode=DecodeMnist,
        model="small_cnn", image_size="28x28x1", decode_params={"variant": "fashion_mnist"},
        augmentation=Augmentation(flip_left_right=True, translate=0.1),
        sources=idx_sources(FASHION_BASE, {
            "train_images": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            "train_labels": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            "test_images": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            "test_labels": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        }),
        source_help=IDX_SOURCE_HELP,
    ),
)
