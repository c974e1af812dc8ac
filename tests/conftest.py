import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if os.environ.get("GEOSEG_SHARED_DATA"):
    SHARED_DATA = Path(os.environ["GEOSEG_SHARED_DATA"])


@pytest.fixture
def shared_data() -> Path:
    """The real public datasets beside the checkout (skips the test when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def strict_fp32():
    """Full float32 on CUDA while the test runs: no TF32 in convolutions and matrix products (PyTorch allows TF32
    convolutions by default), so GPU and CPU results differ only in the order of their sums."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
