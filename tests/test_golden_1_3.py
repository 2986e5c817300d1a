"""The golden 1.3 example (spec/container.md §7.4): ``dense`` + ``dq`` + bitpack + ``rans``, header uncompressed.

``tests/fixtures/golden-1_3.nnz`` (and ``golden-1_3.json``, its header) are written only by
``python tests/regen_fixtures.py`` (``NNZIP_REGEN_FIXTURES=1``); every figure of §7.4 is checked
on the committed file, and the file is decoded by the stage pages alone with the plain-Python
reference decoders of ``tests/test_stage_rans.py`` and ``tests/test_lossy_speed_paths.py``.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from .common import REGENERATE
from .nnz_tools import blobs_of, split_file
from .test_lossy_speed_paths import reference_dq_decode
from .test_stage_rans import reference_decode as reference_rans_decode
from nnzip import api, cli
from nnzip.container import write_container
from nnzip.formats import read_model
from nnzip.pipeline import TensorPlan
from nnzip.stages import BytesSpec, get_stage

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden-1_3.nnz"
#: The example's tensor: 12 float32 values, written by hand into ``dq.safetensors``.
VALUES = np.array([[0.5, -1.25, 3.0, 0.1], [1.0, -0.3, 2.0, 0.0], [-0.7, 1.6, -2.2, 0.45]], dtype="<f4")
STEP = 0.25
#: ``rans``'s parameters for the example: 4-bit symbols (one per bitpack code), the smallest block.
RANS_PARAMS = {"symbol_bits": 4, "block_bits": 12}
#: §7.4's figures: the blob, the 4-bit codes it holds and the values they decode to.
SPEC_BLOB = bytes.fromhex("0100" "00b01b0000080000" "00104a0000080000" "00d8040000080000" "00b0320000080000")
SPEC_CODES = [6, 2, 11, 6, 7, 4, 9, 5, 3, 9, 0, 6]
SPEC_VALUES = [0.5, -1.25, 2.75, 0.25, 1.0, -0.25, 1.75, 0.0, -0.75, 1.75, -2.25, 0.5]


def write_source(path: Path) -> Path:
    """``dq.safetensors``: one F32 tensor ``w`` of shape [3, 4] (:data:`VALUES`), written by hand."""
    text = json.dumps({"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, VALUES.nbytes]}}, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + VALUES.tobytes())
    return path


def force_bytes_stage(header: dict, blobs: list[bytes], stage_id: str, params: dict) -> list[bytes]:
    """Code every (unchunked) part's blob with *stage_id* appended to its codecs.

    The policy keeps a tiny blob as it is (``rans``'s 32 bytes of states would never pay on 6
    bytes), so the example appends the stage the way the writer would if it had chosen it.
    """
    stage_class, out = get_stage(stage_id), list(blobs)
    for entry in header["tensors"]:
        for part in entry["parts"]:
            assert "chunk_size" not in part
            data = out[part["blob"]]
            coded, config = stage_class.encode(data, BytesSpec(len(data)), params)
            part["codecs"].append({"name": stage_id, "configuration": config})
            out[part["blob"]] = coded
    return out


def encode_example(tmp_path: Path, stage: str, stage_params: dict, bytes_stage: str, bytes_params: dict,
                   compress_header: bool) -> bytes:
    """The example tensor coded ``dense`` + *stage* + raw/bitpack + *bytes_stage*, as a complete file."""
    model = read_model(write_source(tmp_path / "dq.safetensors"))
    plans = {"w": TensorPlan("dense", {}, [(stage, stage_params)], entropy=False)}
    header, blobs, _ = api.encode_model(model, "dq.safetensors", plans=plans)
    header["writer"] = "nnzip (golden example)"
    blobs = force_bytes_stage(header, blobs, bytes_stage, bytes_params)
    out = io.BytesIO()
    write_container(out, header, blobs, compress_header=compress_header)
    return out.getvalue()


def golden_1_3_bytes(tmp_path: Path) -> bytes:
    """The bytes of the spec's 1.3 worked example: ``dense`` + ``dq`` (step 0.25) + bitpack + ``rans``."""
    return encode_example(tmp_path, "dq", {"step": STEP}, "rans", RANS_PARAMS, compress_header=False)


def test_golden_1_3_bytes_are_pinned(tmp_path):
    data = golden_1_3_bytes(tmp_path)
    if REGENERATE:
        GOLDEN.write_bytes(data)
        (FIXTURES / "golden-1_3.json").write_text(json.dumps(split_file(data)[0], indent=1) + "\n")
    assert GOLDEN.exists(), "tests/fixtures/golden-1_3.nnz is missing (python tests/regen_fixtures.py)"
    assert data == GOLDEN.read_bytes(), "the writer's bytes changed: update spec/container.md §7.4 and regenerate on purpose"


