"""Build the small, real Keras model files in ``samples/``.

Rerun (from the repository root)::

    apt-get install dataset-fashion-mnist
    pip install torch==2.13.0 keras==3.15.1 h5py numpy
    KERAS_BACKEND=torch python samples/make_samples.py

The script is deterministic (fixed seeds via ``keras.utils.set_random_seed``;
torch backend on CPU) and takes a few minutes on 2 CPU cores.

What it does:

* reads the Fashion-MNIST IDX files from ``/usr/share/datasets/fashion-mnist``
  (override with ``$FASHION_MNIST_DIR``) using only numpy + gzip, scales the
  pixels to float32 in [0, 1] and flattens them to (N, 784);
* writes ``fashion-mnist-test.npz`` (t10k images 0..1999) and
  ``fashion-mnist-val.npz`` (t10k images 2000..3999), each with ``x``
  (float32, (2000, 784)) and ``y`` (int64, (2000,));
* trains four models with Adam (every model takes flat (N, 784) input;
  the CNN reshapes internally with a ``Reshape((28, 28, 1))`` layer):
  ``softmax``, ``autoencoder`` (784-256-784), ``mlp`` (784-256-10), ``cnn``;
* saves each model twice: ``<name>.h5`` (legacy HDF5 via ``model.save``,
  optimizer included) and ``<name>.weights.h5`` (``model.save_weights``; for
  the two large models from a copy without optimizer state, to keep the
  folder small);
* verifies: reloads every ``.h5`` with ``keras.models.load_model`` and every
  ``.weights.h5`` into a freshly built model, and checks that predictions on
  the test split are identical to the in-memory model's;
* prints test accuracy (classifiers) / MSE (autoencoder) and file sizes.
"""

import gzip
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"  # the samples are defined as torch-backend files

import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
SEED = 1234
BATCH = 128
# Hidden widths of the original study's architectures (784-256-784, 784-256-10).
# Keras stores Adam's two moment slots next to every weight, so a file with its
# optimizer is ~3x the float32 weights (784-256-784: 402k params = 4.8 MB).  To keep
# samples/ near ten MB, the .weights.h5 files of these two large models are saved
# from a copy without optimizer state (WEIGHTS_WITHOUT_OPTIMIZER); the small models'
# .weights.h5 keep theirs, so optimizer dropping is exercised in both formats.
AE_HIDDEN = 256
MLP_HIDDEN = 256
WEIGHTS_WITHOUT_OPTIMIZER = {"autoencoder", "mlp"}


