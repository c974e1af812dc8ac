"""Names of the model registries whose implementations need torch, importable without it (the CLI's choices).

The registry of each name is next to this module: architectures in :mod:`geoseg.models.registry`, first-convolution
adaptation strategies in :func:`geoseg.models.adapt.adapt_first_conv`. Devices are in
:data:`geoseg.models.device.DEVICES`.
"""

from __future__ import annotations

#: how :func:`geoseg.models.adapt.adapt_first_conv` maps pretrained RGB filters onto N bands
ADAPT_STRATEGIES = ("repeat", "mean", "random")

#: the architectures geoseg registers itself, as ``geoseg models`` lists them (smp-* need the ``smp`` extra);
#: packages add more through the ``geoseg.models`` entry points
ARCHITECTURES = (
    "deeplab_largefov",
    "deeplabv2",
    "deeplabv3",
    "deeplabv3plus",
    "fcdensenet",
    "fcn16s",
    "fcn32s",
    "fcn8s",
    "icnet",
    "pspnet",
    "resunet",
    "segnet",
    "smp-deeplabv3",
    "smp-deeplabv3plus",
    "smp-fpn",
    "smp-linknet",
    "smp-manet",
    "smp-segformer",
    "smp-unet",
    "smp-unetplusplus",
    "smp-upernet",
    "tiny",
    "unet",
)

__all__ = ["ADAPT_STRATEGIES", "ARCHITECTURES"]
