"""Pretrained encoder weights from public checkpoints, with the first convolution adapted to N input bands.

:func:`load_encoder_weights` reads a state dict (safetensors, or a ``torch.save`` file loaded with
``weights_only=True``), detects its key layout, translates the keys through that layout's mapping table and loads
them into the model's encoder, strictly (every encoder tensor must come from the file). Layouts (:data:`LAYOUTS`):

* ``geoseg``: geoseg's own encoder keys (``stem.0``, ``layers.N``, ``down``);
* ``resnet``: torchvision and timm ResNets (``conv1``, ``bn1``, ``layer1..4``, ``downsample``; ``fc`` dropped), the
  layout of TorchGeo's pretrained ResNet weights (e.g. SSL4EO-S12 Sentinel-2, Landsat) too;
* ``torchvision-mobilenetv2``: ``features.N`` (``features.18`` and ``classifier`` dropped);
* ``timm-mobilenetv2``: ``conv_stem``, ``blocks.N.M`` (``conv_head``, ``bn2``, ``classifier`` dropped);
* ``timm``: any timm model, for the smp architectures whose encoders are timm models (keys used as they are).

Keys may carry a prefix (``model.``, ``backbone.``, ``encoder.``, ``module.``, or any other that makes a layout's
identifying keys appear); it is found and stripped, and keys outside it (a decoder, a projection head) are ignored.

The first convolution is adapted only when the file's band count differs from the model's, by a named strategy
(recorded in ``ModelConfig.extra["encoder_weights"]``):

* ``"repeat"``: cycle the source filters over the N bands and scale by ``source / N``, so a grey input gives the same
  response as before (timm's ``adapt_input_conv`` does the same);
* ``"mean"``: every band gets the mean of the source filters, scaled by ``source / N`` for the same reason;
* ``"random"``: the first (up to) ``source`` bands keep their filters, extra bands get Kaiming-normal weights.

With ``weights_bands`` (the names of the bands the weights were trained on, in order) and ``model_bands`` (the
model's bands, from its contract), filters are matched by band name instead of position (``B01`` = ``b1``); bands
the weights lack get the strategy's filter for an extra band.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import CheckpointError, InputNotFoundError, InvalidParameterError, MissingDependencyError
from geoseg.hints import option
from geoseg.models.names import ADAPT_STRATEGIES
from geoseg.models.safe_load import torch_load

NAMED_SOURCES = ("torchvision", "timm")

_Rule = tuple[str, str | Callable[[re.Match[str]], str]]


def adapt_first_conv(weight: torch.Tensor, in_channels: int, strategy: str = "repeat") -> torch.Tensor:
    """Turn a ``(out, src_bands, kh, kw)`` conv weight into ``(out, in_channels, kh, kw)`` by ``strategy``."""
    _check_strategy(strategy)
    if weight.ndim != 4:
        raise InvalidParameterError(f"expected a 4-d conv weight (out, in, kh, kw), got shape {tuple(weight.shape)}")
    if in_channels < 1:
        raise InvalidParameterError(f"in_channels must be >= 1, got {in_channels}")
    src = weight.shape[1]
    w = weight.detach().float()
    if strategy == "repeat":
        idx = torch.arange(in_channels) % src
        out = w[:, idx] * (src / in_channels)
    elif strategy == "mean":
        out = w.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1) * (src / in_channels)
    else:
        out = _kaiming_like(w, in_channels)
        keep = min(src, in_channels)
        out[:, :keep] = w[:, :keep]
    return out.to(weight.dtype).contiguous()


def _kaiming_like(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    # Kaiming-normal (ReLU gain) with the original layer's fan-in, so new and pretrained filters have similar scales
    std = math.sqrt(2.0 / (w.shape[1] * w.shape[2] * w.shape[3]))
    return torch.empty(w.shape[0], in_channels, *w.shape[2:]).normal_(0.0, std)


def _check_strategy(strategy: str) -> None:
    if strategy not in ADAPT_STRATEGIES:
        raise InvalidParameterError(
            f"unknown first-layer adaptation strategy {strategy!r}; choose one of {', '.join(ADAPT_STRATEGIES)}"
        )


def band_key(name: str) -> str:
    """Normalised band name for matching: case and punctuation ignored, leading zeros dropped (``B01`` = ``b1``)."""
    key = re.sub(r"[^0-9a-z]", "", str(name).lower())
    return re.sub(r"(?<!\d)0+(?=\d)", "", key)


def adapt_first_conv_by_name(
    weight: torch.Tensor, weights_bands: Sequence[str], model_bands: Sequence[str], strategy: str = "repeat"
) -> tuple[torch.Tensor, dict[str, str | None]]:
    """Reorder/select the input filters of a ``(out, len(weights_bands), kh, kw)`` weight to ``model_bands`` by name.

    Returns the ``(out, len(model_bands), kh, kw)`` weight and the mapping ``{model band: weights band or None}``.
    Model bands without a namesake in ``weights_bands`` get the mean source filter (``repeat``/``mean``) or
    Kaiming-normal weights (``random``). Raises :class:`InvalidParameterError` when ``weights_bands`` does not match
    the weight's band count, repeats a name, or shares no band with ``model_bands``.
    """
    _check_strategy(strategy)
    if len(weights_bands) != weight.shape[1]:
        raise InvalidParameterError(
            f"{len(weights_bands)} band name(s) given for encoder weights whose first convolution takes "
            f"{weight.shape[1]} band(s); list exactly the weights' bands in their order"
        )
    keys = [band_key(b) for b in weights_bands]
    dupes = sorted({b for b, k in zip(weights_bands, keys) if keys.count(k) > 1})
    if dupes:
        raise InvalidParameterError(f"encoder band names repeat {dupes}; each band of the weights needs its own name")
    index = {k: i for i, k in enumerate(keys)}
    w = weight.detach().float()
    mapping = {b: (weights_bands[index[band_key(b)]] if band_key(b) in index else None) for b in model_bands}
    if not any(v is not None for v in mapping.values()):
        raise InvalidParameterError(
            f"no model band ({', '.join(model_bands)}) is among the weights' bands ({', '.join(weights_bands)}); "
            f"select the raster's bands by name (--bands) or drop the band names to adapt by position"
        )
    fill = (
        _kaiming_like(w, len(model_bands))
        if strategy == "random"
        else w.mean(1, keepdim=True).expand(-1, len(model_bands), -1, -1).clone()
    )
    for j, band in enumerate(model_bands):
        src = mapping[band]
        if src is not None:
            fill[:, j] = w[:, index[band_key(src)]]
    return fill.to(weight.dtype).contiguous(), mapping


# ---------------------------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class KeyLayout:
    """One public state-dict layout: how to recognise it and its key-mapping table onto geoseg's encoders.

    ``signature``: keys (after the prefix) whose presence identifies the layout. ``rules``: ``(regex, target)``
    pairs tried in order on each key (full match); ``target`` is a ``re.Match.expand`` template or a function of the
    match. ``head``: regex of classifier/head keys that are not part of an encoder and are dropped.
    """

    name: str
    title: str
    signature: tuple[str, ...]
    rules: tuple[_Rule, ...]
    head: str = r"(?!)"

    def translate(self, key: str) -> str | None:
        """The geoseg encoder key for ``key``; ``""`` for a dropped head key; None when no rule applies."""
        if re.fullmatch(self.head, key):
            return ""
        for pattern, target in self.rules:
            m = re.fullmatch(pattern, key)
            if m:
                try:
                    return target(m) if callable(target) else m.expand(target)
                except LookupError:
                    return None
        return None


def _mbv2_block(flat: int) -> str:
    """geoseg key of MobileNetV2's ``flat``-th inverted residual after the stem (0-based)."""
    from geoseg.models.backbones import _MBV2_STAGES

    if flat < 0:
        raise LookupError(flat)
    for stage, groups in enumerate(_MBV2_STAGES):
        n = sum(g[2] for g in groups)
        if flat < n:
            return f"layers.{stage}.{flat}"
        flat -= n
    raise LookupError(flat)


