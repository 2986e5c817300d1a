"""Hostile HDF5 both ways (issue 8): crafted .nnz trees on decompress, crafted .h5 files on compress.

Decompress side (spec/container.md §5.1, rules 5.1.x and 5.2.x): a dataset ``layout`` from the
header reaches h5py's ``create_dataset`` only through an allow-list, so ``external`` (raw data
in a file anywhere) can no longer make decompress write an attacker's bytes to an attacker's
path; every other field the HDF5 writer reads is typed and bounded.  Compress side (§8.1,
rules 8.1-8.9): an input that points elsewhere (links, external storage, virtual datasets) is
refused, and declared sizes are checked before anything is read.  Every case goes through
``nnzip.cli.main``: exit 1, one line on stderr naming the rule, no output, no temporary file.
Memory is measured in a subprocess with ``resource.getrusage``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from .nnz_tools import TINY_KERNEL, blobs_of, rebuild, split_file, write_tiny_weights_h5
from nnzip import cli
from nnzip.errors import FormatError, InputError
from nnzip.formats import hdf5_tree, keras_h5
from nnzip.limits import DecodeLimits

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden-tiny.nnz"
ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


# --- helpers ------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[Path]:
    """Hidden files (nnzip's temporary outputs are hidden names beside the output)."""
    return [p for p in folder.rglob(".*")]


def _assert_one_line_error(status: int, err: str, rule: str) -> None:
    assert status == 1, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    assert rule in err, err
    assert "Traceback" not in err


def decompress_rejected(tmp_path: Path, data: bytes, capsys, rule: str, suffix: str = ".h5") -> str:
    """Run ``nnzip decompress`` on *data*; assert the one-line rejection naming *rule*, no output left."""
    source = tmp_path / "bad.nnz"
    source.write_bytes(data)
    output = tmp_path / f"out{suffix}"
    before = set(tmp_path.rglob("*"))
    status = cli.main(["decompress", str(source), "-o", str(output)])
    err = capsys.readouterr().err
    _assert_one_line_error(status, err, rule)
    assert set(tmp_path.rglob("*")) == before, "decompress left a file behind"
    assert not output.exists()
    return err


def compress_rejected(tmp_path: Path, source: Path, capsys, rule: str) -> str:
    """Run ``nnzip compress`` on *source*; assert the one-line rejection naming *rule*, no output left."""
    output = tmp_path / "out.nnz"
    before = set(tmp_path.rglob("*"))
    status = cli.main(["compress", str(source), "-o", str(output)])
    err = capsys.readouterr().err
    _assert_one_line_error(status, err, rule)
    assert set(tmp_path.rglob("*")) == before, "compress left a file behind"
    return err


def golden() -> tuple[dict, list[bytes]]:
    data = GOLDEN.read_bytes()
    return split_file(data)[0], blobs_of(data)


def vars_group(tree: dict) -> dict:
    """The ``layers/dense/vars`` group node of the golden tree."""
    node = tree
    for name in ("layers", "dense", "vars"):
        node = next(c["group"] for c in node["children"] if c["name"] == name)
    return node


def crafted(edit) -> bytes:
    """The golden file with ``edit(structure)`` applied (valid CRCs, so the edit reaches the checks)."""
    header, blobs = golden()
    edit(header["source"]["structure"])
    return rebuild(header, blobs)


def kernel_node(structure: dict) -> dict:
    return next(c["dataset"] for c in vars_group(structure)["children"] if c["name"] == "0")


def set_layout(layout) -> bytes:
    return crafted(lambda s: kernel_node(s).__setitem__("layout", layout))


def run_measured(code: str) -> tuple[int, str, int]:
    """Run *code* in a fresh interpreter; returns (exit code, stderr, peak RSS in bytes)."""
    script = (
        "import resource, sys\n"
        f"{code}\n"
        "print('PEAK', int(next(l.split()[1] for l in open(\"/proc/self/status\") if l.startswith(\"VmHWM:\"))) * 1024, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    peak = int(done.stderr.rsplit("PEAK", 1)[1].split()[0])
    return done.returncode, done.stderr.rsplit("PEAK", 1)[0], peak


# --- class 1: the write-anywhere hole on decompress ---------------------------------------


@pytest.mark.parametrize("form", ["absolute", "relative", "list"])
def test_external_layout_cannot_write_elsewhere(tmp_path, capsys, monkeypatch, form):
    """The exploit: ``"external": "/any/path"`` made decompress (exit 0) create that file holding the tensor's bytes."""
    victim = tmp_path / "victim" / "planted.bin"
    victim.parent.mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    name = os.path.relpath(victim) if form == "relative" else str(victim)  # relative: "../victim/planted.bin"
    external = [[name, 0, TINY_KERNEL.nbytes]] if form == "list" else name
    data = set_layout({"external": external})
    decompress_rejected(tmp_path, data, capsys, "rule 5.1.3")
    assert not victim.exists(), "decompress wrote the attacker's file"
    assert list(victim.parent.iterdir()) == []


def test_external_layout_in_a_keras_archive_is_refused(tmp_path, capsys):
    """The ``.keras`` weights tree takes the same writer: the same allow-list applies."""
    archive = tmp_path / "m.keras"
    weights = write_tiny_weights_h5(tmp_path / "inner.h5")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        zf.write(weights, "model.weights.h5")
    packed = tmp_path / "m.nnz"
    assert cli.main(["compress", str(archive), "-o", str(packed)]) == 0
    capsys.readouterr()
    header, _, _ = split_file(packed.read_bytes())
    blobs = blobs_of(packed.read_bytes())
    member = next(m for m in header["source"]["structure"]["members"] if "hdf5" in m)
    victim = tmp_path / "planted.bin"
    kernel_node(member["hdf5"])["layout"] = {"external": str(victim)}
    decompress_rejected(tmp_path, rebuild(header, blobs), capsys, "rule 5.1.3", suffix=".keras")
    assert not victim.exists()


@pytest.mark.parametrize("key", ["external", "dtype", "data", "fillvalue", "track_times", "scaleoffset", "efile_prefix", "name"])
def test_unknown_layout_members_are_refused(tmp_path, capsys, key):
    decompress_rejected(tmp_path, set_layout({"chunks": [1, 3], key: 1}), capsys, "rule 5.1.3")


@pytest.mark.parametrize("layout, rule", [
    ("gzip", "rule 5.1.3"),
    ({"chunks": 3}, "rule 5.1.4"),
    ({"chunks": []}, "rule 5.1.4"),
    ({"chunks": [0, 3]}, "rule 5.1.4"),
    ({"chunks": [-1, 3]}, "rule 5.1.4"),
    ({"chunks": [1.0, 3]}, "rule 5.1.4"),
    ({"chunks": [True, 3]}, "rule 5.1.4"),
    ({"chunks": [2**31, 2**31]}, "rule 5.1.4"),
    ({"chunks": [1] * 9}, "rule 5.1.4"),
    ({"chunks": [1, 3, 1]}, "rule 5.1.4"),               # rank differs from the tensor's [2, 3]
    ({"chunks": [2**22, 3], "maxshape": [-1, 3]}, "rule 5.1.4"),  # a 48 MiB chunk for 24 bytes
    ({"compression": "gzip", "compression_opts": 4}, "rule 5.1.4"),  # filters need chunks
    ({"maxshape": [2, 3]}, "rule 5.1.4"),
    ({"chunks": [1, 3], "maxshape": [2]}, "rule 5.1.5"),
    ({"chunks": [1, 3], "maxshape": [1, 3]}, "rule 5.1.5"),   # smaller than the tensor's 2 rows
    ({"chunks": [2, 3], "maxshape": [1, 3]}, "rule 5.1.5"),   # smaller than the chunk
    ({"chunks": [1, 3], "maxshape": [-2, 3]}, "rule 5.1.5"),
    ({"chunks": [1, 3], "maxshape": [None, 3]}, "rule 5.1.5"),
    ({"chunks": [1, 3], "maxshape": [2**63, 3]}, "rule 5.1.5"),
    ({"chunks": [3, 3]}, "rule 5.1.5"),                  # chunk over a fixed dimension
    ({"chunks": [1, 3], "compression": "lzf", "compression_opts": 4}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression": "szip", "compression_opts": 4}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression": "gzip", "compression_opts": 10}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression": "gzip", "compression_opts": -1}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression": "gzip", "compression_opts": True}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression": "gzip", "compression_opts": "9"}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression": "gzip"}, "rule 5.1.6"),
    ({"chunks": [1, 3], "compression_opts": 4}, "rule 5.1.6"),
    ({"chunks": [1, 3], "shuffle": 1}, "rule 5.1.6"),
    ({"chunks": [1, 3], "fletcher32": "yes"}, "rule 5.1.6"),
])
def test_bad_layout_values_are_refused(tmp_path, capsys, layout, rule):
    decompress_rejected(tmp_path, set_layout(layout), capsys, rule)


