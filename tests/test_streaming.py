"""Streaming compression and decompression: one tensor at a time, blobs spooled, bounded memory.

Peak memory is measured in fresh subprocesses as VmHWM from /proc/self/status (not
ru_maxrss, which a child inherits from its parent's high-water mark), with generous bounds;
no timing is asserted.  The measure that matters is what the model's size adds: compressing
a model of many tensors must cost about one tensor's working set over a tiny model's run,
not the model's size.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from nnzip import api, formats
from nnzip.container import BlobSpool, write_container, write_spooled

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
#: The generated model: TENSORS float32 tensors of SHAPE (8 MiB each), 192 MiB in all.
TENSORS, SHAPE = 24, (1024, 2048)


def _write_model(path: Path, count: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    base = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32) & np.uint32(0xFFFF0000)
    # distinct tensors (rolled), like trained weights with bf16-like mantissas: entropy-codeable planes
    save_file({f"layer{i}.weight": np.roll(base, i, axis=1).view(np.float32) for i in range(count)}, str(path))


def _peak(args: list[str]) -> int:
    """VmHWM in bytes of ``nnzip ARGS`` run in a fresh interpreter."""
    code = ("import sys\nfrom nnzip import cli\n"
            f"status = cli.main({args!r})\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print('PEAK', status, int(hwm) * 1024)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, peak = result.stdout.split()[-3:]
    assert status == "0", result.stderr
    return int(peak)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streaming")
    _write_model(folder / "tiny.safetensors", 1, (16, 16))
    _write_model(folder / "big.safetensors", TENSORS, SHAPE)
    return folder


@pytest.mark.parametrize("lossy", [[], ["--bits", "4"]], ids=["lossless", "lossy"])
def test_compress_peak_memory_does_not_grow_with_the_model(models, lossy):
    tensor = int(np.prod(SHAPE)) * 4
    model = TENSORS * tensor
    tiny = _peak(["compress", str(models / "tiny.safetensors"), "-o", str(models / "tiny.nnz"), "-f", "-q", "--jobs", "1", *lossy])
    big = _peak(["compress", str(models / "big.safetensors"), "-o", str(models / "big.nnz"), "-f", "-q", "--jobs", "1", *lossy])
    grown = big - tiny
    print(f"compress {lossy}: tiny {tiny / MiB:.0f} MiB, big {big / MiB:.0f} MiB, +{grown / MiB:.0f} MiB for a {model / MiB:.0f} MiB model")
    # Holding the model (as 1.0 did, with every blob and reconstruction) would add well over its size.
    assert grown < model * 0.75, f"+{grown / MiB:.0f} MiB"
    assert grown < 12 * tensor + 64 * MiB, f"+{grown / MiB:.0f} MiB for {tensor / MiB:.0f} MiB tensors"
    if not lossy:
        back = models / "back.safetensors"
        peak = _peak(["decompress", str(models / "big.nnz"), "-o", str(back), "-f", "-q", "--jobs", "1"])
        print(f"decompress: {peak / MiB:.0f} MiB")
        assert back.read_bytes() == (models / "big.safetensors").read_bytes()
        assert peak - tiny < 12 * tensor + 64 * MiB
        back.unlink()


def test_streamed_file_equals_in_memory_file(tmp_path):
    """compress (lazy read, spooled blobs) writes what write_container writes from the blobs in memory."""
    source = tmp_path / "m.safetensors"
    _write_model(source, 3, (64, 128))
    api.compress(source, tmp_path / "streamed.nnz")
    model = formats.read_model(source)  # eager read
    header, blobs, _ = api.encode_model(model, source.name)
    import io

    out = io.BytesIO()
    write_container(out, header, blobs)
    assert (tmp_path / "streamed.nnz").read_bytes() == out.getvalue()
    spool = BlobSpool(tmp_path)
    for blob in blobs:
        spool.add(blob)
    again = io.BytesIO()
    write_spooled(again, header, spool)
    spool.close()
    assert again.getvalue() == out.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "streamed.nnz"]  # the spool left nothing


def test_lazy_safetensors_reads_on_demand_and_keeps_checks(tmp_path):
    source = tmp_path / "m.safetensors"
    _write_model(source, 2, (8, 8))
    model = formats.read_model(source, lazy=True)
    eager = formats.read_model(source)
    assert list(model.tensors) == list(eager.tensors) and model.nbytes == eager.nbytes
    for name in eager.tensors:
        assert model.tensors[name].tobytes() == eager.tensors[name].tobytes()
    data = bytearray(source.read_bytes())
    (tmp_path / "cut.safetensors").write_bytes(bytes(data[:-5]))  # rule 8.19 still checked before any tensor is read
    with pytest.raises(api.NnzipError, match="rule 8.19"):
        formats.read_model(tmp_path / "cut.safetensors", lazy=True)