# geoseg InvertedResidual `conv` indexes: expand conv/bn 0/1, depthwise conv/bn 3/4, projection conv/bn 6/7
_TV_MBV2_PARTS = {"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7}
_TIMM_MBV2_PARTS = {"conv_pw": 0, "bn1": 1, "conv_dw": 3, "bn2": 4, "conv_pwl": 6, "bn3": 7}
_TIMM_MBV2_BLOCKS = (2, 3, 4, 3, 3, 1)  # inverted residuals in timm's blocks.1 .. blocks.6


def _timm_mbv2(m: re.Match[str]) -> str:
    stage = int(m[1])
    if not 1 <= stage <= len(_TIMM_MBV2_BLOCKS) or int(m[2]) >= _TIMM_MBV2_BLOCKS[stage - 1]:
        raise LookupError(m[0])
    flat = sum(_TIMM_MBV2_BLOCKS[: stage - 1]) + int(m[2])
    return f"{_mbv2_block(flat)}.conv.{_TIMM_MBV2_PARTS[m[3]]}.{m[4]}"


LAYOUTS: dict[str, KeyLayout] = {
    layout.name: layout
    for layout in (
        KeyLayout(
            "geoseg",
            "geoseg encoder (stem.0, layers.N, down)",
            ("stem.0.weight", "stem.1.running_mean"),
            ((r"(stem\..+|layers\..+)", r"\1"),),
        ),
        KeyLayout(
            "resnet",
            "torchvision/timm ResNet (conv1, bn1, layer1..4, downsample; fc dropped)",
            ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight"),
            (
                (r"conv1\.(.+)", r"stem.0.\1"),
                (r"bn1\.(.+)", r"stem.1.\1"),
                (
                    r"layer([1-4])\.(\d+)\.downsample\.([01])\.(.+)",
                    lambda m: f"layers.{int(m[1]) - 1}.{m[2]}.down.{m[3]}.{m[4]}",
                ),
                (r"layer([1-4])\.(\d+)\.((?:conv|bn)[1-3]\..+)", lambda m: f"layers.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
            ),
            head=r"fc\..+",
        ),
        KeyLayout(
            "torchvision-mobilenetv2",
            "torchvision MobileNetV2 (features.N; features.18 and classifier dropped)",
            ("features.0.0.weight", "features.1.conv.0.0.weight"),
            (
                (r"features\.0\.0\.(.+)", r"stem.0.\1"),
                (r"features\.0\.1\.(.+)", r"stem.1.\1"),
                (r"features\.1\.conv\.0\.0\.(.+)", r"stem.3.conv.0.\1"),
                (r"features\.1\.conv\.0\.1\.(.+)", r"stem.3.conv.1.\1"),
                (r"features\.1\.conv\.1\.(.+)", r"stem.3.conv.3.\1"),
                (r"features\.1\.conv\.2\.(.+)", r"stem.3.conv.4.\1"),
                (
                    r"features\.(\d+)\.conv\.(0\.0|0\.1|1\.0|1\.1|2|3)\.(.+)",
                    lambda m: f"{_mbv2_block(int(m[1]) - 2)}.conv.{_TV_MBV2_PARTS[m[2]]}.{m[3]}",
                ),
            ),
            head=r"features\.18\..+|classifier\..+",
        ),
        KeyLayout(
            "timm-mobilenetv2",
            "timm MobileNetV2 (conv_stem, bn1, blocks.N.M; conv_head, bn2 and classifier dropped)",
            ("conv_stem.weight", "blocks.0.0.conv_dw.weight"),
            (
                (r"conv_stem\.(.+)", r"stem.0.\1"),
                (r"bn1\.(.+)", r"stem.1.\1"),
                (r"blocks\.0\.0\.conv_dw\.(.+)", r"stem.3.conv.0.\1"),
                (r"blocks\.0\.0\.bn1\.(.+)", r"stem.3.conv.1.\1"),
                (r"blocks\.0\.0\.conv_pw\.(.+)", r"stem.3.conv.3.\1"),
                (r"blocks\.0\.0\.bn2\.(.+)", r"stem.3.conv.4.\1"),
                (r"blocks\.(\d+)\.(\d+)\.(conv_pw|bn1|conv_dw|bn2|conv_pwl|bn3)\.(.+)", _timm_mbv2),
            ),
            head=r"conv_head\..+|bn2\..+|classifier\..+",
        ),
    )
}
TIMM_LAYOUT_TITLE = "timm model of the encoder's name (its own keys; classifier/head keys dropped)"
_TIMM_HEAD = r"(fc|classifier|head|conv_head|bn2|head_drop|pre_logits|global_pool|norm_pre|fc_norm)(\..+)?"
_PREFIXES = ("", "model.", "backbone.", "encoder.", "module.")


# ----------------------------------------------------------------------------------------------------- reading files
def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise InputNotFoundError(f"encoder weights not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the weights file inside it (.safetensors, .pth, .pt)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    is_zip = head[:2] == b"PK"
    if path.suffix == ".safetensors" or (not is_zip and len(head) == 8 and int.from_bytes(head, "little") < 10**8):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    obj: Any = torch_load(path, what="encoder weights")
    # training checkpoints wrap the weights: Lightning/TorchGeo "state_dict", timm "state_dict"/"model", others
    for wrapper in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def is_named_source(source: str | os.PathLike[str]) -> bool:
    """True for ``torchvision:NAME`` / ``timm:NAME`` (and not an existing file of that name)."""
    s = str(source)
    return s.split(":", 1)[0] in NAMED_SOURCES and ":" in s and not Path(s).exists()


def fetch_named_weights(source: str) -> Path:
    """Download (or find in the library's cache) the weights named ``torchvision:NAME[.WEIGHTS]`` or ``timm:NAME``.

    ``torchvision:resnet50`` takes the model's DEFAULT weights (``torchvision:resnet50.IMAGENET1K_V1`` a named set)
    through the torch hub cache (``$TORCH_HOME``); ``timm:resnet50.a1_in1k`` takes the model's safetensors file from
    the Hugging Face hub cache (``$HF_HOME``; ``HF_HUB_OFFLINE=1`` uses the cache only). Returns the local file.
    Raises :class:`MissingDependencyError` without the library, :class:`InvalidParameterError` for an unknown name,
    and :class:`InputNotFoundError` when the hub cannot be reached and the file is not cached.
    """
    lib, _, name = source.partition(":")
    if lib not in NAMED_SOURCES or not name:
        raise InvalidParameterError(f"{source!r} is not a named weights source; use torchvision:NAME or timm:NAME")
    offline_hint = (
        "download it on a connected machine and pass the local file instead (--encoder-weights path/to/weights)"
    )
    if lib == "torchvision":
        try:
            from torchvision.models import get_model_weights
        except ImportError as exc:
            raise MissingDependencyError(
                f"{source} needs torchvision (pip install torchvision matching your torch), or pass a local file"
            ) from exc
        model_name, _, tag = name.partition(".")
        try:
            enum = get_model_weights(model_name)
            weights = enum[tag] if tag else enum.DEFAULT
        except (ValueError, KeyError) as exc:
            raise InvalidParameterError(
                f"torchvision has no weights {name!r} ({exc}); e.g. torchvision:resnet50"
            ) from exc
        dst = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(weights.url, str(dst), progress=False)
            except OSError as exc:  # URLError, socket errors
                reason = getattr(exc, "reason", exc)
                raise InputNotFoundError(f"cannot fetch {source} ({reason}): offline? {offline_hint}") from None
        return dst
    try:
        import timm
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise MissingDependencyError(f"{source} needs timm (pip install 'geoseg[smp]'), or pass a local file") from exc
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise InvalidParameterError(f"timm has no pretrained weights named {name!r}; e.g. timm:resnet50.a1_in1k")
    try:
        if cfg.hf_hub_id:
            return Path(hf_hub_download(cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors"))
        dst = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(cfg.url, str(dst), progress=False)
        return dst
    except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError is a FileNotFoundError; URLError an OSError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputNotFoundError(f"cannot fetch {source} ({first[:160]}): offline? {offline_hint}") from None


# ---------------------------------------------------------------------------------------------------------- targets
@dataclass
class _Target:
    module: nn.Module
    kind: str  # "geoseg" (native encoder) or "timm" (an smp model's timm encoder)
    description: str
    encoder_name: str | None


def _target_of(model: nn.Module) -> _Target:
    from geoseg.models.backbones import _Encoder

    inner = getattr(model, "inner", model)  # SpectralStemModel
    timm_encoder = getattr(inner, "timm_encoder", None)
    if isinstance(timm_encoder, nn.Module):
        name = getattr(inner, "encoder_name", None)
        return _Target(timm_encoder, "timm", f"timm {name}", name)
    encoder = getattr(inner, "encoder", None)
    if isinstance(encoder, _Encoder):
        return _Target(encoder, "geoseg", f"geoseg {encoder.name}", encoder.name)
    raise InvalidParameterError(
        f"{type(inner).__name__} has no encoder to load pretrained weights into; use an encoder-based architecture "
        f"(fcn*, deeplab*, pspnet, icnet, or an smp-* model)"
    )


def _find_prefix(keys: set[str], signature: Sequence[str]) -> str | None:
    """A prefix P such that P + every signature key is in ``keys`` (the usual ones first), else None."""
    candidates = list(_PREFIXES)
    candidates += sorted({k[: -len(signature[0])] for k in keys if k.endswith("." + signature[0])}, key=len)
    for p in candidates:
        if all(p + s in keys for s in signature):
            return p
    return None


def _resnet_variant(keys: set[str]) -> str | None:
    from geoseg.models.backbones import BOTTLENECK_DEPTHS, RESNET_DEPTHS

    blocks = tuple(len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in keys
    for name, depth in RESNET_DEPTHS.items():
        if tuple(depth) == blocks and (name in BOTTLENECK_DEPTHS) == bottleneck:
            return name
    return None


def _unflatten(key: str) -> str:
    """timm's feature wrappers flatten ``stages.0`` into ``stages_0``; the model's own key has the dot."""
    first, dot, rest = key.partition(".")
    return re.sub(r"_(\d+)$", r".\1", first) + dot + rest


def _translate(state: dict[str, torch.Tensor], target: _Target, path_label: str) -> tuple[dict, dict[str, Any]]:
    """Map ``state`` onto ``target``'s keys. Returns (translated state, record of layout/prefix/dropped keys)."""
    keys = set(state)
    own = target.module.state_dict()
    if target.kind == "timm":
        first_own = next(iter(own))
        wanted = {k: _unflatten(k) for k in own}
        for sig in dict.fromkeys([wanted[first_own], first_own]):
            prefix = _find_prefix(keys, [sig])
            if prefix is not None:
                break
        if prefix is None:
            raise CheckpointError(
                f"{path_label}: the keys fit no layout this model accepts; expected {TIMM_LAYOUT_TITLE} for "
                f"{target.description} (e.g. {first_own!r}), found e.g. {sorted(keys)[:4]}"
            )
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        out, unknown, dropped = {}, [], []
        by_source = {src: dst for dst, src in wanted.items()}
        by_source.update({dst: dst for dst in own})
        for k, v in sub.items():
            if k in by_source:
                out[by_source[k]] = v
            elif re.fullmatch(_TIMM_HEAD, k):
                dropped.append(k)
            else:
                unknown.append(k)
        record = {"layout": "timm", "layout_title": TIMM_LAYOUT_TITLE, "prefix": prefix, "encoder": target.encoder_name}
        return _finish(out, unknown, dropped, len(state) - len(sub), record, own, target, path_label)
    for layout in LAYOUTS.values():
        prefix = _find_prefix(keys, layout.signature)
        if prefix is not None:
            break
    else:
        expected = "; ".join(f"{lo.name}: {lo.title}" for lo in LAYOUTS.values())
        hint = ""
        if any(k.endswith("conv1.0.weight") for k in keys):
            hint = (
                " (a deep-stem ResNet such as timm's resnet50d: geoseg's native encoders have the plain 7x7 stem; "
                "use an smp-* architecture with encoder='resnet50d')"
            )
        raise CheckpointError(
            f"{path_label}: the keys fit no known encoder layout{hint}; expected one of {expected}; "
            f"found e.g. {sorted(keys)[:4]}"
        )
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    variant = None
    if layout.name == "resnet":
        variant = _resnet_variant(set(sub))
    elif layout.name.endswith("mobilenetv2"):
        variant = "mobilenetv2"
    if variant is not None and target.encoder_name is not None and variant != target.encoder_name:
        raise CheckpointError(
            f"{path_label} holds a {variant} ({layout.title}); this model's encoder is {target.encoder_name}: "
            f"build the model with {option('encoder', variant)}"
        )
    out, unknown, dropped = {}, [], []
    for k, v in sub.items():
        t = layout.translate(k)
        if t is None:
            unknown.append(k)
        elif t == "":
            dropped.append(k)
        else:
            out[t] = v
    record = {"layout": layout.name, "layout_title": layout.title, "prefix": prefix, "encoder": variant}
    return _finish(out, unknown, dropped, len(state) - len(sub), record, own, target, path_label)


def _finish(
    out: dict[str, torch.Tensor],
    unknown: list[str],
    dropped: list[str],
    outside: int,
    record: dict[str, Any],
    own: dict[str, torch.Tensor],
    target: _Target,
    path_label: str,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    # BatchNorm counters are absent from older checkpoints (e.g. torchvision's first ImageNet ResNets): start at 0
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = torch.zeros_like(v)
    missing = sorted(set(own) - set(out))
    unexpected = sorted(set(unknown) | (set(out) - set(own)))
    if missing or unexpected:
        raise CheckpointError(
            f"{path_label}: {record['layout']} weights (prefix {record['prefix']!r}) do not match this model's "
            f"encoder ({target.description}): missing {len(missing)} key(s) e.g. {missing[:3]}, unexpected "
            f"{len(unexpected)} e.g. {unexpected[:3]}; the file was made for another encoder or depth"
        )
    record.update(dropped_keys=len(dropped), ignored_keys=outside)
    return out, record


def load_encoder_weights(
    model: nn.Module,
    source: str | os.PathLike[str],
    *,
    strategy: str = "repeat",
    weights_bands: Sequence[str] | None = None,
    model_bands: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load pretrained encoder weights into ``model``'s encoder, adapting the first convolution to its bands.

    ``source`` is a local file (safetensors, or ``torch.save`` read with ``weights_only=True``) in one of the
    :data:`LAYOUTS` (detected from the keys, prefix stripped), or a named source ``torchvision:NAME`` /
    ``timm:NAME`` fetched by that library (:func:`fetch_named_weights`; needs a connection or the library's cache).
    Native encoders (fcn*, deeplab*, pspnet, icnet) accept the geoseg, ResNet and MobileNetV2 layouts; smp-*
    models accept their timm encoder's own keys (torchvision ResNets too: same names).

    The first convolution is adapted by ``strategy`` only when its band count differs from the model's; with
    ``weights_bands`` and ``model_bands`` its filters are matched by band name (:func:`adapt_first_conv_by_name`).
    Returns the record stored in ``ModelConfig.extra["encoder_weights"]``: ``file``, ``sha256``, ``source``,
    ``layout``, ``prefix``, ``encoder``, ``first_conv``, ``adapt`` ("none", a strategy, or "by-name:STRATEGY"),
    ``source_bands``, ``bands``, ``dropped_keys`` (head), ``ignored_keys`` (outside the prefix), ``band_map``.

    Raises :class:`InputNotFoundError` (no file / unreachable hub), :class:`CheckpointError` (unsafe or unreadable
    file, no layout fits, wrong encoder or depth, shapes differ), :class:`InvalidParameterError` (bad strategy,
    model without encoder, band names that do not fit).
    """
    _check_strategy(strategy)
    named = str(source) if is_named_source(source) else None
    target = _target_of(model)
    p = fetch_named_weights(named) if named else Path(source)
    label = f"{named} ({p.name})" if named else str(p)
    state = _read_state(p)
    translated, record = _translate(state, target, label)
    own = target.module.state_dict()
    first = next(n for n, m in target.module.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"
    source_bands = int(translated[first].shape[1])
    target_bands = int(own[first].shape[1])
    adapt, band_map = "none", None
    if weights_bands is not None:
        if model_bands is None or len(model_bands) != target_bands:
            raise InvalidParameterError(
                f"matching the weights' bands by name needs the model's {target_bands} band name(s) "
                f"(got {None if model_bands is None else len(model_bands)}); a spectral stem hides the raster's bands"
            )
        translated[first], band_map = adapt_first_conv_by_name(
            translated[first], list(weights_bands), list(model_bands), strategy
        )
        adapt = f"by-name:{strategy}"
    elif source_bands != target_bands:
        translated[first] = adapt_first_conv(translated[first], target_bands, strategy)
        adapt = strategy
    bad = [
        f"{k}: file {tuple(translated[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if translated[k].shape != v.shape
    ]
    if bad:
        raise CheckpointError(
            f"{label}: encoder tensor shapes differ ({len(bad)}), e.g. {'; '.join(bad[:3])}; the file was made for "
            f"another encoder width"
        )
    target.module.load_state_dict(translated, strict=True)
    return {
        "file": p.name,
        "sha256": file_sha256(p),
        "source": named or "file",
        **record,
        "first_conv": first,
        "adapt": adapt,
        "source_bands": source_bands,
        "bands": target_bands,
        "band_map": band_map,
    }