# ---------------------------------------------------------------- data ----
def read_idx(path):
    """Read a (gzipped) IDX file into a numpy array (big-endian header)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:  # unsigned byte
        raise ValueError(f"{path}: unsupported IDX dtype 0x{dtype_code:02x}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_split(kind):
    x = read_idx(os.path.join(DATA_DIR, f"{kind}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA_DIR, f"{kind}-labels-idx1-ubyte.gz"))
    x = (x.reshape(len(x), 784).astype(np.float32) / np.float32(255.0))
    return x, y.astype(np.int64)


# -------------------------------------------------------------- models ----
# Layer and model names are explicit so the HDF5 paths do not depend on
# Keras' per-session auto-naming counters.
def build_softmax():
    return keras.Sequential(
        [
            keras.Input(shape=(784,), name="pixels"),
            layers.Dense(10, activation="softmax", name="dense"),
        ],
        name="softmax",
    )


def build_autoencoder():
    return keras.Sequential(
        [
            keras.Input(shape=(784,), name="pixels"),
            layers.Dense(AE_HIDDEN, activation="relu", name="encoder"),
            layers.Dense(784, activation="sigmoid", name="decoder"),
        ],
        name="autoencoder",
    )


def build_mlp():
    return keras.Sequential(
        [
            keras.Input(shape=(784,), name="pixels"),
            layers.Dense(MLP_HIDDEN, activation="relu", name="hidden"),
            layers.Dense(10, activation="softmax", name="output"),
        ],
        name="mlp",
    )


def build_cnn():
    inp = keras.Input(shape=(784,), name="pixels")
    h = layers.Reshape((28, 28, 1), name="reshape")(inp)
    h = layers.Conv2D(8, 3, padding="same", name="conv1")(h)
    h = layers.BatchNormalization(name="bn1")(h)
    h = layers.Activation("relu", name="relu1")(h)
    h = layers.MaxPooling2D(2, name="pool1")(h)            # 14x14x8
    h = layers.Conv2D(16, 3, padding="valid", activation="relu", name="conv2")(h)  # 12x12x16
    h = layers.Flatten(name="flatten")(h)                  # 2304
    out = layers.Dense(10, activation="softmax", name="output")(h)
    return keras.Model(inp, out, name="cnn")


# name: (builder, loss, metrics, epochs, autoencoder?)
MODELS = {
    "softmax": (build_softmax, "sparse_categorical_crossentropy", ["accuracy"], 3, False),
    # A loss *object*, not the string "mse": Keras 3.15 writes the string as
    # 'keras.metrics.mse' into the legacy .h5 training_config and then cannot
    # deserialize it in load_model ("not a KerasSaveable subclass").
    "autoencoder": (build_autoencoder, keras.losses.MeanSquaredError(), [], 3, True),
    "mlp": (build_mlp, "sparse_categorical_crossentropy", ["accuracy"], 3, False),
    "cnn": (build_cnn, "sparse_categorical_crossentropy", ["accuracy"], 2, False),
}


def evaluate(pred, x, y, is_ae):
    if is_ae:
        return "mse", float(np.mean((pred - x) ** 2))
    return "accuracy", float(np.mean(np.argmax(pred, axis=1) == y))


def size(path):
    return os.path.getsize(path)


def main():
    if keras.backend.backend() != "torch":
        sys.exit("run with KERAS_BACKEND=torch")
    import torch

    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"torch {torch.__version__}, numpy {np.__version__}")

    x_train, y_train = load_split("train")
    x_t10k, y_t10k = load_split("t10k")
    x_test, y_test = x_t10k[:2000], y_t10k[:2000]
    x_val, y_val = x_t10k[2000:4000], y_t10k[2000:4000]
    np.savez_compressed(os.path.join(HERE, "fashion-mnist-test.npz"), x=x_test, y=y_test)
    np.savez_compressed(os.path.join(HERE, "fashion-mnist-val.npz"), x=x_val, y=y_val)

    results = []
    for name, (build, loss, metrics, epochs, is_ae) in MODELS.items():
        keras.utils.set_random_seed(SEED)
        model = build()
        # Explicit optimizer name: otherwise Keras auto-names it adam, adam_1,
        # ... per session and that name ends up in the HDF5 paths.
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, name="adam"),
                      loss=loss, metrics=metrics)
        target = x_train if is_ae else y_train
        model.fit(x_train, target, batch_size=BATCH, epochs=epochs,
                  shuffle=True, verbose=2)

        h5 = os.path.join(HERE, f"{name}.h5")
        wh5 = os.path.join(HERE, f"{name}.weights.h5")
        model.save(h5)  # legacy HDF5; include_optimizer=True by default
        if name in WEIGHTS_WITHOUT_OPTIMIZER:
            bare = build()  # same architecture, never compiled: no optimizer variables
            bare.set_weights(model.get_weights())
            bare.save_weights(wh5)
        else:
            model.save_weights(wh5)

        pred = model.predict(x_test, batch_size=500, verbose=0)
        metric, value = evaluate(pred, x_test, y_test, is_ae)

        # --- verify round trips -------------------------------------
        reloaded = keras.models.load_model(h5)
        pred_h5 = reloaded.predict(x_test, batch_size=500, verbose=0)
        fresh = build()
        fresh.load_weights(wh5)
        pred_w = fresh.predict(x_test, batch_size=500, verbose=0)
        ok_h5 = np.array_equal(pred, pred_h5)
        ok_w = np.array_equal(pred, pred_w)
        if not (ok_h5 and ok_w):
            sys.exit(f"{name}: reload mismatch (h5 {ok_h5}, weights.h5 {ok_w}); "
                     f"max diff {np.abs(pred - pred_h5).max()} / {np.abs(pred - pred_w).max()}")

        results.append((name, model.count_params(), metric, value, size(h5), size(wh5)))

    print()
    print(f"{'model':12s} {'params':>8s} {'test metric':>20s} {'.h5 bytes':>10s} {'.weights.h5':>12s}")
    for name, params, metric, value, s1, s2 in results:
        print(f"{name:12s} {params:8d} {metric + ' ' + format(value, '.4f'):>20s} {s1:10d} {s2:12d}")
    for f in ("fashion-mnist-test.npz", "fashion-mnist-val.npz"):
        print(f"{f}: {size(os.path.join(HERE, f))} bytes")
    print("reload check: all .h5 (load_model) and .weights.h5 (load_weights) "
          "predictions identical")


if __name__ == "__main__":
    main()
