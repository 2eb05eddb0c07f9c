"""Small image operations shared by decoders (cv2 + numpy only)."""

from __future__ import annotations

import cv2
import numpy as np


def fit_to_square(gray_or_rgb: np.ndarray, size: int, pad_value: int = 255) -> np.ndarray:
    """Scale the image so its longer side is ``size`` (aspect ratio kept) and pad it centred to a square.

    Downscaling uses cv2.INTER_AREA, upscaling cv2.INTER_LINEAR. Input is (H, W) or (H, W, C) uint8;
    output is (size, size) or (size, size, C) uint8, padded with ``pad_value`` (255 = white paper).
    """
    image = np.asarray(gray_or_rgb)
    _check_image(image, size, pad_value)
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_height = min(size, max(1, round(height * scale)))
    new_width = min(size, max(1, round(width * scale)))
    resized = _resize(image, new_width, new_height, upscale=scale > 1)
    return _pad_centred(resized, size, pad_value)


def _check_image(image: np.ndarray, size: int, pad_value: int) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim not in (2, 3) or 0 in image.shape[:2] or (image.ndim == 3 and image.shape[2] == 0):
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in [0, 255], got {pad_value}")


def _resize(image: np.ndarray, width: int, height: int, *, upscale: bool) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_LINEAR if upscale else cv2.INTER_AREA
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    if image.ndim == 3 and resized.ndim == 2:  # cv2 drops a single trailing channel
        resized = resized[:, :, None]
    return resized


def _pad_centred(image: np.ndarray, size: int, pad_value: int) -> np.ndarray:
    height, width = image.shape[:2]
    canvas = np.full((size, size) + image.shape[2:], pad_value, dtype=np.uint8)
    top = (size - height) // 2
    left = (size - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 HxW, HxWx1 or RGB HxWx3 image (OpenCV wants BGR, so RGB is swapped first)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()
