"""Hostile zip archives (``.keras``, ``.npz``) and safetensors files: spec/container.md §8.2 and §5.3.

Every crafted input goes through ``nnzip.cli.main(["compress", ...])`` -- and every crafted
``.nnz`` structure through ``decompress`` -- and must give exit status 1, one line on stderr
naming the rule, no output file, no temporary file, and nothing written anywhere else (the
zip-slip targets do not exist afterwards).  The files are made with the real :mod:`zipfile`
and :mod:`numpy` modules, patched at the byte level only where a real writer cannot produce
the lie (a size or CRC that disagrees with the data).  The bombs run in a subprocess whose
peak RSS is measured (VmHWM, see :data:`PEAK_RSS`) under an RLIMIT_AS guard.
"""

from __future__ import annotations

import base64
import bz2
import copy
import io
import json
import os
import random
import re
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from .nnz_tools import blobs_of, rebuild, split_file
from nnzip import api, cli
from nnzip import formats as nio
from nnzip.errors import NnzipError
from nnzip.formats import npz, safetensors, zipmeta
from nnzip.limits import DEFAULT_LIMITS
from .samples import SAMPLES

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


# --- running the CLI -----------------------------------------------------------------------------


def refuse(capsys, folder: Path, command: str, source: Path, rule: str, *fragments: str) -> str:
    """Run ``nnzip <command> source -o folder/out/...`` and check the refusal; returns stderr.

    Exit status 1, one line naming ``rule``, and no file created anywhere under *folder*
    (no output, no temporary file, no zip-slip target).
    """
    suffix = ".nnz" if command == "compress" else ".out"
    (folder / "out").mkdir(exist_ok=True)
    output = folder / "out" / f"model{suffix}"
    before = sorted(folder.rglob("*"))
    status = cli.main([command, str(source), "-o", str(output)])
    _, err = capsys.readouterr()
    assert status == 1, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    assert f"rule {rule}:" in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert sorted(folder.rglob("*")) == before, "a refused input left a file behind"
    return err


#: Peak RSS of the running process.  ``getrusage``'s ru_maxrss is not usable in a child of
#: pytest: Linux carries the parent's high-water mark across fork/vfork and exec into
#: ru_maxrss (a 600 MB pytest makes every child "peak" at 600 MB), while /proc's VmHWM
#: belongs to the process's own address space.  ru_maxrss stays the fallback elsewhere.
PEAK_RSS = """
import resource
def peak_rss():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

#: Runs the CLI under a 4 GiB address-space guard and prints its status and peak RSS.
MEASURE = PEAK_RSS + """
import json, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a regression fails, not the machine
from nnzip import cli
status = cli.main(sys.argv[1:])
print(json.dumps({"status": status, "peak_bytes": peak_rss()}))
"""


def measured(script: str, *argv: str) -> tuple[dict, str]:
    """(the JSON line *script* prints last, stderr) of a fresh interpreter running it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# --- crafting archives -----------------------------------------------------------------------------


def npy(array: np.ndarray) -> bytes:
    """The ``.npy`` bytes numpy writes for *array*."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_preamble(descr: str, shape: tuple, fortran: bool = False) -> bytes:
    """A version-1.0 ``.npy`` preamble for an array of *descr* and *shape*, padded as numpy pads."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


