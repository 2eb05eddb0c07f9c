"""The captcha dataset's registry entry: generated locally, so the main command needs no network."""

from tasks.datasets.captcha.task import DecodeCaptcha, GenerateCaptchas
from tasks.datasets.spec import Augmentation, Dataset, Training

ENTRIES = (
    Dataset(
        name="captcha", title="4-letter captchas (A-Z) drawn by the `captcha` package; no network needed",
        decode=DecodeCaptcha, generator=GenerateCaptchas, model="captcha_cnn", image_size="160x60x1",
        metric="sequence_accuracy",
        training=Training(learning_rate=2e-3, target_steps=3000, min_epochs=8, max_epochs=40),
        # Small shifts keep the letters and their order: the model learns letters, not where this generator puts
        # them.
        augmentation=Augmentation(translate=0.05),
        source_help="a folder with labels.csv (index,label) and <index>.png files",
    ),
)
