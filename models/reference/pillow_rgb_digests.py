"""Writes the SHA-256 of Pillow's 8-bit RGB decode of every JPEG the tests decode.

The reference preprocessing (models/onnx/README.md) starts with Pillow's `Image.open(f).convert("RGB")`;
the Rust decoder must give the same pixels. This script records Pillow's pixels as digests, so the test
(models/tests/inference.rs, `jpeg_decoding_is_bit_identical_to_pillow`) compares without Python.

Usage: python3 models/reference/pillow_rgb_digests.py > models/reference/pillow-rgb.tsv
(Pillow >= 12 with libjpeg-turbo 3; the version used is written in the header line.)
"""
import hashlib
import pathlib
import sys

import PIL
from PIL import Image, features

root = pathlib.Path(__file__).resolve().parents[2] / "data"
files = sorted(
    p for folder in ("imagenet-sample", "demo-images", "bad-inputs") for p in (root / folder).iterdir()
    if p.suffix.lower() in (".jpg", ".jpeg")
)
print(f"# Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}: file, width, height, sha256 of RGB8")
for path in files:
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                continue
            rgb = image.convert("RGB")
            digest = hashlib.sha256(rgb.tobytes()).hexdigest()
    except OSError as e:  # truncated and broken files: Pillow refuses them too
        print(f"# {path.parent.name}/{path.name}: {e}", file=sys.stderr)
        continue
    print(f"{path.parent.name}/{path.name}\t{rgb.width}\t{rgb.height}\t{digest}")