def write_zip(path: Path, entries, compression: int = zipfile.ZIP_STORED) -> Path:
    """An archive of ``(name or ZipInfo, bytes)`` entries, written by :mod:`zipfile` as given."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names some tests need
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def info(name: str, mode: int | None = None, dos: int = 0) -> zipfile.ZipInfo:
    """A ZipInfo with a Unix mode (file type and permissions) and MS-DOS attribute bits."""
    item = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    item.create_system = 3
    item.external_attr = ((stat.S_IFREG | 0o644) if mode is None else mode) << 16 | dos
    return item


def keras_entries() -> list[tuple[str, bytes]]:
    """The members of the real sample ``cnn.keras`` (written by Keras 3)."""
    with zipfile.ZipFile(SAMPLES / "cnn.keras") as archive:
        return [(item.filename, archive.read(item)) for item in archive.infolist()]


def records(data: bytes, name: str) -> tuple[int, int]:
    """(local header offset, central directory entry offset) of member *name* in archive bytes."""
    encoded = name.encode("utf-8")
    for match in re.finditer(rb"PK\x01\x02", data):
        at = match.start()
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46: at + 46 + length] == encoded:
            return struct.unpack_from("<I", data, at + 42)[0], at
    raise AssertionError(f"no central directory entry for {name!r}")


#: Field -> (struct format, offset in the local header, offset in the central directory entry).
FIELDS = {"flags": ("<H", 6, 8), "method": ("<H", 8, 10), "crc": ("<I", 14, 16), "csize": ("<I", 18, 20),
          "usize": ("<I", 22, 24), "external_attr": ("<I", None, 38), "offset": ("<I", None, 42)}


def patch(path: Path, name: str, central_only: bool = False, **values: int) -> Path:
    """Overwrite zip record fields of member *name* (both headers unless *central_only*)."""
    data = bytearray(path.read_bytes())
    local, central = records(bytes(data), name)
    for field, value in values.items():
        fmt, local_at, central_at = FIELDS[field]
        struct.pack_into(fmt, data, central + central_at, value)
        if local_at is not None and not central_only:
            struct.pack_into(fmt, data, local + local_at, value)
    path.write_bytes(bytes(data))
    return path


def raw_member(path: Path, name: str, stored: bytes, method: int, crc: int, size: int, others=()) -> Path:
    """An archive whose member *name* holds the already-compressed bytes *stored* (plus *others*).

    zipfile writes *stored* as a stored member; the method, CRC and uncompressed size are
    then set to the compressed stream's, which is how a bomb built without inflating
    gigabytes on the test machine looks byte for byte like one zipfile would write.
    """
    write_zip(path, [(info(name), stored), *others])
    return patch(path, name, method=method, crc=crc, usize=size)


def deflated_zeros(prefix: bytes, mib: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC-32, size) of *prefix* followed by *mib* MiB of zeros.

    After a full flush a deflate stream restarts from scratch, so the compressed form of
    one MiB of zeros repeats exactly: the stream is built without compressing the gigabyte.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = bytes(MiB)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    return head + piece * mib + compressor.flush(), crc, len(prefix) + mib * MiB


def bzip2_zeros(prefix: bytes, size: int) -> tuple[bytes, int]:
    """(bzip2 stream, CRC-32) of *prefix* then zeros up to *size* bytes: a few hundred bytes per GiB."""
    compressor, crc, block = bz2.BZ2Compressor(9), zlib.crc32(prefix), bytes(16 * MiB)
    out, left = [compressor.compress(prefix)], size - len(prefix)
    while left > 0:
        chunk = block[: min(left, len(block))]
        out.append(compressor.compress(chunk))
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    out.append(compressor.flush())
    return b"".join(out), crc


# --- legitimate archives still pass --------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_every_compression_method_still_round_trips(tmp_path, capsys, method):
    """The bounded inflater (nnzip's own loop over zlib/bz2/lzma) reads what zipfile writes."""
    arrays = {"w": np.random.default_rng(1).standard_normal((64, 48)).astype(np.float32),
              "big_endian_fortran": np.asfortranarray(np.arange(12, dtype=">f8").reshape(3, 4)),
              "zeros": np.zeros((2000, 700), np.float32), "scalar": np.array(3, np.int16)}
    source = write_zip(tmp_path / "a.npz", [(f"{k}.npy", npy(v)) for k, v in arrays.items()], method)
    assert cli.main(["compress", str(source), "-o", str(tmp_path / "a.nnz")]) == 0
    assert cli.main(["decompress", str(tmp_path / "a.nnz"), "-o", str(tmp_path / "b.npz")]) == 0
    with np.load(tmp_path / "b.npz", allow_pickle=False) as rebuilt:
        for name, value in arrays.items():
            assert rebuilt[name].dtype == value.dtype and rebuilt[name].tobytes("A") == value.tobytes("A")
    with zipfile.ZipFile(tmp_path / "b.npz") as archive:
        assert {item.compress_type for item in archive.infolist()} == {method}


def test_keras_archive_with_an_asset_still_round_trips(tmp_path):
    source = write_zip(tmp_path / "m.keras", keras_entries() + [(info("assets/vocab/words.txt"), b"a\nb\n")])
    api.compress(source, tmp_path / "m.nnz")
    api.decompress(tmp_path / "m.nnz", tmp_path / "back.keras")
    with zipfile.ZipFile(tmp_path / "back.keras") as archive:
        assert archive.read("assets/vocab/words.txt") == b"a\nb\n"


@pytest.mark.parametrize("name", ["w.npy", "layer/kernel:0.npy", "a/b/c.npy", "é.npy", "..w.npy", "w..npy"])
def test_safe_names_pass(name):
    assert zipmeta.name_problem(name) is None


# --- zip-slip: names, links, directories (rules 8.11-8.13) ------------------------------------------


SLIP_NAMES = [
    ("../evil.npy", "'..'"),
    ("a/../../evil.npy", "'..'"),
    ("/tmp/nnzip-zip-slip-evil.npy", "absolute"),
    ("C:\\evil.npy", "backslash"),
    ("C:evil.npy", "drive letter"),
    ("..\\evil.npy", "backslash"),
    ("./w.npy", "'.'"),
    ("a//w.npy", "empty"),
]


@pytest.mark.parametrize(("name", "fragment"), SLIP_NAMES)
@pytest.mark.parametrize("kind", ["npz", "keras"])
def test_zip_slip_names_are_refused_on_compress(tmp_path, capsys, kind, name, fragment):
    evil = npy(np.ones(3, np.float32))
    entries = [("w.npy", npy(np.ones(2, np.float32))), (name, evil)] if kind == "npz" else keras_entries() + [(name, evil)]
    source = write_zip(tmp_path / f"model.{kind}", entries)
    refuse(capsys, tmp_path, "compress", source, "8.11", "not a safe relative path", fragment)
    assert not (tmp_path.parent / "evil.npy").exists() and not Path("/tmp/nnzip-zip-slip-evil.npy").exists()


def test_nul_in_a_member_name_is_refused(tmp_path, capsys):
    """zipfile cuts ZipInfo.filename at a NUL; the raw name (orig_filename) is what an unzip tool sees."""
    source = write_zip(tmp_path / "a.npz", [("wXevil.npy", npy(np.ones(2)))])
    source.write_bytes(source.read_bytes().replace(b"wXevil.npy", b"w\0evil.npy"))
    refuse(capsys, tmp_path, "compress", source, "8.11", "NUL")


@pytest.mark.parametrize("kind", ["npz", "keras"])
def test_symlink_members_are_refused(tmp_path, capsys, kind):
    link = info("w.npy" if kind == "npz" else "assets/link", mode=stat.S_IFLNK | 0o777)
    entries = [(link, b"../../../etc/passwd")]
    entries = entries if kind == "npz" else keras_entries() + entries
    source = write_zip(tmp_path / f"model.{kind}", entries)
    refuse(capsys, tmp_path, "compress", source, "8.13", "symbolic link")
    assert zipfile.ZipFile(source).infolist()[-1].external_attr >> 16 & stat.S_IFMT(0o170000) == stat.S_IFLNK


@pytest.mark.parametrize(("entry", "fragment"), [
    (info("w.npy/"), "directory entry"),
    (info("w.npy", mode=stat.S_IFDIR | 0o755), "directory entry"),
    (info("w.npy", dos=0x10), "directory entry"),
    (info("w.npy", mode=stat.S_IFIFO | 0o644), "not a regular file"),
    (info("w.npy", mode=stat.S_IFCHR | 0o644), "not a regular file"),
])
def test_directories_and_special_files_are_refused(tmp_path, capsys, entry, fragment):
    source = write_zip(tmp_path / "a.npz", [(entry, npy(np.ones(2)))])
    refuse(capsys, tmp_path, "compress", source, "8.13", fragment)


def test_keras_config_member_marked_as_directory_is_refused(tmp_path, capsys):
    entries = [(info(name, mode=stat.S_IFDIR | 0o755) if name == "config.json" else name, data) for name, data in keras_entries()]
    refuse(capsys, tmp_path, "compress", write_zip(tmp_path / "m.keras", entries), "8.13", "config.json", "directory entry")


@pytest.mark.parametrize(("entries", "fragment"), [
    ([("w.npy", npy(np.ones(2))), ("w.npy", npy(np.zeros(3)))], "two members named 'w.npy'"),
    ([("w.npy", npy(np.ones(2))), ("w.npy/x.npy", npy(np.zeros(3)))], "also another member's folder"),
    ([("w.npy", npy(np.ones(2))), ("w", npy(np.zeros(3)))], "two members load as the array 'w'"),
])
def test_duplicate_and_clashing_names_are_refused(tmp_path, capsys, entries, fragment):
    refuse(capsys, tmp_path, "compress", write_zip(tmp_path / "a.npz", entries), "8.12", fragment)


def test_duplicate_keras_member_is_refused(tmp_path, capsys):
    entries = keras_entries()
    config = next(data for name, data in entries if name == "config.json")
    source = write_zip(tmp_path / "m.keras", entries + [("config.json", config.replace(b"Sequential", b"Functional"))])
    refuse(capsys, tmp_path, "compress", source, "8.12", "config.json")


# --- zip records nnzip cannot trust (rules 8.10, 8.14) --------------------------------------------


def _npz(tmp_path: Path, method: int = zipfile.ZIP_STORED) -> Path:
    return write_zip(tmp_path / "a.npz", [("w.npy", npy(np.arange(64, dtype=np.float32))), ("b.npy", npy(np.ones(3)))], method)


def test_truncated_archive_is_refused(tmp_path, capsys):
    source = _npz(tmp_path)
    source.write_bytes(source.read_bytes()[:-30])
    refuse(capsys, tmp_path, "compress", source, "8.10", "zip archive")


def test_crc_mismatch_is_refused(tmp_path, capsys):
    source = _npz(tmp_path)
    data = bytearray(source.read_bytes())
    data[200] ^= 0xFF  # inside w.npy's array bytes
    source.write_bytes(bytes(data))
    refuse(capsys, tmp_path, "compress", source, "8.10", "CRC-32")


def test_local_header_name_disagreeing_with_the_directory_is_refused(tmp_path, capsys):
    source = _npz(tmp_path)
    data = bytearray(source.read_bytes())
    local, _ = records(bytes(data), "w.npy")
    data[local + 30] = ord("v")  # the local header now says v.npy
    source.write_bytes(bytes(data))
    refuse(capsys, tmp_path, "compress", source, "8.10", "local header")


def test_overlapping_members_are_refused(tmp_path, capsys):
    """A member whose stored bytes run into the next member's (the overlapping-file zip bomb)."""
    source = _npz(tmp_path)
    with zipfile.ZipFile(source) as archive:
        size = archive.getinfo("w.npy").compress_size
    patch(source, "w.npy", central_only=True, csize=size + 40)
    refuse(capsys, tmp_path, "compress", source, "8.10", "overlaps the next member")


def test_two_directory_entries_sharing_one_local_header_are_refused(tmp_path, capsys):
    source = _npz(tmp_path)
    first, _ = records(source.read_bytes(), "w.npy")
    patch(source, "b.npy", central_only=True, offset=first)
    refuse(capsys, tmp_path, "compress", source, "8.10", "b.npy")


def test_member_running_past_the_file_is_refused(tmp_path, capsys):
    source = _npz(tmp_path)
    patch(source, "b.npy", csize=1 << 30)
    refuse(capsys, tmp_path, "compress", source, "8.10", "runs past the end of the file")


@pytest.mark.parametrize(("fields", "fragment"), [({"flags": 0x1}, "encrypted"), ({"flags": 0x40}, "encrypted"),
                                                  ({"method": 99}, "compression method 99")])
def test_encrypted_or_unknown_methods_are_refused(tmp_path, capsys, fields, fragment):
    refuse(capsys, tmp_path, "compress", patch(_npz(tmp_path), "w.npy", **fields), "8.14", fragment)


def test_damaged_deflate_stream_is_refused(tmp_path, capsys):
    source = _npz(tmp_path, zipfile.ZIP_DEFLATED)
    data = bytearray(source.read_bytes())
    local, _ = records(bytes(data), "w.npy")
    start = local + 30 + len("w.npy") + struct.unpack_from("<H", data, local + 28)[0]
    data[start: start + 8] = b"\xff" * 8  # an invalid block type
    source.write_bytes(bytes(data))
    refuse(capsys, tmp_path, "compress", source, "8.10", "damaged compressed data")


# --- declared sizes and bombs (rule 8.15) ---------------------------------------------------------


def test_member_inflating_past_its_declared_size_is_refused(tmp_path, capsys):
    """The directory and the .npy header agree on 4 KiB; the stream holds 64 MiB more (CRC of the 4 KiB)."""
    body = npy(np.zeros(1024, np.float32))
    stream, _, _ = deflated_zeros(body, 64)
    source = raw_member(tmp_path / "a.npz", "w.npy", stream, zipfile.ZIP_DEFLATED, zlib.crc32(body), len(body))
    refuse(capsys, tmp_path, "compress", source, "8.15", "inflates to more than its declared")


def test_member_inflating_short_of_its_declared_size_is_refused(tmp_path, capsys):
    body = npy(np.zeros(1024, np.float32))
    source = write_zip(tmp_path / "a.npz", [("w.npy", body[:-100])], zipfile.ZIP_DEFLATED)
    patch(source, "w.npy", usize=len(body))
    refuse(capsys, tmp_path, "compress", source, "8.15", f"its declared size is {len(body)}")


def test_carried_keras_members_are_capped_before_reading(tmp_path, capsys):
    stream, crc, size = deflated_zeros(b'{"pad": "', 40)  # a 40 MiB config.json in 40 KiB
    others = [(name, data) for name, data in keras_entries() if name != "config.json"]
    source = raw_member(tmp_path / "m.keras", "config.json", stream, zipfile.ZIP_DEFLATED, crc, size, others)
    refuse(capsys, tmp_path, "compress", source, "8.15", "non-weights members exceed")


@pytest.fixture(scope="module")
def bzip2_bomb(tmp_path_factory) -> Path:
    """A real bzip2 .npz bomb: under 2 KB on disk, declaring (and inflating to) more than the output cap."""
    folder = tmp_path_factory.mktemp("bomb")
    size = DEFAULT_LIMITS.output_cap(64 * 1024) + MiB
    count = (size - 128) // 4
    preamble = npy_preamble("<f4", (count,))
    stream, crc = bzip2_zeros(preamble, len(preamble) + 4 * count)
    path = raw_member(folder / "bomb.npz", "w.npy", stream, zipfile.ZIP_BZIP2, crc, len(preamble) + 4 * count)
    assert path.stat().st_size < 64 * 1024 and struct.unpack_from("<I", path.read_bytes(), 22)[0] > DEFAULT_LIMITS.output_cap(64 * 1024)
    return path


def test_bzip2_bomb_is_refused_before_reading(tmp_path, capsys, bzip2_bomb):
    refuse(capsys, tmp_path, "compress", bzip2_bomb, "8.15", "over the", "cap")


def header_bomb(folder: Path) -> Path:
    """A 1 KB .npz whose .npy header declares a 2^30-element float32 array (4 GiB)."""
    return write_zip(folder / "header.npz", [("w.npy", npy_preamble("<f4", (1 << 15, 1 << 15)) + bytes(64))], zipfile.ZIP_DEFLATED)


def test_npy_header_declaring_more_than_the_cap_is_refused(tmp_path, capsys):
    refuse(capsys, tmp_path, "compress", header_bomb(tmp_path), "8.15", "declares 4294967296 bytes of array")


def test_bombs_stay_small_in_memory(tmp_path, bzip2_bomb):
    """Peak RSS of the refused bombs, each in a fresh interpreter: far below 1 GB (each names >= 256 MiB)."""
    deep = tmp_path / "deep.safetensors"
    text = b'{"a":' + b"[" * 4_000_000 + b"]" * 4_000_000 + b"}"
    deep.write_bytes(struct.pack("<Q", len(text)) + text)
    for source, rule in [(bzip2_bomb, "8.15"), (header_bomb(tmp_path), "8.15"), (deep, "8.18")]:
        result, err = measured(MEASURE, "compress", str(source), "-o", str(tmp_path / "out.nnz"))
        assert result["status"] == 1 and f"rule {rule}:" in err and err.count("\n") == 1, err
        assert result["peak_bytes"] < 400 * MiB, (source.name, result)
        assert not (tmp_path / "out.nnz").exists()


READ_BIG = PEAK_RSS + """
import json, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from nnzip.formats import npz
from nnzip.limits import DecodeLimits
before = peak_rss()
model = npz.read(sys.argv[1], limits=DecodeLimits(max_output=1 << 31))
value = model.tensors["w"]
assert value.shape == (int(sys.argv[2]),) and value.dtype == "<f4" and not value[::4099].any()
print(json.dumps({"before": before, "peak_bytes": peak_rss()}))
"""


def test_deflate_bomb_within_the_cap_is_streamed_into_one_buffer(tmp_path):
    """A 256 KB .npz inflating to a 256 MiB array costs the array once, not compressed + decoded + copies."""
    count = 64 * MiB
    stream, crc, size = deflated_zeros(npy_preamble("<f4", (count,)), 256)
    source = raw_member(tmp_path / "big.npz", "w.npy", stream, zipfile.ZIP_DEFLATED, crc, size)
    assert source.stat().st_size < 300 * 1024
    result, err = measured(READ_BIG, str(source), str(count))
    grown = result["peak_bytes"] - result["before"]
    assert grown < 256 * MiB + 64 * MiB, result  # the array plus pieces; the old reader needed about three arrays
    assert result["peak_bytes"] < 1 << 30, result


# --- .npy headers (rules 8.16, 8.17) -------------------------------------------------------------


def _raw_npy(tmp_path: Path, body: bytes) -> Path:
    return write_zip(tmp_path / "a.npz", [("w.npy", body)])


@pytest.mark.parametrize(("body", "rule", "fragment"), [
    (b"\x93NUMPY\x09\x00" + bytes(20), "8.16", "unsupported .npy format version 9.0"),
    (b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + bytes(20), "8.16", "exceeds the 10000-byte cap"),
    (b"\x93NUMPY\x01\x00" + struct.pack("<H", 9000) + b"{'descr'", "8.16", "runs past the member"),
    (npy_preamble("<f4", (2,)).replace(b"'shape'", b"'shapf'") + bytes(8), "8.16", "exactly descr, fortran_order and shape"),
    (npy_preamble("<f4", (2,)) + bytes(12), "8.16", "different size"),
    (b"\x93NUMPY\x01\x00" + struct.pack("<H", 20) + b"{'descr': ((((((((((" + bytes(8), "8.16", "dict literal"),
    (npy_preamble("<f4", (-2,)) + bytes(8), "8.16", "bad shape"),
    (npy_preamble("|O", (2,)) + bytes(16), "8.17", "never unpickles"),
    (npy_preamble("<c8", (2,)) + bytes(16), "8.17", "bool, integer and float"),
    (npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])), "8.17", "structured"),
    (npy_preamble("V99999999999999999999", (2,)) + bytes(16), "8.17", "unsupported descr"),
])
def test_bad_npy_headers_are_refused(tmp_path, capsys, body, rule, fragment):
    refuse(capsys, tmp_path, "compress", _raw_npy(tmp_path, body), rule, fragment)


