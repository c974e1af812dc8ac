"""The device side of the prediction pipeline: batch slots (host buffers the tile reader fills in place) and the model
run on them, asynchronously on CUDA.

On CUDA each slot owns a pinned host buffer, a device buffer and pinned output buffers; :meth:`BatchRunner.launch`
queues the host->device copy on a copy stream (overlapping the previous forward), the forward (bf16 autocast,
channels_last), argmax (and softmax when needed) and the device->host copy of the class ids on the compute stream, and
returns at once; :meth:`BatchRunner.collect` waits for it. On CPU :meth:`BatchRunner.launch` runs the forward
directly on the host buffer (no copy). Only class ids in the smallest dtype that holds them come back, plus
probabilities when a stitching strategy or the probability output needs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

HOST_BATCH_BUDGET = 4 * 2**30  # bytes of host batch buffers an automatic batch size may use


def class_ids(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the class axis (dim 1) of ``(batch, classes, rows, cols)`` logits -> ``(batch, rows, cols)``.

    On CPU ``max(1).indices`` (same result, first maximum, NaN counts as the maximum) is about 10x faster than
    ``argmax(1)`` on NCHW tensors.
    """
    return logits.argmax(1) if logits.is_cuda else logits.max(1).indices


def class_dtype(n_classes: int) -> tuple[torch.dtype, type[np.integer[Any]]]:
    """Smallest dtype for class ids on the device and on the host (argmax is transferred in it)."""
    return (torch.uint8, np.uint8) if n_classes <= 256 else (torch.int32, np.int32)


