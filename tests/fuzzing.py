"""Structure-aware fuzzing of ``.nnz`` readers, each case in a forked, resource-limited child.

The corpus is real ``.nnz`` files compressed from the samples in every source format
(legacy Keras ``.h5``, ``.weights.h5``, ``.keras``, ``.safetensors``, ``.npz``) and
through lossless and lossy stage chains (svd, csr, kmeans, fft, uniform, cast, delta,
huffman, lzw).  A case takes one file apart (header JSON and blobs), applies one to
three mutations that know what they touch (shapes, dtypes, HDF5 layouts and attribute
records, chain configurations, stage names, code tables and blob bytes, structure
members, subtrees borrowed from other files), and rebuilds a container with valid
CRCs and blob table (``nnz_tools.rebuild``), so the mutation reaches the decoders
rather than the checksums.

Each case runs every read path -- :func:`nnzip.api.read_tensors`, ``inspect`` (the
JSON form and the text table), ``decompress`` to the source's own format (the HDF5
writer above all), and ``verify`` for files with an architecture -- in a child
forked from a warmed parent (imports done, numba compiled), under ``RLIMIT_AS`` and
``RLIMIT_CPU``, with a wall-clock guard in the parent.  The child reports per path:
``ok``, an ``NnzipError``, or a crash (any other exception: type, message,
traceback, where raised); the parent adds ``limit`` (killed by a resource limit or
``MemoryError``), ``hang`` (wall clock) and ``escape`` (a file written outside the
case's directory, or a temporary file left behind).

A case is a pure function of ``(seed, index)`` and the corpus, so ``seed`` and
``index`` reproduce it (``python benchmarks/fuzz.py --seed S --replay I``).
"""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import select
import shutil
import signal
import struct
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from .nnz_tools import blobs_of, rebuild, split_file

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"

#: Memory a case may map (RLIMIT_AS), CPU seconds it may use, wall seconds before "hang".
MEMORY_LIMIT = 2 * 2**30
CPU_SECONDS = 10
WALL_SECONDS = 60

#: Outcome classes, worst first; a case's class is the worst over its read paths.
CLASSES = ("crash", "escape", "hang", "limit", "nnzip", "ok")

# --- the corpus ------------------------------------------------------------------------------

#: Source files: (label, sample or builder, has an architecture verify can run).
SOURCES = ("keras-h5", "keras-weights-h5", "keras-v3", "safetensors", "npz")
#: Stage chains: label -> nnzip.plan.Settings keyword arguments.
CHAINS = {
    "lossless": {},
    "csr-kmeans": {"prune": 0.5, "bits": 4},
    "svd-uniform": {"rank": 4, "uniform": 0.5},
    "fft-cast": {"fft_keep": 0.3, "float16": True},
    "rfft-kmeans": {"fft_keep": 0.2, "fft_transform": "rfft", "fft_select": "low", "bits": 3},
    "energy-cast": {"energy": 0.9, "float16": True},
    "csr-uniform": {"prune": 0.8, "uniform": 0.25},
}


@dataclass
class Seed:
    """One corpus file taken apart: what mutations start from."""

    label: str
    source_format: str
    suffix: str
    verify: bool
    header: dict
    blobs: list[bytes]
    #: The file the .nnz was compressed from (verify compares against it).
    original: Path


def _source_file(label: str, folder: Path) -> tuple[Path, bool]:
    """The model file for source *label* (built from the samples when none is bundled)."""
    from nnzip.formats import read_model

    if label == "keras-h5":
        return SAMPLES / "softmax.h5", True
    if label == "keras-weights-h5":
        return SAMPLES / "softmax.weights.h5", False
    if label == "keras-v3":
        return SAMPLES / "cnn.keras", True
    tensors = {name.replace("/", "."): array for name, array in read_model(SAMPLES / "softmax.h5").tensors.items()}
    # Integer and half tensors too, so dtype-specific paths (delta, bitpack, cast) have inputs.
    tensors["steps"] = np.arange(0, 3000, 3, dtype="<i4").reshape(10, 100)
    tensors["half"] = np.linspace(-1, 1, 300, dtype="<f2").reshape(3, 100)
    if label == "safetensors":
        from safetensors.numpy import save_file

        path = folder / "softmax.safetensors"
        save_file(tensors, str(path), metadata={"format": "np"})
        return path, False
    path = folder / "softmax.npz"
    np.savez_compressed(path, **tensors)
    return path, False


