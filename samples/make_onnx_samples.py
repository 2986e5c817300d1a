"""Build the ONNX samples: models the project exports itself, plus data for the shipped ones.

Run from the repository root (needs torch, onnx, onnxruntime, h5py)::

    python samples/make_onnx_samples.py [--ppocr-data DIR [--ppocr-count N]]

* ``mlp.onnx`` and ``cnn.onnx``: the trained Keras samples ``mlp.h5`` and ``cnn.h5``,
  their weights (read with h5py) put into the same architecture in torch and exported
  with ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``, opset 17).
  Input ``x`` (N, 784) float32; output (N, 10) probabilities.  Scored on
  ``fashion-mnist-val.npz`` / ``fashion-mnist-test.npz`` as they are.
* ``tiny_bert.onnx``: a small BERT-like encoder (token + position embeddings, 2
  ``nn.TransformerEncoder`` layers of width 64, 4 heads, mean pooling to a 64-wide
  sentence embedding), seed 0, briefly trained to predict a token-class signal so its
  weights are not those of the initialiser.  Input ``input_ids`` (N, 16) int64, output
  ``embedding`` (N, 64).  Data: ``tiny_bert-calib.npz`` and ``tiny_bert-test.npz``.
* with ``--ppocr-data DIR``: ``ppocr_cls-calib.npz`` / ``ppocr_cls-test.npz``, inputs for
  the shipped ``ppocr_cls.onnx`` (text-line orientation classifier, input ``x``
  (N, 3, 48, W)): strips of two Fashion-MNIST images, upright and turned 180°, normalised
  as PaddleOCR does; ``y`` is the shipped model's own top-1 class, so "accuracy" on them
  is agreement with the original model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17


def keras_kernels(path: Path) -> dict[str, np.ndarray]:
    """Dataset path -> value of every weight in a legacy Keras .h5 file's model_weights group."""
    out = {}
    with h5py.File(path, "r") as h5:
        h5["model_weights"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def export(model: nn.Module, example, path: Path, inputs: list[str], outputs: list[str]) -> None:
    """torch.onnx.export with a dynamic batch dimension (TorchScript exporter: no onnxscript needed)."""
    model.eval()
    axes = {name: {0: "batch"} for name in inputs + outputs}
    torch.onnx.export(model, example, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=OPSET, dynamo=False)


def make_mlp() -> None:
    w = keras_kernels(HERE / "mlp.h5")
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10), nn.Softmax(dim=1))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w["hidden/mlp/hidden/kernel"].T))
        model[0].bias.copy_(torch.from_numpy(w["hidden/mlp/hidden/bias"]))
        model[2].weight.copy_(torch.from_numpy(w["output/mlp/output/kernel"].T))
        model[2].bias.copy_(torch.from_numpy(w["output/mlp/output/bias"]))
    export(model, torch.zeros(2, 784), HERE / "mlp.onnx", ["x"], ["probabilities"])