def test_pickled_object_array_from_numpy_is_refused(tmp_path, capsys):
    source = tmp_path / "objects.npz"
    np.savez(source, x=np.array([{"a": 1}, None], dtype=object))
    refuse(capsys, tmp_path, "compress", source, "8.17", "object array", "never unpickles")


# --- safetensors (rules 8.18, 8.19) ----------------------------------------------------------------


def _safetensors(path: Path, header: bytes, data: bytes = b"", size: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if size is None else size) + header + data)
    return path


@pytest.mark.parametrize(("header", "data", "rule", "fragment"), [
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", "8.18", "nests 100001 levels deep"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16), "8.18", "duplicate key"),
    (b'{"__metadata__":{"k":1}}', b"", "8.18", "strings to strings"),
    (b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', bytes(8), "8.18", "NaN"),
    (b'{"a":\xff}', b"", "8.18", "not UTF-8"),
    (b'{"a": {}} ["a"]', b"", "8.18", "not JSON"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12), "8.19", "overlaps"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16), "8.19", "gap"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1180591620717411303424]}}', bytes(8), "8.19", "64-bit"),
    (b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8), "8.19", "need 12"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(4), "8.19", "describes 8 data bytes, the file holds 4"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(12), "8.19", "the file holds 12"),
    (b'{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}', bytes(8), "8.19", "unsupported dtype"),
    (b'{"a":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,8]}}', bytes(8), "8.19", "elements"),
    (b'{"a":{"dtype":"F32","shape":[2]}}', bytes(8), "8.19", "exactly dtype, shape and data_offsets"),
])
def test_unreadable_safetensors_headers_are_refused(tmp_path, capsys, header, data, rule, fragment):
    source = _safetensors(tmp_path / "m.safetensors", header, data)
    refuse(capsys, tmp_path, "compress", source, rule, "not a valid safetensors file", fragment)


