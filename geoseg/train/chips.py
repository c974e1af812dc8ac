"""Training chips: a spatially separated block split, and centred / random / grid / class-balanced chip sampling."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.errors import InvalidParameterError
from geoseg.io.normalize import Normalization
from geoseg.io.read import RasterSource
from geoseg.train.labels import IGNORE_INDEX, LabelSource

SAMPLING_MODES = ("centered", "random", "grid", "balanced")
TRAIN, VAL = 1, 2  # block roles (0: a block with no label, in neither set)
#: rasters up to this size (as float32) are read once and chips cut from memory
IN_MEMORY_BYTES = 512 * 2**20


@dataclass(frozen=True)
class BlockSplit:
    """The raster cut into square blocks (the last row/column of blocks may be smaller); each block holding labels is
    for training or validation, so no validation pixel is trained on. Blocks without labels are in neither list."""

    block: int
    train: list[tuple[int, int]]  # block (row, col) origins in pixels
    val: list[tuple[int, int]]


def block_origins(shape: tuple[int, int], block: int) -> list[tuple[int, int]]:
    """Top-left pixels of the ``block``-px blocks tiling a ``(rows, cols)`` raster, row by row."""
    h, w = shape
    return [(r, c) for r in range(0, h, block) for c in range(0, w, block)]


def block_split(
    shape: tuple[int, int],
    block: int,
    val_fraction: float,
    seed: int,
    histograms: dict[tuple[int, int], np.ndarray] | None = None,
) -> BlockSplit:
    """Assign whole blocks to validation at random (seeded).

    Without ``histograms`` every block counts as labelled and ``val_fraction`` of them (at least one when there are
    two or more) go to validation. With per-block class ``histograms`` (pixel counts per class) only labelled blocks
    take part, ``val_fraction`` is a share of the labelled *pixels*, and the split is stratified
    (:func:`stratified_val_blocks`): every class in two or more blocks is validated, and no class loses more than half
    of its pixels (nor its last block) to validation.
    """
    if not 0 <= val_fraction < 1:
        raise InvalidParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if block < 1:
        raise InvalidParameterError(f"block must be >= 1 px, got {block}")
    origins = block_origins(shape, block)
    rng = np.random.default_rng(seed)
    if histograms is None:
        order = rng.permutation(len(origins))
        n_val = int(round(val_fraction * len(origins)))
        if val_fraction > 0 and len(origins) > 1:
            n_val = min(max(n_val, 1), len(origins) - 1)
        val = [origins[i] for i in sorted(order[:n_val])]
        train = [origins[i] for i in sorted(order[n_val:])]
        return BlockSplit(block, train, val)
    labelled = [o for o in origins if int(np.asarray(histograms[o]).sum()) > 0]
    if not labelled or val_fraction == 0:
        return BlockSplit(block, labelled, [])
    hist = np.stack([np.asarray(histograms[o], np.int64) for o in labelled])
    chosen = stratified_val_blocks(hist, val_fraction, rng)
    return BlockSplit(
        block,
        [o for i, o in enumerate(labelled) if i not in chosen],
        [o for i, o in enumerate(labelled) if i in chosen],
    )


def stratified_val_blocks(
    hist: np.ndarray, val_fraction: float, rng: np.random.Generator, *, keep: float = 0.5
) -> set[int]:
    """Indexes of the validation blocks among labelled blocks with class pixel counts ``hist`` (blocks x classes).

    Rarest class first, one block holding each class still missing from validation is drawn (among those whose move
    keeps the rule below); then blocks are added in random order while the validation pixels stay within
    ``val_fraction`` of the labelled pixels. Rule: each class keeps at least ``keep`` of its pixels, and at least one
    block, for training.
    """
    total = hist.sum(0)
    blocks_with = (hist > 0).sum(0)
    target = val_fraction * hist.sum()
    val_px = np.zeros(hist.shape[1], np.int64)
    val_blocks = np.zeros(hist.shape[1], np.int64)
    chosen: set[int] = set()

    def allowed(i: int) -> bool:
        after = val_px + hist[i]
        has = hist[i] > 0
        return bool(np.all(after[has] <= (1 - keep) * total[has]) and np.all(val_blocks[has] + 1 < blocks_with[has]))

    def take(i: int) -> None:
        nonlocal val_px, val_blocks
        chosen.add(i)
        val_px = val_px + hist[i]
        val_blocks = val_blocks + (hist[i] > 0)

    for c in np.argsort(total, kind="stable"):
        if total[c] == 0 or val_px[c] > 0 or blocks_with[c] < 2:
            continue
        candidates = [i for i in np.flatnonzero(hist[:, c] > 0) if i not in chosen and allowed(int(i))]
        # prefer blocks that fit the pixel budget
        fitting = [i for i in candidates if val_px.sum() + hist[i].sum() <= target]
        pool = fitting or candidates
        if pool:
            take(int(rng.choice(pool)))
    for i in rng.permutation(len(hist)):
        i = int(i)
        if i in chosen or val_px.sum() + hist[i].sum() > target:
            continue
        if allowed(i):
            take(i)
    if not chosen and len(hist) > 1:  # tiny rasters: one block that fits the rule, even above the budget
        fallback = [i for i in range(len(hist)) if allowed(i)]
        if fallback:
            take(int(min(fallback, key=lambda i: hist[i].sum())))
    return chosen


class ChipReader:
    """Reads normalized (image, label) chips of ``chip`` px anywhere on (or beyond the edge of) the raster.

    Rasters up to ``in_memory_bytes`` (as float32) are read once and kept in memory; larger ones are read window by
    window.

    Image pixels beyond the raster are reflected; invalid image pixels become 0 (the band mean after normalization)
    with the ignore label. Labels are kept only where the pixel's block has the requested role (``roles``: an array of
    block roles, 0 none, :data:`TRAIN`, :data:`VAL`), so a chip crossing into a validation block never trains on it.
    """

    def __init__(
        self,
        image: RasterSource,
        labels: LabelSource,
        norm: Normalization,
        chip: int,
        block: int,
        *,
        cache_blocks: int = 512,
        in_memory_bytes: int = IN_MEMORY_BYTES,
    ) -> None:
        self.image, self.labels, self.norm, self.chip, self.block = image, labels, norm, chip, block
        h, w = image.shape
        self.roles = np.zeros((-(-h // block), -(-w // block)), np.int8)
        self._hist: dict[tuple[int, int], np.ndarray] = {}
        self._pixels: OrderedDict[tuple[int, int], dict[int, np.ndarray]] = OrderedDict()
        self._cache_blocks = cache_blocks
        self._memory: tuple[np.ndarray, np.ndarray] | None = None
        self._train_pixels: dict[int, np.ndarray] | None = None
        if image.count * h * w * 4 <= in_memory_bytes:
            self._memory = self._load()

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole raster, normalized (invalid pixels 0), and its labels (invalid pixels ignored), in memory."""
        h, w = self.image.shape
        x = np.empty((self.image.count, h, w), np.float32)
        y = np.empty((h, w), np.int16 if len(self.labels.classes) < IGNORE_INDEX else np.int64)
        step = 512
        for r in range(0, h, step):
            for c in range(0, w, step):
                win = Window(c, r, min(step, w - c), min(step, h - r))
                data, valid = self.image.read(win)
                self.norm.apply(data)
                data[:, ~valid] = 0.0
                lab = self.labels.read(win)
                lab[~valid] = IGNORE_INDEX
                x[:, r : r + int(win.height), c : c + int(win.width)] = data
                y[r : r + int(win.height), c : c + int(win.width)] = lab
        return x, y

    def _read_window(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Normalized image (invalid pixels 0) and labels (invalid pixels ignored) of a window inside the raster."""
        if self._memory is not None:
            r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            return self._memory[0][:, r0 : r0 + h, c0 : c0 + w], self._memory[1][r0 : r0 + h, c0 : c0 + w].astype(
                np.int64
            )
        data, valid = self.image.read(win)
        self.norm.apply(data)
        data[:, ~valid] = 0.0
        lab = self.labels.read(win)
        lab[~valid] = IGNORE_INDEX
        return data, lab

    def set_roles(self, split: BlockSplit) -> None:
        self._train_pixels = None
        self.roles[:] = 0
        for role, blocks in ((TRAIN, split.train), (VAL, split.val)):
            for r, c in blocks:
                self.roles[r // self.block, c // self.block] = role

    def block_window(self, r0: int, c0: int) -> Window:
        h, w = self.image.shape
        return Window(c0, r0, min(self.block, w - c0), min(self.block, h - r0))

    def read(
        self, row: int, col: int, *, role: int | None = None, keep: Window | None = None, size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``size`` (default ``chip``) px chip with top-left pixel (``row``, ``col``), which may lie outside the
        raster: image (bands, size, size) float32 and labels (size, size) int64. Labels outside blocks of ``role``
        or outside the window ``keep`` are set to the ignore index."""
        s = size or self.chip
        h, w = self.image.shape
        r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + s, h), min(col + s, w)
        x = np.zeros((self.image.count, s, s), np.float32)
        y = np.full((s, s), IGNORE_INDEX, np.int64)
        if r1 <= r0 or c1 <= c0:
            return x, y
        data, lab = self._read_window(Window(c0, r0, c1 - c0, r1 - r0))
        if role is not None:
            rr = np.arange(r0, r1) // self.block
            cc = np.arange(c0, c1) // self.block
            lab[self.roles[rr[:, None], cc[None, :]] != role] = IGNORE_INDEX
        if keep is not None:
            kr0, kc0 = int(keep.row_off), int(keep.col_off)
            inside = np.zeros(lab.shape, bool)
            inside[
                max(kr0 - r0, 0) : max(kr0 + int(keep.height) - r0, 0),
                max(kc0 - c0, 0) : max(kc0 + int(keep.width) - c0, 0),
            ] = True
            lab[~inside] = IGNORE_INDEX
        top, left = r0 - row, c0 - col
        x[:, top : top + data.shape[1], left : left + data.shape[2]] = data
        y[top : top + lab.shape[0], left : left + lab.shape[1]] = lab
        if (top, left, s - top - data.shape[1], s - left - data.shape[2]) != (0, 0, 0, 0):
            x = _reflect_into(x, top, left, data.shape[1], data.shape[2])
        return x, y

    # --- single pixels ---------------------------------------------------------------------------------------------
    @property
    def in_memory(self) -> bool:
        """Whether the image and labels are held in memory (rasters up to ``in_memory_bytes``)."""
        return self._memory is not None

    def pixel_batch(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        balance: float = 0.5,
        chips: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` labelled training pixels, values (n, bands) float32 and class ids (n,) int64, drawn with class
        probabilities proportional to the class pixel count to the power ``balance``: from every training pixel when
        the raster is held in memory, else from the labelled pixels of ``chips`` (images (B, bands, h, w), labels
        (B, h, w)) already read."""
        if self._memory is not None:
            if self._train_pixels is None:
                h, w = self.image.shape
                y = self._memory[1]
                role = self.roles[np.arange(h)[:, None] // self.block, np.arange(w)[None, :] // self.block]
                ok = (role == TRAIN) & (y != IGNORE_INDEX)
                self._train_pixels = {int(c): np.flatnonzero(ok & (y == c)) for c in np.unique(y[ok])}
            pools = self._train_pixels
            values = self._memory[0].reshape(self.image.count, -1)
        else:
            if chips is None:
                return np.zeros((0, self.image.count), np.float32), np.zeros(0, np.int64)
            xs, ys = chips
            flat_y = ys.reshape(-1)
            values = xs.transpose(1, 0, 2, 3).reshape(xs.shape[1], -1)
            pools = {int(c): np.flatnonzero(flat_y == c) for c in np.unique(flat_y[flat_y != IGNORE_INDEX])}
        if not pools:
            return np.zeros((0, self.image.count), np.float32), np.zeros(0, np.int64)
        classes = np.array(sorted(pools))
        sizes = np.array([len(pools[c]) for c in classes], np.float64)
        p = sizes**balance
        per_class = rng.multinomial(n, p / p.sum())
        idx = np.concatenate([pools[c][rng.integers(0, len(pools[c]), k)] for c, k in zip(classes, per_class)])
        ids = np.repeat(classes, per_class)
        return np.ascontiguousarray(values[:, idx].T), ids.astype(np.int64)

    # --- per-block statistics ------------------------------------------------------------------------------------
    def _block_labels(self, r0: int, c0: int) -> np.ndarray:
        win = self.block_window(r0, c0)
        if self._memory is not None:
            return self._memory[1][r0 : r0 + int(win.height), c0 : c0 + int(win.width)].astype(np.int64)
        return self.labels.read(win)

    def block_histogram(self, r0: int, c0: int) -> np.ndarray:
        """Pixel count per class in a block (cached; read once)."""
        key = (r0, c0)
        if key not in self._hist:
            y = self._block_labels(r0, c0)
            n = len(self.labels.classes)
            self._hist[key] = np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=n)[:n]
        return self._hist[key]

    def _block_pixels(self, r0: int, c0: int) -> dict[int, np.ndarray]:
        """Flat indexes (within the block) of the labelled pixels of each class (a bounded LRU cache)."""
        key = (r0, c0)
        if key in self._pixels:
            self._pixels.move_to_end(key)
            return self._pixels[key]
        y = self._block_labels(r0, c0).ravel()
        out = {int(c): np.flatnonzero(y == c).astype(np.int32) for c in np.unique(y[y != IGNORE_INDEX])}
        self._pixels[key] = out
        if len(self._pixels) > self._cache_blocks:
            self._pixels.popitem(last=False)
        return out

    # --- chip origins --------------------------------------------------------------------------------------------
    def _random_in_block(self, r0: int, c0: int, rng: np.random.Generator) -> tuple[int, int]:
        win = self.block_window(r0, c0)
        r = r0 + int(rng.integers(0, max(int(win.height) - self.chip, 0) + 1))
        c = c0 + int(rng.integers(0, max(int(win.width) - self.chip, 0) + 1))
        return r, c

    def random_origins(self, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """``n`` random chip origins, each chip starting inside one of ``blocks``."""
        if not blocks:
            return []
        return [self._random_in_block(*blocks[int(k)], rng) for k in rng.integers(0, len(blocks), n)]

    def grid_origins(self, blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Non-overlapping chips covering each block."""
        out = []
        for r0, c0 in blocks:
            win = self.block_window(r0, c0)
            out += [
                (r, c)
                for r in range(r0, r0 + int(win.height), self.chip)
                for c in range(c0, c0 + int(win.width), self.chip)
            ]
        return out

    def balanced_origins(
        self, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator
    ) -> list[tuple[int, int]]:
        """Chips drawn so every class present is equally likely to be sampled: pick a class uniformly, then a block
        in proportion to that class's pixels in it, then a random chip inside the block."""
        if not blocks:
            return []
        hists = np.stack([self.block_histogram(*b) for b in blocks]).astype(np.float64)
        present = np.flatnonzero(hists.sum(0) > 0)
        if present.size == 0:
            return self.random_origins(blocks, n, rng)
        out = []
        for cls in rng.choice(present, size=n):
            p = hists[:, cls] / hists[:, cls].sum()
            out.append(self._random_in_block(*blocks[int(rng.choice(len(blocks), p=p))], rng))
        return out

    def centered_origins(
        self, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator, *, balance: float = 0.5
    ) -> list[tuple[int, int]]:
        """Chips centred (up to a random shift of a quarter chip) on labelled pixels.

        A class is drawn with probability proportional to its pixel count to the power ``balance`` (0: as in the
        labels, 1: every class equally often, 0.5 in between), then a block in proportion to that class's pixels in
        it, then one of those pixels. Every chip therefore holds labels, rare classes are seen often without being
        repeated to exhaustion, and chips may extend past the blocks and the raster edge (context is read, labels
        outside training blocks are ignored).
        """
        if not blocks:
            return []
        hists = np.stack([self.block_histogram(*b) for b in blocks]).astype(np.float64)
        totals = hists.sum(0)
        present = np.flatnonzero(totals > 0)
        if present.size == 0:
            return self.random_origins(blocks, n, rng)
        p_cls = totals[present] ** balance
        p_cls /= p_cls.sum()
        half, jitter = self.chip // 2, max(self.chip // 4, 0)
        out = []
        for cls in rng.choice(present, size=n, p=p_cls):
            p = hists[:, cls] / totals[cls]
            r0, c0 = blocks[int(rng.choice(len(blocks), p=p))]
            flat = self._block_pixels(r0, c0)[int(cls)]
            bw = int(self.block_window(r0, c0).width)
            k = int(flat[int(rng.integers(0, len(flat)))])
            dr, dc = rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0)
            out.append((r0 + k // bw - half + int(dr), c0 + k % bw - half + int(dc)))
        return out

    def val_windows(self, blocks: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, Window]]:
        """Validation reads ``(row, col, size, keep)``: each block is scored from windows of at least ``chip`` px
        centred on it (so its pixels get context), labels kept only inside the block."""
        out = []
        for r0, c0 in blocks:
            win = self.block_window(r0, c0)
            bh, bw = int(win.height), int(win.width)
            if max(bh, bw) <= self.chip:
                size = self.chip
                out.append((r0 + bh // 2 - size // 2, c0 + bw // 2 - size // 2, size, win))
                continue
            for r in range(r0, r0 + bh, self.chip):
                for c in range(c0, c0 + bw, self.chip):
                    keep = Window(c, r, min(self.chip, c0 + bw - c), min(self.chip, r0 + bh - r))
                    out.append((r, c, self.chip, keep))
        return out

    def origins(
        self, mode: str, blocks: list[tuple[int, int]], n: int, rng: np.random.Generator, *, balance: float = 0.5
    ) -> list:
        """``n`` chip origins by sampling ``mode`` (``balance``: see :meth:`centered_origins`)."""
        if mode == "centered":
            return self.centered_origins(blocks, n, rng, balance=balance)
        if mode == "random":
            return self.random_origins(blocks, n, rng)
        if mode == "balanced":
            return self.balanced_origins(blocks, n, rng)
        if mode == "grid":
            grid = self.grid_origins(blocks)
            return [grid[i] for i in rng.permutation(len(grid))]
        raise InvalidParameterError(f"unknown sampling {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")


def _reflect_into(x: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """Fill the border of ``x`` (bands, S, S) around the data at rows top:top+h, cols left:left+w by reflection."""
    s_r, s_c = x.shape[1], x.shape[2]
    core = x[:, top : top + h, left : left + w]
    pads = ((0, 0), (top, s_r - top - h), (left, s_c - left - w))
    mode = "reflect" if min(h, w) > 1 else "edge"
    try:
        return np.pad(core, pads, mode=mode).astype(np.float32, copy=False)  # type: ignore[call-overload]
    except ValueError:  # numpy reflect needs the pad smaller than the data in old versions; fall back
        return np.pad(core, pads, mode="symmetric").astype(np.float32, copy=False)
