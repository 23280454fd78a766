#!/usr/bin/env python3
"""Convert a torchvision ImageNet-1k checkpoint (a .pth state dict found inside a
registry package) to ONNX and measure top-1/top-5 on the project's 100-image sample.

usage: models/tools/convert_torchvision.py ARCH WEIGHTS.pth OUT.onnx   (from the repository root)
ARCH: mobilenet_v2 | resnet50 | vgg16 (any torchvision.models constructor name)
needs: torch, torchvision, onnx, onnxruntime, Pillow, numpy (pip install them in a venv)

Made by the project's asset session (the shared asset folder, December 2026), which converted
models/onnx/mobilenet_v2.onnx with it; copied here unchanged but for this paragraph, the usage line and
the label file's default path. The predictions on the sample go to OUT.onnx.predictions.tsv.

ONNX: opset 17, input `input` f32 NCHW [batch,3,224,224] (dynamic batch),
output `logits` f32 [batch,1000], TorchScript exporter (dynamo=False), eval mode.
Preprocessing: torchvision standard (Resize(256) bilinear, CenterCrop(224),
ToTensor, Normalize(ImageNet mean/std)).
"""
import hashlib
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from PIL import Image
from torchvision import transforms

torch.set_num_threads(1)

SAMPLE_DIRS = [os.environ.get("SAMPLE_DIR", "data/imagenet-sample")]
LABEL_FILES = [os.environ.get("LABELS", "models/onnx/imagenet-labels.txt")]


def first_existing(paths):
    for p in paths:
        if os.path.exists(p):
            return p
    raise SystemExit(f"none of {paths} exists")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    arch, weights, out = sys.argv[1], sys.argv[2], sys.argv[3]
    print(f"torch {torch.__version__} torchvision {torchvision.__version__} onnx {onnx.__version__} "
          f"onnxruntime {ort.__version__}")
    print(f"weights {weights}: {os.path.getsize(weights)} bytes, sha256 {sha256(weights)}")

    sd = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise SystemExit(f"not a state dict: {type(sd)}")
    model = getattr(torchvision.models, arch)(weights=None)
    missing, unexpected = model.load_state_dict(sd, strict=True), None
    print(f"load_state_dict(strict=True): ok ({len(sd)} tensors), classifier out = "
          f"{[v.shape for k, v in sd.items() if k.endswith('weight')][-1]}")
    model.eval()

    dummy = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(model, dummy, out, opset_version=17, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True, dynamo=False)
    m = onnx.load(out)
    onnx.checker.check_model(m)
    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    print(f"onnx {out}: {os.path.getsize(out)} bytes, sha256 {sha256(out)}, opset "
          f"{[o.version for o in m.opset_import]}, inputs {[(i.name, dims(i)) for i in m.graph.input]}, "
          f"outputs {[(o.name, dims(o)) for o in m.graph.output]}")

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(out, so, providers=["CPUExecutionProvider"])

    # ONNX Runtime vs PyTorch, batch 1 and 3
    for b in (1, 3):
        x = torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(["logits"], {"input": x.numpy()})[0]
        print(f"batch {b}: ORT vs torch max abs diff {np.abs(ref - got).max():.3g}, shape {got.shape}")

    sample = first_existing(SAMPLE_DIRS)
    labels = [l.rstrip("\n") for l in open(first_existing(LABEL_FILES))]
    assert len(labels) == 1000, len(labels)
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(sample, "expected.tsv"))][1:]
    tf = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    top1 = top5 = 0
    lines = []
    for r in rows:
        fname, cls = r[0], int(r[1])
        x = tf(Image.open(os.path.join(sample, fname)).convert("RGB")).unsqueeze(0).numpy()
        logits = sess.run(["logits"], {"input": x})[0][0]
        p = np.exp(logits - logits.max()); p /= p.sum()
        order = np.argsort(-logits)
        top1 += int(order[0] == cls)
        top5 += int(cls in order[:5])
        lines.append(f"{fname}\t{cls}\t{order[0]}\t{p[order[0]]:.4f}\t{labels[order[0]]}")
    with open(out + ".predictions.tsv", "w") as f:
        f.write("file\tclass_index\ttop1_index\ttop1_prob\ttop1_label\n" + "\n".join(lines) + "\n")
    print(f"RESULT {arch}: top-1 {top1}/{len(rows)}, top-5 {top5}/{len(rows)} on {sample}")


if __name__ == "__main__":
    main()