def test_safetensors_header_size_beyond_the_file_is_refused(tmp_path, capsys):
    source = _safetensors(tmp_path / "m.safetensors", b'{"a":{}}', size=1 << 40)
    refuse(capsys, tmp_path, "compress", source, "8.18", "runs past the end of the", "-byte file")


def test_100_mb_safetensors_header_is_refused_before_reading(tmp_path, capsys):
    source = _safetensors(tmp_path / "m.safetensors", b"{", size=100_000_000)
    with open(source, "r+b") as handle:
        handle.truncate(8 + 100_000_000)  # sparse: the test does not write 100 MB
    refuse(capsys, tmp_path, "compress", source, "8.18", f"exceeds nnzip's {safetensors.MAX_INPUT_HEADER_BYTES}-byte cap")


def test_json_depth_ignores_brackets_inside_strings():
    assert safetensors.json_depth(b'{"[[[[\\"[[": [1, {"a": "]]]]"}]}') == 3
    assert safetensors.json_depth(b"[]") == 1 and safetensors.json_depth(b"") == 0


# --- crafted .nnz structures on decompress (rule 5.3) -----------------------------------------------


@pytest.fixture(scope="module")
def nnz_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("nnz")
    np.savez(folder / "a.npz", w=np.ones((2, 3), np.float32), b=np.arange(3))
    api.compress(folder / "a.npz", folder / "npz.nnz")
    api.compress(SAMPLES / "cnn.keras", folder / "keras.nnz")
    return {"npz": (folder / "npz.nnz").read_bytes(), "keras": (folder / "keras.nnz").read_bytes()}


