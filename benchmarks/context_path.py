"""Can a network's spatial context find SpaceNet's buildings from one panchromatic band? A plain training loop.

The accuracy benchmark (``accuracy.py``) shows the default recipe level with the forest on SpaceNet: both predict
background everywhere. This script takes geoseg's training pipeline out of the question: it trains a registered
architecture from random weights in a minimal loop (AdamW, one-cycle, cross entropy, batches of 8 chips, 30 % of
them centred on a building pixel, random 90-degree rotations) on the left half of the scene and prints the building
IoU on the right half (columns 448-895) every fifth of the run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/context_path.py --arch ssnet --arch-kwargs '{"pixel_fuse": 0}'
    PYTHONPATH=$PWD .venv/bin/python benchmarks/context_path.py --arch unet --arch-kwargs '{"width": 16}'

Data: ``../shared/data/spacenet_solaris`` (``sample_geotiff.tif``, 900 x 900 px, 0.5 m; its building footprint mask
``sample_fp_mask_from_geojson.tif``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import torch
import torch.nn.functional as F

from geoseg.models.registry import create_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "spacenet_solaris"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="ssnet")
    ap.add_argument("--arch-kwargs", default="{}", help="JSON object of architecture options")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--chip", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    with rasterio.open(args.data / "sample_geotiff.tif") as src:
        image = src.read(1).astype(np.float32)
    with rasterio.open(args.data / "sample_fp_mask_from_geojson.tif") as src:
        mask = (src.read(1) > 0).astype(np.int64)
    rows, cols = image.shape
    half = cols // 2
    image = (image - image[:, :half].mean()) / image[:, :half].std()
    net = create_model(args.arch, in_channels=1, num_classes=2, **json.loads(args.arch_kwargs))
    opt = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.15)
    ys, xs = np.nonzero(mask[:, :half])
    chip = args.chip
    test_rows, test_cols = rows // 32 * 32, (cols - half) // 32 * 32
    test = (slice(0, test_rows), slice(cols - test_cols, cols))
    t0 = time.perf_counter()
    for step in range(args.steps):
        xb, yb = [], []
        for _ in range(8):
            if rng.random() < 0.3:
                i = rng.integers(len(ys))
                r, c = ys[i] - chip // 2, xs[i] - chip // 2
            else:
                r, c = rng.integers(0, rows - chip), rng.integers(0, half - chip)
            r, c = int(np.clip(r, 0, rows - chip)), int(np.clip(c, 0, half - chip))
            k = int(rng.integers(4))
            xb.append(np.rot90(image[r : r + chip, c : c + chip], k).copy())
            yb.append(np.rot90(mask[r : r + chip, c : c + chip], k).copy())
        net.train()
        loss = F.cross_entropy(net(torch.from_numpy(np.stack(xb))[:, None]), torch.from_numpy(np.stack(yb)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, args.steps // 5) == 0:
            net.eval()
            with torch.no_grad():
                pred = net(torch.from_numpy(image[test].copy())[None, None]).argmax(1)[0].numpy().astype(bool)
            truth = mask[test].astype(bool)
            iou = (truth & pred).sum() / max((truth | pred).sum(), 1)
            print(
                f"{args.arch} {args.arch_kwargs} seed {args.seed} step {step + 1} loss {loss.item():.3f} "
                f"building IoU {iou:.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
