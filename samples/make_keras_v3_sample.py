"""Write the Keras 3 ``.keras`` samples ``mlp.keras`` and ``cnn.keras`` from ``mlp.h5`` and ``cnn.h5``.

Run from the repository root (a few seconds):

    KERAS_BACKEND=torch python samples/make_keras_v3_sample.py

Each legacy ``.h5`` sample is loaded with ``keras.models.load_model`` (compiled,
so the archive's ``model.weights.h5`` has an ``optimizer`` group) and saved with
``model.save("<name>.keras")``.  The script then reloads every archive and checks
that its predictions on the test images equal the ``.h5`` model's bit for bit.

Two runs give the same weights and JSON but not the same archive bytes: Keras
stamps ``metadata.json`` with ``date_saved`` and the ``model.weights.h5`` zip
member with the current time (samples/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402  (the backend must be chosen before the import)
import numpy as np  # noqa: E402

SAMPLES = Path(__file__).resolve().parent
NAMES = ("mlp", "cnn")


def convert(name: str, x: np.ndarray) -> Path:
    """Save ``<name>.h5`` as ``<name>.keras`` and check the two predict the same."""
    model = keras.models.load_model(SAMPLES / f"{name}.h5")
    target = SAMPLES / f"{name}.keras"
    model.save(target)
    expected = model.predict(x, verbose=0)
    got = keras.saving.load_model(target).predict(x, verbose=0)
    if not np.array_equal(expected, got):
        raise SystemExit(f"{target.name}: predictions differ from {name}.h5")
    return target


def main() -> None:
    """Convert every sample and report the sizes."""
    with np.load(SAMPLES / "fashion-mnist-test.npz", allow_pickle=False) as data:
        x = data["x"][:512]
    for name in NAMES:
        path = convert(name, x)
        print(f"{path.name}: {path.stat().st_size} bytes, predictions identical to {name}.h5")


if __name__ == "__main__":
    main()
