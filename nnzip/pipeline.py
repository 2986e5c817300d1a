"""Runs stage chains on one tensor, both ways, and checks that a chain is valid.

A tensor's encoding (stored as one entry of the header's ``tensors`` list) is::

    transform (array -> named parts)
      for each part:  ARRAY* -> SERIALIZE -> BYTES?   -> one blob

The rules a chain must satisfy are numbered in ``spec/container.md`` §4.2 and
each message below names its rule, so a user (or a test) knows which one broke.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .errors import ConfigError, FormatError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .stages import ArraySpec, BytesSpec, Kind, get_stage
from .stages.base import LossyRangeError, TransformStage

#: Slack allowed over a bytes stage's ``max_expansion`` bound, for its own header bytes.
EXPANSION_SLACK = 64
#: Serialized bytes per independent chunk (spec/container.md §4.4): a part whose serialized
#: bytes exceed it is entropy-coded in chunks of this many bytes (the last one shorter), each
#: its own blob with its own CRC-32, so that decode can run chunk by chunk, in parallel.  4 MiB
#: keeps a 16-bit Huffman table (at most 32 KiB) below 1% of a chunk.  A pure constant: chunk
#: boundaries never depend on the number of workers.
CHUNK_SIZE = 4 * 2**20


def chunk_bounds(size: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the chunks of *size* serialized bytes (one chunk when *chunk_size* is None)."""
    if chunk_size is None:
        return [(0, size)]
    return [(start, min(size, start + chunk_size)) for start in range(0, size, chunk_size)]


def _map(executor: Executor | None, function: Callable, items: list) -> list:
    """``[function(item) ...]`` in order, on *executor* when one is given (results never depend on it)."""
    if executor is None or len(items) < 2:
        return [function(item) for item in items]
    return list(executor.map(function, items))


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
    transform = get_stage(plan.transform)
    parts, transform_config = transform.encode(array, spec, plan.transform_params)
    quantizable = set(transform.quantizable_parts(transform_config))
    # A lossless transform whose parts are stored exactly rebuilds the very array: no need to
    # decode it again for the statistics, nor to keep the parts once coded (bounded memory).
    exact = transform.lossless and not (plan.value_stages and quantizable)
    entries, blobs, rebuilt_parts = [], [], {}
    for part_name, part_spec in transform.part_specs(spec, transform_config).items():
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
        reconstruction = np.asarray(transform.decode(rebuilt_parts, spec, transform_config)).astype(spec.dtype, copy=False)
        del rebuilt_parts
    if spec.dtype.kind == "f" and not transform.lossless and not np.isfinite(reconstruction).all():
        # Values near the dtype's maximum can round past it; such a tensor is stored losslessly.
        raise LossyRangeError(f"{plan.transform}: tensor {name!r} would decode to infinity or NaN in {spec.dtype}; store it losslessly")
    entry = {"name": name, **stored_spec.to_json()}
    if plan.widen is not None:
        reconstruction = narrow_values(reconstruction, plan.widen)
        if not np.isfinite(widen_values(reconstruction, plan.widen)).all():
            # float32 values just below the largest finite one can round up to infinity in bfloat16
            raise LossyRangeError(f"{plan.transform}: tensor {name!r} would decode to infinity or NaN in {plan.widen}; store it losslessly")
        entry["widen"] = plan.widen
    entry.update({"transform": {"name": transform.id, "configuration": transform_config}, "parts": entries})
    return EncodedTensor(entry, blobs, reconstruction.reshape(spec.shape))


# --- widened tensors (format 1.2) ---------------------------------------------------------

#: ``widen`` value -> (the tensor dtype that carries its bit patterns, the dtype its chain runs on).
WIDEN_TYPES = {"bfloat16": (np.dtype("<u2"), np.dtype("<f4"))}
#: Format minor version that introduced the tensor member ``widen``.
WIDEN_MINOR = 2


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
    from .stages.base import BLOCK_ELEMENTS
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


def uses_widen(header: Mapping) -> bool:
    """Whether any tensor entry of *header* names ``widen`` (a 1.2 file); tolerant of malformed headers, which tests write."""
    tensors = header.get("tensors")
    return isinstance(tensors, list) and any(isinstance(entry, dict) and "widen" in entry for entry in tensors)


