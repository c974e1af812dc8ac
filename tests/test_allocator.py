"""The glibc allocator setting is explicit: the CLI makes it before predicting on the CPU, the library never does."""

from __future__ import annotations

import platform
import subprocess
import sys

from model_utils import tiny_checkpoint
from rasters import class_scene, write_raster

CODE = """
import sys
import geoseg.allocator as allocator
from geoseg.inference import predict_raster
from geoseg.vectorization import vectorize
src, ck, out = sys.argv[1:4]
predict_raster(src, out + ".lib.tif", model=ck, device="cpu")
vectorize(out + ".lib.tif")
assert allocator._allocator_tuned is None, "a library call changed the allocator"
from geoseg.cli.main import cli
cli.main(["predict", src, out + ".cli.tif", "-m", ck, "--device", "cpu", "--progress", "none"], standalone_mode=False)
print("tuned", allocator._allocator_tuned)
"""


def test_only_the_cli_tunes_the_allocator(tmp_path) -> None:
    data, _ = class_scene(40, 40, bands=2, classes=3)
    src = write_raster(tmp_path / "in.tif", data)
    ck = tiny_checkpoint(tmp_path / "m.safetensors", ["1", "2"], tile=32, overlap=8)
    proc = subprocess.run([sys.executable, "-c", CODE, str(src), str(ck), str(tmp_path / "o")], capture_output=True,
                          text=True, check=True)  # fmt: skip
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"  # elsewhere it is a no-op
    assert proc.stdout.split()[-1] == str(glibc)