def test_layout_on_a_scalar_is_refused(tmp_path, capsys):
    """A scalar dataset cannot be chunked: h5py's TypeError becomes rule 5.1.4."""
    header, blobs = golden()
    entry = header["tensors"][1]  # var 1, shape [3] -> make it a scalar by giving it one element
    assert entry["name"].endswith("vars/1")
    entry["shape"] = []
    entry["parts"][0]["shape"] = []
    blobs[1] = blobs[1][:4]
    kernel = next(c["dataset"] for c in vars_group(header["source"]["structure"])["children"] if c["name"] == "1")
    kernel["layout"] = {"chunks": [1], "compression": "gzip", "compression_opts": 4}
    decompress_rejected(tmp_path, rebuild(header, blobs), capsys, "rule 5.1.4")


def test_valid_layouts_still_write(tmp_path, capsys):
    """The allow-list keeps every option nnzip reads from real files."""
    layout = {"chunks": [1, 3], "maxshape": [-1, 3], "compression": "gzip", "compression_opts": 9, "shuffle": True, "fletcher32": True}
    source = tmp_path / "ok.nnz"
    source.write_bytes(set_layout(layout))
    output = tmp_path / "ok.h5"
    assert cli.main(["decompress", str(source), "-o", str(output)]) == 0, capsys.readouterr().err
    with h5py.File(output) as h5:
        ds = h5["layers/dense/vars/0"]
        assert (ds.chunks, ds.maxshape, ds.compression, ds.compression_opts, ds.shuffle, ds.fletcher32) == \
            ((1, 3), (None, 3), "gzip", 9, True, True)
        np.testing.assert_array_equal(ds[()], TINY_KERNEL)