def _encode_part(values: np.ndarray, spec: ArraySpec, value_stages, entropy: bool, executor: Executor | None = None) -> tuple[dict, list[bytes], np.ndarray]:
    """Run ARRAY stages, then the best serializer + bytes stage; return (entry, blobs, rebuilt part)."""
    values = np.asarray(values, dtype=spec.dtype).reshape(spec.shape)
    codecs, applied = [], []
    current, current_spec = values, spec
    for stage_id, params in value_stages:
        stage = get_stage(stage_id)
        if stage.kind is not Kind.ARRAY:
            raise ConfigError(f"rule 4.3.2: value stage {stage_id!r} is a {stage.kind.value} stage, not an array stage")
        encoded, config = stage.encode(current, current_spec, params)
        codecs.append({"name": stage.id, "configuration": config})
        applied.append((stage, current_spec, config))
        current, current_spec = encoded, stage.output_spec(current_spec, config)
    tail, blobs, chunk_size = _best_tail(current, current_spec, entropy, executor)
    rebuilt = current
    for stage, input_spec, config in reversed(applied):
        rebuilt = stage.decode(rebuilt, input_spec, config)
    entry = {**spec.to_json(), "codecs": codecs + tail}
    if chunk_size is not None:
        entry["chunk_size"] = chunk_size
    return entry, blobs, rebuilt


def _best_tail(array: np.ndarray, spec: ArraySpec, entropy: bool, executor: Executor | None = None) -> tuple[list[dict], list[bytes], int | None]:
    """Serialize (raw, or bitpack for unsigned integers) and entropy-code; keep the smallest.

    Returns ``(tail stages, blobs, chunk size or None)``.  Serialized bytes over
    :data:`CHUNK_SIZE` are coded in chunks (:func:`_best_chunked`).  Ties keep the earlier
    candidate (raw before bitpack; none before huffman before lzw).
    """
    candidates = [("raw", {})]
    if spec.dtype.kind == "u" and spec.size:
        bits = max(1, int(array.max()).bit_length())
        if bits < 8 * spec.dtype.itemsize:
            candidates.append(("bitpack", {"bits": bits}))
    best: tuple[list[dict], list[bytes], int | None] | None = None
    for stage_id, params in candidates:
        serializer = get_stage(stage_id)
        view = _raw_view(array, spec) if stage_id == "raw" else None
        if view is not None and len(view) > CHUNK_SIZE:
            data, config = view, {}  # raw's bytes are the array's own: chunked from a view, not a tensor-sized copy
        else:
            data, config = serializer.encode(array, spec, params)
        del view
        tail, blobs, chunk_size = [{"name": serializer.id, "configuration": config}], [data], None
        if entropy and len(data) > CHUNK_SIZE:
            bytes_id, blobs, bytes_config = _best_chunked(data, executor)
            if bytes_id is not None:
                tail, chunk_size = tail + [{"name": bytes_id, "configuration": bytes_config}], CHUNK_SIZE
            else:
                blobs = [data]
        elif entropy:
            bytes_id, coded, bytes_config = _best_bytes_stage(data)
            if bytes_id is not None:
                tail, blobs = tail + [{"name": bytes_id, "configuration": bytes_config}], [coded]
        if best is None or sum(map(len, blobs)) < sum(map(len, best[1])):
            best = (tail, blobs, chunk_size)
        del data
    return best


def _raw_view(array: np.ndarray, spec: ArraySpec) -> memoryview:
    """The bytes the ``raw`` serializer writes (C order, the spec's byte order), as a view of *array* where it can be."""
    return memoryview(np.ascontiguousarray(array, dtype=spec.dtype).reshape(-1).view(np.uint8))