def _keras_member(structure: dict, name: str) -> dict:
    member = copy.deepcopy(next(m for m in structure["members"] if m["name"] == "config.json"))
    member.update(name=name, data=base64.b64encode(b"owned").decode("ascii"))
    return member


STRUCTURES = [
    ("npz", lambda s: s["members"][0].update(name="../evil.npy"), "not a safe relative path", "'..'"),
    ("npz", lambda s: s["members"][0].update(name="/tmp/nnzip-zip-slip-evil.npy"), "absolute path"),
    ("npz", lambda s: s["members"][0].update(name="C:\\evil.npy"), "backslash"),
    ("npz", lambda s: s["members"][0].update(name="a/./w.npy"), "'.'"),
    ("npz", lambda s: s["members"][0]["zip"].update(external_attr=(stat.S_IFLNK | 0o777) << 16), "symbolic link"),
    ("npz", lambda s: s["members"][0]["zip"].update(external_attr=(stat.S_IFDIR | 0o755) << 16), "directory entry"),
    ("npz", lambda s: s["members"][0]["zip"].update(external_attr=0x10), "directory entry"),
    ("npz", lambda s: s["members"][1].update(name=s["members"][0]["name"] + "/b.npy"), "also another member's folder"),
    ("keras", lambda s: s["members"].append(_keras_member(s, "../evil.txt")), "'..'"),
    ("keras", lambda s: s["members"].append(_keras_member(s, "/tmp/nnzip-zip-slip-evil.npy")), "absolute path"),
    ("keras", lambda s: s["members"].append(_keras_member(s, "assets\\..\\..\\evil.txt")), "backslash"),
    ("keras", lambda s: next(m for m in s["members"] if m["name"] == "config.json")["zip"].update(
        external_attr=(stat.S_IFLNK | 0o777) << 16), "symbolic link"),
]