# --- class 6 (HDF5 part): every other field the writer reads --------------------------------


def tiny_latest(path: Path) -> Path:
    """The tiny weights file in the newest HDF5 format, whose groups keep large attributes densely."""
    with h5py.File(path, "w", libver="latest") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs.create("name", "dense", dtype=h5py.string_dtype("utf-8"))
        group.create_dataset("0", data=TINY_KERNEL)
    return path


def _vars_attr(structure: dict) -> dict:
    return vars_group(structure)["attrs"][0]


def _set_attr(**members):
    def edit(structure):
        _vars_attr(structure).update(members)
    return edit


def _drop_attr_member(key):
    def edit(structure):
        del _vars_attr(structure)[key]
    return edit


def _replace_attr(record):
    def edit(structure):
        vars_group(structure)["attrs"] = [record]
    return edit


def _rename_child(name):
    def edit(structure):
        vars_group(structure)["children"][0]["name"] = name
    return edit


_STRING = {"name": "s", "kind": "string", "encoding": "utf-8", "length": None, "shape": [], "value": ["x"]}
_NUMERIC = {"name": "n", "kind": "numeric", "dtype": "<i4", "shape": [2], "data": "AQAAAAIAAAA="}


@pytest.mark.parametrize("edit, rule", [
    (_set_attr(length=0), "rule 5.2.2"),
    (_set_attr(length=-1), "rule 5.2.2"),
    (_set_attr(length="5"), "rule 5.2.2"),
    (_set_attr(length=True), "rule 5.2.2"),
    (_set_attr(length=2**21), "rule 5.2.2"),
    (_drop_attr_member("length"), "rule 5.2.1"),
    (_set_attr(encoding="latin-1"), "rule 5.2.2"),
    (_drop_attr_member("encoding"), "rule 5.2.1"),
    (_set_attr(shape=[-1]), "rule 5.2.2"),
    (_set_attr(shape="scalar"), "rule 5.2.2"),
    (_set_attr(shape=[2]), "rule 5.2.3"),
    (_set_attr(value="dense"), "rule 5.2.3"),
    (_set_attr(value=["a\ud800b"]), "rule 6.19"),          # a lone surrogate: the header parser refuses it first
    (_set_attr(value=["a\0b"]), "rule 5.2.3"),             # NUL in a variable-length string
    (_set_attr(encoding="ascii", value=["caf\u00e9"]), "rule 5.2.3"),
    (_set_attr(length=3, value=["dense"]), "rule 5.2.3"),  # longer than its fixed length
    (_set_attr(kind="compound"), "rule 5.2.1"),
    (_set_attr(extra=1), "rule 5.2.1"),
    (_set_attr(name="na\ud800me"), "rule 6.19"),
    (_set_attr(name="na\udc80me"), "rule 5.1.2"),
    (_set_attr(name="a\0b"), "rule 5.1.2"),
    (_set_attr(name=""), "rule 5.1.2"),
    (_set_attr(name=7), "rule 5.1.2"),
    (lambda s: vars_group(s)["attrs"].append(dict(_vars_attr(s))), "rule 5.1.2"),  # duplicate name
    (_replace_attr({**_NUMERIC, "data": "AQAAAAIAAA*="}), "rule 5.2.3"),  # right length, not base64
    (_replace_attr({**_NUMERIC, "data": "AQAAAAIAAAA"}), "rule 5.2.3"),
    (_replace_attr({**_NUMERIC, "dtype": "<c8"}), "rule 5.2.2"),
    (_replace_attr({**_NUMERIC, "dtype": "|b1", "data": "AQI="}), "rule 5.2.3"),  # bool byte 2
    (_replace_attr({"name": "e", "kind": "empty", "dtype": "O"}), "rule 5.2.2"),
    (_replace_attr({"name": "e", "kind": "empty", "dtype": "<f4", "shape": []}), "rule 5.2.1"),
    (_rename_child("0\ud800"), "rule 6.19"),
    (_rename_child("a\0b"), "rule 5.1.2"),
    (_rename_child("."), "rule 5.1.2"),
    (_rename_child("a/b"), "rule 5.1.2"),
    (lambda s: vars_group(s).__setitem__("track_order", "yes"), "rule 5.1.1"),
    (lambda s: vars_group(s).__setitem__("external", []), "rule 5.1.1"),
    (lambda s: vars_group(s)["children"][0].__setitem__("group", {"attrs": [], "children": []}), "rule 5.1.1"),
    (lambda s: kernel_node(s).__setitem__("attrs", {}), "rule 5.1.1"),
    (lambda s: kernel_node(s).__setitem__("shape", [2, 3]), "rule 5.1.1"),
    (lambda s: vars_group(s)["attrs"].append(None), "rule 5.2.1"),
])
def test_bad_tree_fields_are_refused(tmp_path, capsys, edit, rule):
    """Each of these escaped as KeyError/ValueError/UnicodeEncodeError/TypeError before."""
    decompress_rejected(tmp_path, crafted(edit), capsys, rule)


