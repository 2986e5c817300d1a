"""An ``--eval`` hook for the tests: scores a weights-only MLP file by running it by hand.

``nnzip verify --eval tests.eval_hook_example:accuracy`` imports it (the repository root is
on sys.path under pytest).  It knows the sample MLP's Keras 3 ``.weights.h5`` layout:
``layers/dense/vars/{0,1}`` (hidden) and ``layers/dense_1/vars/{0,1}`` (output).
"""

import numpy as np


def accuracy(weights, x, y):
    """Top-1 accuracy of the 784-256-10 MLP with these weights (higher is better)."""
    hidden = np.maximum(x @ weights["layers/dense/vars/0"] + weights["layers/dense/vars/1"], 0)
    logits = hidden @ weights["layers/dense_1/vars/0"] + weights["layers/dense_1/vars/1"]
    return float(np.mean(np.argmax(logits, axis=1) == y))


def weight_norm(weights):
    """A data-free score (the hook form that takes only the weights): the weights' squared norm."""
    return float(sum(np.sum(w.astype(np.float64) ** 2) for w in weights.values()))
