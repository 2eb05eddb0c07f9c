"""Names of a captcha folder, the seeds' layout: what GenerateCaptchas writes and DecodeCaptcha reads (a user's
folder too). Plain Python. The image-dirs stage (tasks/data/imagedirs.py) writes the same ``labels.csv`` per split.
"""

from __future__ import annotations

LABELS_CSV_FILE = "labels.csv"  # header ``index,label``, then one row per image (tasks/datasets/captcha/labels_csv.py)
IMAGES_DIR = "images"  # the captchas, ``<index>.png``; a user's folder may hold them beside labels.csv instead