@pytest.mark.parametrize(("fmt", "mutate", "fragments"), [(c[0], c[1], c[2:]) for c in STRUCTURES],
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(STRUCTURES)])
def test_zip_slip_structures_are_refused_on_decompress(tmp_path, capsys, nnz_files, fmt, mutate, fragments):
    header, _, _ = split_file(nnz_files[fmt])
    header = copy.deepcopy(header)
    mutate(header["source"]["structure"])
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs_of(nnz_files[fmt])))
    refuse(capsys, tmp_path, "decompress", bad, "5.3", *fragments)
    assert not (tmp_path / "evil.npy").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert not Path("/tmp/nnzip-zip-slip-evil.npy").exists()


# --- nothing raw escapes (item 4 of issue 8) -------------------------------------------------------


def _mutations(data: bytes, rng: random.Random, count: int):
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            # half the edits land in the zip records (local headers at the start, directory at the end)
            spot = rng.random()
            if spot < 0.3:
                at = rng.randrange(min(len(data), 120))
            elif spot < 0.6:
                at = rng.randrange(max(0, len(data) - 300), len(data))
            else:
                at = rng.randrange(len(data))
            mutated[at] = rng.randrange(256)
        yield bytes(mutated)


def test_mutated_archives_raise_only_nnzip_errors(tmp_path):
    """Seeded byte mutations of real .npz/.keras files: every failure is an NnzipError, never a raw exception."""
    rng = random.Random(8)
    np.savez_compressed(tmp_path / "c.npz", w=np.ones((20, 30), np.float32), b=np.arange(5))
    np.savez(tmp_path / "s.npz", w=np.ones((20, 30), np.float32), b=np.arange(5, dtype=">i4"))
    bases = [(tmp_path / "c.npz").read_bytes(), (tmp_path / "s.npz").read_bytes(), (SAMPLES / "mlp.keras").read_bytes()]
    suffixes = [".npz", ".npz", ".keras"]
    for base, suffix in zip(bases, suffixes):
        for data in _mutations(base, rng, 150):
            target = tmp_path / f"m{suffix}"
            target.write_bytes(data)
            try:
                nio.read_model(target)
            except NnzipError as exc:
                assert "\n" not in str(exc)