def test_golden_1_3_preamble_and_header():
    """§7.4's preamble (major 1, minor 3, flags 0, H) and its header equal to the committed JSON."""
    data = GOLDEN.read_bytes()
    assert data[:8] == b"\x89NNZ\r\n\x1a\n"
    major, minor, flags, size, crc = struct.unpack_from("<HHIII", data, 8)
    assert (major, minor, flags) == (1, 3, 0)
    assert crc == zlib.crc32(data[24:24 + size])
    header, _, _ = split_file(data)
    assert header == json.loads((FIXTURES / "golden-1_3.json").read_text())
    assert header["writer"] == "nnzip (golden example)"
    (entry,) = header["tensors"]
    assert (entry["name"], entry["dtype"], entry["shape"]) == ("w", "<f4", [3, 4])
    (part,) = entry["parts"]
    assert [c["name"] for c in part["codecs"]] == ["dq", "bitpack", "rans"]
    assert part["codecs"][2]["configuration"] == RANS_PARAMS
    assert len(data) == 24 + size + (-(24 + size) % 8) + header["blobs"][0]["size"]


def decode_by_the_pages(data: bytes) -> tuple[np.ndarray, list[int]]:
    """The tensor of a one-part ``dq`` + ``bitpack`` + ``rans`` file, from the spec pages alone (and its codes)."""
    header, _, _ = split_file(data)
    (entry,) = header["tensors"]
    (part,) = entry["parts"]
    dq, bitpack, rans = (c["configuration"] for c in part["codecs"])
    (blob,) = blobs_of(data)
    assert zlib.crc32(blob) == header["blobs"][0]["crc32"]
    count = int(np.prod(part["shape"]))
    bits = bitpack["bits"]
    packed = reference_rans_decode(blob, -(-count * bits // 8), rans["symbol_bits"], rans["block_bits"])
    # the bitpack page: codes of `bits` bits, MSB-first, the last byte padded with zero bits
    stream = int.from_bytes(packed, "big")
    total = 8 * len(packed)
    codes = [(stream >> (total - bits * (i + 1))) & ((1 << bits) - 1) for i in range(count)]
    step = struct.unpack("<d", base64.b64decode(dq["step"]))[0]
    values = reference_dq_decode(np.array(codes, dtype=np.int64).reshape(part["shape"]), dq["offset"], step, entry["dtype"])
    return values, codes


def test_golden_1_3_decodes_by_the_spec_pages_as_nnzip_does(tmp_path):
    """rans stream -> bitpack codes -> dq levels -> values, by the reference decoders, equals nnzip's reader."""
    data = GOLDEN.read_bytes()
    assert blobs_of(data) == [SPEC_BLOB]
    # with the flat table (P = 4, f = 2^11) lane j holds codes j, j+4, j+8 as 2^43 + 2^11 (c_j + 16 c_j+4 + 256 c_j+8)
    for lane in range(4):
        state = int.from_bytes(SPEC_BLOB[2 + 8 * lane:10 + 8 * lane], "little")
        assert state == 2**43 + 2**11 * (SPEC_CODES[lane] + 16 * SPEC_CODES[lane + 4] + 256 * SPEC_CODES[lane + 8])
    expected, codes = decode_by_the_pages(data)
    assert codes == SPEC_CODES
    np.testing.assert_array_equal(expected, np.array(SPEC_VALUES, dtype="<f4").reshape(3, 4))
    _, tensors = api.read_tensors(GOLDEN)
    np.testing.assert_array_equal(tensors["w"], expected)
    assert np.abs(expected.astype(np.float64) - VALUES).max() <= 2 * STEP  # the dq page's bound
    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(GOLDEN), "-o", str(back), "-q"]) == 0
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(str(back))["w"], expected)


def test_the_same_tensor_without_1_3_features_is_1_2_or_1_0(tmp_path):
    """format_minor picks the lowest: plain ``uniform`` + huffman is 1.2 with nnzip's compressed
    header (dictionary 2, compact form) and 1.0 with the header uncompressed -- never 1.3."""
    for compress, minor in ((True, 2), (False, 0)):
        data = encode_example(tmp_path, "uniform", {"step": STEP}, "huffman", {}, compress_header=compress)
        assert struct.unpack_from("<HH", data, 8) == (1, minor)
        header, _, _ = split_file(data)
        assert [c["name"] for c in header["tensors"][0]["parts"][0]["codecs"]] == ["uniform", "bitpack", "huffman"]
    # and the 1.3 example with its header compressed stays 1.3 (the stages need it, whatever the flags)
    data = encode_example(tmp_path, "dq", {"step": STEP}, "rans", RANS_PARAMS, compress_header=True)
    assert struct.unpack_from("<HH", data, 8) == (1, 3)
