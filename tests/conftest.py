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
