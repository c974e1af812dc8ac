"""What the convolutional CRF does to IoU on real hyperspectral scenes (../shared/data).

Trains the tiny spectral-stem FCN exactly as tests/test_real_data.py does, predicts the whole scene with and without
`crf=True`, and scores every labelled pixel (training and held-out blocks alike: a CRF effect, not a generalisation
figure). Run: .venv/bin/python benchmarks/crf_real_data.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import rasterio

from geoseg.datasets import salinas_a, samson
from geoseg.inference import predict_raster
from geoseg.metrics import ConfusionMatrix
from geoseg.train import train_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HSI = {
    "arch": "tiny",
    "arch_kwargs": {"width": 16, "spectral_reduction": 16, "spectral_init": "pca"},
    "chip": 16,
    "block": 16,
    "batch_size": 16,
    "chips_per_epoch": 128,
    "val_fraction": 0.3,
    "seed": 0,
    "device": "cpu",
}


def main() -> None:
    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp())
    for name, convert, epochs in (("samson", samson, 8), ("salinas_a", salinas_a, 10)):
        img, lab, classes = convert(DATA / name, work)
        res = train_model(img, lab, work / f"{name}.safetensors", classes=classes, epochs=epochs, **HSI)
        with rasterio.open(lab) as ds:
            truth = ds.read(1)
        for crf in (False, True):
            out = predict_raster(
                img, work / f"{name}_{crf}.tif", model=res.checkpoint, device="cpu", crf=crf, overlap=16
            )
            with rasterio.open(out.output) as ds:
                pred = ds.read(1)
            cm = ConfusionMatrix(len(classes))
            cm.update(pred, truth, truth != 255)
            rep = cm.report(classes)
            per_class = ", ".join(f"{c.name} {c.iou:.3f}" for c in rep.classes)
            print(f"{name:10s} {'CRF   ' if crf else 'no CRF'} mIoU {rep.miou:.3f} | {per_class}", flush=True)


if __name__ == "__main__":
    main()
