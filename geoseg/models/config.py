"""ModelConfig: the contract a model carries with its weights (no torch needed to read it)."""

from __future__ import annotations

import json
import math
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
    * ``trained_classes``: names of the classes that had training pixels and a class weight > 0 (None: not recorded,
      i.e. all). Prediction never outputs the others: a class the model never learnt cannot be told apart.

    Every field is validated (:data:`CONTRACT_SCHEMA`): types, ranges and agreement between fields (one color and
    one name per class, one normalization value per band, names that do not repeat).

    Raises:
        InvalidParameterError: a field of the wrong type or out of range, naming the field (no band, fewer than 2
            classes, colors that do not match the classes, a negative overlap, ...).
        CheckpointError: (:meth:`from_json`, :meth:`from_dict`) a contract that is not valid JSON, lacks fields, or
            has an invalid field (the same message as above, for a file).
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
    trained_classes: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_fields(self)
        if not self.colors:
            self.colors = default_colors(len(self.classes))
        self.colors = [[int(v) for v in c][:3] for c in self.colors]

    @property
    def untrained_class_ids(self) -> list[int]:
        """Ids of the classes without training pixels (never predicted)."""
        if self.trained_classes is None:
            return []
        seen = set(self.trained_classes)
        return [i for i, c in enumerate(self.classes) if c not in seen]

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
        """A contract from its JSON object, validated field by field (unknown keys of newer versions are ignored).

        Raises:
            CheckpointError: not an object, a missing field, a field of the wrong type or range, or a format newer
                than this geoseg.
        """
        if not isinstance(data, dict):
            raise CheckpointError("model config must be a JSON object")
        version = data.get("format_version", FORMAT_VERSION)
        if not _is_int(version) or version < 1:
            raise CheckpointError(
                f"invalid model contract in checkpoint: field 'format_version': expected a positive integer, got "
                f"{version!r}"
            )
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
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid model contract in checkpoint: {exc}") from exc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _names(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) and n.strip() for n in v)


def _color(c: Any) -> bool:
    return isinstance(c, list | tuple) and len(c) in (3, 4) and all(_is_int(x) and 0 <= x <= 255 for x in c)


#: the model contract's fields: (check, what a valid value is)
CONTRACT_SCHEMA: dict[str, tuple[Any, str]] = {
    "arch": (lambda v: isinstance(v, str) and bool(v.strip()), "an architecture name (see `geoseg models`)"),
    "bands": (lambda v: _names(v) and len(v) >= 1, "a list of band names (strings), at least one band"),
    "classes": (lambda v: _names(v) and len(v) >= 2, "a list of class names (strings), at least 2 classes"),
    "colors": (lambda v: isinstance(v, list) and all(_color(c) for c in v), "a list of [r, g, b] integers 0..255"),
    "normalization": (lambda v: isinstance(v, dict), "an object {method, shift, scale}"),
    "arch_kwargs": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "an object of options"),
    "tile": (lambda v: _is_int(v) and v >= 1, "a positive integer (pixels)"),
    "overlap": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (pixels)"),
    "output_stride": (lambda v: _is_int(v) and v >= 1, "a positive integer (pixels)"),
    "scale_offset": (lambda v: isinstance(v, bool), "true or false"),
    "trained_classes": (
        lambda v: v is None or (_names(v) and len(v) >= 1),
        "null or a non-empty list of class names (the classes that had training pixels)",
    ),
    "extra": (lambda v: isinstance(v, dict), "an object"),
    "format_version": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
}


def _field_error(name: str, value: Any, expected: str) -> InvalidParameterError:
    shown = repr(value)
    return InvalidParameterError(
        f"model contract field {name!r}: expected {expected}, got {shown[:120]}{'...' if len(shown) > 120 else ''}"
    )


def _check_fields(cfg: ModelConfig) -> None:
    """Validate every field of ``cfg`` against :data:`CONTRACT_SCHEMA` and against each other.

    Raises:
        InvalidParameterError: naming the first invalid field.
    """
    for name, (ok, expected) in CONTRACT_SCHEMA.items():
        value = getattr(cfg, name)
        if not ok(value):
            raise _field_error(name, value, expected)
    for name in ("bands", "classes"):
        names = getattr(cfg, name)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidParameterError(
                f"model contract field {name!r}: names {dupes} repeat; each of the {len(names)} {name} needs its own "
                f"name (a model picks bands and labels classes by name)"
            )
    if cfg.colors and len(cfg.colors) != len(cfg.classes):
        raise InvalidParameterError(
            f"model contract field 'colors': {len(cfg.colors)} colors given for {len(cfg.classes)} classes; give one "
            f"RGB color per class"
        )
    if cfg.trained_classes is not None:
        unknown = [c for c in cfg.trained_classes if c not in cfg.classes]
        if unknown:
            raise InvalidParameterError(
                f"model contract field 'trained_classes': {unknown} are not among the classes {cfg.classes}"
            )
    norm = cfg.normalization
    if norm:
        from geoseg.io.normalize import NORMALIZATION_METHODS

        if norm.get("method", "none") not in NORMALIZATION_METHODS:
            raise _field_error("normalization", norm, f"a method among {', '.join(NORMALIZATION_METHODS)}")
        for key in ("shift", "scale"):
            values = norm.get(key, [])
            if not isinstance(values, list) or not all(_is_number(v) for v in values):
                raise _field_error("normalization", norm, f"{key!r} as a list of finite numbers")
            if values and len(values) != len(cfg.bands):
                raise InvalidParameterError(
                    f"model contract field 'normalization': {len(values)} {key} value(s) for {len(cfg.bands)} band(s); "
                    f"give one per band"
                )


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
