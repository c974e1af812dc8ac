"""Regenerate sample_data/scene.tif and sample_data/labels.tif (deterministic; see geoseg/sample.py)."""

from pathlib import Path

from geoseg.sample import write_sample

if __name__ == "__main__":
    scene, labels = write_sample(Path(__file__).parent)
    print(f"wrote {scene} and {labels}")
