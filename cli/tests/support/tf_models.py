"""Test models for cli/tests/cli/import_tf.rs, built and run with TensorFlow in the importer's virtualenv.

  build OUT_DIR                  small models with fixed seeds, in every format `fvision models import` reads,
                                 and the broken ones it must refuse
  predict MODEL INPUTS.npy OUT   TensorFlow's own prediction on INPUTS (float32, NHWC or NCHW), as a Keras user runs it
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def tiny(keras, classes, activation=None, size=32):
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation=activation),
        ]
    )


def randomise_batch_norm(model, rng):
    """Non-trivial BatchNormalization statistics, so inference differs from training mode."""
    for layer in model.layers:
        if "batch_normalization" in layer.name:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])


def he_normal(model, rng):
    """Kernels drawn with He scaling: Keras' default initialisation leaves a 53-layer MobileNetV2's logits at
    ~1e-4, where every class ties; these give logits of several units, so top-1 and the check mean something."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
            weights = layer.get_weights()
            kernel = weights[0]
            fan_in = np.prod(kernel.shape[:2] if kind == "DepthwiseConv2D" else kernel.shape[:-1])
            weights[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype("float32")
            layer.set_weights(weights)


def build(out):
    import keras
    import tensorflow as tf
    import tf_keras

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(7)
    model = tiny(keras, 10)
    randomise_batch_norm(model, rng)
    model.save(f"{out}/tiny.keras")

    # Legacy Keras 2 .h5, ending in a softmax.
    tf_keras.utils.set_random_seed(8)
    legacy = tiny(tf_keras, 7, activation="softmax", size=40)
    randomise_batch_norm(legacy, rng)
    legacy.save(f"{out}/legacy.h5")

    keras.utils.set_random_seed(9)
    exported = tiny(keras, 12, size=48)
    randomise_batch_norm(exported, rng)
    exported.export(f"{out}/saved_model", verbose=False)

    keras.utils.set_random_seed(10)
    # Logits (no softmax), so the conversion check compares raw scores, not near-uniform probabilities.
    mobilenet = keras.applications.MobileNetV2(
        weights=None, input_shape=(224, 224, 3), classes=1000, classifier_activation=None
    )
    he_normal(mobilenet, rng)
    mobilenet.save(f"{out}/mobilenet_v2.keras")

    with open(f"{out}/tiny.keras", "rb") as src, open(f"{out}/broken.keras", "wb") as dst:
        dst.write(src.read()[:2000])

    class Doubler(keras.layers.Layer):  # not registered: a file another process cannot rebuild
        def call(self, x):
            return x * 2.0

    custom = keras.Sequential([keras.Input((32, 32, 3)), Doubler(), keras.layers.Flatten(), keras.layers.Dense(4)])
    custom.save(f"{out}/custom_layer.keras")

    feature_map = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)])
    feature_map.save(f"{out}/feature_map.keras")

    # A SavedModel that TensorFlow runs but tf2onnx 1.17 cannot convert: a grey-scale dilation (Dilation2D),
    # which tf2onnx only logs and leaves in the graph.
    class Dilated(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(rng.normal(size=(3, 3, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32)])
        def serve(self, x):
            y = tf.nn.dilation2d(x, self.kernel, [1, 1, 1, 1], "VALID", "NHWC", [1, 1, 1, 1])
            return tf.reduce_mean(y, axis=[1, 2])

    dilated = Dilated()
    tf.saved_model.save(dilated, f"{out}/unconvertible_op", signatures={"serving_default": dilated.serve})
    del tf


def predict(model_path, inputs, out):
    x = np.load(inputs)
    if x.shape[1] == 3 and x.shape[3] != 3:  # saved by an `--layout NCHW` import; Keras models take NHWC
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if os.path.isdir(model_path):
        import tensorflow as tf

        serve = tf.saved_model.load(model_path).signatures["serving_default"]
        (name,) = serve.structured_input_signature[1]
        (result,) = serve(**{name: tf.constant(x)}).values()
        y = result.numpy()
    else:
        try:
            import keras

            model = keras.models.load_model(model_path, compile=False)
        except Exception:  # noqa: BLE001 - Keras 2 files Keras 3 cannot read
            import tf_keras

            model = tf_keras.models.load_model(model_path, compile=False)
        y = model.predict(x, batch_size=16, verbose=0)
    np.save(out, y.astype(np.float32))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        predict(*sys.argv[2:5])