def test_mutated_headers_raise_only_nnzip_errors(tmp_path):
    """Seeded text mutations of .npy and safetensors headers (valid CRCs, so they reach the parsers)."""
    rng = random.Random(9)
    alphabet = "{}[](),:'\" 0123456789-eE.<>|fiubOV*TrueFalseNone\\\x00\u00e9\ud800"

    def mutate(text: str) -> str:
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(chars) + 1)
            if rng.random() < 0.5 and chars:
                chars[min(at, len(chars) - 1)] = rng.choice(alphabet)
            else:
                chars.insert(at, rng.choice(alphabet))
        return "".join(chars)

    npy_header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    st_header = '{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}'
    for _ in range(400):
        text = mutate(npy_header).encode("utf-8", "surrogatepass")
        version, length_size = rng.choice([(b"\x01\x00", 2), (b"\x03\x00", 4)])
        body = b"\x93NUMPY" + version + len(text).to_bytes(length_size, "little") + text + bytes(24)
        cases = [write_zip(tmp_path / "h.npz", [("x.npy", body)]),
                 _safetensors(tmp_path / "h.safetensors", mutate(st_header).encode("utf-8", "surrogatepass"), bytes(16))]
        for case in cases:
            try:
                nio.read_model(case)
            except NnzipError as exc:
                assert "\n" not in str(exc)


