"""ModelConfig: the contract a model carries with its weights (no torch needed to read it)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError, MissingDependencyError

FORMAT_VERSION = 1
CONFIG_KEY = "geoseg_config"  # safetensors metadata key (and torch-file dict key) holding the ModelConfig JSON
_MAX_HEADER = 100_000_000  # bytes; a larger safetensors header length means the file is something else

# A qualitative palette for classes without explicit colors (RGB).
DEFAULT_COLORS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
]


def default_colors(n: int) -> list[list[int]]:
    return [list(DEFAULT_COLORS[i % len(DEFAULT_COLORS)]) for i in range(n)]


@dataclass
class ModelConfig:
    """Everything needed to use a model correctly on a new raster.

    * ``bands``: input band names in model order (a raster's band descriptions, or "1", "2", ... when it had none).
    * ``normalization``: per-band ``(x - shift) / scale`` as a dict (see :class:`geoseg.io.Normalization`).
    * ``classes`` / ``colors``: class names and RGB colors, index = class id.
    * ``tile`` / ``overlap``: defaults for prediction; ``output_stride``: the alignment tiles need.

    Raises:
        InvalidParameterError: no band, fewer than 2 classes, or colors that do not match the classes.
        CheckpointError: (:meth:`from_json`) a contract that is not valid JSON or lacks fields.
    """

    arch: str
    bands: list[str]
    classes: list[str]
    colors: list[list[int]] = field(default_factory=list)
    normalization: dict[str, Any] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    tile: int = 512
    overlap: int = 64
    output_stride: int = 1
    scale_offset: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.bands:
            raise InvalidParameterError("a model needs at least one input band")
        if len(self.classes) < 2:
            raise InvalidParameterError(f"a model needs at least 2 classes, got {self.classes!r}")
        if not self.colors:
            self.colors = default_colors(len(self.classes))
        if len(self.colors) != len(self.classes):
            raise InvalidParameterError(
                f"{len(self.colors)} colors given for {len(self.classes)} classes; give one RGB color per class"
            )
        self.colors = [list(map(int, c))[:3] for c in self.colors]

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"model config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise CheckpointError("model config must be a JSON object")
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format {version} is newer than this geoseg understands ({FORMAT_VERSION}); upgrade geoseg"
            )
        missing = [k for k in ("arch", "bands", "classes") if k not in data]
        if missing:
            raise CheckpointError(f"model config lacks {', '.join(missing)}; is this a geoseg checkpoint?")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, InvalidParameterError) as exc:
            raise CheckpointError(f"invalid model config in checkpoint: {exc}") from exc


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``"safetensors"`` or ``"torch"`` (a ``torch.save`` zip/pickle), from the file's first bytes and suffix.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a directory, an empty file, or of another format (a raster, an image, ...).
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir() or p.stat().st_size == 0:
        raise CheckpointError(f"{p} is not a checkpoint file (empty or a directory)")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if p.suffix == ".safetensors" or (
        len(head) >= 8 and int.from_bytes(head[:8], "little") < _MAX_HEADER and head[:2] != b"PK"
    ):
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save: a zip archive, or a pickle (protocol 2+)
        return "torch"
    what = next((name for magic, name in _OTHER_FORMATS if head.startswith(magic)), "of no checkpoint format")
    raise CheckpointError(
        f"{p} is not a model checkpoint: it is {what}. Choose the .safetensors file that `geoseg train` (or the "
        f"QGIS 'Train model' algorithm) wrote, or a torch.save checkpoint (.pt) made by geoseg"
    )


#: first bytes of files users pick by mistake for a checkpoint, and what they are
_OTHER_FORMATS = (
    (b"II*\x00", "a TIFF/GeoTIFF raster"),
    (b"MM\x00*", "a TIFF/GeoTIFF raster"),
    (b"II+\x00", "a BigTIFF raster"),
    (b"MM\x00+", "a BigTIFF raster"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\x89HDF", "an HDF5 file"),
    (b"CDF", "a netCDF file"),
    (b"SQLite format 3", "an SQLite file (e.g. a GeoPackage)"),
    (b"PAR1", "a Parquet file"),
    (b"ENVI", "an ENVI header"),
)


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file, parsed from its JSON header (no torch, weights unread).

    Format: an 8-byte little-endian header length, then that many bytes of JSON
    (https://github.com/huggingface/safetensors, "Format").

    Raises:
        CheckpointError: the file is not a well-formed safetensors file (e.g. truncated).
    """
    p = Path(path)
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(fh.read(n))
        meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
        if not isinstance(meta, dict):
            raise ValueError("the header is not a JSON object with a __metadata__ object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p} is not a valid safetensors checkpoint ({exc}); was it truncated?") from exc
    return {str(k): str(v) for k, v in meta.items()}


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    """Read only the ModelConfig of a checkpoint (its header, not the weights).

    ``.safetensors`` checkpoints are read without torch; ``torch.save`` files need torch (loaded with
    ``weights_only=True``).

    Raises:
        InputNotFoundError: ``path`` does not exist.
        CheckpointError: not a checkpoint, not written by geoseg, or a malformed model config.
        MissingDependencyError: a ``torch.save`` checkpoint and torch is not installed.
    """
    p = Path(path)
    if checkpoint_kind(p) == "torch":
        try:
            from geoseg.models.checkpoint import read_torch_checkpoint
        except ImportError as exc:
            raise MissingDependencyError(
                f"{p} is a torch.save checkpoint, which needs torch to read; install torch, or use the "
                f".safetensors checkpoint that geoseg writes"
            ) from exc
        return read_torch_checkpoint(p)[1]
    meta = safetensors_metadata(p)
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{p} has weights but no geoseg model config; it was not written by geoseg (save with save_checkpoint)"
        )
    return ModelConfig.from_json(meta[CONFIG_KEY])
