"""Shared checks for stages, in the manner of numcodecs' ``tests/common.py``.

Every stage test module calls these so that all stages meet the same contract:

* :func:`check_roundtrip` -- encode, JSON round trip of the configuration,
  ``check_config``, decode, and the result equal (lossless) or within a stated error;
* :func:`check_golden` -- the bytes a deterministic input encodes to are pinned in
  ``tests/fixtures/stages/``; a missing fixture fails.  Each fixture's JSON also pins its
  input (:func:`describe_input`: dtype, shape and values, or for a bytes stage the decoded
  length ``N`` and the bytes), so a third party can check the ``.bin`` without this code.
  Regenerate on purpose only, with ``python tests/regen_fixtures.py`` (which sets
  ``NNZIP_REGEN_FIXTURES=1``).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nnzip.stages import ArraySpec, BytesSpec, Kind, get_stage

FIXTURES = Path(__file__).parent / "fixtures" / "stages"
REGENERATE = os.environ.get("NNZIP_REGEN_FIXTURES") == "1"


def input_spec(stage_cls, data: Any) -> Any:
    """The spec a stage's encoder receives for *data*."""
    if stage_cls.kind is Kind.BYTES:
        return BytesSpec(len(data))
    return ArraySpec.of(np.asarray(data))


def output_bytes(stage_cls, output: Any, config: Mapping, spec: Any) -> bytes:
    """A canonical byte string of an encoder's output, for golden comparison."""
    if stage_cls.kind is Kind.TRANSFORM:
        specs = stage_cls.part_specs(spec, config)
        return b"".join(np.ascontiguousarray(output[name], dtype=s.dtype).tobytes() for name, s in specs.items())
    if stage_cls.kind is Kind.ARRAY:
        return np.ascontiguousarray(output, dtype=stage_cls.output_spec(spec, config).dtype).tobytes()
    return bytes(output)


def json_roundtrip(config: Mapping) -> dict:
    """The configuration as a reader would see it after the header's JSON coding."""
    return json.loads(json.dumps(config, allow_nan=False))


def encode_decode(stage_id: str, data: Any, params: Mapping | None = None) -> tuple[Any, Any, dict]:
    """Encode and decode *data* through one stage, returning (decoded, encoded, config)."""
    stage_cls = get_stage(stage_id)
    spec = input_spec(stage_cls, data)
    encoded, config = stage_cls.encode(data, spec, dict(params or {}))
    config = json_roundtrip(config)
    stage_cls.check_config(config, spec)
    if stage_cls.kind is Kind.SERIALIZE:
        assert len(encoded) == stage_cls.encoded_size(spec, config)
    if stage_cls.kind is Kind.TRANSFORM:
        specs = stage_cls.part_specs(spec, config)
        assert list(specs) == list(encoded), "parts must come in part_specs order"
        for name, part_spec in specs.items():
            assert ArraySpec.of(np.asarray(encoded[name])) == part_spec, f"part {name} does not match its spec"
    if stage_cls.kind is Kind.ARRAY:
        assert ArraySpec.of(np.asarray(encoded)) == stage_cls.output_spec(spec, config)
    decoded = stage_cls.decode(encoded, spec, config)
    return decoded, encoded, config


def check_roundtrip(stage_id: str, data: Any, params: Mapping | None = None, max_rel_error: float = 0.0) -> Any:
    """Round trip *data* through a stage; exact when ``max_rel_error == 0``.

    For arrays the error is the relative Frobenius norm ``||x - x'|| / ||x||``.
    Returns the decoded value for further invariant checks.
    """
    stage_cls = get_stage(stage_id)
    decoded, _, _ = encode_decode(stage_id, data, params)
    if stage_cls.kind is Kind.BYTES:
        assert bytes(decoded) == bytes(data)
        return decoded
    original = np.asarray(data)
    decoded = np.asarray(decoded)
    assert decoded.shape == original.shape and decoded.dtype == original.dtype
    if max_rel_error == 0.0:
        assert decoded.tobytes() == original.tobytes(), "lossless round trip changed the bytes"
    else:
        norm = float(np.linalg.norm(original.astype(np.float64)))
        err = float(np.linalg.norm(original.astype(np.float64) - decoded.astype(np.float64)))
        assert err <= max_rel_error * max(norm, 1e-30), f"relative error {err / max(norm, 1e-30):.3g} > {max_rel_error}"
    return decoded