def _best_chunked(data: bytes, executor: Executor | None = None) -> tuple[str | None, list[bytes], dict]:
    """The smallest coding of *data* in :data:`CHUNK_SIZE` chunks: ``(stage id or None, blobs, configuration)``.

    One bytes stage and one configuration per part (the header stays one entry per part):
    the first chunk picks each coder's parameters (Huffman's symbol width) as
    :func:`_best_bytes_stage` would, the other chunks are coded with them, and the coder
    whose chunks total the fewest bytes wins ("smallest wins", measured on what is stored;
    ties to the simpler, none before huffman before lzw before arith; ``arith`` under the same
    extra conditions as for a large unchunked blob, :func:`nnzip.stages.entropy.best_bytes_stage`).
    Chunks are coded on *executor*.
    """
    from .stages.entropy import ARITH_MIN_GAIN, BYTES_STAGES, _arith_cost_ok, _arith_may_pay, lzw_loses
    from .stages.lzw import encode_below as lzw_below

    view = memoryview(data)
    pieces = [view[start:end] for start, end in chunk_bounds(len(data), CHUNK_SIZE)]
    best: tuple[str | None, list[bytes], dict] = (None, [], {})  # no coder wins: the caller stores the data unchunked
    best_size, best_first = len(data), len(pieces[0])
    for stage_id in BYTES_STAGES:
        if stage_id == "lzw" and lzw_loses(bytes(pieces[0]), best_first):
            continue  # its sample of the first chunk says it loses clearly to the best first chunk, as unchunked
        if stage_id == "lzw":
            coded = _lzw_chunks(pieces, best_size, executor, lzw_below)
            if coded is not None:
                best, best_size, best_first = (stage_id, coded[0], coded[1]), sum(map(len, coded[0])), len(coded[0][0])
            continue
        if stage_id == "arith" and not _arith_may_pay(bytes(pieces[0]), best_first):
            continue  # the same histogram test as for an unchunked blob over 64 KiB
        stage = get_stage(stage_id)
        first, config = stage.encode(bytes(pieces[0]), BytesSpec(len(pieces[0])), {})
        rest = _map(executor, lambda piece, stage=stage, config=config: stage.encode(bytes(piece), BytesSpec(len(piece)), config)[0], pieces[1:])
        coded = [first, *rest]
        size = sum(map(len, coded))
        if stage_id == "arith" and (size >= (1 - ARITH_MIN_GAIN) * best_size
                                    or not all(_arith_cost_ok(len(p), (c, config)) for p, c in zip(pieces, coded))):
            continue  # as unchunked: arith must save ARITH_MIN_GAIN and stay within rule 4.8.2's default
        if size < best_size:
            best, best_size, best_first = (stage_id, coded, config), size, len(first)
    return best


def _lzw_chunks(pieces: list, best_size: int, executor: Executor | None, lzw_below: Callable) -> tuple[list[bytes], dict] | None:
    """The chunks LZW-coded with default parameters if their total is below *best_size* bytes, else None.

    Each chunk is coded only while it can still win (an LZW stream only grows): the first one
    below *best_size*, the others below what the first leaves, so a losing LZW stops early.
    """
    first = lzw_below(bytes(pieces[0]), best_size)
    if first is None:
        return None
    left = best_size - len(first[0])
    rest = _map(executor, lambda piece: lzw_below(bytes(piece), left), pieces[1:])
    if any(r is None for r in rest) or len(first[0]) + sum(len(r[0]) for r in rest) >= best_size:
        return None
    return [first[0], *(r[0] for r in rest)], first[1]


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
    resolved = _check_codecs(part["codecs"], _spec(part, "part"), "part")
    stage, input_spec, config = resolved[-1]
    if stage.kind is not Kind.BYTES:
        return b"".join(blobs)
    bounds = chunk_bounds(input_spec.size, part.get("chunk_size"))
    return b"".join(stage.decode(blob, BytesSpec(end - start), config) for blob, (start, end) in zip(blobs, bounds))


