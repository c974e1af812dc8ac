"""A small, plausible multiband scene with labels, generated deterministically (no downloads).

Six Sentinel-2-like bands (B2, B3, B4, B8, B11, B12; reflectance x 10000, uint16) over five land-cover classes
(water, forest, cropland, urban, bare soil) laid out as Voronoi parcels with a meandering river and a lake, with
per-parcel spectral variation, textured noise and a nodata corner (value 0). UTM zone 33N, 10 m pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.io.tags import write_class_names

CLASSES = ["water", "forest", "cropland", "urban", "bare_soil"]
COLORS = [[30, 100, 200], [20, 110, 40], [230, 210, 90], [200, 40, 40], [160, 120, 80]]
BANDS = ["B2", "B3", "B4", "B8", "B11", "B12"]
# mean reflectance x 10000 per class and band
SPECTRA = np.array(
    [
        [600, 500, 300, 200, 100, 50],
        [300, 500, 300, 3500, 1600, 700],
        [500, 800, 600, 4500, 2200, 1200],
        [1200, 1200, 1300, 1800, 2200, 2000],
        [1400, 1600, 2000, 2500, 3000, 2600],
    ],
    dtype=np.float64,
)
CRS_UTM33 = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5200020.0)
LABEL_NODATA = 255


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Spatially correlated noise in [-1, 1] (bilinear upsampling of a coarse random grid)."""
    h, w = shape
    coarse = rng.uniform(-1, 1, (h // scale + 2, w // scale + 2))
    y = np.linspace(0, h / scale, h)
    x = np.linspace(0, w / scale, w)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def generate_scene(size: int = 320, *, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Return (image (6, size, size) uint16 with 0 = nodata, labels (size, size) uint8 with 255 = nodata)."""
    rng = np.random.default_rng(seed)
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w]
    # parcels: Voronoi cells of random seeds, each a land class
    n_seeds = max(12, size * size // 2500)
    seeds = rng.uniform(0, size, (n_seeds, 2))
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    parcel = d2.argmin(-1)
    parcel_class = rng.choice([1, 2, 3, 4], size=n_seeds, p=[0.35, 0.35, 0.15, 0.15])
    labels = parcel_class[parcel].astype(np.uint8)
    # a meandering river and a lake
    center = w * 0.55 + 0.12 * w * np.sin(yy / h * 2.5 * np.pi) + 4 * _smooth_noise(rng, (h, w), 24)
    labels[np.abs(xx - center) < 3 + 1.5 * (yy / h)] = 0
    lake = ((yy - 0.25 * h) / (0.09 * h)) ** 2 + ((xx - 0.22 * w) / (0.13 * w)) ** 2 < 1
    labels[lake] = 0
    # spectra: class mean x per-parcel gain, textured, plus pixel noise
    gain = 1 + 0.08 * rng.standard_normal((n_seeds, len(BANDS)))
    img = SPECTRA[labels] * gain[parcel]
    texture = _smooth_noise(rng, (h, w), 6)[..., None]
    img *= 1 + 0.06 * texture
    img += rng.normal(0, 1, img.shape) * (0.04 * img + 60)
    image = np.clip(img, 1, 10000).round().astype(np.uint16).transpose(2, 0, 1)
    # nodata corner (a triangle at the top right), as from a scene footprint edge
    corner = (w - xx) + yy < 0.22 * size
    image[:, corner] = 0
    labels[corner] = LABEL_NODATA
    return image, labels


def write_sample(out_dir: str | Path, *, size: int = 320, seed: int = 7) -> tuple[Path, Path]:
    """Write ``scene.tif`` (6-band uint16, nodata 0) and ``labels.tif`` (uint8, nodata 255) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = generate_scene(size, seed=seed)
    common = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": CRS_UTM33,
        "transform": TRANSFORM,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
    }
    scene = out / "scene.tif"
    with rasterio.open(scene, "w", count=len(BANDS), dtype="uint16", nodata=0, predictor=2, **common) as ds:
        ds.write(image)
        for i, name in enumerate(BANDS, start=1):
            ds.set_band_description(i, name)
    lab = out / "labels.tif"
    with rasterio.open(lab, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **common) as ds:
        ds.write(labels, 1)
        write_class_names(ds, CLASSES)
        ds.write_colormap(1, {i: tuple(c) + (255,) for i, c in enumerate(COLORS)})
    return scene, lab
