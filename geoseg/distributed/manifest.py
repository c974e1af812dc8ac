"""Resume manifest: JSON lines in the output folder, appended (and fsynced) by the driver only.

Every file a batch run writes into its output folder is recorded here, so that a re-run knows what is its own:

* ``{"kind": "task", "key", "scene", "config", "output", "params", "state": "writing"}`` before a region task is
  submitted, and the same with ``"state": "done"`` and the output's ``sha256`` once it finished; a re-run skips a
  task whose output exists with the recorded checksum and parameters;
* ``{"kind": "file", "key": "file:<path>", "scene", "config", "output", "state": "writing"}`` before a finishing
  step (VRT, COG with its overviews, summary) publishes its file, and ``"state": "done"`` with its ``sha256`` after.
  A run killed between the two leaves a file recorded as "writing": the next run knows it is its own and redoes it.

``config`` identifies the scene's batch configuration (model, options, input); output paths are stored relative to
the manifest's folder. The last record per key wins. Appends always start on a fresh line, so a torn last line (a
crash while appending) loses only itself; it is ignored when read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from geoseg.io.write import atomic_path

MANIFEST_NAME = "geoseg-batch.jsonl"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class Manifest:
    """Append-only record of what a batch wrote into ``out_dir`` (last record per key wins)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(out_dir)
        self.path = self.folder / MANIFEST_NAME
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn line from a crash: that task or step simply runs again
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` as stored: relative to the manifest's folder when inside it, POSIX separators."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return str(p)

    def output_path(self, record: dict[str, Any]) -> Path | None:
        """The absolute path of a record's output (None when it has none)."""
        out = record.get("output")
        if not out:
            return None
        p = Path(out)
        return p if p.is_absolute() else self.folder / p

    def by_output(self) -> dict[Path, dict[str, Any]]:
        """The latest record of every recorded output, by resolved path."""
        owners: dict[Path, dict[str, Any]] = {}
        for rec in self.records.values():
            p = self.output_path(rec)
            if p is not None:
                owners[p.resolve()] = rec
        return owners

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records with one write and one fsync, starting on a fresh line even after a torn last line."""
        records = list(records)
        if not records:
            return
        data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        for r in records:
            self.records[r["key"]] = _canonical(r)

    def rewrite(self, keep: Iterable[dict[str, Any]]) -> None:
        """Replace the manifest by ``keep`` (atomically): used when ``overwrite`` drops an old configuration."""
        keep = list(keep)
        with atomic_path(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in keep), "utf-8")
        self.records = {r["key"]: _canonical(r) for r in keep}

    def finished(self, key: str, output: Path, params: dict[str, Any]) -> dict[str, Any] | None:
        """The record of ``key`` if it finished and its output still exists with the recorded checksum and params."""
        rec = self.records.get(key)
        if rec is None or rec.get("state", "done") != "done" or not output.is_file():
            return None
        if _canonical(params) != rec.get("params"):
            return None
        if sha256_file(output) != rec.get("sha256"):
            return None
        return rec

    def file_done(self, output: Path, config: str) -> dict[str, Any] | None:
        """The record of a finishing-step file if it was published for ``config`` and is unchanged on disk."""
        rec = self.records.get(f"file:{self.relative(output)}")
        if rec is None or rec.get("state") != "done" or rec.get("config") != config or not output.is_file():
            return None
        return rec if sha256_file(output) == rec.get("sha256") else None


__all__ = ["MANIFEST_NAME", "Manifest", "sha256_file"]
