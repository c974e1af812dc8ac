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


#: the files the demo writes into its folder
DEMO_FILES = (
    "scene.tif",
    "labels.tif",
    "model.safetensors",
    "model.safetensors.train-state.pt",
    "classes.tif",
    "probabilities.tif",
    "classes.gpkg",
    "report/report.json",
    "report/report.csv",
    "report/report.md",
    "report/report.html",
)


def run_demo(
    out_dir: str | Path = "geoseg-demo",
    *,
    arch: str = "tiny",
    epochs: int = 10,
    max_seconds: float = 50.0,
    device: str = "auto",
    seed: int = 0,
    echo: Callable[[str], None] = print,
    overwrite: bool = False,
) -> DemoResult:
    """Run the whole path on the bundled sample and return the evaluation against its labels.

    Writes :data:`DEMO_FILES` into ``out_dir`` (created if missing; other files in it are kept): all of them when the
    demo succeeds, none when it fails or is interrupted. Existing demo files are replaced only with ``overwrite``.

    Raises:
        InvalidParameterError, UnknownModelError: a bad option (checked before anything is written).
        OutputExistsError, OutputError: demo files exist without ``overwrite``, or ``out_dir`` cannot be written.
    """
    from geoseg.evaluation import evaluate
    from geoseg.inference.predict import predict_raster
    from geoseg.io.outputs import OutputSet
    from geoseg.models.checkpoint import load_checkpoint, save_checkpoint
    from geoseg.models.device import check_device
    from geoseg.models.registry import check_model_options
    from geoseg.options import check_numbers
    from geoseg.report import write_report
    from geoseg.train import train_model
    from geoseg.vectorization import vectorize

    t0 = time.perf_counter()
    arch_kwargs = {"width": 16} if arch == "tiny" else {}
    check_numbers({"epochs": epochs, "max_seconds": max_seconds, "seed": seed})
    check_device(device)
    check_model_options(arch, arch_kwargs)
    out = Path(out_dir)
    outputs = OutputSet(overwrite=overwrite)
    outputs.add_folder(out, "demo", files=list(DEMO_FILES))
    with outputs:
        staged = outputs.stage(out)
        scene, labels = write_sample(staged)
        echo(f"[1/5] sample scene {out / scene.name} (6 bands, 5 classes, nodata corner), labels {out / labels.name}")
        ckpt = staged / "model.safetensors"
        trained = train_model(
            scene,
            labels,
            ckpt,
            arch=arch,
            arch_kwargs=arch_kwargs,
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
            overwrite=True,
        )
        # the contract records the training data: name the files where they will be, not their staged names
        net, config = load_checkpoint(ckpt)
        config.extra["training"].update(image=str(out / scene.name), labels=str(out / labels.name))
        save_checkpoint(ckpt, net, config, overwrite=True)
        echo(
            f"[2/5] trained {arch} for {trained.epochs_run} epochs in {trained.seconds:.0f}s: best validation mIoU "
            f"{trained.best_miou:.3f} on held-out blocks (epoch {trained.best_epoch}) -> {out / ckpt.name}"
        )
        class_map = staged / "classes.tif"
        pred = predict_raster(
            scene, class_map, model=ckpt, probabilities=staged / "probabilities.tif", device=device, overwrite=True
        )
        echo(f"[3/5] predicted {pred.tiles} tiles ({pred.tiles_skipped} all-nodata skipped) -> {out / class_map.name}")
        polygons = staged / "classes.gpkg"
        vec = vectorize(class_map, polygons, min_area=200.0, overwrite=True, layer="classes")
        echo(f"[4/5] vectorized -> {out / polygons.name} ({vec.features} polygons)")
        rep = evaluate(class_map, labels, classes=CLASSES)
        rep.extra.update(prediction=str(out / class_map.name), truth=str(out / labels.name))
        write_report(rep, staged / "report", overwrite=True)
    echo(f"[5/5] per-class IoU against the sample labels (report in {out / 'report'}):")
    echo(rep.format_table())
    return DemoResult(
        out,
        out / "model.safetensors",
        out / "classes.tif",
        out / "classes.gpkg",
        rep,
        trained.best_miou,
        time.perf_counter() - t0,
    )
