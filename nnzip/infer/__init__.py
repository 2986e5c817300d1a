"""Numpy inference for Keras models described by their ``model_config`` JSON.

Used to check that compressed weights still give the same predictions without needing
Keras or TensorFlow. Only numpy and scipy are used. Supports Keras 2 / tf.keras and Keras 3
configs of Sequential and Functional models (also nested) built from common layers
(Dense, Conv1D/2D, depthwise and separable convolutions, pooling, normalization,
activations, merges, reshaping, padding); channels_last only.

>>> model = build_model(json.loads(h5.attrs["model_config"]), weights)  # doctest: +SKIP
>>> model.predict(x)                                                  # doctest: +SKIP
"""

from nnzip.infer.errors import ModelWeightsError, UnsupportedModelError
from nnzip.infer.model import NumpyModel, build_model

__all__ = ["ModelWeightsError", "NumpyModel", "UnsupportedModelError", "build_model"]