class KerasCNN(nn.Module):
    """cnn.h5 in torch: Reshape(28,28,1) -> Conv 3x3 same (8) -> BN -> relu -> MaxPool 2 -> Conv 3x3 valid (16) relu -> Flatten -> Dense 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.output = nn.Linear(16 * 12 * 12, 10)

    def forward(self, x):
        h = x.reshape(-1, 1, 28, 28)
        h = torch.max_pool2d(torch.relu(self.bn1(self.conv1(h))), 2)
        h = torch.relu(self.conv2(h))
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # Keras flattens channels last
        return torch.softmax(self.output(h), dim=1)


def make_cnn() -> None:
    w = {name.rsplit("/", 1)[0].split("/")[0] + "/" + name.rsplit("/", 1)[1]: v for name, v in keras_kernels(HERE / "cnn.h5").items()}
    model = KerasCNN()
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            getattr(model, name).weight.copy_(torch.from_numpy(w[f"{name}/kernel"].transpose(3, 2, 0, 1)))
            getattr(model, name).bias.copy_(torch.from_numpy(w[f"{name}/bias"]))
        model.bn1.weight.copy_(torch.from_numpy(w["bn1/gamma"]))
        model.bn1.bias.copy_(torch.from_numpy(w["bn1/beta"]))
        model.bn1.running_mean.copy_(torch.from_numpy(w["bn1/moving_mean"]))
        model.bn1.running_var.copy_(torch.from_numpy(w["bn1/moving_variance"]))
        model.output.weight.copy_(torch.from_numpy(w["output/kernel"].T))
        model.output.bias.copy_(torch.from_numpy(w["output/bias"]))
    export(model, torch.zeros(2, 784), HERE / "cnn.onnx", ["x"], ["probabilities"])


class TinyBert(nn.Module):
    """Token + position embeddings, a 2-layer TransformerEncoder, mean pooling."""

    def __init__(self, vocab: int = 1000, width: int = 64, length: int = 16):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, dim_feedforward=128, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids):
        h = self.encoder(self.tokens(ids) + self.positions)
        return self.norm(h.mean(dim=1))


def token_ids(rng: np.random.Generator, count: int, vocab: int = 1000, length: int = 16) -> np.ndarray:
    """Zipf-like token ids, as in text."""
    return np.minimum(rng.zipf(1.3, size=(count, length)) - 1, vocab - 1).astype(np.int64)


def make_tiny_bert() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TinyBert()
    head = nn.Linear(64, 8)
    # A short training run on a made-up task (the class of the first token) so that the
    # weights carry structure beyond the initialiser's.
    optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    for _ in range(300):
        ids = torch.from_numpy(token_ids(rng, 64))
        loss = nn.functional.cross_entropy(head(model(ids)), ids[:, 0] % 8)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    export(model, torch.from_numpy(token_ids(rng, 2)), HERE / "tiny_bert.onnx", ["input_ids"], ["embedding"])
    np.savez_compressed(HERE / "tiny_bert-calib.npz", input_ids=token_ids(np.random.default_rng(1), 512))
    np.savez_compressed(HERE / "tiny_bert-test.npz", input_ids=token_ids(np.random.default_rng(2), 512))


def ppocr_strips(x: np.ndarray) -> np.ndarray:
    """(N/2, 3, 48, 96) text-line-like strips: 2 images side by side, scaled to 48 px, normalised to [-1, 1]."""
    images = 1.0 - x.reshape(-1, 2, 28, 28)  # dark strokes on a light background
    rows = np.linspace(0, 27, 48).round().astype(int)
    scaled = images[:, :, rows][:, :, :, rows]  # (M, 2, 48, 48)
    strip = scaled.transpose(0, 2, 1, 3).reshape(len(scaled), 48, 96)
    return np.repeat(((strip - 0.5) / 0.5)[:, None], 3, axis=1).astype(np.float32)


def make_ppocr_data(model: Path, folder: Path, count: int = 256) -> list[Path]:
    """Write ppocr_cls-calib.npz (from the val images) and ppocr_cls-test.npz (test images) into *folder*.

    *count* strips per split, half upright and half turned 180 degrees; ``y`` is the
    shipped model's own top-1 class.  Not shipped (about 1 MB each): tests build them.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    written = []
    for split, source in (("calib", "fashion-mnist-val.npz"), ("test", "fashion-mnist-test.npz")):
        x = ppocr_strips(np.load(HERE / source)["x"][:count])
        x = np.concatenate([x, x[:, :, ::-1, ::-1]])  # upright and turned 180 degrees
        y = np.argmax(session.run(None, {"x": x})[0], axis=1)
        written.append(folder / f"ppocr_cls-{split}.npz")
        np.savez_compressed(written[-1], x=x, y=y.astype(np.int64))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppocr-data", type=Path, metavar="DIR", help="also write the ppocr_cls calibration/test data into DIR")
    parser.add_argument("--ppocr-count", type=int, default=256, metavar="N", help="strips per ppocr split (default 256; 400 make ~0.9 MB files)")
    args = parser.parse_args()
    make_mlp()
    make_cnn()
    make_tiny_bert()
    if args.ppocr_data:
        make_ppocr_data(HERE / "ppocr_cls.onnx", args.ppocr_data, args.ppocr_count)


if __name__ == "__main__":
    main()
