"""Convolutional CRF refinement: removes isolated noise, keeps clean regions and edges."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import InvalidParameterError
from geoseg.inference.crf import crf_refine


def _two_regions(h: int = 24, w: int = 24, bands: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Left half class 0 (dark), right half class 1 (bright); probabilities 0.8 for the true class."""
    labels = torch.zeros(1, h, w, dtype=torch.long)
    labels[..., w // 2 :] = 1
    image = labels[:, None].float().expand(1, bands, h, w).clone() * 2.0 - 1.0
    probs = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 0.6 + 0.2
    return probs, image


def test_isolated_noisy_pixels_are_removed() -> None:
    probs, image = _two_regions()
    truth = probs.argmax(1)
    noisy = probs.clone()
    flips = [(3, 3), (10, 5), (20, 8), (4, 18), (15, 20)]
    for y, x in flips:
        noisy[0, :, y, x] = noisy[0, :, y, x].flip(0)  # 0.8 on the wrong class
    assert (noisy.argmax(1) != truth).sum() == len(flips)
    refined = crf_refine(noisy, image, iterations=5, kernel=7)
    assert refined.shape == noisy.shape
    torch.testing.assert_close(refined.sum(1), torch.ones(1, 24, 24))
    assert torch.equal(refined.argmax(1), truth)


def test_clean_two_region_map_is_preserved_with_sharp_edge() -> None:
    probs, image = _two_regions()
    refined = crf_refine(probs, image, iterations=10, kernel=11)
    assert torch.equal(refined.argmax(1), probs.argmax(1))
    # more confident than the input everywhere, including at the edge
    assert (refined.max(1).values >= probs.max(1).values - 1e-6).all()


def test_appearance_kernel_moves_uncertain_edge_to_image_edge() -> None:
    probs, image = _two_regions()
    blurred = probs.clone()
    blurred[..., 10:14] = 0.5  # the classifier is unsure near the boundary; the image is sharp
    blurred[0, 0, :, 10:12] += 0.01
    blurred[0, 1, :, 12:14] += 0.01
    refined = crf_refine(blurred, image, iterations=5, kernel=7)
    assert torch.equal(refined.argmax(1), probs.argmax(1))
    assert refined[0, 0, :, 11].min() > 0.9 and refined[0, 1, :, 12].min() > 0.9


def test_many_bands_and_batches() -> None:
    probs, image = _two_regions(bands=200)
    probs = probs.expand(3, -1, -1, -1)
    refined = crf_refine(probs, image.expand(3, -1, -1, -1), iterations=2)
    assert refined.shape == (3, 2, 24, 24)
    torch.testing.assert_close(crf_refine(probs, image.expand(3, -1, -1, -1), iterations=0), probs)


def test_bad_arguments() -> None:
    probs, image = _two_regions()
    with pytest.raises(InvalidParameterError, match="kernel must be a positive odd window size"):
        crf_refine(probs, image, kernel=4)
    with pytest.raises(InvalidParameterError, match=r"must have the same batch size, height, width"):
        crf_refine(probs, image[..., :10])
    with pytest.raises(InvalidParameterError, match=r"needs probs \(B, C, H, W\)"):
        crf_refine(probs[0], image)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu() -> None:
    probs, image = _two_regions()
    torch.testing.assert_close(
        crf_refine(probs.cuda(), image.cuda()).cpu(), crf_refine(probs, image), atol=1e-5, rtol=1e-5
    )
