"""Paths of the bundled sample models and data (see samples/README.md)."""

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
MODEL_NAMES = ["softmax", "autoencoder", "mlp", "cnn"]
#: Legacy .h5 files: the four Keras 3 samples and one written by tf.keras 2.15 (Keras 2).
LEGACY_FILES = [SAMPLES / f"{name}.h5" for name in MODEL_NAMES] + [SAMPLES / "mlp_tfkeras.h5"]
WEIGHTS_FILES = [SAMPLES / f"{name}.weights.h5" for name in MODEL_NAMES]
ALL_FILES = LEGACY_FILES + WEIGHTS_FILES
TEST_DATA = SAMPLES / "fashion-mnist-test.npz"
VAL_DATA = SAMPLES / "fashion-mnist-val.npz"