def part_blobs(part: dict) -> list[int]:
    """The blob indexes of a checked part: ``blob``, then one more per further chunk (§4.4)."""
    chunk_size = part.get("chunk_size")
    if chunk_size is None:
        return [part["blob"]]
    size = serialized_size(_check_codecs(part["codecs"], _spec(part, "part"), "part"))
    return list(range(part["blob"], part["blob"] + -(-size // chunk_size)))


def _best_bytes_stage(data: bytes) -> tuple[str | None, bytes, dict]:
    from .stages.entropy import best_bytes_stage  # imported late: only encoders need it

    return best_bytes_stage(data)


# --- decoding ---------------------------------------------------------------------------


@dataclass
class CheckedTensor:
    """A tensor entry that passed every static rule, resolved for decoding."""

    spec: ArraySpec
    transform: type[TransformStage]
    config: dict
    #: Per part: (name, blob indexes (one per chunk), [(stage, input spec, configuration), ...]).
    parts: list[tuple[str, int, list]]
    #: Rule 4.8.1: peak bytes its decode holds beyond the tensor's own output.
    work: int = 0
    #: Rule 4.8.2: operations its decode costs.
    ops: int = 0
    #: The entry's ``widen`` (§4.5), or None; with it the transform rebuilds ``chain_spec``, then narrows.
    widen: str | None = None
    #: What the transform rebuilds: ``spec`` itself, or its float32 widening.
    chain_spec: ArraySpec | None = None
    #: The entry's name, for decode errors (:func:`decode_checked` reads nothing else of the entry).
    name: str = ""
    #: Per part, its ``chunk_size`` (§4.4), or None for an unchunked part.
    chunk_sizes: list = field(default_factory=list)


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
    transform = get_stage(_stage_name(transform_ref, name))
    if transform.kind is not Kind.TRANSFORM:
        raise FormatError(f"rule 4.3.1: tensor {name!r}: {transform.id!r} is not a transform stage")
    config = transform_ref["configuration"]
    transform.check_config(config, spec)
    expected = transform.part_specs(spec, config)
    parts = entry.get("parts")
    if not isinstance(parts, list) or [p.get("name") if isinstance(p, dict) else None for p in parts] != list(expected):
        raise FormatError(f"rule 4.2: tensor {name!r}: parts must be exactly {list(expected)} in that order")
    checked = []
    for part in parts:
        where = f"tensor {name!r} part {part['name']!r}"
        part_spec = _spec(part, where)
        if part_spec != expected[part["name"]]:
            raise FormatError(f"rule 4.2: {where} is {part_spec.to_json()}, its transform makes {expected[part['name']].to_json()}")
        resolved = _check_codecs(part.get("codecs"), part_spec, where)
        blobs = _check_chunks(part, resolved, len(blob_sizes), where)
        for index, (start, end) in zip(blobs, chunk_bounds(serialized_size(resolved), part.get("chunk_size"))):
            _check_blob_size(resolved, blob_sizes[index], where, end - start)
        checked.append((part["name"], blobs, resolved))
    work, ops = decode_cost(spec, transform, config, checked, blob_sizes)
    if "widen" in entry:
        work, ops = widened_cost(output_spec, work, ops)
    cap = limits.work_cap(spec.nbytes)  # a widened tensor's cap is its float32 tensor's (§4.5)
    if work > cap:
        raise FormatError(
            f"rule 4.8.1: tensor {name!r}: decoding needs {work:,} bytes of working memory "
            f"beyond its {output_spec.nbytes:,}-byte output (cap {cap:,})"
        )
    _check_ops(ops, blob_sizes, limits, f"tensor {name!r}")
    return CheckedTensor(output_spec, transform, config, checked, work, ops, widen if "widen" in entry else None, spec, name,
                         [part.get("chunk_size") for part in parts])


def widened_cost(spec: ArraySpec, work: int, ops: int) -> tuple[int, int]:
    """``(work, ops)`` of a widened tensor (§4.5) from those of its float32 chain: the float32 tensor
    (4 bytes an element) is a temporary, and narrowing it holds it, the output and 12 bytes an
    element of one block (uint32 temporaries), in three passes."""
    from .stages.base import BLOCK_ELEMENTS, linear_cost

    n = spec.size
    peak = max(work + 4 * n, 4 * n + spec.nbytes + 12 * min(n, BLOCK_ELEMENTS))
    return peak - spec.nbytes, ops + linear_cost(n, passes=3).ops


def decode_cost(spec: ArraySpec, transform: type[TransformStage], config: dict, parts: list, blob_sizes: list[int]) -> tuple[int, int]:
    """``(work, ops)`` of decoding one checked tensor (spec/container.md §4.3, rules 4.8.1, 4.8.2).

    Decoding holds, at each step of a part's chain, the stage's stored input, its output and
    its declared temporaries, on top of the parts already decoded; the transform then holds
    every part, its temporaries and the tensor.  ``work`` is the largest of these totals
    minus the tensor's own bytes (which rule 4.7 counts); ``ops`` the sum of every stage's.
    """
    held = peak = ops = 0
    for _, blobs, resolved in parts:
        # A chunked part counts as one blob of its chunks' total: an upper bound of chunk-wise decoding.
        stored = sum(blob_sizes[blob] for blob in blobs)
        part_peak = 0
        for stage, input_spec, stage_config in reversed(resolved):
            decoded = _nbytes(input_spec)
            cost = stage.decode_cost(input_spec, stage_config, stored)
            part_peak = max(part_peak, stored + decoded + cost.work)
            ops += cost.ops
            stored = decoded
        peak = max(peak, held + part_peak)
        held += stored
    cost = transform.decode_cost(spec, config)
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


def _check_codecs(codecs: Any, spec: ArraySpec, where: str) -> list:
    """Check a part's codec list (rules 4.3.1-4.3.4, 4.5); return [(stage, input spec, config)]."""
    if not isinstance(codecs, list) or not codecs:
        raise FormatError(f"rule 4.3.3: {where}: codecs must be a non-empty list")
    resolved, current = [], spec
    for ref in codecs:
        stage = get_stage(_stage_name(ref, where))
        config = ref["configuration"]
        previous = resolved[-1][0].kind if resolved else Kind.ARRAY
        if stage.kind is Kind.TRANSFORM:
            raise FormatError(f"rule 4.3.1: {where}: transform {stage.id!r} may only come first, once per tensor")
        if stage.kind is Kind.ARRAY and previous is not Kind.ARRAY:
            raise FormatError(f"rule 4.3.2: {where}: array stage {stage.id!r} after a {previous.value} stage")
        if stage.kind is Kind.SERIALIZE and previous is not Kind.ARRAY:
            raise FormatError(f"rule 4.3.3: {where}: a second serialize stage {stage.id!r}")
        if stage.kind is Kind.BYTES and previous is not Kind.SERIALIZE:
            raise FormatError(f"rule 4.3.4: {where}: bytes stage {stage.id!r} must follow the serialize stage, at most one")
        stage.check_config(config, current)
        resolved.append((stage, current, config))
        if stage.kind is Kind.ARRAY:
            current = stage.output_spec(current, config)
        elif stage.kind is Kind.SERIALIZE:
            current = BytesSpec(stage.encoded_size(current, config))
    if not any(stage.kind is Kind.SERIALIZE for stage, _, _ in resolved):
        raise FormatError(f"rule 4.3.3: {where}: no serialize stage")
    return resolved


def _check_chunks(part: dict, resolved: list, blob_count: int, where: str) -> list[int]:
    """Rules 4.4 and 4.10: the part's blob indexes, one per chunk, all within the blob table."""
    blob = part.get("blob")
    if type(blob) is not int or not 0 <= blob < blob_count:
        raise FormatError(f"rule 4.4: {where} names blob {blob!r}, the file has {blob_count}")
    if "chunk_size" not in part:
        return [blob]
    chunk_size, size = part["chunk_size"], serialized_size(resolved)
    if type(chunk_size) is not int or not 1 <= chunk_size < size:
        raise FormatError(f"rule 4.10: {where}: chunk_size must be an integer from 1 to N - 1 = {size - 1} (N, the serialized bytes), not {chunk_size!r}")
    count = -(-size // chunk_size)
    if blob + count > blob_count:
        raise FormatError(f"rule 4.10: {where}: its {count} chunks need blobs {blob} to {blob + count - 1}, the file has {blob_count}")
    return list(range(blob, blob + count))


def serialized_size(resolved: list) -> int:
    """``N``, the serialized byte count of a checked chain (what the bytes stage, if any, decodes to)."""
    stage, input_spec, config = resolved[-1]
    return input_spec.size if stage.kind is Kind.BYTES else stage.encoded_size(input_spec, config)


def _check_blob_size(resolved: list, blob_size: int, where: str, expected: int | None = None) -> None:
    """Rule 4.6: the blob can plausibly decode to what the chain expects (*expected* bytes, for a chunk)."""
    stage, input_spec, config = resolved[-1]
    expected = serialized_size(resolved) if expected is None else expected
    if stage.kind is Kind.BYTES:
        bound = blob_size * stage.max_expansion(config) + EXPANSION_SLACK
        if expected > bound:
            raise FormatError(f"rule 4.6: {where}: {stage.id} claims {expected} bytes from {blob_size}, beyond its bound")
    elif blob_size != expected:
        raise FormatError(f"rule 4.6: {where}: {stage.id} needs {expected} bytes, the blob gives {blob_size}")


def decode_tensor(entry: dict, blob: Callable[[int], bytes], blob_sizes: list[int], limits: DecodeLimits = DEFAULT_LIMITS,
                  executor: Executor | None = None) -> np.ndarray:
    """Rebuild one tensor from its (unchecked) header entry and ``blob(index)``, within *limits*.

    :func:`check_tensor_entry`, then :func:`decode_checked`; a reader that has checked the
    entry already (:class:`nnzip.reader.NnzReader`) calls :func:`decode_checked` itself.
    """
    return decode_checked(check_tensor_entry(entry, blob_sizes, limits), blob, executor)


def decode_checked(checked: CheckedTensor, blob: Callable[[int], bytes], executor: Executor | None = None) -> np.ndarray:
    """Rebuild one tensor from its checked entry (:func:`check_tensor_entry`) and ``blob(index)``.

    The chunks of a chunked part are read and decoded on *executor* (each checked by its own
    CRC-32 as ``blob`` reads it); the result never depends on it.
    """
    parts = {}
    for (part_name, indexes, resolved), chunk_size in zip(checked.parts, checked.chunk_sizes):
        stage, input_spec, config = resolved[-1]
        if stage.kind is Kind.BYTES:
            data = _decode_chunks(blob, indexes, stage, config, chunk_bounds(input_spec.size, chunk_size), executor)
            resolved = resolved[:-1]
        else:
            data = b"".join(blob(index) for index in indexes)
        for stage, input_spec, config in reversed(resolved):
            data = stage.decode(data, input_spec, config)
        parts[part_name] = data
    chain_spec = checked.chain_spec or checked.spec
    array = np.asarray(checked.transform.decode(parts, chain_spec, checked.config))
    if array.shape != chain_spec.shape or array.dtype != chain_spec.dtype:
        raise FormatError(f"tensor {checked.name!r}: transform returned {array.dtype}{array.shape}, expected {chain_spec.dtype}{chain_spec.shape}")
    if checked.widen is not None:
        array = narrow_values(array, checked.widen)
    return array


def _decode_chunks(blob: Callable[[int], bytes], indexes: list[int], stage, config: dict, bounds: list[tuple[int, int]],
                   executor: Executor | None) -> bytes:
    """The serialized bytes of a part from its chunks' blobs, each decoded by *stage* into its slice of one buffer.

    A stage with ``decode_into`` (``huffman``) writes straight into the buffer, so the part's bytes
    are made once, not once per chunk and again joined; the result is then a memoryview of it.
    """
    into = getattr(stage, "decode_into", None)
    if len(indexes) == 1 and into is None:
        return stage.decode(blob(indexes[0]), BytesSpec(bounds[0][1]), config)
    out = np.empty(bounds[-1][1], dtype=np.uint8)

    def one(item: tuple[int, tuple[int, int]]) -> None:
        index, (start, end) = item
        if into is not None:
            into(blob(index), BytesSpec(end - start), config, out[start:end])
        else:
            out[start:end] = np.frombuffer(stage.decode(blob(index), BytesSpec(end - start), config), dtype=np.uint8)

    _map(executor, one, list(zip(indexes, bounds)))
    return memoryview(out)
