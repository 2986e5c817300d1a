"""ONNX models whose weights live in external data: compressed and rebuilt in bounded memory.

A protobuf message cannot reach 2 GiB (rule 5.7.2), so a model that big keeps its tensors
in external data files and its ModelProto stays small; nnzip then reads each external
tensor only when it encodes it, and writes each one into its file as it is decoded.  A
model over 2 GB is too big for CI: the model here has 256 MiB of external data (32
tensors of 8 MiB in one sparse file, generated on the fly and deleted after), and the
peak memory (VmHWM) of a subprocess that compresses and decompresses it must stay well
below the data's size, against the same subprocess on a tiny model.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
TENSORS, SIDE = 32, 1024  # 32 tensors of 1024 x 2048 float32 = 8 MiB each, 256 MiB in all
MIB = 2**20


def external_model(folder: Path, tensors: int = TENSORS, side: int = SIDE) -> Path:
    """A chain of MatMuls (side x 2·side, then back) whose weights are all in one external file, written sparse."""
    size = side * side * 2 * 4
    names = [f"w{i}" for i in range(tensors)]
    initializers = []
    for i, name in enumerate(names):
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[side, 2 * side] if i % 2 == 0 else [2 * side, side])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(i * size)), ("length", str(size))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        initializers.append(tensor)
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", name], [f"h{i}" if i < tensors - 1 else "y"]) for i, name in enumerate(names)]
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", side])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "large.onnx"
    path.write_bytes(model.SerializeToString())
    with open(folder / "weights.bin", "wb") as handle:
        handle.truncate(tensors * size)  # sparse: no disk blocks for the zeros
        for i in range(tensors):  # one non-zero value per tensor, so that tensors differ
            handle.seek(i * size + 4 * i)
            handle.write(struct.pack("<f", 1.0 + i))
    onnx.checker.check_model(str(path))  # by path: the checker reads the external data's metadata
    return path


SCRIPT = textwrap.dedent("""
    import json, sys
    from nnzip import cli
    source, nnz, out = sys.argv[1:4]
    status = [cli.main(["compress", source, "-o", nnz, "-q", "--jobs", "1"])]

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    after_compress = peak()
    status.append(cli.main(["decompress", nnz, "-o", out, "-q", "--jobs", "1"]))
    print(json.dumps({"status": status, "compress": after_compress, "decompress": peak()}))
""")


def peak_memory(source: Path, folder: Path) -> dict:
    """Run compress then decompress of *source* in a fresh interpreter; its exit statuses and VmHWM after each."""
    out = folder / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(source), str(folder / "m.nnz"), str(out / source.name)],
                            capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=1800)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_external_data_model_streams_in_bounded_memory(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    baseline = peak_memory(external_model(small, tensors=2, side=64), small)
    measured = peak_memory(external_model(big), big)
    assert measured["status"] == [0, 0] and baseline["status"] == [0, 0]
    data, tensor = TENSORS * SIDE * SIDE * 8, SIDE * SIDE * 8
    # Holding the model's tensors at once would add 256 MiB; streaming adds one tensor's working
    # set (the bounds of tests/test_streaming.py for safetensors).
    print(f"peak: tiny {baseline}, {data // MIB} MiB model {measured}")
    for step in ("compress", "decompress"):
        grown = measured[step] - baseline[step]
        assert grown < data * 0.75 and grown < 12 * tensor + 64 * MIB, (step, grown // MIB, measured, baseline)
    rebuilt = big / "out" / "weights.bin"
    assert rebuilt.stat().st_size == data
    with open(big / "weights.bin", "rb") as a, open(rebuilt, "rb") as b:  # compared a block at a time
        while block := a.read(16 * MIB):
            assert block == b.read(len(block))
    assert (big / "out" / "large.onnx").read_bytes() == (big / "large.onnx").read_bytes()
    for path in (big / "weights.bin", rebuilt):
        path.unlink()  # do not leave 512 MiB in the temporary folder


def test_2_gib_protobuf_is_refused_before_parsing(tmp_path, capsys):
    """Rule 5.7.2: an ONNX file of 2 GiB or more cannot be one protobuf (a sparse file: no disk used); external data avoids it."""
    from nnzip import cli

    source = tmp_path / "huge.onnx"
    data = external_model(tmp_path, tensors=1, side=8).read_bytes()
    with open(source, "wb") as handle:
        handle.write(data)
        handle.truncate(2**31)
    before = {p.name for p in tmp_path.iterdir()}
    status = cli.main(["compress", str(source)])
    err = capsys.readouterr().err
    assert status == 1 and "rule 5.7.2" in err and "external data" in err and err.count("\n") == 1, err
    assert {p.name for p in tmp_path.iterdir()} == before