def test_deep_nesting_is_refused(tmp_path, capsys):
    def edit(structure):
        node = vars_group(structure)
        for _ in range(70):
            node["children"].append({"name": "g", "group": {"attrs": [], "children": []}})
            node = node["children"][-1]["group"]
    decompress_rejected(tmp_path, crafted(edit), capsys, "rule 5.1.1")


def test_surrogate_escapes_round_trip(tmp_path, capsys):
    """Surrogate escapes (U+DC80-U+DCFF) stand for undecodable bytes and are written back as those bytes."""
    def edit(structure):
        vars_group(structure)["attrs"] += [
            {"name": "u", "kind": "string", "encoding": "utf-8", "length": None, "shape": [], "value": ["ok\udcff"]},
            {"name": "a", "kind": "string", "encoding": "ascii", "length": 4, "shape": [1], "value": ["\udc80b"]},
        ]
    source = tmp_path / "ok.nnz"
    source.write_bytes(crafted(edit))
    output = tmp_path / "ok.h5"
    assert cli.main(["decompress", str(source), "-o", str(output)]) == 0, capsys.readouterr().err
    with h5py.File(output) as h5:
        attrs = h5["layers/dense/vars"].attrs
        assert attrs["u"] == "ok\udcff"
        assert attrs["a"].tolist() == [b"\x80b"]


def test_large_attribute_round_trips(tmp_path, capsys):
    """An attribute over HDF5's 64 KiB header message (dense storage in the source) is written back."""
    source = tiny_latest(tmp_path / "big.weights.h5")
    with h5py.File(source, "a") as h5:
        h5["layers/dense/vars"].attrs.create("big", np.arange(30000, dtype="<i4"))
    packed, output = tmp_path / "big.nnz", tmp_path / "back.weights.h5"
    assert cli.main(["compress", str(source), "-o", str(packed)]) == 0, capsys.readouterr().err
    assert cli.main(["decompress", str(packed), "-o", str(output)]) == 0, capsys.readouterr().err
    with h5py.File(output) as h5:
        np.testing.assert_array_equal(h5["layers/dense/vars"].attrs["big"], np.arange(30000))


