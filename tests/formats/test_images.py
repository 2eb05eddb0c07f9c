"""fit_to_square: aspect ratio kept, centred padding, right interpolation per direction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tasks.formats.images import fit_to_square


def test_wide_gray_image_is_scaled_and_padded_vertically() -> None:
    image = np.zeros((20, 100), np.uint8)  # black, 5:1
    out = fit_to_square(image, 50)
    assert out.shape == (50, 50) and out.dtype == np.uint8
    content_rows = np.flatnonzero((out == 0).all(axis=1))
    assert content_rows.tolist() == list(range(20, 30))  # 10 rows, centred
    assert (out[:20] == 255).all() and (out[30:] == 255).all()


def test_tall_rgb_image_keeps_channels_and_pads_horizontally() -> None:
    image = np.full((64, 16, 3), (10, 20, 30), np.uint8)
    out = fit_to_square(image, 32, pad_value=0)
    assert out.shape == (32, 32, 3)
    assert out[:, 12:20].reshape(-1, 3).tolist() == [[10, 20, 30]] * (32 * 8)
    assert (out[:, :12] == 0).all() and (out[:, 20:] == 0).all()


def test_single_channel_3d_input_stays_3d() -> None:
    out = fit_to_square(np.zeros((40, 20, 1), np.uint8), 10)
    assert out.shape == (10, 10, 1)


def test_square_input_of_right_size_is_unchanged() -> None:
    image = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(fit_to_square(image, 8), image)


def test_downscale_uses_area_and_upscale_uses_linear() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    np.testing.assert_array_equal(fit_to_square(big, 10), cv2.resize(big, (10, 10), interpolation=cv2.INTER_AREA))
    small = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    np.testing.assert_array_equal(fit_to_square(small, 20), cv2.resize(small, (20, 20), interpolation=cv2.INTER_LINEAR))


def test_extreme_aspect_ratio_keeps_at_least_one_pixel() -> None:
    out = fit_to_square(np.zeros((1, 500), np.uint8), 16)
    assert out.shape == (16, 16)
    assert (out == 0).any(axis=1).sum() == 1


@pytest.mark.parametrize(
    "image,size,match",
    [
        (np.zeros((4, 4), np.float32), 8, "uint8"),
        (np.zeros((0, 4), np.uint8), 8, "non-empty"),
        (np.zeros((2, 2, 2, 2), np.uint8), 8, "non-empty"),
        (np.zeros((4, 4), np.uint8), 0, "size"),
    ],
)
def test_rejects_bad_input(image: np.ndarray, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_to_square(image, size)
