"""The fixed choices the geoseg algorithms offer, as geoseg's registries name them.

QGIS cannot import geoseg to read them (geoseg may live in another Python environment, and its GDAL must not be
loaded into the QGIS application), so they are written here once, each next to the geoseg name it mirrors; the
project's tests/test_registries.py fails when one differs from geoseg's. This module imports nothing.
"""

DEVICES = ("auto", "cpu", "cuda")  # geoseg.models.device.DEVICES
STITCH_METHODS = ("center", "mean", "gaussian")  # geoseg.inference.stitch.STITCH_METHODS
CONNECTIVITIES = (4, 8)  # geoseg.vectorization.CONNECTIVITIES
SELF_TRAINING = 0  # geoseg.train.loop.SELF_TRAINING: the default recipe's self-training rounds
MAX_SELF_TRAINING = 5  # geoseg.options.BOUNDS["self_training"].high
#: the Architecture choice that leaves it to geoseg's default recipe (geoseg.train.loop.default_network: the
#: network and loss from the image's band count)
DEFAULT_ARCH = "default"
ARCHITECTURES = (  # geoseg.models.names.ARCHITECTURES
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
    "ssnet",
    "tiny",
    "unet",
)