def test_hdf5_errors_while_writing_are_one_line(tmp_path, capsys):
    """What h5py still refuses (here: a 70 kB attribute name, over HDF5's header message) is one nnzip line."""
    data = crafted(lambda s: vars_group(s)["attrs"].append({**_NUMERIC, "name": "n" * 70000}))
    decompress_rejected(tmp_path, data, capsys, "HDF5 refused to write /layers/dense/vars")


def test_write_tree_turns_h5py_errors_into_format_errors(tmp_path):
    header, _ = golden()
    with pytest.raises(FormatError, match="HDF5 refused to write"):
        hdf5_tree.write_tree(tmp_path / "missing" / "x.h5", header["source"]["structure"], lambda name: TINY_KERNEL)


# --- class 4: attribute bombs ---------------------------------------------------------------


def test_attribute_bomb_is_refused_before_allocating(tmp_path):
    """length 2^20 x 8192 elements: 8 GiB was allocated from a header of a few kilobytes."""
    data = crafted(_replace_attr({**_STRING, "length": 2**20, "shape": [8192], "value": [""] * 8192}))
    (tmp_path / "bomb.nnz").write_bytes(data)
    out = tmp_path / "out.h5"
    status, err, peak = run_measured(
        f"from nnzip import cli\nstatus = cli.main(['decompress', {str(tmp_path / 'bomb.nnz')!r}, '-o', {str(out)!r}])\n"
        "sys.stderr.flush()\nprint('STATUS', status, file=sys.stderr)")
    assert "STATUS 1" in err and "rule 5.2.4" in err, err
    assert peak < 1 << 30, f"peak RSS {peak:,} bytes"
    assert not out.exists() and not _leftovers(tmp_path)


def test_attributes_in_total_are_capped(tmp_path, capsys):
    records = [{**_STRING, "name": f"s{i}", "length": 2**20, "shape": [16], "value": [""] * 16} for i in range(5)]
    decompress_rejected(tmp_path, crafted(lambda s: vars_group(s).__setitem__("attrs", records)), capsys, "rule 5.2.4")


def test_huge_source_attribute_is_refused(tmp_path, capsys):
    source = tiny_latest(tmp_path / "attr.weights.h5")
    with h5py.File(source, "a") as h5:
        h5["layers/dense/vars"].attrs.create("big", np.zeros(17, dtype=f"S{2**20}"))
    compress_rejected(tmp_path, source, capsys, "rule 8.9")


# --- class 2: inputs that read elsewhere ----------------------------------------------------


