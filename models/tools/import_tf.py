"""The converter behind `fvision models import`: a Keras model (.keras, legacy .h5) or a TensorFlow
SavedModel directory to ONNX with tf2onnx, then the same inputs through both to measure the difference.

Run by the fvision binary inside the importer's virtualenv (models/tools/importer-requirements*.txt), never
by hand. It talks over stdin/stdout in lines starting with "FVISION " followed by JSON, so what TensorFlow
prints cannot be mistaken for an answer:
  -> FVISION {"event": "converted", "input": {...}, "output": {...}, "seconds": S}
  <- the path of a float32 .npy array: the sample images as fvision preprocesses them, in the model's layout
  -> FVISION {"event": "checked", "max_abs_diff": D, ...}
Any failure ends with FVISION {"event": "error", "kind": K, "message": M} and exit status 1, where K is one
of load, unsupported-layer, input, output-shape, convert, check.
"""

import argparse
import json
import os
import re
import sys
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class ImportFailure(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def send(event, **fields):
    print("FVISION " + json.dumps({"event": event, **fields}), flush=True)


def describe(exc):
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def unknown_layer(message):
    """The custom class a Keras loader could not find, as a failure that says what to do instead."""
    found = re.search(r"Could not locate (?:class|function) '([^']+)'", message) or re.search(
        r"Unknown (?:layer|object)[^']*'([^']+)'", message
    )
    if not found:
        return None
    return ImportFailure(
        "unsupported-layer",
        f"custom layer `{found.group(1)}` is neither a Keras built-in nor registered, so Keras cannot rebuild the "
        "model from this file; export it as a SavedModel (`model.export(DIR)` where the class is defined) and "
        "import that directory",
    )


def load_keras(src):
    """Keras 3 first; Keras 2 (tf_keras) for the legacy .h5 files Keras 3 rejects."""
    import h5py
    import keras

    if src.endswith(".keras") and not zipfile.is_zipfile(src):
        raise ImportFailure("load", "not a .keras file: a .keras model is a zip archive, and this one is not readable as one")
    if not src.endswith(".keras") and not h5py.is_hdf5(src):
        raise ImportFailure("load", "not an HDF5 file (a legacy Keras .h5 model)")
    try:
        return keras.models.load_model(src, compile=False)
    except Exception as first:  # noqa: BLE001 - every loader error is reported
        message = describe(first)
        if src.endswith(".keras"):
            raise (unknown_layer(message) or ImportFailure("load", message)) from first
        try:
            import tf_keras

            return tf_keras.models.load_model(src, compile=False)
        except Exception as second:  # noqa: BLE001
            both = f"Keras 3: {message}; Keras 2: {describe(second)}"
            raise (unknown_layer(both) or ImportFailure("load", both)) from second


def keras_function(model):
    import tensorflow as tf

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ImportFailure("input", f"{len(model.inputs)} inputs and {len(model.outputs)} outputs; one of each is supported")
    shape = tuple(model.inputs[0].shape)
    dtype = tf.as_dtype(model.inputs[0].dtype)
    out_shape = tuple(model.outputs[0].shape)
    return (lambda x: model(x, training=False)), shape, dtype, out_shape


def saved_model_function(src):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(src)
    except Exception as exc:  # noqa: BLE001
        message = describe(exc)
        raise ImportFailure("unsupported-layer" if "Op type not registered" in message else "load", message) from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ImportFailure("input", f"no `serving_default` signature (it has: {', '.join(loaded.signatures) or 'none'})")
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ImportFailure("input", f"{len(inputs)} inputs and {len(outputs)} outputs; one of each is supported")
    (in_name, spec), = inputs.items()
    (out_name, out_spec), = outputs.items()
    # Keep the loaded object alive with the function that uses its variables.
    fn = lambda x, _keep=loaded: signature(**{in_name: x})[out_name]  # noqa: E731
    return fn, tuple(spec.shape), spec.dtype, tuple(out_spec.shape)


def unconverted_ops(model_proto):
    """The ops of a converted graph that are neither ONNX's nor ONNX Runtime's: TensorFlow ops tf2onnx left."""
    import onnx

    known_domains = ("", "ai.onnx", "com.microsoft", "ai.onnx.ml")
    return sorted(
        {
            node.op_type
            for node in model_proto.graph.node
            if node.domain not in known_domains or (node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type))
        }
    )


