"""The end-to-end demo: generate the sample scene, train briefly, predict, vectorize, evaluate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from geoseg.metrics import SegmentationReport
from geoseg.sample import CLASSES, COLORS, write_sample


@dataclass
class DemoResult:
    out_dir: Path
    checkpoint: Path
    class_map: Path
    polygons: Path | None
    report: SegmentationReport
    validation_miou: float
    seconds: float


def run_demo(
    out_dir: str | Path = "geoseg-demo",
    *,
    arch: str = "tiny",
    epochs: int = 10,
    max_seconds: float = 50.0,
    device: str = "auto",
    seed: int = 0,
    echo: Callable[[str], None] = print,
    overwrite: bool = True,
) -> DemoResult:
    """Run the whole path on the bundled sample and return the evaluation against its labels."""
    from geoseg.evaluation import evaluate
    from geoseg.inference.predict import predict_raster
    from geoseg.report import write_report
    from geoseg.train import train_model
    from geoseg.vectorization import vectorize

    t0 = time.perf_counter()
    out = Path(out_dir)
    scene, labels = write_sample(out)
    echo(f"[1/5] sample scene {scene} (6 bands, 5 classes, nodata corner) and labels {labels}")
    ckpt = out / "model.safetensors"
    trained = train_model(
        scene,
        labels,
        ckpt,
        arch=arch,
        arch_kwargs={"width": 16} if arch == "tiny" else {},
        classes=CLASSES,
        colors=COLORS,
        epochs=epochs,
        chip=64,
        batch_size=16,
        chips_per_epoch=128,
        block=64,
        val_fraction=0.25,
        tile=256,
        overlap=32,
        seed=seed,
        device=device,
        max_seconds=max_seconds,
        overwrite=overwrite,
    )
    echo(
        f"[2/5] trained {arch} for {trained.epochs_run} epochs in {trained.seconds:.0f}s: best validation mIoU "
        f"{trained.best_miou:.3f} on held-out blocks (epoch {trained.best_epoch}) -> {ckpt}"
    )
    class_map = out / "classes.tif"
    pred = predict_raster(
        scene, class_map, model=ckpt, probabilities=out / "probabilities.tif", device=device, overwrite=overwrite
    )
    echo(f"[3/5] predicted {pred.tiles} tiles ({pred.tiles_skipped} all-nodata skipped) -> {class_map}")
    polygons = out / "classes.gpkg"
    vec = vectorize(class_map, polygons, min_area=200.0, overwrite=overwrite)
    echo(f"[4/5] vectorized -> {polygons} ({vec.features} polygons)")
    rep = evaluate(class_map, labels, classes=CLASSES)
    write_report(rep, out / "report")
    echo(f"[5/5] per-class IoU against the sample labels (report in {out / 'report'}):")
    echo(rep.format_table())
    return DemoResult(out, ckpt, class_map, polygons, rep, trained.best_miou, time.perf_counter() - t0)
