"""ICNet (the light, fast model) against U-Net: validation mIoU after the same training budget on the bundled
sample scene, and CPU inference throughput of predict_raster on it. Run: .venv/bin/python benchmarks/icnet_vs_unet.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from geoseg.inference import predict_raster
from geoseg.sample import CLASSES, write_sample
from geoseg.train import train_model

MODELS = {"icnet": {"width": 16, "encoder": "mobilenetv2"}, "unet": {"width": 16}}


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp())
    scene, labels = write_sample(work)
    print(f"sample scene 320x320, 6 bands, 5 classes; CPU threads {torch.get_num_threads()}")
    for arch, kwargs in MODELS.items():
        t0 = time.perf_counter()
        res = train_model(
            scene,
            labels,
            work / f"{arch}.safetensors",
            arch=arch,
            arch_kwargs=kwargs,
            classes=CLASSES,
            epochs=8,
            chip=64,
            batch_size=16,
            chips_per_epoch=128,
            block=64,
            val_fraction=0.25,
            tile=256,
            overlap=32,
            seed=0,
            device="cpu",
            patience=99,
        )
        train_s = time.perf_counter() - t0
        best = None
        for _ in range(3):
            out = predict_raster(scene, work / f"{arch}.tif", model=res.checkpoint, device="cpu", overwrite=True)
            best = max(best or 0.0, out.mpix_per_s)
        print(
            f"{arch:6s} {kwargs}: val mIoU {res.best_miou:.3f} (held-out blocks) after {res.epochs_run} epochs "
            f"({train_s:.0f} s); predict {best:.2f} MPix/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