def auto_batch_size(
    net: nn.Module,
    channels: int,
    tile: tuple[int, int],
    device: torch.device,
    *,
    amp: bool,
    num_classes: int = 2,
    need_probs: bool = False,
    crf: dict[str, Any] | None = None,
    slots: int = 3,
) -> int:
    """Tiles per forward pass: from free GPU memory (half of it over :func:`device_bytes_per_tile`, at most 64); 4 on
    CPU.

    Either way capped so the pipeline's host batch buffers (3 x batch x tile, float32) stay within
    :data:`HOST_BATCH_BUDGET` bytes (hyperspectral tiles are big). Never below 1. The options are those of
    :func:`device_bytes_per_tile`.
    """
    if device.type != "cuda":
        return _cap_batch(4, channels, tile)
    per_tile = device_bytes_per_tile(
        net, channels, tile, device, amp=amp, num_classes=num_classes, need_probs=need_probs, crf=crf, slots=slots
    )
    free, _ = torch.cuda.mem_get_info(device)
    return _cap_batch(int(max(1, min(64, 0.5 * free // per_tile))), channels, tile)


def device_bytes_per_tile(
    net: nn.Module,
    channels: int,
    tile: tuple[int, int],
    device: torch.device,
    *,
    amp: bool,
    num_classes: int = 2,
    need_probs: bool = False,
    crf: dict[str, Any] | None = None,
    slots: int = 3,
) -> int:
    """GPU memory (bytes) one tile of a batch takes in the prediction pipeline on CUDA ``device``.

    Measured by running the pipeline's own device step (:class:`BatchRunner`) on one ``(channels, *tile)`` tile:
    forward (bf16 autocast when ``amp``), argmax, and the softmax and CRF when ``need_probs``/``crf`` ask for them
    (the CRF holds ``kernel² - 1`` pairwise weights and several probability maps per pixel, often more than a small
    model needs), plus the ``slots - 1`` other float32 input buffers the pipeline keeps on the device.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    probe = BatchRunner(
        net, device, slots=1, batch=1, channels=channels, tile=tile, n_classes=num_classes, amp=amp,
        need_probs=need_probs, crf=crf,
    )  # fmt: skip
    probe.host[0].zero_()
    probe.launch(0, 1, [0])
    probe.collect(0)
    measured = torch.cuda.max_memory_allocated(device) - base
    return max(measured, 1) + (slots - 1) * channels * tile[0] * tile[1] * 4


def _cap_batch(batch: int, channels: int, tile: tuple[int, int], budget: int = HOST_BATCH_BUDGET) -> int:
    """Limit an automatic batch size so 3 batch buffers (float32) fit ``budget`` bytes."""
    per_tile = 3 * channels * tile[0] * tile[1] * 4
    return max(1, min(batch, budget // per_tile))


class BatchRunner:
    """Batch slots (host buffers the readers fill in place) and the model run on them.

    A slot holds ``batch`` tiles of shape ``(channels, *tile)`` (float32). :meth:`launch` runs the model on some of a
    slot's tiles, :meth:`collect` returns their class ids ``(k, rows, cols)`` and probabilities
    ``(k, classes, rows, cols)`` (float32, only with ``need_probs``). ``crf`` (options of
    :func:`geoseg.inference.crf.crf_refine`) refines the probabilities of each batch before the argmax.
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device,
        *,
        slots: int,
        batch: int,
        channels: int,
        tile: tuple[int, int],
        n_classes: int,
        amp: bool,
        need_probs: bool,
        crf: dict[str, Any] | None = None,
    ) -> None:
        self.net, self.device, self.need_probs, self.crf = net, device, need_probs, crf
        self.slots = slots
        self.cuda = device.type == "cuda"
        self.amp = amp and self.cuda
        self.cls_torch, self.cls_np = class_dtype(n_classes)
        shape = (batch, channels, *tile)
        self.host = [torch.empty(shape, dtype=torch.float32, pin_memory=self.cuda) for _ in range(slots)]
        self.host_np = [h.numpy() for h in self.host]
        self.launched: list[tuple[int, int, list[int]] | None] = [None] * slots
        if self.cuda:
            self.dev_in = [torch.empty(shape, dtype=torch.float32, device=device) for _ in range(slots)]
            self.out_cls = [torch.empty((batch, *tile), dtype=self.cls_torch, pin_memory=True) for _ in range(slots)]
            self.out_probs = [
                torch.empty((batch, n_classes, *tile), dtype=torch.float32, pin_memory=True) if need_probs else None
                for _ in range(slots)
            ]
            self.copy_stream = torch.cuda.Stream(device)
            self.done = [torch.cuda.Event() for _ in range(slots)]
        self.cpu_results: list[tuple[np.ndarray, np.ndarray | None] | None] = [None] * slots

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(x).float()
            if self.crf is not None:
                from geoseg.inference.crf import crf_refine

                refined = crf_refine(torch.softmax(logits, 1), x.float(), **self.crf)
                return class_ids(refined).to(self.cls_torch), (refined if self.need_probs else None)
            classes = class_ids(logits).to(self.cls_torch)
            probs = torch.softmax(logits, 1) if self.need_probs else None
        return classes, probs

    def launch(self, slot: int, n: int, keep: list[int]) -> None:
        """Run the model on tiles ``keep`` (indexes < ``n``) of slot ``slot``; returns at once on CUDA."""
        self.launched[slot] = (n, len(keep), keep)
        if not keep:
            return
        sel = None if len(keep) == n else torch.tensor(keep)
        if not self.cuda:
            x = torch.from_numpy(self.host_np[slot][:n])
            classes, probs = self._run(x if sel is None else x[sel])
            self.cpu_results[slot] = (classes.numpy(), probs.numpy() if probs is not None else None)
            return
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(self.done[slot])  # the previous forward on this device buffer has finished
            self.dev_in[slot][:n].copy_(self.host[slot][:n], non_blocking=True)
        compute.wait_stream(self.copy_stream)
        x = self.dev_in[slot][:n]
        if sel is not None:
            x = x[sel.to(self.device, non_blocking=True)]
        classes, probs = self._run(x.contiguous(memory_format=torch.channels_last))
        k = len(keep)
        self.out_cls[slot][:k].copy_(classes, non_blocking=True)
        out_probs = self.out_probs[slot]
        if probs is not None and out_probs is not None:
            out_probs[:k].copy_(probs, non_blocking=True)
        self.done[slot].record(compute)

    def collect(self, slot: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Class ids (k, h, w) and probabilities (k, C, h, w) of the tiles launched on ``slot`` (views, reused);
        ``(None, None)`` when no tile of the slot was run."""
        launched = self.launched[slot]
        if launched is None or launched[1] == 0:
            return None, None
        k = launched[1]
        if not self.cuda:
            res = self.cpu_results[slot]
            self.cpu_results[slot] = None
            if res is None:
                raise RuntimeError(f"internal error: slot {slot} was collected twice")
            return res
        self.done[slot].synchronize()
        out_probs = self.out_probs[slot]
        return self.out_cls[slot][:k].numpy(), (out_probs[:k].numpy() if out_probs is not None else None)

    def synchronize(self) -> None:
        """Wait for every queued copy and forward (no copy may still read a buffer when it is freed)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


__all__ = ["HOST_BATCH_BUDGET", "BatchRunner", "auto_batch_size", "class_dtype", "class_ids", "device_bytes_per_tile"]
