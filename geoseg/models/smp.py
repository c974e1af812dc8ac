"""segmentation_models_pytorch (smp) architectures on timm encoders, registered as ``smp-<arch>`` models.

Optional: ``pip install 'geoseg[smp]'`` (segmentation-models-pytorch and timm; they need torchvision, so install the
torch/torchvision pair you want first). Registration imports neither library: they are imported when such a model is
built, and ``geoseg models`` marks the architectures as needing the extra while it is missing.

``encoder`` is a timm model name (``resnet50``, ``resnet34``, ``efficientnet_b0``, ``convnext_tiny``,
``mobilenetv2_100``, ...; smp's ``tu-`` prefix is optional) built for any band count with random weights (nothing
is downloaded); start it from pretrained weights with ``geoseg train --encoder-weights`` / ``encoder_weights=`` (a
local timm or torchvision state dict, see :mod:`geoseg.models.adapt`). Other options go to the smp class as they
are (``decoder_channels``, ``encoder_depth``, ...). These models keep the whole geoseg contract: band checks,
safetensors checkpoints with the ModelConfig, tiled prediction, ONNX export.

Reference: Iakubovskii, "Segmentation Models Pytorch" (github.com/qubvel-org/segmentation_models.pytorch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geoseg.errors import InvalidParameterError, MissingDependencyError
from geoseg.models.registry import register_model

REQUIRES = ("segmentation_models_pytorch", "timm")

# geoseg name: (smp architecture, description, global context)
SMP_ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "smp-unet": ("unet", "smp U-Net on a timm encoder", False),
    "smp-unetplusplus": ("unetplusplus", "smp UNet++ (nested dense skip pathways) on a timm encoder", False),
    "smp-manet": ("manet", "smp MA-Net (multi-scale attention) on a timm encoder", False),
    "smp-linknet": ("linknet", "smp LinkNet on a timm encoder", False),
    "smp-fpn": ("fpn", "smp Feature Pyramid Network on a timm encoder", False),
    "smp-deeplabv3": ("deeplabv3", "smp DeepLab v3 on a dilated timm encoder", True),
    "smp-deeplabv3plus": ("deeplabv3plus", "smp DeepLab v3+ on a dilated timm encoder", True),
    "smp-upernet": ("upernet", "smp UPerNet (pyramid pooling + FPN) on a timm encoder", True),
    "smp-segformer": ("segformer", "smp SegFormer all-MLP decoder on a timm encoder", False),
}


def _import_smp() -> Any:
    try:
        import segmentation_models_pytorch
    except ImportError as exc:
        raise MissingDependencyError(
            f"smp models need segmentation-models-pytorch and timm ({exc}); pip install 'geoseg[smp]'"
        ) from exc
    return segmentation_models_pytorch


class SmpModel(nn.Module):
    """An smp model with geoseg's call contract: ``(B, bands, H, W) -> (B, classes, H, W)`` logits.

    ``output_stride`` is the encoder's (H and W must be multiples of it); ``timm_encoder`` is the timm feature
    extractor that pretrained weights load into; ``encoder_name`` the timm model name.
    """

    def __init__(self, arch: str, in_channels: int, num_classes: int, *, encoder: str = "resnet34", **kw: Any) -> None:
        super().__init__()
        smp = _import_smp()
        if not isinstance(encoder, str) or not encoder:
            raise InvalidParameterError(f"encoder must be a timm model name such as 'resnet50', got {encoder!r}")
        self.encoder_name = encoder.removeprefix("tu-")
        try:
            self.net = smp.create_model(
                arch,
                encoder_name=f"tu-{self.encoder_name}",
                encoder_weights=None,
                in_channels=in_channels,
                classes=num_classes,
                **kw,
            )
        except (RuntimeError, KeyError, AttributeError, AssertionError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidParameterError(
                f"smp {arch} cannot be built with encoder {self.encoder_name!r} and options {kw}: {first[:200]} "
                f"(encoder must be a timm model with feature extraction, e.g. resnet50, efficientnet_b0)"
            ) from exc
        self.output_stride = int(self.net.encoder.output_stride)

    @property
    def timm_encoder(self) -> nn.Module:
        return self.net.encoder.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _register(name: str, arch: str, description: str, global_context: bool) -> None:
    def factory(in_channels: int, num_classes: int, **kw: Any) -> nn.Module:
        return SmpModel(arch, in_channels, num_classes, **kw)

    factory.__doc__ = description
    register_model(
        name,
        output_stride=32,
        description=description,
        family="smp",
        global_context=global_context,
        requires=REQUIRES,
        extra="smp",
    )(factory)


for _name, (_arch, _description, _global) in SMP_ARCHITECTURES.items():
    _register(_name, _arch, _description, _global)