def build_corpus(folder: Path, chains: dict[str, dict] | None = None, pairs: list[tuple[str, str]] | None = None) -> list[Seed]:
    """Compress each source through each chain (or only the (source, chain) *pairs*) into *folder*."""
    from nnzip import api, formats
    from nnzip.pipeline import TensorPlan
    from nnzip.plan import PlanRules, Settings

    chains = chains or CHAINS
    pairs = pairs or [(s, c) for s in SOURCES for c in chains]
    folder.mkdir(parents=True, exist_ok=True)
    seeds = []
    sources = {label: _source_file(label, folder) for label in {s for s, _ in pairs}}
    for label, chain in pairs:
        source, verify = sources[label]
        model = formats.read_model(source)
        # The integer tensor goes through delta explicitly: no Settings field asks for it.
        plans = {name: TensorPlan("dense", {}, [("delta", {})]) for name, a in model.tensors.items() if a.dtype.kind in "iu"}
        target = folder / f"{label}.{chain}.nnz"
        api.compress(source, target, rules=PlanRules(Settings(**chains[chain]), []), plans=plans, force=True)
        data = target.read_bytes()
        header = split_file(data)[0]
        fmt = formats.get_format(header["source"]["format"])
        seeds.append(Seed(f"{label}.{chain}", fmt.id, fmt.suffix, verify, header, blobs_of(data), source))
    return seeds


def small_data(folder: Path, count: int = 32) -> Path:
    """A slice of the validation set for verify (small, so a case stays fast)."""
    with np.load(SAMPLES / "fashion-mnist-val.npz") as npz:
        x, y = npz["x"][:count], npz["y"][:count]
    path = folder / "data.npz"
    np.savez(path, x=x, y=y)
    return path


# --- mutations -------------------------------------------------------------------------------

DTYPES = ["<f4", "<f2", "<f8", ">f4", "|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8", "|b1", "<c8", "|O", "|S4", "<U2",
          "|V8", "float32", "f4", "<f16", "<m8", "<M8[s]", "", "x", "<f4 ", "(2,)<f4", "[('a','<f4')]"]
STAGE_NAMES = ["dense", "byteplanes", "svd", "csr", "fft", "kmeans", "cast", "uniform", "delta", "raw", "bitpack", "huffman",
               "lzw", "zstd", "", "Raw"]
INTS = [0, -1, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 65535, 65536, 2**20, 2**24, 2**31 - 1, 2**31,
        2**32, 2**53, 2**63 - 1, 2**63, 2**64, -2**31, -2**63, 10**30]
ODD = [None, True, False, 0.5, -0.0, 1e308, -1e308, 1.0, "", "x", "1", [], {}, [1], [[1]], {"a": 1}, "\ud800", "é" * 3]
STRINGS = ["", "x", "..", "../escape.bin", "/", "a/b", "a\x00b", "\ud800", "\udcff", "é", "ascii", "utf-8", "latin-1", "string",
           "numeric", "empty", "gzip", "lzf", "szip", "gaps", "bitmap", "largest", "low", "dct", "rfft", "values", "u", "vt", "s",
           "data", "codebook", "x" * 5000, "AAAA", "////", "=="]
#: Keys a reader may meet; added to dicts with odd values (HDF5 layout keys and an attack or two among them).
LAYOUT_KEYS = ["chunks", "maxshape", "compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset", "external",
               "fillvalue", "track_order", "dtype", "data", "shape", "track_times", "fill_time", "allow_unknown_filter"]


def _escape_targets(root: Path, index: int) -> list:
    """Names an ``external=`` layout would write through: in the case's folder or *root*/outside (both
    watched), named after the case *index* so that a write is pinned on the case that made it."""
    outside = root / "outside"
    return ["escape.bin", "../escape.bin", str(outside / f"escape-{index}.bin"), [[str(outside / f"ext-{index}.bin"), 0, 4096]],
            [["escape.bin", 0, 64]], [["../escape.bin", 0, 2**20]]]


def _paths(obj, path=()):
    """Every (path, value) under *obj* except the blob table (rebuilt anyway)."""
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            if path == () and key == "blobs":
                continue
            yield from _paths(value, path + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, path + (index,))


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _set(obj, path, value):
    _get(obj, path[:-1])[path[-1]] = value


