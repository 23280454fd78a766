"""The plain Python peer: a loop that reads each JPEG file, preprocesses it with Pillow exactly as the
reference does, and runs ONNX Runtime at batch 1 with 2 intra-op threads. Prints one JSON object.

Modes:
  loop        the whole job, file by file (the figure compared with `fvision run`)
  preprocess  read + decode + preprocess only, one thread
  ort         inference alone at --batch on ready tensors (the files preprocessed first, not timed)

Usage: python_loop.py --model efficientnet-lite0 --mode loop --passes 10 FILE...
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from reference import Preset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--mode", choices=["loop", "preprocess", "ort"], default="loop")
    parser.add_argument("--passes", type=int, default=10, help="times the file list is processed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="batch size of --mode ort")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time of --mode ort")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    started = time.perf_counter()
    preset = Preset(args.model)
    files = [pathlib.Path(f) for f in args.files]
    out = {"peer": f"python-{args.mode}", "model": preset.name}
    if args.mode == "loop":
        session = preset.session(args.threads)
        out["load_s"] = time.perf_counter() - started
        labels = {}
        t0 = time.perf_counter()
        images = 0
        for round_ in range(args.passes):
            for path in files:
                tensor = preset.preprocess(path.read_bytes())
                labels[f"{round_}/{path.name}"] = preset.top1(session, tensor)[0]
                images += 1
        out["loop_s"] = time.perf_counter() - t0
        out["images"] = images
        out["labels"] = labels
    elif args.mode == "preprocess":
        t0 = time.perf_counter()
        images = 0
        for _ in range(args.passes):
            for path in files:
                preset.preprocess(path.read_bytes())
                images += 1
        out["preprocess_s"] = time.perf_counter() - t0
        out["images"] = images
        out["ms_per_image"] = out["preprocess_s"] * 1e3 / images
    else:
        session = preset.session(args.threads)
        tensors = np.concatenate([preset.preprocess(p.read_bytes()) for p in files])
        batches = [tensors[i : i + args.batch] for i in range(0, len(tensors) - args.batch + 1, args.batch)]
        preset.top1(session, batches[0])  # warm-up
        t0 = time.perf_counter()
        runs = 0
        while True:
            for batch in batches:
                preset.top1(session, batch)
                runs += 1
            if time.perf_counter() - t0 >= args.seconds:
                break
        elapsed = time.perf_counter() - t0
        out["batch"] = args.batch
        out["images"] = runs * args.batch
        out["ort_s"] = elapsed
        out["ms_per_image"] = elapsed * 1e3 / (runs * args.batch)
    out["process_s"] = time.perf_counter() - started
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