def test_external_storage_is_refused(tmp_path, capsys):
    """The dataset's values live in another file: its bytes would have gone into the .nnz."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"private key material....")
    source = tmp_path / "ext.weights.h5"
    with h5py.File(source, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        group.create_dataset("0", shape=(2, 3), dtype="<f4", external=[(str(secret), 0, 24)])
    err = compress_rejected(tmp_path, source, capsys, "rule 8.3")
    assert "secret.bin" in err


def test_virtual_dataset_is_refused(tmp_path, capsys):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["data"] = np.arange(6, dtype="<f4")
    source = tmp_path / "vds.weights.h5"
    layout = h5py.VirtualLayout(shape=(6,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(other), "data", shape=(6,))
    with h5py.File(source, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        group.create_virtual_dataset("0", layout)
    compress_rejected(tmp_path, source, capsys, "rule 8.4")


@pytest.mark.parametrize("link", ["soft", "external"])
def test_soft_and_external_links_are_refused(tmp_path, capsys, link):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["data"] = np.arange(6, dtype="<f4")
    source = write_tiny_weights_h5(tmp_path / "links.weights.h5")
    with h5py.File(source, "a") as h5:
        h5["layers/dense/vars/2"] = h5py.SoftLink("/layers/dense/vars/0") if link == "soft" else h5py.ExternalLink(str(other), "/data")
    compress_rejected(tmp_path, source, capsys, "rule 8.1")


@pytest.mark.parametrize("target", ["layers/dense/vars/0", "layers"])
def test_second_hard_links_and_cycles_are_refused(tmp_path, capsys, target):
    """A dataset linked N times would be read N times; a group linked into itself would never end."""
    source = write_tiny_weights_h5(tmp_path / "hard.weights.h5")
    with h5py.File(source, "a") as h5:
        h5["layers/dense/vars/again"] = h5[target]
    compress_rejected(tmp_path, source, capsys, "rule 8.2")


def test_undecodable_link_name_is_refused(tmp_path, capsys):
    source = write_tiny_weights_h5(tmp_path / "name.weights.h5")
    with h5py.File(source, "a") as h5:
        h5py.h5g.create(h5["layers/dense"].id, b"bad\xff")
    compress_rejected(tmp_path, source, capsys, "rule 8.1")


def test_named_datatype_is_refused(tmp_path, capsys):
    source = write_tiny_weights_h5(tmp_path / "type.weights.h5")
    with h5py.File(source, "a") as h5:
        h5["layers/dense/t"] = np.dtype("<f4")
    compress_rejected(tmp_path, source, capsys, "rule 8.6")


@pytest.mark.parametrize("options", [{"compression": "lzf"}, {"scaleoffset": 0}, "double-gzip"])
def test_unknown_filters_are_refused(tmp_path, capsys, options):
    source = write_tiny_weights_h5(tmp_path / "filters.weights.h5")
    with h5py.File(source, "a") as h5:
        if options == "double-gzip":
            gzip_dataset(h5["layers/dense/vars"], "2", 1024, 256, twice=True)
        else:
            h5["layers/dense/vars"].create_dataset("2", data=np.arange(100, dtype="<i4"), chunks=(10,), **options)
    compress_rejected(tmp_path, source, capsys, "rule 8.5")


# --- class 7 (HDF5): compress-side bombs ----------------------------------------------------


def gzip_dataset(group: h5py.Group, name: str, elements: int, chunk: int, dtype: str = "<f4", twice: bool = False) -> None:
    """A gzip dataset of zeros written chunk by chunk from one pre-compressed chunk (quick to build)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((chunk,))
    dcpl.set_deflate(9)
    if twice:
        dcpl.set_deflate(9)
    space = h5py.h5s.create_simple((elements,))
    dataset = h5py.h5d.create(group.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
    blob = zlib.compress(bytes(chunk * np.dtype(dtype).itemsize), 9)
    if twice:
        blob = zlib.compress(blob, 9)
    for start in range(0, elements, chunk):
        dataset.write_direct_chunk((start,), blob)


def gzip_bomb(path: Path, nbytes: int, dtype: str = "<f4", twice: bool = False) -> Path:
    with h5py.File(path, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        itemsize = np.dtype(dtype).itemsize
        gzip_dataset(group, "0", nbytes // itemsize, 16 * MiB // itemsize, dtype, twice)
    return path


def _compress_measured(tmp_path: Path, source: Path) -> tuple[str, int]:
    out = tmp_path / "out.nnz"
    status, err, peak = run_measured(
        f"from nnzip import cli\nstatus = cli.main(['compress', {str(source)!r}, '-o', {str(out)!r}])\n"
        "sys.stderr.flush()\nprint('STATUS', status, file=sys.stderr)")
    assert not out.exists() and not _leftovers(tmp_path)
    return err, peak


def test_double_gzip_bomb_is_refused_before_reading(tmp_path):
    """1 GiB of zeros in a 20 kB file (deflate applied twice): refused on its declared size."""
    source = gzip_bomb(tmp_path / "bomb.weights.h5", 1 << 30, twice=True)
    assert source.stat().st_size < 100_000
    err, peak = _compress_measured(tmp_path, source)
    assert "STATUS 1" in err and "rule 8.7" in err and err.count("nnzip: error:") == 1, err
    assert peak < 1 << 30, f"peak RSS {peak:,} bytes"


@pytest.mark.parametrize("shape, rule", [((2**20, 2**20), "rule 8.7"), ((2**15, 2**15), "rule 8.7")])
def test_huge_chunked_declaration_is_refused(tmp_path, shape, rule):
    """A chunked dataset with no chunk written reads as fill values: a few kB declaring 4 TiB (or 4 GiB)."""
    source = tmp_path / "huge.weights.h5"
    with h5py.File(source, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        group.create_dataset("0", shape=shape, dtype="<f4", chunks=(1024, 1024), compression="gzip")
    err, peak = _compress_measured(tmp_path, source)
    assert "STATUS 1" in err and rule in err and err.count("nnzip: error:") == 1, err
    assert peak < 1 << 30, f"peak RSS {peak:,} bytes"


def test_gzip_bomb_over_the_given_cap_is_refused(tmp_path):
    """The cap is the caller's: a 256 MiB gzip dataset in a 300 kB file, read with a 64 MiB cap."""
    source = gzip_bomb(tmp_path / "bomb.weights.h5", 256 * MiB)
    with pytest.raises(InputError, match="rule 8.7"):
        keras_h5.read(source, limits=DecodeLimits(max_output=64 * MiB))


def test_gzip_bomb_reads_in_about_one_tensor_of_memory(tmp_path):
    """A big-endian 256 MiB gzip dataset: read straight into one little-endian array (old code: 2 copies)."""
    nbytes = 256 * MiB
    source = gzip_bomb(tmp_path / "bomb.weights.h5", nbytes, dtype=">f4")
    status, err, peak = run_measured(
        "from nnzip.formats import keras_h5\nimport numpy as np\n"
        f"values = keras_h5.read({str(source)!r}).tensors['layers/dense/vars/0']\n"
        f"assert values.dtype == np.dtype('<f4') and values.nbytes == {nbytes} and not values.any()")
    assert status == 0, err
    base, _, base_peak = run_measured("from nnzip.formats import keras_h5")
    assert peak - base_peak < nbytes + 64 * MiB, f"reading took {peak - base_peak:,} bytes for a {nbytes:,}-byte tensor"


@pytest.mark.parametrize("chunks", [None, (8, 7), (5, 3)])
def test_pieces_reassemble_the_dataset(tmp_path, monkeypatch, chunks):
    """Reading in pieces (made tiny here) gives the same array, for contiguous and chunked storage."""
    monkeypatch.setattr(hdf5_tree, "READ_PIECE_BYTES", 100)
    values = np.arange(100 * 7, dtype=">f8").reshape(100, 7)
    source = write_tiny_weights_h5(tmp_path / "pieces.weights.h5")
    with h5py.File(source, "a") as h5:
        h5["layers/dense/vars"].create_dataset("2", data=values, chunks=chunks)
    model = keras_h5.read(source)
    np.testing.assert_array_equal(model.tensors["layers/dense/vars/2"], values)
    assert model.tensors["layers/dense/vars/2"].dtype == np.dtype("<f8")


def test_structure_checks_accept_what_the_reader_writes(tmp_path):
    """The reader's trees pass check_tree (what compress writes, decompress reads)."""
    source = write_tiny_weights_h5(tmp_path / "ok.weights.h5")
    with h5py.File(source, "a") as h5:
        group = h5["layers/dense/vars"]
        group.create_dataset("2", data=np.ones((4, 5), "<f4"), chunks=(2, 5), maxshape=(None, 5), compression="gzip", shuffle=True, fletcher32=True)
        group.attrs.create("fixed", np.array([b"ab", b"\xff"]), dtype=h5py.string_dtype("ascii", 2))
        group.attrs.create("empty", h5py.Empty("<f8"))
        group.attrs.create("flags", np.array([True, False]))
    structure = keras_h5.read(source).structure
    hdf5_tree.check_tree(copy.deepcopy(structure))


def test_external_storage_inside_a_keras_archive_is_refused(tmp_path, capsys):
    """The ``model.weights.h5`` member of a ``.keras`` file is surveyed by the same rules."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(24)))
    inner = tmp_path / "inner.h5"
    with h5py.File(inner, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        group.create_dataset("0", shape=(2, 3), dtype="<f4", external=[(str(secret), 0, 24)])
    archive = tmp_path / "ext.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        zf.write(inner, "model.weights.h5")
    compress_rejected(tmp_path, archive, capsys, "rule 8.3")


def test_optimizer_link_elsewhere_is_not_followed(tmp_path, capsys):
    """An ``optimizer`` external link is neither measured nor dropped: rule 8.1, the other file unopened."""
    source = write_tiny_weights_h5(tmp_path / "opt.weights.h5")
    missing = tmp_path / "gone.h5"  # a link to a file that does not exist: following it would fail differently
    with h5py.File(source, "a") as h5:
        h5["optimizer"] = h5py.ExternalLink(str(missing), "/")
    err = compress_rejected(tmp_path, source, capsys, "rule 8.1")
    assert "external link" in err
