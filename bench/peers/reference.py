"""The reference preprocessing of models/onnx/README.md in Pillow, shared by the peers.

A preset's manifest (models/presets/<name>.toml) says which resize filter and normalisation the model
wants; this module reads it and does exactly what the README's reference does: Pillow decode to RGB,
shorter side to `resize_to` (longer side floored), centre crop (offset floored, or rounded half to even with
`crop_rounding = "half-even"`, as torchvision's CenterCrop does), float32 in the manifest's layout.
"""
import io
import os
import pathlib
import tomllib

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
# The same presets as `fvision` reads (FVISION_MODELS_DIR, else the repository's).
PRESETS = pathlib.Path(os.environ.get("FVISION_MODELS_DIR") or REPO / "models" / "presets")

FILTERS = {
    "catmull-rom": Image.BICUBIC,  # Pillow's BICUBIC is Keys cubic a = -0.5, what the Rust side calls CatmullRom
    "bicubic": Image.BICUBIC,
    "bilinear": Image.BILINEAR,
    "lanczos3": Image.LANCZOS,
    "lanczos": Image.LANCZOS,
    "nearest": Image.NEAREST,
}
TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class Preset:
    """A model preset as the peers need it: ONNX file, tensor names and the preprocessing."""

    def __init__(self, name: str):
        path = PRESETS / f"{name}.toml"
        manifest = tomllib.loads(path.read_text())
        self.name = manifest["name"]
        self.real_weights = manifest.get("real_weights", True)
        self.onnx = str((path.parent / manifest["onnx"]).resolve())
        self.input_name = manifest["input"]["name"]
        self.output_name = manifest["output"]["name"]
        self.layout = manifest["input"].get("layout", "NCHW")
        self.size = int(manifest["input"]["size"])
        pre = manifest.get("preprocess", {})
        if pre.get("resize", "shorter-side-crop") != "shorter-side-crop":
            raise ValueError(f"{name}: the peers only implement resize = shorter-side-crop")
        self.resize_to = int(pre.get("resize_to", 256))
        self.filter = FILTERS[pre.get("filter", "catmull-rom")]
        self.crop_rounding = pre.get("crop_rounding", "floor")
        self.normalize = pre.get("normalize", "tf127")
        if manifest["input"].get("channel_order", "RGB") != "RGB":
            raise ValueError(f"{name}: the peers only implement RGB channel order")

    def preprocess(self, image_bytes: bytes) -> np.ndarray:
        """One encoded image to a float32 tensor of shape [1, ...] in the model's layout."""
        with Image.open(io.BytesIO(image_bytes)) as image:
            rgb = image.convert("RGB")
        w, h = rgb.size
        short = min(w, h)
        if w <= h:
            size = (self.resize_to, (self.resize_to * h) // short)
        else:
            size = ((self.resize_to * w) // short, self.resize_to)
        resized = rgb.resize(size, self.filter)
        if self.crop_rounding == "half-even":  # Python's round() is half to even
            left, top = round((size[0] - self.size) / 2), round((size[1] - self.size) / 2)
        else:
            left, top = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        crop = resized.crop((left, top, left + self.size, top + self.size))
        pixels = np.asarray(crop, dtype=np.float32)  # H, W, C
        if self.normalize == "tf127":
            pixels = (pixels - 127.0) / 128.0
        elif self.normalize == "torch":
            pixels = (pixels / 255.0 - TORCH_MEAN) / TORCH_STD
        else:
            raise ValueError(f"normalisation {self.normalize} is not implemented by the peers")
        if self.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels[np.newaxis], dtype=np.float32)

    def session(self, threads: int):
        """An ONNX Runtime session like ours: CPU, `threads` intra-op threads, one inter-op thread."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(self.onnx, options, providers=["CPUExecutionProvider"])

    def top1(self, session, tensor: np.ndarray) -> list[int]:
        """The top-1 class index of every image in the batch."""
        logits = session.run([self.output_name], {self.input_name: tensor})[0]
        return [int(i) for i in np.argmax(logits, axis=1)]
