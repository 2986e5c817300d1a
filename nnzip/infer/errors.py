"""Errors raised while turning a Keras model config and its weights into a numpy model."""

from nnzip.errors import InputError


class UnsupportedModelError(InputError, ValueError):
    """The model config uses a layer class or option numpy inference does not implement.

    Also raised for configs that are malformed (dangling references, missing shapes).
    The message is one line and names the layer class or option and the layer name.
    """


class ModelWeightsError(InputError, ValueError):
    """The weights given for a layer do not match what its config expects (count or shape)."""


class DataShapeError(InputError, ValueError):
    """The data given to a model does not fit its inputs (count, shape, batch), or a layer
    fails on the shapes it receives; the message is one line naming the input or layer."""