def test_npz_reader_never_holds_a_second_copy_for_c_order_arrays(tmp_path):
    """The array handed out is the buffer the member was streamed into (no astype copy)."""
    source = write_zip(tmp_path / "a.npz", [("w.npy", npy(np.arange(1000, dtype=np.float32)))], zipfile.ZIP_DEFLATED)
    value = npz.read(source).tensors["w"]
    assert value.base is not None and value.base.dtype == np.uint8 and value.base.nbytes == value.nbytes


def test_readers_take_the_callers_limits(tmp_path):
    """The cap comes from the ``limits`` object, so a --max-output setting reaches every reader."""
    from nnzip.formats import keras_v3
    from nnzip.limits import DecodeLimits

    source = write_zip(tmp_path / "a.npz", [("w.npy", npy(np.ones(1000, np.float32)))])
    small = DecodeLimits(max_output=1000)
    with pytest.raises(NnzipError, match="rule 8.15"):
        npz.read(source, limits=small)
    assert npz.read(source, limits=DecodeLimits(max_output=5000)).tensors["w"].shape == (1000,)
    with pytest.raises(NnzipError, match="rule 8.15"):
        keras_v3.read(SAMPLES / "mlp.keras", limits=small)
    st = _safetensors(tmp_path / "a.safetensors", b'{"w":{"dtype":"F32","shape":[500],"data_offsets":[0,2000]}}', bytes(2000))
    with pytest.raises(NnzipError, match="rule 8.19"):
        safetensors.read(st, limits=small)
