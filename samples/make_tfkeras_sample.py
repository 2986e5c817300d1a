"""Write ``samples/mlp_tfkeras.h5``: the ``mlp`` sample, but written by tf.keras
(Keras 2.15 bundled with TensorFlow 2.15), to cover the pre-Keras-3 legacy
HDF5 layout.

Rerun (from the repository root; a throwaway venv keeps TF away from the
Keras 3 install)::

    apt-get install dataset-fashion-mnist
    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1
    /tmp/tfvenv/bin/python samples/make_tfkeras_sample.py

Same data, architecture (784 -> Dense(256, relu) -> Dense(10, softmax), layer
names ``hidden``/``output``), optimizer (Adam, lr 1e-3) and batch size as
``make_samples.py``; one epoch. Saved with ``model.save(..., save_format="h5")``
(optimizer included). The script checks ``load_model`` gives identical
predictions and prints the test accuracy.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# The IDX reader and settings are copied from make_samples.py (which imports
# Keras 3 at module level, so it cannot be imported next to tf.keras).
DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
SEED = 1234
BATCH = 128
MLP_HIDDEN = 256


def read_idx(path):
    import gzip

    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(kind):
    x = read_idx(os.path.join(DATA_DIR, f"{kind}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA_DIR, f"{kind}-labels-idx1-ubyte.gz"))
    return (x.reshape(len(x), 784).astype(np.float32) / np.float32(255.0),
            y.astype(np.int64))


def main():
    keras = tf.keras
    import keras as keras_pkg  # the Keras 2.x package that tf.keras re-exports

    print(f"tensorflow {tf.__version__}, keras {keras_pkg.__version__}")
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()

    x_train, y_train = load_split("train")
    x_t10k, y_t10k = load_split("t10k")
    x_test, y_test = x_t10k[:2000], y_t10k[:2000]

    model = keras.Sequential(
        [
            keras.Input(shape=(784,), name="pixels"),
            keras.layers.Dense(MLP_HIDDEN, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ],
        name="mlp",
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, name="Adam"),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=BATCH, epochs=1, shuffle=True, verbose=2)

    out = os.path.join(HERE, "mlp_tfkeras.h5")
    model.save(out, save_format="h5")  # include_optimizer=True by default

    pred = model.predict(x_test, batch_size=500, verbose=0)
    acc = float(np.mean(np.argmax(pred, axis=1) == y_test))
    pred2 = keras.models.load_model(out).predict(x_test, batch_size=500, verbose=0)
    if not np.array_equal(pred, pred2):
        sys.exit(f"reload mismatch: max diff {np.abs(pred - pred2).max()}")
    print(f"mlp_tfkeras: test accuracy {acc:.4f}, {os.path.getsize(out)} bytes; "
          "load_model predictions identical")


if __name__ == "__main__":
    main()
