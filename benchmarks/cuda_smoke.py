"""CUDA smoke test: predict_raster on a GPU against the CPU class map, with a model trained on the sample scene.

    python benchmarks/cuda_smoke.py [--device cuda] [--size 2048] [--train-seconds 20] [--json PATH]

1. Trains the tiny model (width 16) on the bundled sample scene (6 bands, 5 classes, a nodata corner; see
   ``geoseg/sample.py``) on the device (mixed precision on CUDA) for at most ``--train-seconds``. If that fails it
   says so and trains on the CPU, so the prediction checks still run.
2. Writes a ``--size``² raster by mirroring the scene (uint16, nodata 0, 256-px blocks, DEFLATE); its top-left
   320 x 320 pixels are the scene itself.
3. Predicts it on the CPU in fp32 with float32 probabilities (the reference), then on the device: fp32 (TF32 off),
   bf16 autocast + channels_last (the default), bf16 with the gaussian stitch and fp32 with the CRF (each against
   a CPU run with the same stitch and CRF); ``torch.compile`` is left to tests/test_cuda.py (its compile time would
   dominate here). For each it prints MPix/s, the pixels whose class differs from the CPU map, how many of them are
   not near-ties (the CPU's two best probabilities at least ``TIE`` apart) and the mIoU against the sample labels
   on the scene.

Exit status 1 when a device run fails or an fp32 map differs from the CPU's outside near-ties.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from geoseg.inference.predict import predict_raster
from geoseg.metrics import ConfusionMatrix
from geoseg.sample import CLASSES, COLORS, write_sample
from geoseg.train import train_model

TIE = 1e-4


def mirrored_scene(scene: Path, dst: Path, size: int) -> Path:
    """``size``² raster made of the scene and its mirror images (the scene is its top-left corner)."""
    with rasterio.open(scene) as ds:
        data, profile, descriptions = ds.read(), ds.profile, ds.descriptions
    h, w = data.shape[1:]
    big = np.pad(data, ((0, 0), (0, max(0, size - h)), (0, max(0, size - w))), mode="symmetric")[:, :size, :size]
    profile.update(width=size, height=size, blockxsize=256, blockysize=256, tiled=True, compress="deflate")
    with rasterio.open(dst, "w", **profile) as out:
        out.write(np.ascontiguousarray(big))
        out.descriptions = descriptions
    return dst


def compare(ref: np.ndarray, ref_probs: np.ndarray | None, other: np.ndarray) -> dict[str, Any]:
    valid = ref != 255
    differ = (ref != other) & valid
    out: dict[str, Any] = {
        "nodata_differs": int(((other == 255) != ~valid).sum()),
        "differ": int(differ.sum()),
        "differ_fraction": float(differ.sum() / max(valid.sum(), 1)),
    }
    if ref_probs is not None:
        top2 = np.sort(ref_probs, axis=0)[-2:]
        out["not_near_ties"] = int((differ & (top2[1] - top2[0] >= TIE)).sum())
    return out


def miou(class_map: np.ndarray, labels: np.ndarray) -> float:
    cm = ConfusionMatrix(len(CLASSES))
    h, w = labels.shape
    cm.update(class_map[:h, :w], labels, valid=class_map[:h, :w] != 255)
    return cm.report(CLASSES).miou


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read() if ds.count > 1 else ds.read(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--train-seconds", type=float, default=20.0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="geoseg-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"device": args.device, "size": args.size, "runs": {}}
    failures: list[str] = []
    scene, labels_path = write_sample(work / "sample")
    labels = read(labels_path)

    t0 = time.perf_counter()
    ckpt = work / "model.safetensors"
    common = {"arch": "tiny", "arch_kwargs": {"width": 16}, "classes": CLASSES, "colors": COLORS, "epochs": 10,
              "chip": 64, "batch_size": 16, "chips_per_epoch": 128, "block": 64, "val_fraction": 0.25, "tile": 256,
              "overlap": 32, "seed": 0, "max_seconds": args.train_seconds, "overwrite": True}  # fmt: skip
    try:
        trained = train_model(scene, labels_path, ckpt, device=args.device, **common)
        results["train"] = {"device": args.device, "best_miou": trained.best_miou, "epochs": trained.epochs_run}
    except Exception as exc:  # noqa: BLE001 - report, then go on with a CPU-trained model
        traceback.print_exc()
        failures.append(f"training on {args.device}: {type(exc).__name__}: {exc}")
        trained = train_model(scene, labels_path, ckpt, device="cpu", **common)
        results["train"] = {"device": "cpu", "best_miou": trained.best_miou, "epochs": trained.epochs_run}
    print(
        f"trained tiny/16 on {results['train']['device']}: {trained.epochs_run} epochs in "
        f"{time.perf_counter() - t0:.1f} s, validation mIoU {trained.best_miou:.3f}",
        flush=True,
    )

    src = mirrored_scene(scene, work / "big.tif", args.size)
    mpix = args.size**2 / 1e6
    cpu_runs = {
        "cpu": {"device": "cpu", "prob_dtype": "float32"},
        "cpu_gaussian": {"device": "cpu", "prob_dtype": "float32", "stitch": "gaussian"},
        "cpu_crf": {"device": "cpu", "prob_dtype": "float32", "crf": {"iterations": 5}},
    }
    runs: dict[str, tuple[str, dict[str, Any], bool]] = {  # name: (reference, options, strict fp32)
        "fp32": ("cpu", {"device": args.device, "amp": False}, True),
        "bf16": ("cpu", {"device": args.device}, False),
        "bf16_gaussian": ("cpu_gaussian", {"device": args.device, "stitch": "gaussian"}, False),
        "fp32_crf": ("cpu_crf", {"device": args.device, "amp": False, "crf": {"iterations": 5}}, True),
    }
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    print(
        f"{'run':<16}{'MPix/s':>9}{'differ':>10}{'fraction':>10}{'not ties':>10}{'mIoU':>8}   (raster {mpix:.1f} MPix)"
    )
    for name, opts in cpu_runs.items():
        out = work / f"{name}.tif"
        res = predict_raster(src, out, model=ckpt, probabilities=work / f"{name}_p.tif", overwrite=True, **opts)
        refs[name] = (read(out), read(work / f"{name}_p.tif"))
        score = miou(refs[name][0], labels)
        results["runs"][name] = {"mpix_s": res.mpix_per_s, "miou": score}
        print(f"{name:<16}{res.mpix_per_s:9.2f}{'-':>10}{'-':>10}{'-':>10}{score:8.3f}", flush=True)
    for name, (ref, opts, strict) in runs.items():
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        if strict:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            out = work / f"{name}.tif"
            res = predict_raster(src, out, model=ckpt, overwrite=True, **opts)
            cmp = compare(*refs[ref], read(out))
            cmp.update(mpix_s=res.mpix_per_s, miou=miou(read(out), labels), seconds=res.seconds)
            results["runs"][name] = cmp
            print(
                f"{name:<16}{res.mpix_per_s:9.2f}{cmp['differ']:>10}{cmp['differ_fraction']:>10.5f}"
                f"{cmp['not_near_ties']:>10}{cmp['miou']:8.3f}",
                flush=True,
            )
            if cmp["nodata_differs"]:
                failures.append(f"{name}: nodata differs from the CPU map at {cmp['nodata_differs']} pixels")
            if strict and cmp["not_near_ties"]:
                failures.append(f"{name}: {cmp['not_near_ties']} pixels differ from the CPU map outside near-ties")
        except Exception as exc:  # noqa: BLE001 - one failing path must not hide the others
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            results["runs"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    results["failures"] = failures
    print("\n".join(["FAILURES:", *failures]) if failures else "smoke: all device runs agree with the CPU")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
