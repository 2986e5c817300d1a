"""Runs stage chains on one tensor, both ways, and checks that a chain is valid.

A tensor's encoding (stored as one entry of the header's ``tensors`` list) is::

    transform (array -> named parts)
      for each part:  ARRAY* -> SERIALIZE -> BYTES?   -> one blob

The rules a chain must satisfy are numbered in ``spec/container.md`` §4.2 and
each message below names its rule, so a user (or a test) knows which one broke.

Both ways the pipeline works with stage *instances*: each stored configuration is parsed
once (``Stage.from_config``), a checked entry (:class:`CheckedTensor`) holds the instances,
and what an encoded entry stores is each instance's ``to_config()``.  Which serializer and
bytes stage a part gets is the encoder's policy, :mod:`nnzip.stages.policy`.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from .errors import ConfigError, FormatError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .stages import ArraySpec, BytesSpec, Kind, get_stage
from .stages.base import BLOCK_ELEMENTS, LossyRangeError, Stage, TransformStage, linear_cost
from .stages.policy import best_tail, chunk_bounds, map_in_order

#: Slack allowed over a bytes stage's ``max_expansion`` bound, for its own header bytes.
EXPANSION_SLACK = 64
#: Serialized bytes per independent chunk (spec/container.md §4.4): a part whose serialized
#: bytes exceed it is entropy-coded in chunks of this many bytes (the last one shorter), each
#: its own blob with its own CRC-32, so that decode can run chunk by chunk, in parallel.  4 MiB
#: keeps a 16-bit Huffman table (at most 32 KiB) below 1% of a chunk.  A pure constant: chunk
#: boundaries never depend on the number of workers.
CHUNK_SIZE = 4 * 2**20


def stage_ref(stage: Stage) -> dict:
    """A stage as a header stores it: ``{"name": id, "configuration": stage.to_config()}``."""
    return {"name": stage.id, "configuration": stage.to_config()}


@dataclass
class TensorPlan:
    """How to encode one tensor: a transform and the value stages for its float parts."""

    transform: str = "dense"
    transform_params: dict = field(default_factory=dict)
    #: ARRAY stages applied, in order, to every part the transform calls quantizable.
    value_stages: list[tuple[str, dict]] = field(default_factory=list)
    #: Try huffman/lzw on every blob and keep the smallest (raw bytes otherwise).
    entropy: bool = True
    #: The tensor's real element type when it is carried as raw bits (``"bfloat16"`` in ``<u2``)
    #: and the chain runs on its exact float32 widening (spec/container.md §4.5, format 1.2).
    widen: str | None = None


@dataclass
class EncodedTensor:
    """A header entry for one tensor and its blobs, in part order."""

    entry: dict
    #: The blobs of every part in part order (a chunked part has one per chunk).
    blobs: list[bytes]
    #: The tensor as the decoder will rebuild it (for error statistics).
    reconstruction: np.ndarray


# --- encoding ---------------------------------------------------------------------------


def encode_tensor(name: str, array: np.ndarray, plan: TensorPlan, executor: Executor | None = None) -> EncodedTensor:
    """Encode *array* by *plan*; parts reference blobs by position in ``EncodedTensor.blobs``.

    A chunked part's ``blob`` is the position of its first chunk, the others follow it.
    *executor* codes the chunks of large parts in parallel; the bytes never depend on it.
    """
    stored_spec = ArraySpec.of(array)
    if plan.widen is not None:
        check_widen(plan.widen, stored_spec, f"tensor {name!r}")
        array = widen_values(array, plan.widen)  # exact: the chain sees the values, not their bits
    spec = ArraySpec.of(array)
    transform_class = get_stage(plan.transform)
    parts, transform_config = transform_class.encode(array, spec, plan.transform_params)
    transform = transform_class.from_config(transform_config, spec)  # the one parse: a reader's check of what is written
    quantizable = set(transform.quantizable_parts())
    # A lossless transform whose parts are stored exactly rebuilds the very array: no need to
    # decode it again for the statistics, nor to keep the parts once coded (bounded memory).
    exact = transform.lossless and not (plan.value_stages and quantizable)
    entries, blobs, rebuilt_parts = [], [], {}
    for part_name, part_spec in transform.part_specs(spec).items():
        stages = plan.value_stages if part_name in quantizable else []
        part_entry, part_blobs, rebuilt = _encode_part(parts.pop(part_name), part_spec, stages, plan.entropy, executor)
        part_entry = {"name": part_name, **part_entry, "blob": len(blobs)}
        entries.append(part_entry)
        blobs.extend(part_blobs)
        if not exact:
            rebuilt_parts[part_name] = rebuilt
        del rebuilt
    if exact:
        # (its round-trip tests say so): the input is the reconstruction, with no decode pass and no copy.
        reconstruction = np.asarray(array).reshape(spec.shape)
    else:
        reconstruction = np.asarray(transform.decode(rebuilt_parts, spec)).astype(spec.dtype, copy=False)
        del rebuilt_parts
    if spec.dtype.kind == "f" and not transform.lossless and not _all_finite(reconstruction):
        # Values near the dtype's maximum can round past it; such a tensor is stored losslessly.
        raise LossyRangeError(f"{plan.transform}: tensor {name!r} would decode to infinity or NaN in {spec.dtype}; store it losslessly")
    entry = {"name": name, **stored_spec.to_json()}
    if plan.widen is not None:
        reconstruction = narrow_values(reconstruction, plan.widen)
        flat = reconstruction.reshape(-1)  # widened block by block: float32 temporaries of one block, not of the tensor
        if not all(_all_finite(widen_values(flat[start:start + BLOCK_ELEMENTS], plan.widen)) for start in range(0, flat.size, BLOCK_ELEMENTS)):
            # float32 values just below the largest finite one can round up to infinity in bfloat16
            raise LossyRangeError(f"{plan.transform}: tensor {name!r} would decode to infinity or NaN in {plan.widen}; store it losslessly")
        entry["widen"] = plan.widen
    entry.update({"transform": stage_ref(transform), "parts": entries})
    return EncodedTensor(entry, blobs, reconstruction.reshape(spec.shape))


def _all_finite(values: np.ndarray) -> bool:
    """Whether a float array holds no NaN or infinity, from its smallest and largest value (a NaN
    makes both NaN, an infinity is one of them): two passes, no tensor-sized boolean temporary."""
    return not values.size or bool(np.isfinite(values.min()) and np.isfinite(values.max()))


# --- widened tensors (format 1.2) ---------------------------------------------------------

#: ``widen`` value -> (the tensor dtype that carries its bit patterns, the dtype its chain runs on).
WIDEN_TYPES = {"bfloat16": (np.dtype("<u2"), np.dtype("<f4"))}


def check_widen(widen: Any, spec: ArraySpec, where: str) -> ArraySpec:
    """Rule 4.11: *widen* names a known element type carried in *spec*'s dtype; returns the chain's spec."""
    if type(widen) is not str or widen not in WIDEN_TYPES:
        raise FormatError(f"rule 4.11: {where}: widen must be one of {list(WIDEN_TYPES)}, not {widen!r}")
    carrier, compute = WIDEN_TYPES[widen]
    if spec.dtype != carrier:
        raise FormatError(f"rule 4.11: {where}: widen {widen!r} needs dtype {carrier.str!r}, the tensor is {spec.dtype.str!r}")
    return ArraySpec(compute, spec.shape)


def widen_values(bits: np.ndarray, widen: str) -> np.ndarray:
    """The exact float32 values of *widen* bit patterns (bfloat16: the top half of a float32)."""
    from .stages.cast import from_bfloat16

    return from_bfloat16(bits)


def narrow_values(values: np.ndarray, widen: str) -> np.ndarray:
    """float32 *values* rounded to *widen* bit patterns: bfloat16 by round to nearest, ties to even (§4.5).

    In blocks of :data:`~nnzip.stages.base.BLOCK_ELEMENTS`, so the uint32 temporaries stay a
    few MiB whatever the tensor's size (the decode cost §4.5 declares).
    """
    from .stages.cast import to_bfloat16

    flat = np.asarray(values, dtype="<f4").reshape(-1)
    out = np.empty(flat.size, dtype="<u2")
    for start in range(0, flat.size, BLOCK_ELEMENTS):
        out[start:start + BLOCK_ELEMENTS] = to_bfloat16(flat[start:start + BLOCK_ELEMENTS])
    return out.reshape(np.shape(values))


def logical_values(entry: Mapping, array: np.ndarray) -> np.ndarray:
    """*array* (a tensor as stored under *entry*) as the numbers it means: bfloat16 bits widened, others as they are."""
    widen = entry.get("widen")
    return widen_values(array, widen) if widen in WIDEN_TYPES else array


def _encode_part(values: np.ndarray, spec: ArraySpec, value_stages, entropy: bool, executor: Executor | None = None) -> tuple[dict, list[bytes], np.ndarray]:
    """Run ARRAY stages, then the best serializer + bytes stage; return (entry, blobs, rebuilt part)."""
    values = np.asarray(values, dtype=spec.dtype).reshape(spec.shape)
    codecs, applied = [], []
    current, current_spec = values, spec
    for stage_id, params in value_stages:
        stage_class = get_stage(stage_id)
        if stage_class.kind is not Kind.ARRAY:
            raise ConfigError(f"rule 4.3.2: value stage {stage_id!r} is a {stage_class.kind.value} stage, not an array stage")
        encoded, config = stage_class.encode(current, current_spec, params)
        stage = stage_class.from_config(config, current_spec)
        codecs.append(stage_ref(stage))
        applied.append(Step(stage, current_spec))
        current, current_spec = encoded, stage.output_spec(current_spec)
    tail, blobs, chunk_size = best_tail(current, current_spec, entropy, CHUNK_SIZE, executor)
    rebuilt = current
    for stage, input_spec in reversed(applied):
        rebuilt = stage.decode(rebuilt, input_spec)
    entry = {**spec.to_json(), "codecs": codecs + tail}
    if chunk_size is not None:
        entry["chunk_size"] = chunk_size
    return entry, blobs, rebuilt


def serialized_entropy(codecs: list[dict], serialized: bytes) -> float:
    """Order-0 Shannon bound, in bytes, of a part's serialized bytes (for ``inspect``).

    Over the packed b-bit codes when the serializer is ``bitpack`` (b ≤ 16), else over
    bytes: what an ideal order-0 coder of those symbols would need.
    """
    from .stages.entropy import entropy_bound, symbol_counts

    serializer = next(c for c in codecs if get_stage(c["name"]).kind is Kind.SERIALIZE)
    bits = serializer["configuration"].get("bits", 8) if serializer["name"] == "bitpack" else 8
    width = bits if 1 <= bits <= 16 else 8
    return entropy_bound(symbol_counts(serialized, width)) / 8


def serialized_bytes(part: dict, blobs: list[bytes]) -> bytes:
    """A part's serialized bytes: its blobs (one per chunk) with the bytes stage (if any) undone; the entry must be checked."""
    chain = _check_codecs(part["codecs"], _spec(part, "part"), "part")
    stage, input_spec = chain[-1]
    if stage.kind is not Kind.BYTES:
        return b"".join(blobs)
    bounds = chunk_bounds(input_spec.size, part.get("chunk_size"))
    return b"".join(stage.decode(blob, BytesSpec(end - start)) for blob, (start, end) in zip(blobs, bounds))