def dims(shape):
    return [None if d is None else int(d) for d in shape]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--size", type=int)
    parser.add_argument("--layout", choices=["NHWC", "NCHW"], default="NHWC")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()
    try:
        run(args)
    except ImportFailure as failure:
        send("error", kind=failure.kind, message=str(failure))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - reported, not a traceback
        send("error", kind="check", message=describe(exc))
        sys.exit(1)


def run(args):
    started = time.monotonic()
    import numpy as np
    import tensorflow as tf

    if os.path.isdir(args.source):
        fn, shape, dtype, out_shape = saved_model_function(args.source)
    else:
        fn, shape, dtype, out_shape = keras_function(load_keras(args.source))
    if dtype != tf.float32:
        raise ImportFailure("input", f"input is {dtype.name}; float32 images are supported")
    if len(shape) != 4 or shape[3] != 3:
        raise ImportFailure("input", f"input shape {dims(shape)}; expected [batch, height, width, 3] (NHWC)")
    height, width = shape[1], shape[2]
    if height is not None and width is not None and height != width:
        raise ImportFailure("input", f"input is {height}x{width}; square inputs are supported")
    fixed = height if height is not None else width
    if args.size is not None and fixed is not None and args.size != fixed:
        raise ImportFailure("input", f"--size {args.size}, but the model's input is {fixed}x{fixed}")
    size = args.size or fixed
    if size is None:
        raise ImportFailure("input", f"the input size is not fixed ({dims(shape)}); give --size")
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ImportFailure(
            "output-shape", f"output shape {dims(out_shape)}; expected [batch, classes] (logits or probabilities)"
        )

    import tf2onnx

    sig = [tf.TensorSpec((None, size, size, 3), tf.float32, name="input")]
    function = tf.function(lambda x: {"output": fn(x)}, input_signature=sig)
    convert_started = time.monotonic()
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            function,
            input_signature=sig,
            opset=args.opset,
            output_path=args.onnx,
            inputs_as_nchw=["input"] if args.layout == "NCHW" else None,
        )
    except Exception as exc:  # noqa: BLE001
        raise ImportFailure("convert", describe(exc)) from exc
    unconverted = unconverted_ops(model_proto)
    if unconverted:
        # tf2onnx only logs the ops it has no conversion for and writes them into the graph as they were;
        # ONNX Runtime would then refuse the file with a message that names neither the op nor the model.
        raise ImportFailure(
            "unsupported-layer",
            f"TensorFlow op {', '.join(f'`{op}`' for op in unconverted)} has no ONNX conversion in tf2onnx "
            f"{tf2onnx.__version__}; replace the layer that uses it with built-in ones, or write the model in a "
            "form tf2onnx converts",
        )
    send(
        "converted",
        input={"name": "input", "size": size, "layout": args.layout},
        output={"name": "output", "classes": int(out_shape[1])},
        seconds=round(time.monotonic() - convert_started, 3),
        total_seconds=round(time.monotonic() - started, 3),
    )

    line = sys.stdin.readline().strip()
    if not line:
        return
    x = np.load(line)
    nhwc = x.transpose(0, 2, 3, 1) if args.layout == "NCHW" else x
    import onnxruntime as ort

    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    t0 = time.monotonic()
    reference = np.concatenate([np.asarray(function(tf.constant(nhwc[i : i + 8]))["output"]) for i in range(0, len(x), 8)])
    t1 = time.monotonic()
    # Batch 1 for the first image, then batches of 8: both shapes of the dynamic batch dimension.
    chunks = [x[:1]] + [x[i : i + 8] for i in range(1, len(x), 8)]
    converted = np.concatenate([session.run(["output"], {"input": c})[0] for c in chunks])
    t2 = time.monotonic()
    if converted.shape != reference.shape:
        raise ImportFailure("check", f"ONNX output shape {list(converted.shape)}, TensorFlow {list(reference.shape)}")
    diff = np.abs(converted.astype(np.float64) - reference.astype(np.float64))
    sums = reference.sum(axis=1)
    send(
        "checked",
        images=int(len(x)),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_abs_output=float(np.abs(reference).max()) if reference.size else 0.0,
        top1_agree=int((reference.argmax(axis=1) == converted.argmax(axis=1)).sum()),
        finite=bool(np.isfinite(reference).all() and np.isfinite(converted).all()),
        looks_like_probabilities=bool((reference >= 0).all() and np.allclose(sums, 1.0, atol=1e-3)),
        tensorflow_seconds=round(t1 - t0, 3),
        onnx_seconds=round(t2 - t1, 3),
    )


if __name__ == "__main__":
    main()