class Mutator:
    """Applies structure-aware mutations to one (header, blobs) pair; records what it did."""

    def __init__(self, rng: random.Random, seeds: list[Seed], root: Path, index: int = 0, inflate: int = 2**26):
        self.rng, self.seeds, self.root, self.index = rng, seeds, root, index
        #: Largest element count :meth:`inflate_tensor` gives a tensor (2**26 float32: rule 4.7's 256 MB).
        self.inflate = inflate
        self.done: list[str] = []

    # Value generators ---------------------------------------------------------------------

    def odd_int(self, old=None):
        """An integer near *old* or at an edge, sometimes not an integer at all."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            return rng.choice(INTS) * rng.choice([1, 1, 1, -1])
        if roll < 0.8 and isinstance(old, int) and not isinstance(old, bool):
            return old + rng.choice([-2, -1, 1, 2, old, -old, old * 7, 2**32])
        return rng.choice([float(old) if isinstance(old, int) else 1.0, 1.5, True, False, str(old), None, [old], 1e300])

    def value_for(self, key, old):
        """A replacement for *old* found under *key*, chosen by what the key means."""
        rng = self.rng
        if rng.random() < 0.1:
            return rng.choice(ODD + INTS[:8])
        if key == "dtype":
            return rng.choice(DTYPES)
        if key == "name" and isinstance(old, str) and old in STAGE_NAMES:
            return rng.choice(STAGE_NAMES)
        if key in ("shape", "chunks", "maxshape") and isinstance(old, list):
            return self.edit_dims(old)
        if key in ("length",):
            return rng.choice([None, 0, -1, 1, 2, 255, 2**16, 2**20, 2**20 + 1, 2**31, 1.0, "1", True])
        if key == "encoding":
            return rng.choice(["ascii", "utf-8", "latin-1", "", None, 1, "UTF-8"])
        if key == "kind":
            return rng.choice(["string", "numeric", "empty", "reference", "", None])
        if key == "external_attr":  # a zip member's mode: symlink, directory, setuid bits
            return rng.choice([0xA1FF0000, 0x41ED0010, 0x81ED0000 | 0o4755 << 16, 2**32, -1, 0])
        if key == "compress_type":
            return rng.choice([0, 8, 12, 14, 93, 99, -1, 2**16, "deflate"])
        if key == "date_time":
            return rng.choice([[1979, 12, 31, 0, 0, 0], [2108, 1, 1, 0, 0, 0], [1980, 13, 32, 25, 61, 61], [1980, 1, 1], []])
        if key in ("data", "codebook", "comment") and isinstance(old, str):
            return self.edit_base64(old)
        if isinstance(old, bool):
            return rng.choice([not old, 0, 1, "true", None])
        if isinstance(old, int):
            return self.odd_int(old)
        if isinstance(old, float):
            return rng.choice([0.0, -0.0, -1.0, 1e-300, 1e308, -1e308, 2.0**64, int(old) if abs(old) < 1e18 else 0, "0.5", None])
        if isinstance(old, str):
            return self.edit_string(old)
        if isinstance(old, list):
            return self.edit_list(list(old))
        if isinstance(old, dict):
            return rng.choice([[], None, "x", {}, {**old, rng.choice(LAYOUT_KEYS): self.odd_int()}])
        return rng.choice(ODD)

    def edit_dims(self, dims: list):
        """A shape-like list with a dimension changed, added or removed."""
        rng, dims = self.rng, list(dims)
        roll = rng.random()
        if dims and roll < 0.5:
            dims[rng.randrange(len(dims))] = self.odd_int(dims[0])
        elif roll < 0.7:
            dims.insert(rng.randrange(len(dims) + 1), rng.choice([0, 1, 2, 2**31, 2**40, -1]))
        elif dims and roll < 0.85:
            dims.pop(rng.randrange(len(dims)))
        else:
            dims = rng.choice([[], [0], [2**32, 2**32], [1] * 40, list(reversed(dims)), [d * 2 for d in dims if isinstance(d, int)]])
        return dims

    def edit_base64(self, text: str) -> str:
        """Base64 text with a character changed, truncated, padded badly or replaced."""
        rng = self.rng
        roll = rng.random()
        if text and roll < 0.4:
            at = rng.randrange(len(text))
            return text[:at] + rng.choice("A/+=9z!é ") + text[at + 1:]
        if roll < 0.6:
            return text[: rng.randrange(len(text) + 1)]
        if roll < 0.75:
            import base64
            raw = bytearray(base64.b64decode(text + "=" * (-len(text) % 4), validate=False) or b"\0")
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            return base64.b64encode(bytes(raw)).decode()
        return rng.choice(["", "====", "A", "AAA=", "!!!!", text + text, "AAAA" * 2000])

    def edit_string(self, text: str) -> str:
        """A string swapped for one of the corpus' interesting strings, or edited."""
        rng = self.rng
        if rng.random() < 0.6:
            return rng.choice(STRINGS)
        if text and rng.random() < 0.5:
            at = rng.randrange(len(text))
            return text[:at] + rng.choice(["/", "\ud800", "\x00", "..", "é"]) + text[at + 1:]
        return text * rng.choice([0, 2, 50])

    def edit_list(self, items: list):
        """A list with an element dropped, duplicated, swapped or oddly added."""
        rng = self.rng
        roll = rng.random()
        if items and roll < 0.3:
            items.pop(rng.randrange(len(items)))
        elif items and roll < 0.55:
            at = rng.randrange(len(items))
            items.insert(at, copy.deepcopy(items[at]))
        elif len(items) > 1 and roll < 0.75:
            i, j = rng.sample(range(len(items)), 2)
            items[i], items[j] = items[j], items[i]
        elif roll < 0.9:
            items.append(rng.choice(ODD + INTS[:6]))
        else:
            items = rng.choice([[], None, {}, items * 3])
        return items

    # Mutations ------------------------------------------------------------------------------

    def mutate(self, header: dict, blobs: list[bytes]) -> None:
        """One mutation, its kind chosen by weight; appends its description to :attr:`done`."""
        kinds = [(self.replace_value, 30), (self.tensor_field, 14), (self.chain_config, 14), (self.attribute_record, 8),
                 (self.dataset_layout, 8), (self.drop_or_add_key, 8), (self.borrow_subtree, 6), (self.structure_list, 6),
                 (self.blob_bytes, 18), (self.inflate_tensor, 5)]
        operation = self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        operation(header, blobs)

    def _pick(self, header: dict, want) -> tuple | None:
        candidates = [p for p, v in _paths(header) if p and want(p, v)]
        return self.rng.choice(candidates) if candidates else None

    def _replace(self, header: dict, path: tuple, value) -> None:
        old = _get(header, path)
        _set(header, path, value)
        self.done.append(f"set {'/'.join(map(str, path))}: {_short(old)} -> {_short(value)}")

    def replace_value(self, header, blobs):
        """Any header value (not the blob table) replaced by one its key makes interesting."""
        path = self._pick(header, lambda p, v: not isinstance(v, (dict, list)) or self.rng.random() < 0.2)
        if path:
            self._replace(header, path, self.value_for(path[-1], _get(header, path)))

    def tensor_field(self, header, blobs):
        """A tensor entry's or part's shape, dtype, name or blob index."""
        path = self._pick(header, lambda p, v: p[0] == "tensors" and p[-1] in ("shape", "dtype", "name", "blob") and len(p) in (3, 5))
        if path:
            self._replace(header, path, self.value_for(path[-1], _get(header, path)))

    def chain_config(self, header, blobs):
        """A transform or codec configuration value, key, or stage name."""
        path = self._pick(header, lambda p, v: p[0] == "tensors" and ("configuration" in p or p[-1] == "name" and len(p) > 3))
        if not path:
            return
        value = _get(header, path)
        if isinstance(value, dict) and value and self.rng.random() < 0.5:
            key = self.rng.choice(list(value))
            del value[key]
            self.done.append(f"drop {'/'.join(map(str, path))}/{key}")
        elif isinstance(value, dict):
            key = self.rng.choice(["bits", "rank", "kept", "codes", "index_coding", "index_bits", "zigzag", "symbol_bits", "dtype",
                                   "scale", "offset", "step", "select", "transform", "positions", "codebook", "x"])
            value[key] = self.value_for(key, self.odd_int())
            self.done.append(f"add {'/'.join(map(str, path))}/{key}={_short(value[key])}")
        else:
            self._replace(header, path, self.value_for(path[-1], value))

    def attribute_record(self, header, blobs):
        """An HDF5 attribute record's length, encoding, kind, shape, dtype or values."""
        path = self._pick(header, lambda p, v: isinstance(v, dict) and "kind" in v and "attrs" in p)
        if not path:
            return self.replace_value(header, blobs)
        record = _get(header, path)
        key = self.rng.choice(["length", "encoding", "shape", "kind", "value", "dtype", "data", "name", "shape"])
        old = record.get(key)
        if key == "length" and self.rng.random() < 0.4:  # a bomb: long fixed strings, many of them
            record["length"], record["shape"] = 2**20, [self.rng.choice([1, 64, 4096, 2**16])]
            self.done.append(f"bomb {'/'.join(map(str, path))}: length 2**20 shape {record['shape']}")
            return
        record[key] = self.value_for(key, old) if old is not None else self.rng.choice(ODD + INTS[:10])
        self.done.append(f"set {'/'.join(map(str, path))}/{key}: {_short(old)} -> {_short(record[key])}")

    def dataset_layout(self, header, blobs):
        """A dataset node gains or changes an HDF5 layout (chunks, compression, external, ...)."""
        path = self._pick(header, lambda p, v: isinstance(v, dict) and p[-1] == "dataset")
        if not path:
            return self.replace_value(header, blobs)
        node = _get(header, path)
        layout = node.setdefault("layout", {})
        if not isinstance(layout, dict) or self.rng.random() < 0.05:
            node["layout"] = self.rng.choice(ODD)
            self.done.append(f"layout {'/'.join(map(str, path))} = {_short(node['layout'])}")
            return
        key = self.rng.choice(LAYOUT_KEYS)
        if key == "external":
            value = self.rng.choice(_escape_targets(self.root, self.index))
        elif key in ("chunks", "maxshape"):
            value = self.edit_dims(layout.get(key) or [self.rng.choice([1, 2, 10, 784])])
        elif key == "compression":
            value = self.rng.choice(["gzip", "lzf", "szip", 1, 32001, 99, "x", None, True])
        else:
            value = self.rng.choice([True, False, 0, 1, 9, 10, -1, 2**31, "gzip", None, [1, 2], {"a": 1}])
        layout[key] = value
        self.done.append(f"layout {'/'.join(map(str, path))}/{key} = {_short(value)}")

    def drop_or_add_key(self, header, blobs):
        """A dict anywhere loses a key or gains one (known to some reader) with an odd value."""
        path = self._pick(header, lambda p, v: isinstance(v, dict))
        if path is None:
            return
        node = _get(header, path)
        if node and self.rng.random() < 0.6:
            key = self.rng.choice(list(node))
            del node[key]
            self.done.append(f"drop {'/'.join(map(str, path))}/{key}")
        else:
            key = self.rng.choice(LAYOUT_KEYS + ["stats", "layout", "hdf5", "zip", "metadata", "group", "dataset", "attrs", "children",
                                                 "configuration", "codecs", "transform", "parts", "error", "choice", "x"])
            node[key] = self.rng.choice(ODD + INTS[:6] + [{"error": "x"}, [{"name": "x"}]])
            self.done.append(f"add {'/'.join(map(str, path))}/{key} = {_short(node[key])}")

    def borrow_subtree(self, header, blobs):
        """A transform, codec list, part or structure node replaced by one from another corpus file."""
        donor = self.rng.choice(self.seeds).header
        roles = ("transform", "codecs", "parts", "configuration", "attrs", "layout", "zip", "group", "dataset")
        path = self._pick(header, lambda p, v: isinstance(p[-1], str) and p[-1] in roles)
        if path is None:
            return
        other = [p for p, v in _paths(donor) if p and p[-1] == path[-1]]
        if other:
            choice = self.rng.choice(other)
            _set(header, path, copy.deepcopy(_get(donor, choice)))
            self.done.append(f"borrow {'/'.join(map(str, path))} <- {'/'.join(map(str, choice))}")

    def structure_list(self, header, blobs):
        """A list in the structure or the tensor table (children, members, attrs, parts, codecs) edited."""
        path = self._pick(header, lambda p, v: isinstance(v, list) and p[-1] in ("children", "members", "attrs", "parts", "codecs",
                                                                                "tensors", "value", "dropped", "date_time"))
        if path:
            self._replace(header, path, self.edit_list(list(_get(header, path))))

    def inflate_tensor(self, header, blobs):
        """A tensor's shape made as large as rule 4.7 allows (about 256 MB) while its parts stay small:
        what decoding costs beyond the output (fft buffers, svd products) is then exposed."""
        tensors = header.get("tensors")
        if not isinstance(tensors, list) or not tensors:
            return
        index = self.rng.randrange(len(tensors))
        entry = tensors[index]
        if not isinstance(entry, dict):
            return
        limit = self.rng.choice([self.inflate - 64, self.inflate // 2, self.inflate // 4, self.inflate // 16])
        shape = self.rng.choice([[8192, limit // 8192], [limit // 4096, 4096], [limit], [64, 1024, limit // 65536],
                                 [limit // 9 // 64, 3, 3, 64], [1, limit]])
        old = entry.get("shape")
        entry["shape"] = shape
        for part in entry.get("parts") or []:  # svd factors follow the tensor's outer dimensions
            if isinstance(part, dict) and part.get("name") in ("u", "vt") and isinstance(part.get("shape"), list) and len(part["shape"]) == 2:
                part["shape"][0 if part["name"] == "u" else 1] = shape[0 if part["name"] == "u" else -1]
        self.done.append(f"inflate tensors/{index}/shape: {_short(old)} -> {shape}")

    def blob_bytes(self, header, blobs):
        """Blob bytes: a bit, a byte, the first bytes (code tables), the length, or a swap with another blob."""
        if not blobs:
            return
        rng = self.rng
        index = rng.randrange(len(blobs))
        blob = bytearray(blobs[index])
        roll = rng.random()
        if blob and roll < 0.3:
            at = rng.randrange(min(len(blob), 64)) if rng.random() < 0.5 else rng.randrange(len(blob))
            blob[at] ^= 1 << rng.randrange(8)
            what = f"flip bit at {at}"
        elif blob and roll < 0.5:
            at = rng.randrange(min(len(blob), 16))
            blob[at: at + 4] = struct.pack("<I", rng.choice([0, 1, 255, 2**16, 2**31, 2**32 - 1]))[: len(blob) - at]
            what = f"u32 at {at}"
        elif roll < 0.65:
            cut = rng.randrange(len(blob) + 1)
            del blob[cut:]
            what = f"truncate to {cut}"
        elif roll < 0.75:
            blob += bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 64])))
            what = "extend"
        elif roll < 0.85 and len(blobs) > 1:
            other = rng.randrange(len(blobs))
            blob = bytearray(blobs[other])
            what = f"copy of blob {other}"
        else:
            fill = rng.choice([0, 255])
            blob = bytearray([fill]) * len(blob)
            what = f"fill {fill}"
        blobs[index] = bytes(blob)
        self.done.append(f"blob {index}: {what}")


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Case:
    """One fuzz case: the mutated file's bytes and how it was made."""

    seed: int
    index: int
    base: Seed
    mutations: list[str]
    data: bytes

    def reproducer(self) -> str:
        """How to rerun this case alone."""
        return f"python benchmarks/fuzz.py --seed {self.seed} --replay {self.index}  # {self.base.label}: " + "; ".join(self.mutations)


def make_case(seeds: list[Seed], seed: int, index: int, root: Path, inflate: int = 2**26) -> Case:
    """Case *index* of run *seed*: a deterministic function of both and the corpus (and *inflate*,
    the largest element count a tensor is inflated to: smaller in the test suite, for speed)."""
    rng = random.Random(f"{seed}/{index}")
    base = seeds[rng.randrange(len(seeds))]
    for _ in range(20):  # a mutation can make the header unserialisable: try another
        header, blobs = json.loads(json.dumps(base.header)), list(base.blobs)
        mutator = Mutator(rng, seeds, root, index, inflate)
        for _ in range(1 + int(rng.expovariate(1.2))):
            mutator.mutate(header, blobs)
        try:
            data = _rebuild(header, blobs, compress=rng.random() < 0.2)
        except (TypeError, ValueError, OverflowError, RecursionError):
            continue
        if mutator.done:
            return Case(seed, index, base, mutator.done, data)
    return Case(seed, index, base, ["(no mutation)"], _rebuild(base.header, base.blobs, False))


def _rebuild(header: dict, blobs: list[bytes], compress: bool) -> bytes:
    if not compress:
        return rebuild(header, blobs)
    import io

    from nnzip.container import write_container

    out = io.BytesIO()
    write_container(out, {k: v for k, v in header.items() if k != "blobs"}, blobs, compress_header=True)
    return out.getvalue()


# --- running a case --------------------------------------------------------------------------


@dataclass
class Result:
    """What one case did: its class, the read path it ended in, and crash details."""

    case: Case
    outcome: str
    path: str = ""
    paths: dict = field(default_factory=dict)
    error_type: str = ""
    message: str = ""
    where: str = ""
    traceback: str = ""

    def signature(self) -> str:
        """What distinguishes one bug from another: the class, exception type and where raised."""
        return f"{self.outcome}: {self.error_type or '-'} at {self.where or '-'} ({self.path})"


def read_paths(case_dir: Path, seed: Seed, data: Path, default_output: bool):
    """The read paths of one case as (name, callable)."""
    from nnzip import api, cli

    source = case_dir / "in.nnz"

    def inspect_text():
        cli.format_inspect(api.inspect(source))

    def inspect_json():
        json.dumps(api.inspect(source), indent=2)

    def decompress():
        api.decompress(source, None if default_output else case_dir / "out" / ("model" + seed.suffix))

    paths = [("read_tensors", lambda: api.read_tensors(source)), ("inspect-json", inspect_json), ("inspect-text", inspect_text),
             ("decompress", decompress)]
    if seed.verify:
        paths.append(("verify", lambda: api.verify(source, data, seed.original)))
    return paths


def _where(exc: BaseException) -> str:
    """file:function:line of the innermost nnzip frame (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/nnzip/" in f.filename] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    tail = frame.filename.split("/nnzip/")[-1] if "/nnzip/" in frame.filename else os.path.basename(frame.filename)
    return f"{tail}:{frame.name}:{frame.lineno}"


def _child(runner: Runner, case_dir: Path, seed: Seed, default_output: bool, out_fd: int) -> None:
    """Run the read paths under the runner's limits, one JSON line per event to *out_fd*; never returns."""
    from nnzip.errors import NnzipError

    code = 0
    try:
        resource.setrlimit(resource.RLIMIT_AS, (runner.memory, runner.memory))
        resource.setrlimit(resource.RLIMIT_CPU, (runner.cpu, runner.cpu + 5))
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.chdir(case_dir / "cwd")
        with os.fdopen(out_fd, "w", buffering=1) as out:
            for name, run in runner.paths(case_dir, seed, runner.data, default_output):
                out.write(json.dumps({"start": name}) + "\n")
                event = {"done": name, "outcome": "ok"}
                try:
                    run()
                except NnzipError as exc:
                    event.update(outcome="nnzip", type=type(exc).__name__, message=str(exc)[:300])
                except MemoryError as exc:
                    event.update(outcome="limit", type="MemoryError", where=_where(exc), message=str(exc)[:300])
                except BaseException as exc:  # noqa: BLE001 - every other exception is what we look for
                    event.update(outcome="crash", type=type(exc).__name__, message=str(exc)[:500], where=_where(exc),
                                 traceback="".join(traceback.format_exception(exc))[-4000:])
                out.write(json.dumps(event) + "\n")
    except BaseException:  # noqa: BLE001 - the child must always exit, never return into the parent's loop
        code = 3
    os._exit(code)


def _cpu_seconds(pid: int) -> str:
    """The CPU time a running child has used, from /proc (a hang on a loaded machine vs a busy loop)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{(int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK'):.1f} s CPU"
    except (OSError, IndexError, ValueError):
        return "CPU time unknown"


def _prepare(case: Case, work: Path) -> Path:
    case_dir = work / f"case-{case.index}"
    shutil.rmtree(case_dir, ignore_errors=True)
    (case_dir / "out").mkdir(parents=True)
    (case_dir / "cwd").mkdir()
    (case_dir / "in.nnz").write_bytes(case.data)
    return case_dir


class Runner:
    """Runs cases in forked children, at most *jobs* at a time, from this (warmed) process."""

    def __init__(self, root: Path, seeds: list[Seed], data: Path, jobs: int = 1, paths=read_paths,
                 memory: int = MEMORY_LIMIT, cpu: int = CPU_SECONDS, wall: float = WALL_SECONDS):
        self.root, self.seeds, self.data, self.jobs = root, seeds, data, jobs
        #: ``paths(case_dir, seed, data, default_output) -> [(name, callable)]``: what a case runs.
        self.paths = paths
        self.memory, self.cpu, self.wall = memory, cpu, wall
        self.work = root / "cases"
        self.work.mkdir(parents=True, exist_ok=True)
        (root / "outside").mkdir(exist_ok=True)
        self._state: dict[int, tuple] = {}
        self._watched = self._listing()

    def _listing(self) -> set[str]:
        """Everything under the root but the case folders: where no case may write."""
        found = set()
        for folder, dirs, files in os.walk(self.root):
            if Path(folder) == self.work:
                dirs.clear()
                continue
            found.update(os.path.join(folder, f) for f in files)
        return found

    def warm(self) -> None:
        """Run each corpus file's read paths once in this process: imports and numba compilation happen once."""
        for seed in self.seeds:
            case_dir = _prepare(Case(0, -1, seed, [], _rebuild(seed.header, seed.blobs, False)), self.work)
            for _, run in self.paths(case_dir, seed, self.data, False):
                run()
            shutil.rmtree(case_dir)

    def run(self, cases, keep: bool = False):
        """Yield a :class:`Result` for each case of the iterable *cases* (in completion order)."""
        cases = iter(cases)
        running: dict[int, tuple] = {}
        exhausted = False
        while running or not exhausted:
            while not exhausted and len(running) < self.jobs:
                case = next(cases, None)
                if case is None:
                    exhausted = True
                    break
                running[self._start(case)] = None
            if not running:
                break
            yield from self._collect(running, keep)

    def _start(self, case: Case) -> int:
        case_dir = _prepare(case, self.work)
        default_output = case.index % 2 == 1
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _child(self, case_dir, case.base, default_output, write)
        os.close(write)
        self._state[pid] = (case, case_dir, read, time.monotonic(), bytearray())
        return pid

    def _collect(self, running: dict, keep: bool):
        """Wait until at least one child is finished (or overdue); yield its result."""
        while True:
            fds = {self._state[pid][2]: pid for pid in running}
            now = time.monotonic()
            timeout = max(0.0, min(self._state[pid][3] + self.wall - now for pid in running))
            ready, _, _ = select.select(list(fds), [], [], timeout)
            finished = []
            for fd in ready:
                pid = fds[fd]
                chunk = os.read(fd, 65536)
                if chunk:
                    self._state[pid][4].extend(chunk)
                else:
                    finished.append((pid, False))
            now = time.monotonic()
            finished += [(pid, True) for pid in running if now > self._state[pid][3] + self.wall and (pid, False) not in finished]
            if finished:
                break
        for pid, overdue in finished:
            if overdue:
                self._cpu_note = _cpu_seconds(pid)
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            case, case_dir, fd, _, buffer = self._state.pop(pid)
            os.close(fd)
            del running[pid]
            result = self._result(case, case_dir, buffer, status, overdue)
            if not keep or result.outcome in ("ok", "nnzip"):
                shutil.rmtree(case_dir, ignore_errors=True)
            yield result

    def _result(self, case: Case, case_dir: Path, buffer: bytearray, status: int, overdue: bool) -> Result:
        events = [json.loads(line) for line in buffer.decode("utf-8", "replace").splitlines() if line.strip()]
        paths = {e["done"]: e["outcome"] for e in events if "done" in e}
        started = [e["start"] for e in events if "start" in e]
        unfinished = started[-1] if started and started[-1] not in paths else ""
        worst = min((e for e in events if "done" in e), key=lambda e: CLASSES.index(e["outcome"]), default=None)
        result = Result(case, "ok", paths=paths)
        if worst is not None:
            result = Result(case, worst["outcome"], worst["done"], paths, worst.get("type", ""), worst.get("message", ""),
                            worst.get("where", ""), worst.get("traceback", ""))
        if overdue:
            return Result(case, "hang", unfinished, paths, message=f"over {self.wall} s wall clock ({self._cpu_note})")
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            # SIGXCPU: RLIMIT_CPU; SIGKILL: the kernel (RLIMIT_CPU's hard limit, or out of memory). A
            # segfault or abort is a crash, even when a failed allocation caused it.
            return Result(case, "limit" if name in ("SIGXCPU", "SIGKILL") else "crash", unfinished, paths,
                          error_type=name, message=f"killed by {name}", where="signal")
        if unfinished or os.WEXITSTATUS(status) != 0:
            return Result(case, "crash", unfinished, paths, error_type="ChildExit", message=f"exit status {os.WEXITSTATUS(status)}")
        escape = self._escapes(case_dir, case.index)
        if escape and CLASSES.index("escape") < CLASSES.index(result.outcome):
            return Result(case, "escape", "", paths, error_type="Escape", message=escape, where="filesystem")
        return result

    def _escapes(self, case_dir: Path, index: int) -> str:
        """A description of files case *index* wrote where it must not, or left behind ('' if none).

        Files outside the case folders are pinned on this case when named after it (the mutator's
        escape targets are); any other new file there is reported by the case that noticed it.
        """
        problems = []
        allowed = {"in.nnz", "out", "cwd"}
        for entry in os.listdir(case_dir):
            if entry not in allowed and not entry.startswith("in."):
                problems.append(f"stray {entry}")
        for folder in ("cwd", "out"):
            for entry in os.listdir(case_dir / folder):
                if folder == "cwd" or ".nnzip-" in entry or not entry.startswith("model"):
                    problems.append(f"stray {folder}/{entry}")
        new = self._listing() - self._watched
        mine = {p for p in new if f"-{index}." in os.path.basename(p)}
        others = new - mine if self.jobs == 1 else {p for p in new - mine if "-" not in os.path.basename(p)}
        problems += [f"outside {p}" for p in sorted(mine | others)]
        for path in mine | others:
            os.unlink(path)  # so one escape is reported once
        return "; ".join(problems)


def replay(case: Case, root: Path, seed_data: Path) -> Result:
    """Run one case in this process (no fork, no limits) with tracebacks, for debugging a reproducer."""
    from nnzip.errors import NnzipError

    work = root / "replay"
    work.mkdir(parents=True, exist_ok=True)
    case_dir = _prepare(case, work)
    paths = {}
    for name, run in read_paths(case_dir, case.base, seed_data, case.index % 2 == 1):
        started = time.process_time()
        try:
            run()
            paths[name] = "ok"
        except NnzipError as exc:
            paths[name] = f"nnzip: {exc}"
        except Exception:  # noqa: BLE001 - shown to the developer
            paths[name] = "crash:\n" + traceback.format_exc()
        paths[name] += f"  [{time.process_time() - started:.2f} s CPU, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB]"
    return Result(case, "replay", paths=paths)
