"""The contract every stage keeps, and the checks stages share.

A *stage* turns one representation of a tensor into another, both ways.  As in
Zarr v3, a stage is stored as ``{"name": <id>, "configuration": {...}}`` and its
decoder uses nothing but that configuration, the stored data and the *spec*
(dtype and shape, or byte size) of what it must give back.

Stage kinds, in the order a chain applies them (see ``spec/container.md``):

===========  ====================  ==============================================
kind         maps                  examples
===========  ====================  ==============================================
TRANSFORM    array -> named parts  dense, svd, csr, fft, byteplanes
ARRAY        array -> array        kmeans, cast, delta
SERIALIZE    array -> bytes        raw, bitpack
BYTES        bytes -> bytes        huffman, lzw
===========  ====================  ==============================================

``encode(data, spec, params)`` returns ``(output, configuration)``: *params* are
what the user or planner asked for (``{"bits": 3}``); the configuration is what
the decoder needs (it may hold learned values such as a k-means codebook).
``decode(data, spec, configuration)`` gets the spec of the stage's *input* (what
it must return) and returns exactly that.  Before a decoder allocates, the
pipeline calls ``check_config(configuration, spec)``, which must reject any
configuration a hostile file could use to make the decoder misbehave.
"""

from __future__ import annotations

import base64
import enum
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from ..dtypes import normalise_dtype, parse_dtype, parse_shape
from ..errors import ConfigError, FormatError

#: Elements a blockwise decoder handles per step: its temporaries stay a few MiB whatever the
#: tensor's size (spec/container.md §4.3).  Results do not depend on it (elementwise work,
#: or transforms whose lines are computed independently).
BLOCK_ELEMENTS = 1 << 18
#: Operations charged per element for one vectorised pass over an array (a numpy pass
#: costs about as much CPU time as 16 multiply-adds of a matrix product; spec §4.3).
PASS_OPS = 16


@dataclass(frozen=True)
class DecodeCost:
    """What one stage's decode may cost beyond its input and output (spec/container.md §4.3).

    ``work`` is the peak bytes of temporaries the decoder allocates besides the array (or
    bytes) it is given and the one it returns; ``ops`` the operations it performs, in units
    of one float64 multiply-add of a matrix product (see :data:`PASS_OPS`).  Both are
    upper bounds computed from the configuration and the specs alone, before decoding.
    """

    work: int = 0
    ops: int = 0


def linear_cost(elements: int, passes: int = 1, work: int = 0) -> DecodeCost:
    """The cost of *passes* vectorised passes over *elements* elements, with *work* bytes of temporaries."""
    return DecodeCost(int(work), int(PASS_OPS * passes * max(int(elements), 1)))


def block_work(bytes_per_element: int) -> int:
    """Temporaries of a blockwise pass that keeps *bytes_per_element* bytes per element of one block."""
    return BLOCK_ELEMENTS * bytes_per_element


class LossyRangeError(ConfigError):
    """A lossy stage cannot represent this tensor: it holds NaN or infinities, or its
    reconstruction would overflow the tensor's dtype.

    Planners catch it to store the tensor losslessly instead; it never reaches a file.
    """


class Kind(enum.Enum):
    """Where a stage sits in a chain; chains apply kinds in this order."""

    TRANSFORM = "transform"
    ARRAY = "array"
    SERIALIZE = "serialize"
    BYTES = "bytes"


@dataclass(frozen=True)
class ArraySpec:
    """The dtype and shape of an array flowing through a chain."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Number of bytes of the array stored densely."""
        return self.size * self.dtype.itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> "ArraySpec":
        """The spec of an existing array."""
        return cls(normalise_dtype(array.dtype), tuple(int(d) for d in array.shape))

    @classmethod
    def make(cls, dtype: Any, shape: Any) -> "ArraySpec":
        """Build a spec from untrusted JSON values, checking them against the caps."""
        return cls(parse_dtype(dtype), parse_shape(shape))

    def to_json(self) -> dict:
        """The spec as the container header stores it."""
        return {"dtype": self.dtype.str, "shape": list(self.shape)}


@dataclass(frozen=True)
class BytesSpec:
    """A byte string of known length flowing through a chain."""

    size: int


