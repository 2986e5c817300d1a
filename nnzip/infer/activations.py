"""Keras activation functions in numpy (float32 in, float32 out).

Definitions follow Keras 3 (``keras.activations``); the one place Keras 2 / tf.keras differs,
``hard_sigmoid`` (Keras 2: ``clip(0.2 x + 0.5, 0, 1)``, Keras 3: ``clip(x / 6 + 0.5, 0, 1)``),
is chosen by the config's flavour.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import special

from nnzip.infer.config import KERAS2

Activation = Callable[[np.ndarray], np.ndarray]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def linear(x: np.ndarray) -> np.ndarray:
    """Identity."""
    return x


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(x, 0, dtype=x.dtype)


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6)."""
    return np.clip(x, 0, 6).astype(x.dtype, copy=False)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.2) -> np.ndarray:
    """x if x >= 0 else negative_slope * x (Keras default slope 0.2)."""
    return np.where(x >= 0, x, x * x.dtype.type(negative_slope))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed stably."""
    return special.expit(x)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(x)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))


def selu(x: np.ndarray) -> np.ndarray:
    """Scaled ELU with the fixed SELU constants."""
    neg = x.dtype.type(_SELU_ALPHA) * np.expm1(np.minimum(x, 0))
    return x.dtype.type(_SELU_SCALE) * np.where(x > 0, x, neg)


def gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    """Gaussian error linear unit; exact (erf) form by default, as ``keras.activations.gelu``."""
    half = x.dtype.type(0.5)
    if approximate:
        inner = x.dtype.type(np.sqrt(2 / np.pi)) * (x + x.dtype.type(0.044715) * x**3)
        return half * x * (1 + np.tanh(inner))
    return half * x * (1 + special.erf(x / x.dtype.type(np.sqrt(2.0))))


def swish(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) (a.k.a. silu)."""
    return x * special.expit(x)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), computed stably."""
    return np.logaddexp(x, x.dtype.type(0))


def softsign(x: np.ndarray) -> np.ndarray:
    """x / (1 + |x|)."""
    return x / (1 + np.abs(x))


def exponential(x: np.ndarray) -> np.ndarray:
    """exp(x)."""
    return np.exp(x)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """Keras 3 hard sigmoid: clip(x / 6 + 0.5, 0, 1)."""
    return np.clip(x / x.dtype.type(6) + x.dtype.type(0.5), 0, 1).astype(x.dtype, copy=False)


def hard_sigmoid_keras2(x: np.ndarray) -> np.ndarray:
    """Keras 2 / tf.keras hard sigmoid: clip(0.2 x + 0.5, 0, 1)."""
    return np.clip(x * x.dtype.type(0.2) + x.dtype.type(0.5), 0, 1).astype(x.dtype, copy=False)


def hard_silu(x: np.ndarray) -> np.ndarray:
    """x * hard_sigmoid(x) (Keras 3 ``hard_silu`` / ``hard_swish``)."""
    return x * hard_sigmoid(x)


def mish(x: np.ndarray) -> np.ndarray:
    """x * tanh(softplus(x))."""
    return x * np.tanh(softplus(x))


def softmax(x: np.ndarray, axis: int | tuple[int, ...] = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along ``axis``, shifted by the max for stability."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x - logsumexp(x) along ``axis``."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    "linear": linear,
    "relu": relu,
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "swish": swish,
    "silu": swish,
    "softplus": softplus,
    "softsign": softsign,
    "exponential": exponential,
    "hard_sigmoid": hard_sigmoid,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "mish": mish,
    "softmax": softmax,
    "log_softmax": log_softmax,
}
"""Activation name (as written in configs) -> numpy function (Keras 3 definitions)."""


def activation_name(spec: Any) -> str | None:
    """Return the activation name of a config value (string or serialized function), else None."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("config"), str):
        return spec["config"]
    if isinstance(spec, dict) and isinstance(spec.get("class_name"), str) and not spec.get("config"):
        return spec["class_name"]
    return None


def get_activation(spec: Any, flavour: str) -> Activation | None:
    """Return the numpy function for an activation config value, or None if unsupported."""
    name = activation_name(spec)
    if name is None:
        return None
    name = {"keras.activations." + k: k for k in ACTIVATIONS}.get(name, name)
    if name == "hard_sigmoid" and flavour == KERAS2:
        return hard_sigmoid_keras2
    return ACTIVATIONS.get(name)
