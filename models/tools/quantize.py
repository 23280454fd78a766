"""Quantises EfficientNet-Lite0 to INT8 with ONNX Runtime's static quantisation.

Makes `models/onnx/efficientnet-lite0-int8.onnx` from `models/onnx/efficientnet-lite0.onnx`:
`quant_pre_process` (shape inference + graph optimisation), then `quantize_static` with QDQ nodes,
per-channel QInt8 weights with `reduce_range` (7 bits) and QUInt8 activations, MinMax calibration.

Why 7-bit weights: ONNX Runtime's u8 x s8 kernels on CPUs without VNNI (AVX2, AVX-512 without VNNI) add pairs
of products in saturating 16-bit lanes (`vpmaddubsw`); 255 x 127 x 2 overflows them and full 8-bit weights lost
3 points of top-1 there (86/100 against 89/100 on VNNI, measured in QEMU's Haswell emulation). With 7-bit weights
the sums never saturate, so the model gives the same predictions with and without VNNI.

Calibration never sees the evaluation images (`data/imagenet-sample`): it uses the six shipped demo photos
(`data/demo-images`), each as the reference view (shorter side 256, centre crop 224) plus seeded crops at
other scales and positions, mirrored or not, so the activation ranges come from 6 x VIEWS inputs.
The preprocessing is the reference one of `models/onnx/README.md`: Pillow RGB, bicubic resize of the shorter
side to 256, centre crop 224, `(v - 127) / 128`, NCHW.

Usage (the venv is made by `models/tools/quantize.sh`, which pins the versions):
    python3 models/tools/quantize.py [--views 8] [--out models/onnx/efficientnet-lite0-int8.onnx]
The output is deterministic for a given onnxruntime version and view count.
"""
import argparse
import pathlib
import random
import tempfile

import numpy as np
import onnxruntime
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIZE, RESIZE_TO = 224, 256


def to_tensor(rgb: Image.Image) -> np.ndarray:
    """A 224x224 RGB image to the model's input: (v - 127) / 128, NCHW, batch 1."""
    a = np.asarray(rgb, dtype=np.float32)
    return ((a - 127.0) / 128.0).transpose(2, 0, 1)[None]


def reference_view(image: Image.Image) -> Image.Image:
    """The evaluation preprocessing: shorter side to 256 (bicubic), centre crop 224."""
    w, h = image.size
    if w <= h:
        nw, nh = RESIZE_TO, int(RESIZE_TO * h / w)
    else:
        nw, nh = int(RESIZE_TO * w / h), RESIZE_TO
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
    return image.crop((left, top, left + SIZE, top + SIZE))


def random_view(image: Image.Image, rng: random.Random) -> Image.Image:
    """A square crop covering 30-100 % of the shorter side, resized to 224, mirrored half the time."""
    w, h = image.size
    side = int(min(w, h) * rng.uniform(0.3, 1.0))
    left, top = rng.randint(0, w - side), rng.randint(0, h - side)
    view = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)
    return view.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


def calibration_inputs(views: int) -> list[np.ndarray]:
    files = sorted((ROOT / "data/demo-images").glob("*.jpg"))
    rng = random.Random(20)
    inputs = []
    for path in files:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        inputs.append(to_tensor(reference_view(rgb)))
        inputs.extend(to_tensor(random_view(rgb, rng)) for _ in range(views - 1))
    return inputs


class Reader(CalibrationDataReader):
    def __init__(self, inputs: list[np.ndarray]):
        self.items = iter([{"input": x} for x in inputs])

    def get_next(self):
        return next(self.items, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ROOT / "models/onnx/efficientnet-lite0.onnx", type=pathlib.Path)
    parser.add_argument("--out", default=ROOT / "models/onnx/efficientnet-lite0-int8.onnx", type=pathlib.Path)
    parser.add_argument("--views", default=8, type=int, help="views per demo image (1 = the reference view only)")
    parser.add_argument("--no-reduce-range", dest="reduce_range", action="store_false",
                        help="use all 8 bits of the weights (saturates in ONNX Runtime's u8s8 kernels without VNNI)")
    args = parser.parse_args()
    inputs = calibration_inputs(args.views)
    print(f"onnxruntime {onnxruntime.__version__}: calibrating on {len(inputs)} views of data/demo-images")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(args.model), str(prepared))
        quantize_static(
            str(prepared),
            str(args.out),
            Reader(inputs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=args.reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
        )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
