"""The image-folder registry entry: any class-per-folder directory; by default TensorFlow's flower_photos
(sha256 and size as in tensorflow/datasets, ``tensorflow_datasets/url_checksums/tf_flowers.txt``)."""

from tasks.datasets.images.task import DecodeImages
from tasks.datasets.spec import RAW_DATA, Augmentation, Dataset, Source, Training

ENTRIES = (
    Dataset(
        name="images", title="any class-per-folder image directory (flower_photos style); default: flower_photos",
        decode=DecodeImages, model="small_cnn",
        # A folder may hold digits or letters as well as photos: no mirror images by default.
        augmentation=Augmentation(brightness=0.1, contrast=0.1, translate=0.1),
        training=Training(target_steps=2000, min_epochs=10, max_epochs=30),
        sources=(Source(RAW_DATA, "https://storage.googleapis.com/download.tensorflow.org/example_images/"
                                     "flower_photos.tgz",
                        "sha256:4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c", 228813984),),
        source_help="a folder of <class>/<image> files, a .tar/.tgz/.zip of one, or a URL (with --checksum)",
    ),
)
