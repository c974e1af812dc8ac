"""Accuracy on a contiguous held-out region: geoseg's default recipe against a pixel-wise random forest.

For each real scene in ``../shared/data`` (see its README for sources) and each fold, the labels of one half of the
columns are the training region (the other half is kept out with ``train_area``) and the other half is the test
region. In the same run:

* a random forest (scikit-learn, 100 trees, 20,000 labelled pixels drawn uniformly from the training region) maps the
  whole scene (:func:`geoseg.train.baseline.forest_baseline`);
* geoseg trains with its default recipe (only image, labels, class names and the training area are given; polygon
  labels also say which attribute holds the class and that uncovered pixels are background) and maps the scene with
  ``predict_raster``'s defaults;
* both class maps are scored on the test region by :func:`geoseg.evaluation.evaluate` (same grid, same convention: a
  class absent from the truth but predicted counts as IoU 0; classes absent from both are left out of the mean).

Prints per-class IoU, mIoU, the gap (geoseg - forest) and training seconds per scene and fold, and a summary with the
mean gap. Run from the repository root::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/accuracy.py                      # every scene, both folds
    PYTHONPATH=$PWD .venv/bin/python benchmarks/accuracy.py --scenes samson --folds left

``--train-json`` passes extra ``train_model`` options (for experiments; the recorded result uses none).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio.errors
import torch
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from shapely.geometry import box

from geoseg import datasets
from geoseg.errors import GridMismatchWarning, NotGeoreferencedWarning
from geoseg.evaluation import evaluate
from geoseg.inference import predict_raster
from geoseg.io import RasterSource
from geoseg.train import train_model
from geoseg.train.area import AreaLabels, PixelArea
from geoseg.train.baseline import FOREST_PIXELS, FOREST_TREES, forest_baseline
from geoseg.train.labels import IGNORE_INDEX, open_labels

ROOT = Path(__file__).resolve().parents[1]
FOLDS = ("left", "right")


@dataclass
class Scene:
    image: Path
    labels: Path
    classes: list[str]
    label_options: dict[str, Any] = field(default_factory=dict)  # how to read the labels (polygons)
    truth_options: dict[str, Any] = field(default_factory=dict)  # the same facts for evaluate
    label_nodata: float | None = None  # unlabelled value of a label raster that declares no nodata


def _salinas(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.salinas_a(data / "salinas_a", work)
    return Scene(img, lab, classes)


def _samson(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.samson(data / "samson", work)
    return Scene(img, lab, classes)


def _sen1floods11(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.sen1floods11(data / "sen1floods11_spain_7370579")
    return Scene(img, lab, classes, truth_options={"ignore_index": -1}, label_nodata=-1)


def _spacenet(data: Path, work: Path) -> Scene:
    img, polys, classes = datasets.spacenet_buildings(data / "spacenet_solaris", work)
    return Scene(
        img,
        polys,
        classes,
        {"class_field": "class_id", "background": 0},
        {"truth_class_field": "class_id", "background": 0},
    )


def _band_subset(image: Path, out: Path, bands: list[int]) -> Path:
    """A copy of ``image`` with only ``bands`` (0-based), for the few-band scenes."""
    with rasterio.open(image) as src:
        profile = src.profile | {"count": len(bands)}
        data = src.read([b + 1 for b in bands])
        descriptions = [src.descriptions[b] for b in bands]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(descriptions)
    return out


def _salinas_rgb(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.salinas_a(data / "salinas_a", work)
    return Scene(_band_subset(img, work / "salinas_rgb.tif", [24, 15, 6]), lab, classes)  # ~640, 550, 460 nm


def _samson_rgb(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.samson(data / "samson", work)
    return Scene(_band_subset(img, work / "samson_rgb.tif", [76, 48, 19]), lab, classes)  # ~640, 550, 460 nm


def _s2_rgb(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.sen1floods11(data / "sen1floods11_spain_7370579")
    return Scene(_band_subset(img, work / "s2_rgb.tif", [3, 2, 1]), lab, classes, {}, {"ignore_index": -1}, -1)


def _s1_sar(data: Path, work: Path) -> Scene:
    _, lab, classes = datasets.sen1floods11(data / "sen1floods11_spain_7370579")
    s1 = next((data / "sen1floods11_spain_7370579").glob("*_S1Hand.tif"))  # VV, VH in dB, NaN nodata
    return Scene(s1, lab, classes, {}, {"ignore_index": -1}, -1)


def _spacenet_roads(data: Path, work: Path) -> Scene:
    img, lab, classes = datasets.spacenet_roads(data / "spacenet_solaris", work)
    return Scene(img, lab, classes)


#: other kinds of input made from the same data (3-band "RGB" of the hyperspectral and Sentinel-2 scenes, 2-band
#: SAR) or the same source (SpaceNet's road sample), run only when named in --scenes: a check that a change helps
#: beyond the scenes it was measured on
EXTRA_SCENES: dict[str, Callable[[Path, Path], Scene]] = {
    "salinas_rgb": _salinas_rgb,
    "samson_rgb": _samson_rgb,
    "s2_rgb": _s2_rgb,
    "s1_sar": _s1_sar,
    "spacenet_roads": _spacenet_roads,  # another single-band object scene: 1300 x 1300 px, roads ~3 % of pixels
}

SCENES: dict[str, Callable[[Path, Path], Scene]] = {
    "salinas_a": _salinas,
    "samson": _samson,
    "sen1floods11": _sen1floods11,
    "spacenet_buildings": _spacenet,
}


def halves(shape: tuple[int, int], fold: str) -> tuple[Window, Window]:
    """(training window, test window) of a ``(rows, cols)`` raster for a fold."""
    h, w = shape
    left, right = Window(0, 0, w // 2, h), Window(w // 2, 0, w - w // 2, h)
    return (left, right) if fold == "left" else (right, left)


def run_fold(name: str, scene: Scene, fold: str, work: Path, seed: int, train_json: dict[str, Any]) -> dict:
    with RasterSource(scene.image) as src:
        shape, transform, crs = src.shape, src.transform, src.crs
        train_win, test_win = halves(shape, fold)
        labels = AreaLabels(
            open_labels(scene.labels, src, classes=scene.classes, nodata=scene.label_nodata, **scene.label_options),
            PixelArea(train_win, src),
            None,
            IGNORE_INDEX,
        )
        try:
            rf = forest_baseline(
                scene.image,
                labels,
                work / f"{name}_{fold}_rf.tif",
                classes=scene.classes,
                seed=seed,
                threads=torch.get_num_threads(),
                overwrite=True,
            )
        finally:
            labels.close()
    t0 = time.perf_counter()
    trained = train_model(
        scene.image,
        scene.labels,
        work / f"{name}_{fold}.safetensors",
        classes=scene.classes,
        train_area=train_win,
        seed=seed,
        overwrite=True,
        label_nodata=scene.label_nodata,
        **scene.label_options,
        **train_json,
    )
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    predict_raster(scene.image, work / f"{name}_{fold}_geoseg.tif", model=trained.checkpoint, overwrite=True)
    predict_s = time.perf_counter() - t1
    test_area = gpd.GeoDataFrame(geometry=[box(*window_bounds(test_win, transform))], crs=crs)
    reports = {
        kind: evaluate(path, scene.labels, classes=scene.classes, aoi=test_area, **scene.truth_options)
        for kind, path in (("rf", rf.output), ("geoseg", work / f"{name}_{fold}_geoseg.tif"))
    }
    return {
        "scene": name,
        "fold": fold,
        "rf": reports["rf"],
        "geoseg": reports["geoseg"],
        "rf_s": rf.seconds,
        "rf_pixels": rf.pixels,
        "train_s": train_s,
        "predict_s": predict_s,
        "val_miou": trained.best_miou,
        "epochs": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "val_history": [h["val_miou"] for h in trained.history],
    }


def print_fold(r: dict) -> None:
    rf, gs = r["rf"], r["geoseg"]
    print(
        f"\n== {r['scene']} / train {r['fold']} half, test the other half "
        f"({gs.pixels} test px; forest on {r['rf_pixels']} px) =="
    )
    w = max(8, *(len(c.name) for c in gs.classes))
    print(f"{'class':<{w}}  {'support':>8}  {'forest':>7}  {'geoseg':>7}")
    for a, b in zip(rf.classes, gs.classes):

        def f(x: float) -> str:
            return "    n/a" if np.isnan(x) else f"{x:7.3f}"

        print(f"{a.name:<{w}}  {b.support:>8d}  {f(a.iou)}  {f(b.iou)}")
    print(f"{'mIoU':<{w}}  {'':>8}  {rf.miou:7.3f}  {gs.miou:7.3f}   gap {gs.miou - rf.miou:+.3f}")
    print(
        f"forest {r['rf_s']:.1f} s; geoseg trained {r['train_s']:.1f} s ({r['epochs']} epochs, validation mIoU "
        f"{r['val_miou']:.3f} at epoch {r['best_epoch']}; by epoch "
        f"{' '.join(f'{v:.3f}' for v in r['val_history'])}), predicted {r['predict_s']:.1f} s",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument(
        "--scenes",
        default=",".join(SCENES),
        help=f"comma-separated subset of {', '.join(SCENES)}; also {', '.join(EXTRA_SCENES)} (few-band checks)",
    )
    ap.add_argument("--folds", default=",".join(FOLDS), help="left (train left, test right), right, or both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where maps and models go (default: a temp dir)")
    ap.add_argument("--train-json", default="{}", help="extra train_model options as JSON (experiments only)")
    args = ap.parse_args()
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    known = SCENES | EXTRA_SCENES
    bad = [s for s in scenes if s not in known] + [f for f in folds if f not in FOLDS]
    if bad:
        ap.error(f"unknown scene/fold {bad}; scenes: {', '.join(known)}; folds: {', '.join(FOLDS)}")
    train_json = json.loads(args.train_json)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="geoseg-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"contiguous hold-out: train on one half of the columns, score the other half; forest: {FOREST_TREES} "
        f"trees on {FOREST_PIXELS} px of the training half; geoseg: default recipe"
        + (f" + {train_json}" if train_json else "")
        + f"; torch threads {torch.get_num_threads()}; seed {args.seed}"
    )
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", GridMismatchWarning)
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        for name in scenes:
            (work / name).mkdir(parents=True, exist_ok=True)
            scene = known[name](args.data, work / name)
            for fold in folds:
                results.append(run_fold(name, scene, fold, work / name, args.seed, train_json))
                print_fold(results[-1])
    print("\n| scene | fold | forest mIoU | geoseg mIoU | gap | geoseg train s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scene']} | {r['fold']} | {r['rf'].miou:.3f} | {r['geoseg'].miou:.3f} | "
            f"{r['geoseg'].miou - r['rf'].miou:+.3f} | {r['train_s']:.0f} |"
        )
    gaps = np.array([r["geoseg"].miou - r["rf"].miou for r in results])
    print(
        f"\nsummary: mean gap {gaps.mean():+.3f} (geoseg - forest) over {len(gaps)} scene/folds; min gap "
        f"{gaps.min():+.3f}; geoseg >= forest on {int((gaps >= 0).sum())}/{len(gaps)}; max train "
        f"{max(r['train_s'] for r in results):.0f} s"
    )


if __name__ == "__main__":
    main()
