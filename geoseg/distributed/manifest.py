"""Resume manifest: JSON lines in the output folder, appended (and fsynced) by the driver only.

Each finished task adds ``{"kind": "task", "key", "output", "sha256", "params", ...}``; a re-run skips a task whose
output exists with the recorded checksum. A torn last line (crash while appending) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST_NAME = "geoseg-batch.jsonl"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """Append-only record of finished tasks (last record per key wins)."""

    def __init__(self, out_dir: Path, *, fresh: bool = False) -> None:
        self.path = out_dir / MANIFEST_NAME
        self.records: dict[str, dict[str, Any]] = {}
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn line from a crash: that task simply runs again
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[record["key"]] = record

    def finished(self, key: str, output: Path, params: dict[str, Any]) -> dict[str, Any] | None:
        """The record of ``key`` if its output still exists with the recorded checksum and parameters."""
        rec = self.records.get(key)
        if rec is None or not output.is_file():
            return None
        if json.loads(json.dumps(params, sort_keys=True, default=str)) != rec.get("params"):
            return None
        if sha256_file(output) != rec.get("sha256"):
            return None
        return rec


__all__ = ["MANIFEST_NAME", "Manifest", "sha256_file"]