def check_golden(stage_id: str, case: str, data: Any, params: Mapping | None = None) -> None:
    """Pin the encoding of *data* with *params* in ``fixtures/stages/<id>-<case>.{json,bin}``.

    Checks both directions: a fresh encode gives the stored bytes and configuration,
    and decoding the stored bytes gives what a fresh decode gives.
    """
    stage_cls = get_stage(stage_id)
    spec = input_spec(stage_cls, data)
    decoded, encoded, config = encode_decode(stage_id, data, params)
    blob = output_bytes(stage_cls, encoded, config, spec)
    json_path = FIXTURES / f"{stage_id}-{case}.json"
    bin_path = FIXTURES / f"{stage_id}-{case}.bin"
    described = describe_input(stage_cls, data)
    if REGENERATE:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        record = {"params": dict(params or {}), "configuration": config, "input": described}
        json_path.write_text(json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
        bin_path.write_bytes(blob)
        return
    assert json_path.exists() and bin_path.exists(), f"golden fixture {json_path.name} is missing (run tests/regen_fixtures.py on purpose)"
    stored = json.loads(json_path.read_text())
    assert stored.get("input") == described, f"{stage_id}-{case}: the fixture's pinned input differs from the test's"
    assert input_of(stored["input"]).tobytes() == (bytes(data) if stage_cls.kind is Kind.BYTES else np.asarray(data).tobytes())
    assert stored["configuration"] == config, f"{stage_id}-{case}: configuration changed"
    assert bin_path.read_bytes() == blob, f"{stage_id}-{case}: encoded bytes changed (a format change needs a new stage id)"
    # Decode from the stored bytes alone.
    stored_output = _parse_output(stage_cls, bin_path.read_bytes(), stored["configuration"], spec)
    again = stage_cls.decode(stored_output, spec, stored["configuration"])
    if stage_cls.kind is Kind.BYTES:
        assert bytes(again) == bytes(decoded)
    else:
        assert np.asarray(again).tobytes() == np.asarray(decoded).tobytes()


def describe_input(stage_cls, data: Any) -> dict:
    """The input of a golden case as its fixture pins it.

    Arrays: ``dtype`` (§1 of spec/container.md), ``shape``, ``values`` (nested lists in C
    order; floats as JSON numbers, which hold every float16/32/64 value exactly; left out
    when a value is NaN or infinite) and ``base64`` (the little-endian C-order bytes, the
    exact reference).  Bytes (the input of ``huffman``/``lzw``, i.e. what they decode to):
    ``N``, the decoded length the pipeline gives the decoder, and ``base64``.
    """
    if stage_cls.kind is Kind.BYTES:
        raw = bytes(data)
        return {"N": len(raw), "base64": base64.b64encode(raw).decode("ascii")}
    array = np.ascontiguousarray(data)
    spec = ArraySpec.of(array)
    array = array.astype(spec.dtype)
    described = {"dtype": spec.dtype.str, "shape": list(spec.shape), "base64": base64.b64encode(array.tobytes()).decode("ascii")}
    if array.dtype.kind != "f" or np.isfinite(array).all():
        described["values"] = array.tolist()
    return described


def input_of(described: Mapping) -> np.ndarray:
    """The input a fixture pins (:func:`describe_input`), rebuilt from its exact bytes."""
    raw = base64.b64decode(described["base64"])
    if "N" in described:
        assert len(raw) == described["N"]
        return np.frombuffer(raw, dtype=np.uint8)
    array = np.frombuffer(raw, dtype=described["dtype"]).reshape(described["shape"])
    if "values" in described:
        assert np.array(described["values"], dtype=described["dtype"]).reshape(described["shape"]).tobytes() == raw
    return array


def _parse_output(stage_cls, blob: bytes, config: Mapping, spec: Any) -> Any:
    """Inverse of :func:`output_bytes`."""
    if stage_cls.kind is Kind.TRANSFORM:
        parts, offset = {}, 0
        for name, part_spec in stage_cls.part_specs(spec, config).items():
            parts[name] = np.frombuffer(blob, dtype=part_spec.dtype, count=part_spec.size, offset=offset).reshape(part_spec.shape)
            offset += part_spec.nbytes
        return parts
    if stage_cls.kind is Kind.ARRAY:
        out_spec = stage_cls.output_spec(spec, config)
        return np.frombuffer(blob, dtype=out_spec.dtype).reshape(out_spec.shape)
    return blob
