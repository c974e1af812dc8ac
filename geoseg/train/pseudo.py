"""Self-training: pseudo-labels from a trained model on the scene's unlabelled pixels, for a second training round.

A model trained on one region meets other spectra, illumination and layouts in the rest of the scene; a pixel-wise
classifier or a network trained on labels alone cannot adapt to them. Self-training (pseudo-labelling: Lee, "Pseudo-
label: the simple and efficient semi-supervised learning method for deep neural networks", ICML Workshops 2013;
for remote sensing e.g. Tong et al., "Land-cover classification with high-resolution remote sensing images using
transferable deep models", RSE 2020) lets the model label the pixels it is confident about across the whole scene
and trains a fresh model on those labels beside the real ones, so the second model learns the unlabelled region's
appearance from the first one's confident calls. Its effect on a region held out from training is measured in
``benchmarks/accuracy.py``.

Only the image of unlabelled pixels is used: real labels are kept wherever they exist (training and validation
blocks), pseudo-labels never enter a validation block (validation stays on real labels only), and a pixel is
pseudo-labelled when the teacher's probability of its class is at least ``threshold``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.inference.writer import PROB_SCALE
from geoseg.io.read import iter_windows
from geoseg.train.chips import VAL, ChipReader
from geoseg.train.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from geoseg.train.area import PixelArea

#: default probability a pseudo-label's class must reach (of the averaged heads' probabilities, which label smoothing
#: keeps below 1)
PSEUDO_THRESHOLD = 0.7


class PseudoLabels:
    """A label source: the real labels of ``labels`` where they exist, else the pseudo-label raster's class ids
    (written by :func:`write_pseudo_labels` on the image grid, ``IGNORE_INDEX`` where no pseudo-label)."""

    def __init__(self, labels: Any, pseudo: str | os.PathLike[str]) -> None:
        self.labels = labels
        self.classes = labels.classes
        self._pseudo = rasterio.open(pseudo)

    def read(self, window: Window) -> np.ndarray:
        y = self.labels.read(window)
        unlabelled = y == IGNORE_INDEX
        if unlabelled.any():
            p = self._pseudo.read(1, window=window).astype(np.int64)
            y[unlabelled] = p[unlabelled]
        return y

    def close(self) -> None:  # the real labels are closed by their owner
        self._pseudo.close()


def write_pseudo_labels(
    image: str | os.PathLike[str],
    teacher: tuple[Any, Any],
    reader: ChipReader,
    out_dir: str | os.PathLike[str],
    *,
    threshold: float = PSEUDO_THRESHOLD,
    bands: Any = None,
    device: str | None = "auto",
    threads: int | None = None,
    exclude: PixelArea | None = None,
) -> tuple[Path, np.ndarray, int]:
    """Predict ``image`` with ``teacher`` (a ``(module, ModelConfig)`` pair; tiled as ``predict_raster`` does) and
    write, in ``out_dir``, an int16 raster on the image grid holding the predicted class of every valid pixel that
    has no real label in ``reader``'s labels, lies outside its validation blocks and outside ``exclude`` (the
    excluded area, a :class:`geoseg.train.area.PixelArea`: a test region gets no pseudo-label either) and whose
    predicted class has a probability >= ``threshold`` (elsewhere ``IGNORE_INDEX``). The teacher's probabilities are
    stored as uint8 (steps of 1/254), so the threshold is applied in those steps, rounded up.

    Returns the raster's path, the number of pseudo-labelled pixels per class, ``(classes,)`` int64, and the number
    of candidates (pixels that would be pseudo-labelled at any threshold).
    """
    from geoseg.inference import predict_raster

    out = Path(out_dir)
    classes_path, probs_path, pseudo_path = out / "teacher.tif", out / "teacher_p.tif", out / "pseudo.tif"
    predict_raster(
        image, classes_path, model=teacher, bands=bands, probabilities=probs_path, prob_dtype="uint8",
        device=device, threads=threads, overwrite=True,
    )  # fmt: skip
    n_classes = len(reader.labels.classes)
    counts = np.zeros(n_classes, np.int64)
    candidates = 0
    cut = int(np.ceil(threshold * PROB_SCALE))  # uint8 probabilities are round(p * PROB_SCALE)
    with rasterio.open(classes_path) as cls_src, rasterio.open(probs_path) as prob_src:
        profile = {
            "driver": "GTiff", "height": cls_src.height, "width": cls_src.width, "count": 1, "dtype": "int16",
            "nodata": IGNORE_INDEX, "crs": cls_src.crs, "transform": cls_src.transform, "tiled": True,
            "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        }  # fmt: skip
        with rasterio.open(pseudo_path, "w", **profile) as dst:
            for win in iter_windows(cls_src.height, cls_src.width, 512):
                cls = cls_src.read(1, window=win, masked=True)
                conf = prob_src.read(window=win).max(0)
                real = reader.labels.read(win)
                r0, c0 = int(win.row_off), int(win.col_off)
                rr = np.arange(r0, r0 + int(win.height)) // reader.block
                cc = np.arange(c0, c0 + int(win.width)) // reader.block
                in_val = reader.roles[rr[:, None], cc[None, :]] == VAL
                ids = np.asarray(cls.filled(0), np.int64)
                take = ~np.ma.getmaskarray(cls) & (real == IGNORE_INDEX) & ~in_val & (ids >= 0) & (ids < n_classes)
                if exclude is not None:
                    take &= ~exclude.mask(win)
                candidates += int(take.sum())
                take &= conf >= cut
                y = np.full(real.shape, IGNORE_INDEX, np.int16)
                y[take] = ids[take]
                counts += np.bincount(ids[take], minlength=n_classes)[:n_classes]
                dst.write(y, 1, window=win)
    for teacher_file in out.glob("teacher*"):  # the maps and any sidecar GDAL wrote beside them
        teacher_file.unlink()
    return pseudo_path, counts, candidates
