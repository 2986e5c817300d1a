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

A stage is a frozen dataclass: its fields are the stored configuration, parsed and
checked once by ``Stage.from_config(configuration, spec)`` (which must reject any
configuration a hostile file could use to make the decoder misbehave) and written
back, exactly, by ``to_config()``.  ``encode(data, spec, params)`` (a class method)
returns ``(output, configuration)``: *params* are what the user or planner asked for
(``{"bits": 3}``); the configuration is what the decoder needs (it may hold learned
values such as a k-means codebook).  ``decode(data, spec)`` gets the spec of the
stage's *input* (what it must return) and returns exactly that.

The checks of encoder parameters that stages share (unknown names, integers in a range,
booleans, choices, fractions) are the ``param_*`` helpers at the end of this module, so
every stage words its ConfigError the same way.
"""

from __future__ import annotations

import base64
import enum
import math
import types
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Mapping

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


#: Where the 1.x classmethod form of each configured method took the stored configuration, and
#: its spec argument: ``name -> (index of config, index of spec or None)`` (see :class:`Stage`).
_STORED_FORM = {
    "decode": (2, 1),
    "decode_into": (2, 1),
    "decode_cost": (1, 0),
    "output_spec": (1, 0),
    "part_specs": (1, 0),
    "encoded_size": (1, 0),
    "max_expansion": (0, None),
}


class _Configured:
    """A stage method that reads the instance's typed configuration.

    Called on an instance it is the plain method.  Called on the class it takes the stored
    configuration dict as one more argument, where the 1.x classmethods took it, and parses it
    with :meth:`Stage.from_config` first: ``Huffman.decode(blob, spec, {"symbol_bits": 8})`` is
    ``Huffman.from_config({"symbol_bits": 8}, spec).decode(blob, spec)``.  That keeps tools and
    tests written against the classmethods working; the pipeline only uses instances.
    """

    def __init__(self, function: Callable, config_at: int, spec_at: int | None):
        self.function, self.config_at, self.spec_at = function, config_at, spec_at
        self.__doc__, self.__name__ = function.__doc__, function.__name__

    def __get__(self, instance: Any, owner: type) -> Callable:
        if instance is not None:
            return types.MethodType(self.function, instance)
        function, config_at, spec_at = self.function, self.config_at, self.spec_at

        def with_stored_config(*args: Any, **kwargs: Any) -> Any:
            args = list(args)
            config = kwargs.pop("config") if "config" in kwargs else args.pop(config_at)
            spec = None if spec_at is None else args[spec_at]
            return function(owner.from_config(config, spec), *args, **kwargs)

        with_stored_config.__doc__ = function.__doc__
        return with_stored_config


@dataclass(frozen=True)
class Stage:
    """Base class of all stages: one instance is one stage with its configuration, parsed and checked.

    A subclass is a frozen dataclass whose fields are the stored configuration, typed (as in
    zarr v3's codecs); it sets :attr:`id` and :attr:`kind`, and provides

    * ``from_config(config, spec)`` (class method): the instance for a stored configuration
      dict, after every check a hostile file calls for (FormatError naming the field);
    * ``to_config()``: the dict the file stores, exactly (same keys, order and values);
    * ``encode(data, spec, params)`` (class method): ``(output, stored configuration)``
      from the user's or planner's *params*; ``from_config`` of that configuration is the
      stage that decodes it;
    * ``decode(data, spec)``, ``decode_cost(spec, coded)`` and the kind's own methods
      (``part_specs``, ``output_spec``, ``encoded_size``, ``max_expansion``), reading the
      typed fields.  Each may also be called on the class with the stored dict as an extra
      argument, where the 1.x classmethods took it (:class:`_Configured`).
    """

    #: Stable lowercase identifier stored in files.  A changed byte layout needs a new id.
    id: ClassVar[str]
    #: Place in a chain.
    kind: ClassVar[Kind]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_configured(cls)

    @classmethod
    def from_config(cls, config: Any, spec: Any) -> "Stage":
        """The stage for the stored *config* with input *spec*; FormatError unless it is valid.

        Runs before :meth:`decode` and before any spec derived from the configuration is used.
        """
        raise NotImplementedError

    def to_config(self) -> dict:
        """The configuration as the file stores it: the fields, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def check_config(cls, config: Mapping[str, Any], spec: Any) -> None:
        """Raise :class:`FormatError` unless *config* is valid for input *spec* (:meth:`from_config`)."""
        cls.from_config(config, spec)

    @classmethod
    def encode(cls, data: Any, spec: Any, params: Mapping[str, Any]) -> tuple[Any, dict]:
        """Encode *data* (described by *spec*) with user *params*; return ``(output, configuration)``."""
        raise NotImplementedError

    def decode(self, data: Any, spec: Any) -> Any:
        """Invert :meth:`encode`: return an object matching *spec* (the encoder's input spec)."""
        raise NotImplementedError

    def decode_cost(self, spec: Any, coded: int = 0) -> DecodeCost:
        """Upper bounds on :meth:`decode`'s temporaries and operations.

        *spec* is the decoder's output spec (its encoder's input); *coded* the byte size of
        the stored input where only the file knows it (bytes stages: the blob).  The
        default, for stages that decode in one pass with no temporaries, charges one pass
        over the output.
        """
        size = spec.size if isinstance(spec, (ArraySpec, BytesSpec)) else 0
        return linear_cost(size)


def _wrap_configured(cls: type) -> None:
    """Make the configured methods *cls* defines callable in both forms (:class:`_Configured`)."""
    for name, (config_at, spec_at) in _STORED_FORM.items():
        function = cls.__dict__.get(name)
        if isinstance(function, types.FunctionType):
            setattr(cls, name, _Configured(function, config_at, spec_at))


_wrap_configured(Stage)


@dataclass(frozen=True)
class TransformStage(Stage):
    """array -> named parts.  ``encode`` returns ``({part: array}, config)``."""

    kind = Kind.TRANSFORM
    #: True when :meth:`decode` returns a part as the tensor, allocating no output (``dense``).
    output_is_part: ClassVar[bool] = False
    #: True when decoding the parts, stored exactly, rebuilds the tensor bit for bit (``dense``,
    #: ``byteplanes``): the encoder then needs no decode pass for its statistics.
    lossless: ClassVar[bool] = False
    #: Names of the float parts value stages (k-means, cast) may be applied to.
    quantizable: ClassVar[tuple[str, ...]] = ()

    def part_specs(self, spec: ArraySpec) -> dict[str, ArraySpec]:
        """Specs of the parts, in storage order, for a tensor of *spec*."""
        raise NotImplementedError

    @classmethod
    def quantizable_parts(cls, config: Any = None) -> tuple[str, ...]:
        """Names of the float parts that value stages may be applied to: :attr:`quantizable`,
        the same for every configuration (*config* is accepted for the 1.x callers)."""
        return cls.quantizable


@dataclass(frozen=True)
class ArrayStage(Stage):
    """array -> array (same shape)."""

    kind = Kind.ARRAY

    def output_spec(self, spec: ArraySpec) -> ArraySpec:
        """Spec of the encoded array for input *spec*."""
        raise NotImplementedError


@dataclass(frozen=True)
class SerializeStage(Stage):
    """array -> bytes of a length known from spec and config."""

    kind = Kind.SERIALIZE

    def encoded_size(self, spec: ArraySpec) -> int:
        """Exact byte length :meth:`encode` produces for *spec*."""
        raise NotImplementedError


@dataclass(frozen=True)
class BytesStage(Stage):
    """bytes -> bytes.  ``decode`` gets ``BytesSpec(expected_size)`` and must return exactly that many bytes."""

    kind = Kind.BYTES

    def max_expansion(self) -> float:
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


# --- encoder parameters: the checks stages share --------------------------------------------

#: Default of a parameter that must be given.
REQUIRED = object()


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool (JSON numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def param_error(stage_id: str, label: str, expected: str, value: Any) -> ConfigError:
    """The one wording of a bad parameter: ``"<stage>: <label> must be <expected>, got <value>"``."""
    return ConfigError(f"{stage_id}: {label} must be {expected}, got {value!r}")


def check_params(stage_id: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    """Reject unknown encoder parameters with ConfigError (catches typos such as ``rnak``)."""
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(f"{stage_id}: unknown parameters {sorted(unknown)} (known: {sorted(allowed)})")


def exactly_one(stage_id: str, params: Mapping[str, Any], first: str, second: str, note: str = "") -> None:
    """ConfigError unless exactly one of the parameters *first* and *second* is given."""
    if (first in params) == (second in params):
        raise ConfigError(f"{stage_id}: give exactly one of the parameters {first!r} and {second!r}{note}")


def param_int(stage_id: str, params: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = REQUIRED,
              expected: str | None = None, label: str | None = None) -> Any:
    """``params[key]`` (or *default* when absent) as an int in ``lo..hi``, else ConfigError.

    With a *default* of None, an absent or None value is returned as None (the stage then
    chooses); with :data:`REQUIRED`, an absent one is refused as ``got None``.  *expected* and
    *label* reword the message (``"an integer in lo..hi"``, ``'key'``) where a stage says more.
    """
    value = params.get(key, None if default is REQUIRED else default)
    if value is None and default is None:
        return None
    if type(value) is not int or not lo <= value <= hi:
        raise param_error(stage_id, label or repr(key), expected or f"an integer in {lo}..{hi}", value)
    return value


def param_bool(stage_id: str, params: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``params[key]`` (or *default* when absent; None is returned as it is) as a bool, else ConfigError."""
    value = params.get(key, default)
    if value is None and default is None:
        return None
    if type(value) is not bool:
        raise param_error(stage_id, repr(key), "true or false", value)
    return value


def param_choice(stage_id: str, params: Mapping[str, Any], key: str, choices: tuple, default: Any,
                 expected: str | None = None, label: str | None = None) -> Any:
    """``params[key]`` (or *default* when absent) if it is one of *choices* (of their type), else ConfigError."""
    value = params.get(key, default)
    if type(value) is not type(choices[0]) or value not in choices:
        raise param_error(stage_id, label or repr(key), expected or f"one of {list(choices)}", value)
    return value


def param_number(stage_id: str, params: Mapping[str, Any], key: str, default: Any, valid: Callable[[float], bool],
                 expected: str, label: str | None = None) -> Any:
    """``params[key]`` (or *default*) if it is a number for which *valid* holds, else ConfigError."""
    value = params.get(key, default)
    if not is_number(value) or not valid(value):
        raise param_error(stage_id, label or repr(key), expected, value)
    return value


def param_fraction(stage_id: str, params: Mapping[str, Any], key: str, lo_open: bool = False) -> float:
    """``params[key]`` as a float in ``[0, 1]`` (``(0, 1]`` when *lo_open*), else ConfigError."""
    label = f"parameter {key!r}"
    value = param_number(stage_id, params, key, None, math.isfinite, "a number", label)
    interval = "(0, 1]" if lo_open else "[0, 1]"
    param_number(stage_id, params, key, None, lambda v: 0.0 < v <= 1.0 if lo_open else 0.0 <= v <= 1.0, f"in {interval}", label)
    return float(value)