class Stage:
    """Base class of all stages; subclasses set :attr:`id`, :attr:`kind` and :attr:`lossless`.

    Stages are stateless: every method is a classmethod, so a stage is named by
    its class and its stored configuration alone.
    """

    #: Stable lowercase identifier stored in files.  A changed byte layout needs a new id.
    id: ClassVar[str]
    #: Place in a chain.
    kind: ClassVar[Kind]
    #: True when decode(encode(x)) == x bit for bit for every input.
    lossless: ClassVar[bool]

    @classmethod
    def encode(cls, data: Any, spec: Any, params: Mapping[str, Any]) -> tuple[Any, dict]:
        """Encode *data* (described by *spec*) with user *params*; return ``(output, configuration)``."""
        raise NotImplementedError

    @classmethod
    def decode(cls, data: Any, spec: Any, config: Mapping[str, Any]) -> Any:
        """Invert :meth:`encode`: return an object matching *spec* (the encoder's input spec)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, config: Mapping[str, Any], spec: Any) -> None:
        """Raise :class:`FormatError` unless *config* is valid for input *spec*.

        Called before :meth:`decode` and before any spec derived from *config* is used.
        """
        raise NotImplementedError

    @classmethod
    def decode_cost(cls, spec: Any, config: Mapping[str, Any], coded: int = 0) -> DecodeCost:
        """Upper bounds on :meth:`decode`'s temporaries and operations (config already checked).

        *spec* is the decoder's output spec (its encoder's input); *coded* the byte size of
        the stored input where only the file knows it (bytes stages: the blob).  The
        default, for stages that decode in one pass with no temporaries, charges one pass
        over the output.
        """
        size = spec.size if isinstance(spec, (ArraySpec, BytesSpec)) else 0
        return linear_cost(size)


class TransformStage(Stage):
    """array -> named parts.  ``encode`` returns ``({part: array}, config)``."""

    kind = Kind.TRANSFORM
    #: True when :meth:`decode` returns a part as the tensor, allocating no output (``dense``).
    output_is_part: ClassVar[bool] = False

    @classmethod
    def part_specs(cls, spec: ArraySpec, config: Mapping[str, Any]) -> dict[str, ArraySpec]:
        """Specs of the parts, in storage order, for a tensor of *spec* (config already checked)."""
        raise NotImplementedError

    @classmethod
    def quantizable_parts(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the float parts that value stages (k-means, cast) may be applied to."""
        return ()


class ArrayStage(Stage):
    """array -> array (same shape)."""

    kind = Kind.ARRAY

    @classmethod
    def output_spec(cls, spec: ArraySpec, config: Mapping[str, Any]) -> ArraySpec:
        """Spec of the encoded array for input *spec* (config already checked)."""
        raise NotImplementedError


class SerializeStage(Stage):
    """array -> bytes of a length known from spec and config."""

    kind = Kind.SERIALIZE

    @classmethod
    def encoded_size(cls, spec: ArraySpec, config: Mapping[str, Any]) -> int:
        """Exact byte length :meth:`encode` produces for *spec* (config already checked)."""
        raise NotImplementedError


class BytesStage(Stage):
    """bytes -> bytes.  ``decode`` gets ``BytesSpec(expected_size)`` and must return exactly that many bytes."""

    kind = Kind.BYTES

    @classmethod
    def max_expansion(cls, config: Mapping[str, Any]) -> float:
        """Upper bound on decoded size / encoded size; the pipeline rejects a blob claiming more."""
        raise NotImplementedError


# --- configuration helpers shared by stages -------------------------------------------


def config_int(config: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    """``config[key]`` as an int in ``lo..hi``, else FormatError naming the key."""
    value = config.get(key) if isinstance(config, Mapping) else None
    if type(value) is not int or not lo <= value <= hi:
        raise FormatError(f"configuration field {key!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def config_choice(config: Mapping[str, Any], key: str, choices: tuple) -> Any:
    """``config[key]`` if it is one of *choices*, else FormatError naming the key."""
    value = config.get(key) if isinstance(config, Mapping) else None
    if value not in choices or type(value) is not type(choices[0]):
        raise FormatError(f"configuration field {key!r} must be one of {list(choices)}, got {value!r}")
    return value


def config_keys(config: Any, allowed: set[str], stage_id: str) -> None:
    """Reject a configuration that is not a JSON object or holds unknown keys."""
    if not isinstance(config, Mapping):
        raise FormatError(f"stage {stage_id!r}: configuration must be a JSON object")
    unknown = set(config) - allowed
    if unknown:
        raise FormatError(f"stage {stage_id!r}: unknown configuration fields {sorted(unknown)}")


def encode_floats(values: np.ndarray, dtype: str = "<f4") -> str:
    """Exact text form of a small float vector for a configuration: base64 of its little-endian bytes."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def decode_floats(text: Any, dtype: str, count_max: int) -> np.ndarray:
    """Inverse of :func:`encode_floats`; rejects non-strings and vectors over *count_max* entries."""
    itemsize = np.dtype(dtype).itemsize
    if not isinstance(text, str) or len(text) > 4 * ((count_max * itemsize + 2) // 3):
        raise FormatError(f"bad float vector in configuration (expected base64 of at most {count_max} values)")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise FormatError(f"bad base64 float vector in configuration: {exc}") from None
    if len(raw) % itemsize:
        raise FormatError("float vector in configuration has a partial element")
    return np.frombuffer(raw, dtype=dtype).copy()
