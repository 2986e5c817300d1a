"""Build preset zlib dictionary 2 (``spec/header-dictionary-2.txt``, spec/container.md §2.2).

Rerun (from the repository root; a few minutes on 2 cores)::

    KERAS_BACKEND=torch PYTHONPATH=$PWD python spec/make_header_dictionary.py OUT.txt

The dictionary is normative and never changes once committed: this script documents how it
was made (and makes the same bytes with the same keras 3.15.1, torch and zstandard 0.25
versions); it is not rerun by the build.  What it does:

* builds Keras 3 models the samples do not include — a dropout/batch-norm MLP, a 2-D CNN
  with pooling, a functional residual model with ``Add``/``Concatenate``, an
  embedding + LSTM/GRU text model, a 1-D CNN, a separable/depthwise CNN, and a small
  transformer block (``MultiHeadAttention``, ``LayerNormalization``) — compiles each with
  an optimizer and saves it as ``.h5``, ``.weights.h5`` and ``.keras``;
* adds the repository's Keras samples (``samples/*.h5``, ``*.keras``), so the tf.keras
  dialect (``mlp_tfkeras.h5``) is covered too;
* compresses every file with nnzip lossless and with ``--bits 4``, ``--uniform 0.35``,
  ``--prune 0.5 --bits 3``, ``--rank 4`` and ``--float16``, and takes each header's
  compact form (§3.1) as one training text;
* trains a zstd dictionary on those texts with zstd's deterministic COVER trainer (fixed
  ``k``, ``d``, one thread) and keeps the last 12 KiB of its *content* (the segments of
  training text it chose, most useful last — which suits zlib too: the end of a preset
  dictionary is the nearest, cheapest to refer to), dropping zstd's own entropy tables;
* puts the last 20 KiB of dictionary 1 (whole Keras 3 ``model_config`` texts of two generic
  models, which legacy ``.h5`` headers match best) in front, so the file is exactly 32,768
  bytes of ASCII.

Generic models come first in the training texts and the samples last, and the samples make
up less than a third of them, so the dictionary is not tuned to the test set;
``tests/test_header_size.py`` measures it on models that are in neither.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

ROOT = Path(__file__).resolve().parent.parent
SIZE = 32768
#: How much of the dictionary is zstd COVER's content (the rest is dictionary 1's end).
COVER_BYTES = 12288
#: The compress settings each model file is written with (keyword arguments of nnzip.compress).
SETTINGS = [{}, {"bits": 4}, {"uniform": 0.35}, {"prune": 0.5, "bits": 3}, {"rank": 4}, {"float16": True}]


def generic_models():
    """(name, compiled Keras model) for architectures the samples do not include."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(7)

    def mlp():
        return keras.Sequential([keras.Input((32,), name="features"), layers.Dense(64, activation="relu"), layers.BatchNormalization(),
                                 layers.Dropout(0.2), layers.Dense(32, activation="relu"), layers.Dense(3, activation="softmax")], name="tabular")

    def cnn2d():
        return keras.Sequential([keras.Input((16, 16, 3)), layers.Conv2D(8, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                                 layers.Conv2D(16, 3, activation="relu"), layers.GlobalAveragePooling2D(), layers.Dense(5)], name="convnet")

    def residual():
        inputs = keras.Input((24,), name="x")
        hidden = layers.Dense(24, activation="gelu")(inputs)
        added = layers.Add()([inputs, hidden])
        side = layers.Dense(8, activation="tanh")(inputs)
        merged = layers.Concatenate()([added, side])
        return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="score")(merged), name="residual")

    def text():
        return keras.Sequential([keras.Input((12,), dtype="int32"), layers.Embedding(200, 16), layers.LSTM(16, return_sequences=True),
                                 layers.GRU(8), layers.Dense(2, activation="softmax")], name="text_rnn")

    def cnn1d():
        return keras.Sequential([keras.Input((40, 2)), layers.Conv1D(8, 5, activation="relu"), layers.AveragePooling1D(2),
                                 layers.Flatten(), layers.Dense(4)], name="signal")

    def separable():
        return keras.Sequential([keras.Input((12, 12, 4)), layers.DepthwiseConv2D(3), layers.SeparableConv2D(8, 3, activation="relu"),
                                 layers.GlobalMaxPooling2D(), layers.Dense(2)], name="mobile")

    def transformer():
        inputs = keras.Input((6, 16))
        attended = layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
        normed = layers.LayerNormalization()(layers.Add()([inputs, attended]))
        pooled = layers.GlobalAveragePooling1D()(normed)
        return keras.Model(inputs, layers.Dense(3)(pooled), name="encoder")

    for build, loss, optimizer in [(mlp, "sparse_categorical_crossentropy", "adam"), (cnn2d, "mse", "sgd"),
                                   (residual, "binary_crossentropy", "rmsprop"), (text, "sparse_categorical_crossentropy", "adam"),
                                   (cnn1d, "mse", "adamw"), (separable, "mse", "adam"), (transformer, "mse", "adam")]:
        model = build()
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"] if "entropy" in loss else ["mae"])
        yield model.name, model


