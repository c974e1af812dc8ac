"""The writer of the prediction pipeline: a thread that writes finished pieces of the class map (and probabilities)
into block-assembling GeoTIFF writers (:class:`geoseg.io.write.BlockWriter`), so the main thread never waits on
compression, and counts the pixels of each class on the way."""

from __future__ import annotations

import queue
import threading

import numpy as np

from geoseg.inference.stitch import Piece
from geoseg.io.write import BlockWriter

PROB_DTYPES = ("uint8", "float32")  # how probabilities are stored: uint8 p*254 (255 = nodata), or float32 (NaN)
PROB_SCALE = 254.0  # uint8 probabilities: value / 254 (255 = nodata)


class PieceWriter:
    """Writer thread: :class:`Piece` s of the class map (+ probabilities) into ``class_writer`` (+ ``prob_writer``).

    Invalid pixels become ``nodata`` in the class raster and 255 (uint8) or NaN (float32) in the probability raster;
    uint8 probabilities are ``p * 254`` rounded. At most ``queued`` pieces wait; :meth:`put` re-raises an error of
    the thread. :meth:`finish` writes what is queued and closes both rasters; :meth:`abort` stops without publishing.
    """

    def __init__(
        self, class_writer: BlockWriter, prob_writer: BlockWriter | None, *, nodata: int, prob_dtype: str, queued: int
    ) -> None:
        self.cw, self.pw = class_writer, prob_writer
        self.nodata, self.prob_dtype = nodata, prob_dtype
        self.q: queue.Queue[Piece | None] = queue.Queue(maxsize=queued)
        self.error: BaseException | None = None
        self.hist = np.zeros(nodata + 1, np.int64)
        self.thread = threading.Thread(target=self._run, name="geoseg-write", daemon=True)
        self.thread.start()

    @property
    def counts(self) -> np.ndarray:
        """Pixels per class id over valid pixels, up to the largest id seen (at least one entry)."""
        h = self.hist[: self.nodata]
        nz = np.flatnonzero(h)
        return h[: max(1, int(nz[-1]) + 1 if len(nz) else 1)].copy()

    def put(self, piece: Piece) -> None:
        """Queue ``piece`` (waits while the queue is full; raises the writer thread's error, if any)."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(piece, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while (piece := self.q.get()) is not None:
                self._write(piece)
        except BaseException as exc:  # surfaced to the main thread
            self.error = exc
            while self.q.get() is not None:  # drain so the producer never blocks
                pass

    def _write(self, piece: Piece) -> None:
        dtype = self.cw.profile["dtype"]
        classes = piece.classes.astype(dtype, copy=False)  # the piece owns it (see Piece)
        invalid = ~piece.valid
        classes[invalid] = self.nodata
        flat = classes.ravel()
        for i in range(0, flat.size, 1 << 20):  # bincount makes an int64 copy: keep it small
            self.hist += np.bincount(flat[i : i + (1 << 20)], minlength=self.nodata + 1)[: self.nodata + 1]
        self.cw.write(piece.row, piece.col, classes[None])
        if self.pw is not None and piece.probs is not None:
            if self.prob_dtype == "uint8":
                p = np.rint(piece.probs * PROB_SCALE).astype(np.uint8)
                p[:, invalid] = 255
            else:
                p = piece.probs.astype(np.float32)
                p[:, invalid] = np.nan
            self.pw.write(piece.row, piece.col, p)

    def finish(self) -> np.ndarray:
        """Write every queued piece, close both rasters (raising if a pixel was never written) and return
        :attr:`counts`."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        self.cw.close()
        if self.pw is not None:
            self.pw.close()
        return self.counts

    def abort(self) -> None:
        """Stop the thread after a failure elsewhere and close both rasters without checking them."""
        self.error = self.error or RuntimeError("aborted")
        if self.thread.is_alive():
            self.q.put(None)
        self.thread.join(timeout=10)
        self.cw.abort()
        if self.pw is not None:
            self.pw.abort()


__all__ = ["PROB_DTYPES", "PROB_SCALE", "PieceWriter"]
