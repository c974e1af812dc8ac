"""ModelConfig: the contract a model carries with its weights (no torch needed to read it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from geoseg.errors import CheckpointError, InvalidParameterError

FORMAT_VERSION = 1

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
    * ``trained_classes``: names of the classes that had training pixels (None: not recorded, i.e. all). Prediction
      never outputs the others: a class the model never saw cannot be told apart.
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
        if self.trained_classes is not None:
            unknown = [c for c in self.trained_classes if c not in self.classes]
            if unknown or not self.trained_classes:
                raise InvalidParameterError(
                    f"trained_classes {self.trained_classes} must be a non-empty subset of the classes {self.classes}"
                )

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