def _train_once(model) -> None:
    """One optimizer step, so that the saved files hold optimizer state as trained models' do."""
    import numpy as np

    shape = (4,) + tuple(model.input_shape[1:])
    x = np.random.default_rng(0).integers(0, 200, shape).astype(model.inputs[0].dtype) if "int" in str(model.inputs[0].dtype) \
        else np.random.default_rng(0).normal(size=shape).astype("float32")
    y = np.zeros((4,) + tuple(model.output_shape[1:]), "float32")
    if model.loss == "sparse_categorical_crossentropy":
        y = np.zeros((4,), "int64")
    model.fit(x, y, epochs=1, verbose=0)


def model_files(folder: Path) -> list[Path]:
    """The generic models saved as .h5, .weights.h5 and .keras, then the repository's Keras samples."""
    files = []
    for name, model in generic_models():
        _train_once(model)
        for suffix in (".h5", ".weights.h5", ".keras"):
            path = folder / f"{name}{suffix}"
            model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
            files.append(path)
    samples = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in (".h5", ".keras"))
    return files + samples


def training_texts(files: list[Path], folder: Path) -> list[bytes]:
    """The compact header text (§3.1) nnzip writes for every file and setting."""
    import nnzip
    from nnzip.container import _json_text, compact_header, open_container

    texts = []
    for path in files:
        for settings in SETTINGS:
            out = folder / "out.nnz"
            nnzip.compress(str(path), str(out), force=True, **settings)
            with open_container(out) as container:
                texts.append(_json_text(compact_header(container.header)))
    return texts


def build(texts: list[bytes]) -> bytes:
    """32 KiB of ASCII: dictionary 1's last 20 KiB, then the last 12 KiB of zstd COVER's content trained on *texts*.

    Measured (this script's texts, zlib level 9): COVER's content alone beats dictionary 1 on
    ``.weights.h5`` and ``.keras`` headers but loses on legacy ``.h5`` ones, whose
    ``model_config`` text dictionary 1 holds whole; the two halves together beat either.
    """
    import zstandard

    from nnzip.container import header_dictionary

    trained = zstandard.train_dictionary(SIZE + 4096, texts, k=256, d=8, threads=1, steps=0, level=19).as_bytes()
    # A zstd dictionary is magic, id, entropy tables, three repeat offsets (1, 4, 8 as u32) and
    # then the content; the content is the ASCII text after the last repeat-offset triple.
    marker = bytes.fromhex("010000000400000008000000")
    content = bytes(c for c in trained[trained.rindex(marker) + len(marker):] if 32 <= c < 127)
    return header_dictionary()[-(SIZE - COVER_BYTES):] + content[-COVER_BYTES:]


def main(argv: list[str]) -> int:
    """Write the dictionary to argv[0] (default: print its size and Adler-32)."""
    import zlib

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        texts = training_texts(model_files(folder), folder)
    if os.environ.get("NNZIP_DICTIONARY_TEXTS"):  # keep the training texts, to measure other builds
        Path(os.environ["NNZIP_DICTIONARY_TEXTS"]).write_text(json.dumps([t.decode("ascii") for t in texts]))
    dictionary = build(texts)
    assert len(dictionary) == SIZE and dictionary.isascii()
    if argv:
        Path(argv[0]).write_bytes(dictionary)
    print(json.dumps({"texts": len(texts), "bytes": len(dictionary), "adler32": f"0x{zlib.adler32(dictionary):08X}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
