"""Spectral stem (N bands -> K channels) and its PCA initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.errors import InvalidParameterError
from geoseg.models import ModelConfig, create_model, load_checkpoint, model_stride, save_checkpoint
from geoseg.models.layers import auxiliary_outputs
from geoseg.models.spectral import SpectralStem, SpectralStemModel, pca_init


def _low_rank_pixels(n: int = 2000, bands: int = 200, rank: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, rank)) * np.array([5.0, 3.0, 2.0])[:rank]
    basis = np.linalg.qr(rng.normal(size=(bands, rank)))[0].T
    return scores @ basis + 0.01 * rng.normal(size=(n, bands)) + 7.0


@pytest.mark.parametrize("name", ["tiny", "unet", "deeplabv3plus"])
def test_spectral_reduction_wraps_any_model(name: str) -> None:
    kw = {"width": 4} | ({"aspp_channels": 8, "encoder": "resnet10"} if name == "deeplabv3plus" else {})
    model = create_model(name, in_channels=200, num_classes=3, spectral_reduction=8, **kw).eval()
    assert isinstance(model, SpectralStemModel)
    assert model.stem.conv.in_channels == 200 and model.stem.conv.out_channels == 8
    assert model_stride(model, name) == model_stride(model.inner, name)
    s = model_stride(model, name)
    with torch.no_grad():
        assert model(torch.randn(1, 200, 2 * s, 2 * s)).shape == (1, 3, 2 * s, 2 * s)


def test_spectral_stem_checkpoint_round_trip(tmp_path) -> None:
    kw = {"width": 4, "spectral_reduction": 6, "spectral_init": "pca"}
    model = create_model("unet", in_channels=50, num_classes=2, **kw).eval()
    pca_init(model, _low_rank_pixels(bands=50))
    config = ModelConfig(arch="unet", bands=[str(i) for i in range(50)], classes=["a", "b"], arch_kwargs=kw)
    path = save_checkpoint(tmp_path / "hs.safetensors", model, config)
    loaded, cfg = load_checkpoint(path)
    assert isinstance(loaded, SpectralStemModel) and loaded.stem.init == "pca"
    assert cfg.arch_kwargs["spectral_reduction"] == 6 and cfg.output_stride == 16
    x = torch.randn(1, 50, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_pca_init_recovers_principal_components() -> None:
    pixels = _low_rank_pixels()
    stem = SpectralStem(200, 3)
    ratio = pca_init(stem, pixels)
    assert stem.init == "pca"
    assert ratio.sum() > 0.99 and ratio[0] > ratio[1] > ratio[2]
    stem.eval()
    with torch.no_grad():
        x = torch.as_tensor(pixels, dtype=torch.float32)[:, :, None, None]
        pre_relu = stem.bn(stem.conv(x))[:, :, 0, 0].numpy()
    # whitened PCA scores: zero mean, unit variance, uncorrelated
    np.testing.assert_allclose(pre_relu.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(pre_relu.T), np.eye(3), atol=1e-2)


def test_pca_init_ignores_nan_rows_and_validates() -> None:
    pixels = _low_rank_pixels(bands=10)
    pixels[:5] = np.nan
    pca_init(SpectralStem(10, 4), pixels)
    with pytest.raises(InvalidParameterError, match=r"\(n_pixels, 10\).*got shape \(100, 9\)"):
        pca_init(SpectralStem(10, 4), np.zeros((100, 9)))
    with pytest.raises(InvalidParameterError, match=r"more than 4 valid pixels"):
        pca_init(SpectralStem(10, 4), pixels[:7])
    with pytest.raises(InvalidParameterError, match=r"cannot take 12 principal components of 10 bands"):
        pca_init(SpectralStem(10, 12), pixels)


def test_bad_spectral_options() -> None:
    with pytest.raises(InvalidParameterError, match=r"spectral_reduction must be a positive integer.*'8'"):
        create_model("tiny", in_channels=20, num_classes=2, spectral_reduction="8")
    with pytest.raises(InvalidParameterError, match=r"spectral_init must be one of random, pca"):
        create_model("tiny", in_channels=20, num_classes=2, spectral_reduction=8, spectral_init="ica")


def test_wrapper_forwards_auxiliary_outputs() -> None:
    model = create_model(
        "pspnet", in_channels=30, num_classes=3, spectral_reduction=4, width=4, encoder="resnet10", head_channels=8
    ).train()
    y = model(torch.randn(2, 30, 32, 32))
    aux = auxiliary_outputs(model)
    assert len(aux) == 1 and aux[0][0] == pytest.approx(0.4) and aux[0][1].shape == y.shape