def part_blobs(part: dict) -> list[int]:
    """The blob indexes of a checked part: ``blob``, then one more per further chunk (§4.4)."""
    chunk_size = part.get("chunk_size")
    if chunk_size is None:
        return [part["blob"]]
    size = serialized_size(_check_codecs(part["codecs"], _spec(part, "part"), "part"))
    return list(range(part["blob"], part["blob"] + -(-size // chunk_size)))


# --- decoding ---------------------------------------------------------------------------


class Step(NamedTuple):
    """One stage of a checked part chain and the spec of its input (what its decode returns)."""

    stage: Stage
    spec: ArraySpec | BytesSpec


class CheckedPart(NamedTuple):
    """One part of a checked tensor entry, resolved for decoding."""

    name: str
    #: Blob indexes, one per chunk.
    blobs: list[int]
    #: The part's chain, first stage first.
    chain: list[Step]
    #: The part's ``chunk_size`` (§4.4), or None for one blob.
    chunk_size: int | None = None


@dataclass
class CheckedTensor:
    """A tensor entry that passed every static rule, resolved for decoding: it holds stage instances,
    each built once from its stored configuration (:meth:`~nnzip.stages.base.Stage.from_config`)."""

    name: str
    spec: ArraySpec
    transform: TransformStage
    parts: list[CheckedPart]
    #: Rule 4.8.1: peak bytes its decode holds beyond the tensor's own output.
    work: int = 0
    #: Rule 4.8.2: operations its decode costs.
    ops: int = 0
    #: The entry's ``widen`` (§4.5), or None; with it the transform rebuilds ``chain_spec``, then narrows.
    widen: str | None = None
    #: What the transform rebuilds: ``spec`` itself, or its float32 widening.
    chain_spec: ArraySpec | None = None


def check_tensor_entry(entry: Any, blob_sizes: list[int], limits: DecodeLimits = DEFAULT_LIMITS) -> CheckedTensor:
    """Validate one header tensor entry (spec/container.md §4.2) without reading any blob.

    *limits* bounds the working memory and arithmetic its decode may need (§4.3).
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise FormatError("rule 4.1: a tensor entry must be an object with a string name")
    name = entry["name"]
    output_spec = _spec(entry, f"tensor {name!r}")
    widen = entry.get("widen")
    # Rule 4.11: a widened tensor's transform and parts describe its float32 values (§4.5).
    spec = check_widen(widen, output_spec, f"tensor {name!r}") if "widen" in entry else output_spec
    transform_ref = entry.get("transform")
    transform_class = get_stage(_stage_name(transform_ref, name))
    if transform_class.kind is not Kind.TRANSFORM:
        raise FormatError(f"rule 4.3.1: tensor {name!r}: {transform_class.id!r} is not a transform stage")
    transform = transform_class.from_config(transform_ref["configuration"], spec)
    expected = transform.part_specs(spec)
    parts = entry.get("parts")
    if not isinstance(parts, list) or [p.get("name") if isinstance(p, dict) else None for p in parts] != list(expected):
        raise FormatError(f"rule 4.2: tensor {name!r}: parts must be exactly {list(expected)} in that order")
    checked = []
    for part in parts:
        where = f"tensor {name!r} part {part['name']!r}"
        part_spec = _spec(part, where)
        if part_spec != expected[part["name"]]:
            raise FormatError(f"rule 4.2: {where} is {part_spec.to_json()}, its transform makes {expected[part['name']].to_json()}")
        chain = _check_codecs(part.get("codecs"), part_spec, where)
        blobs = _check_chunks(part, chain, len(blob_sizes), where)
        for index, (start, end) in zip(blobs, chunk_bounds(serialized_size(chain), part.get("chunk_size"))):
            _check_blob_size(chain, blob_sizes[index], where, end - start)
        checked.append(CheckedPart(part["name"], blobs, chain, part.get("chunk_size")))
    work, ops = decode_cost(spec, transform, checked, blob_sizes)
    if "widen" in entry:
        work, ops = widened_cost(output_spec, work, ops)
    cap = limits.work_cap(spec.nbytes)  # a widened tensor's cap is its float32 tensor's (§4.5)
    if work > cap:
        raise FormatError(
            f"rule 4.8.1: tensor {name!r}: decoding needs {work:,} bytes of working memory "
            f"beyond its {output_spec.nbytes:,}-byte output (cap {cap:,})"
        )
    _check_ops(ops, blob_sizes, limits, f"tensor {name!r}")
    return CheckedTensor(name, output_spec, transform, checked, work, ops, widen if "widen" in entry else None, spec)


def widened_cost(spec: ArraySpec, work: int, ops: int) -> tuple[int, int]:
    """``(work, ops)`` of a widened tensor (§4.5) from those of its float32 chain: the float32 tensor
    (4 bytes an element) is a temporary, and narrowing it holds it, the output and 12 bytes an
    element of one block (uint32 temporaries), in three passes."""
    n = spec.size
    peak = max(work + 4 * n, 4 * n + spec.nbytes + 12 * min(n, BLOCK_ELEMENTS))
    return peak - spec.nbytes, ops + linear_cost(n, passes=3).ops


def decode_cost(spec: ArraySpec, transform: TransformStage, parts: list[CheckedPart], blob_sizes: list[int]) -> tuple[int, int]:
    """``(work, ops)`` of decoding one checked tensor (spec/container.md §4.3, rules 4.8.1, 4.8.2).

    Decoding holds, at each step of a part's chain, the stage's stored input, its output and
    its declared temporaries, on top of the parts already decoded; the transform then holds
    every part, its temporaries and the tensor.  ``work`` is the largest of these totals
    minus the tensor's own bytes (which rule 4.7 counts); ``ops`` the sum of every stage's.
    """
    held = peak = ops = 0
    for part in parts:
        # A chunked part counts as one blob of its chunks' total: an upper bound of chunk-wise decoding.
        stored = sum(blob_sizes[blob] for blob in part.blobs)
        part_peak = 0
        for stage, input_spec in reversed(part.chain):
            decoded = _nbytes(input_spec)
            cost = stage.decode_cost(input_spec, stored)
            part_peak = max(part_peak, stored + decoded + cost.work)
            ops += cost.ops
            stored = decoded
        peak = max(peak, held + part_peak)
        held += stored
    cost = transform.decode_cost(spec)
    ops += cost.ops
    output = 0 if transform.output_is_part else spec.nbytes
    peak = max(peak, held + cost.work + output)
    return max(0, peak - spec.nbytes), ops


def check_file_cost(checked: list[CheckedTensor], blob_sizes: list[int], limits: DecodeLimits = DEFAULT_LIMITS) -> None:
    """Rule 4.8.2 over a whole file: the operations of all its tensors' decodes, summed."""
    _check_ops(sum(t.ops for t in checked), blob_sizes, limits, "the file")


def _check_ops(ops: int, blob_sizes: list[int], limits: DecodeLimits, what: str) -> None:
    cap = limits.ops_cap(sum(blob_sizes))
    if ops > cap:
        raise FormatError(
            f"rule 4.8.2: decoding {what} needs {ops:,} operations, more than the cap {cap:,} "
            f"for {sum(blob_sizes):,} bytes of blobs"
        )


def _nbytes(spec: ArraySpec | BytesSpec) -> int:
    return spec.nbytes if isinstance(spec, ArraySpec) else spec.size


def _spec(obj: Mapping, where: str) -> ArraySpec:
    try:
        return ArraySpec.make(obj.get("dtype"), obj.get("shape"))
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None


def _stage_name(ref: Any, where: str) -> str:
    if not isinstance(ref, dict) or set(ref) != {"name", "configuration"}:
        raise FormatError(f"rule 4.3: {where}: a stage must be an object with exactly 'name' and 'configuration'")
    return ref["name"]


def _check_codecs(codecs: Any, spec: ArraySpec, where: str) -> list[Step]:
    """Check a part's codec list (rules 4.3.1-4.3.4, 4.5); return its chain of checked stages."""
    if not isinstance(codecs, list) or not codecs:
        raise FormatError(f"rule 4.3.3: {where}: codecs must be a non-empty list")
    chain: list[Step] = []
    current = spec
    for ref in codecs:
        stage_class = get_stage(_stage_name(ref, where))
        kind, previous = stage_class.kind, chain[-1].stage.kind if chain else Kind.ARRAY
        if kind is Kind.TRANSFORM:
            raise FormatError(f"rule 4.3.1: {where}: transform {stage_class.id!r} may only come first, once per tensor")
        if kind is Kind.ARRAY and previous is not Kind.ARRAY:
            raise FormatError(f"rule 4.3.2: {where}: array stage {stage_class.id!r} after a {previous.value} stage")
        if kind is Kind.SERIALIZE and previous is not Kind.ARRAY:
            raise FormatError(f"rule 4.3.3: {where}: a second serialize stage {stage_class.id!r}")
        if kind is Kind.BYTES and previous is not Kind.SERIALIZE:
            raise FormatError(f"rule 4.3.4: {where}: bytes stage {stage_class.id!r} must follow the serialize stage, at most one")
        stage = stage_class.from_config(ref["configuration"], current)
        chain.append(Step(stage, current))
        if kind is Kind.ARRAY:
            current = stage.output_spec(current)
        elif kind is Kind.SERIALIZE:
            current = BytesSpec(stage.encoded_size(current))
    if not any(step.stage.kind is Kind.SERIALIZE for step in chain):
        raise FormatError(f"rule 4.3.3: {where}: no serialize stage")
    return chain


def _check_chunks(part: dict, chain: list[Step], blob_count: int, where: str) -> list[int]:
    """Rules 4.4 and 4.10: the part's blob indexes, one per chunk, all within the blob table."""
    blob = part.get("blob")
    if type(blob) is not int or not 0 <= blob < blob_count:
        raise FormatError(f"rule 4.4: {where} names blob {blob!r}, the file has {blob_count}")
    if "chunk_size" not in part:
        return [blob]
    chunk_size, size = part["chunk_size"], serialized_size(chain)
    if type(chunk_size) is not int or not 1 <= chunk_size < size:
        raise FormatError(f"rule 4.10: {where}: chunk_size must be an integer from 1 to N - 1 = {size - 1} (N, the serialized bytes), not {chunk_size!r}")
    count = -(-size // chunk_size)
    if blob + count > blob_count:
        raise FormatError(f"rule 4.10: {where}: its {count} chunks need blobs {blob} to {blob + count - 1}, the file has {blob_count}")
    return list(range(blob, blob + count))


def serialized_size(chain: list[Step]) -> int:
    """``N``, the serialized byte count of a checked chain (what the bytes stage, if any, decodes to)."""
    stage, input_spec = chain[-1]
    return input_spec.size if stage.kind is Kind.BYTES else stage.encoded_size(input_spec)


def _check_blob_size(chain: list[Step], blob_size: int, where: str, expected: int | None = None) -> None:
    """Rule 4.6: the blob can plausibly decode to what the chain expects (*expected* bytes, for a chunk)."""
    stage = chain[-1].stage
    expected = serialized_size(chain) if expected is None else expected
    if stage.kind is Kind.BYTES:
        bound = blob_size * stage.max_expansion() + EXPANSION_SLACK
        if expected > bound:
            raise FormatError(f"rule 4.6: {where}: {stage.id} claims {expected} bytes from {blob_size}, beyond its bound")
    elif blob_size != expected:
        raise FormatError(f"rule 4.6: {where}: {stage.id} needs {expected} bytes, the blob gives {blob_size}")


def decode_tensor(entry: dict, blob: Callable[[int], bytes], blob_sizes: list[int], limits: DecodeLimits = DEFAULT_LIMITS,
                  executor: Executor | None = None) -> np.ndarray:
    """Rebuild one tensor from its (unchecked) header entry and ``blob(index)``, within *limits*:
    :func:`check_tensor_entry`, then :func:`decode_checked`."""
    return decode_checked(check_tensor_entry(entry, blob_sizes, limits), blob, executor)


def decode_checked(checked: CheckedTensor, blob: Callable[[int], bytes], executor: Executor | None = None) -> np.ndarray:
    """Rebuild the tensor of a checked entry from ``blob(index)``.

    The chunks of a chunked part are read and decoded on *executor* (each checked by its own
    CRC-32 as ``blob`` reads it); the result never depends on it.
    """
    parts = {}
    for part in checked.parts:
        chain = part.chain
        stage, input_spec = chain[-1]
        if stage.kind is Kind.BYTES:
            data = _decode_chunks(blob, part.blobs, stage, chunk_bounds(input_spec.size, part.chunk_size), executor)
            chain = chain[:-1]
        else:
            data = b"".join(blob(index) for index in part.blobs)
        for stage, input_spec in reversed(chain):
            data = stage.decode(data, input_spec)
        parts[part.name] = data
    chain_spec = checked.chain_spec or checked.spec
    array = np.asarray(checked.transform.decode(parts, chain_spec))
    if array.shape != chain_spec.shape or array.dtype != chain_spec.dtype:
        raise FormatError(f"tensor {checked.name!r}: transform returned {array.dtype}{array.shape}, expected {chain_spec.dtype}{chain_spec.shape}")
    if checked.widen is not None:
        array = narrow_values(array, checked.widen)
    return array


def _decode_chunks(blob: Callable[[int], bytes], indexes: list[int], stage: Stage, bounds: list[tuple[int, int]],
                   executor: Executor | None) -> bytes:
    """The serialized bytes of a part from its chunks' blobs, each decoded by *stage* into its slice of one buffer.

    A stage with ``decode_into`` (``huffman``) writes straight into the buffer, so the part's bytes
    are made once, not once per chunk and again joined; the result is then a memoryview of it.
    """
    into = getattr(stage, "decode_into", None)
    if len(indexes) == 1 and into is None:
        return stage.decode(blob(indexes[0]), BytesSpec(bounds[0][1]))
    out = np.empty(bounds[-1][1], dtype=np.uint8)

    def one(item: tuple[int, tuple[int, int]]) -> None:
        index, (start, end) = item
        if into is not None:
            into(blob(index), BytesSpec(end - start), out[start:end])
        else:
            out[start:end] = np.frombuffer(stage.decode(blob(index), BytesSpec(end - start)), dtype=np.uint8)

    map_in_order(executor, one, list(zip(indexes, bounds)))
    return memoryview(out)
