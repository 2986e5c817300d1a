"""One reader (issue 12 item 1): every check of a .nnz runs once, at open, in :class:`nnzip.reader.NnzReader`,
and every read path (decompress, decompress -t, inspect, nnzip.open/load, the CLI) goes through it.

The counts wrap the real ``check_tensor_entry`` (it still runs and still raises); nothing of
h5py, Keras or the stages is replaced.
"""

from __future__ import annotations

import ast
import collections
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import nnzip
from .nnz_tools import assert_decompress_rejects, blobs_of, golden_tiny_bytes, rebuild, split_file
from nnzip import api, cli, header_rules, pipeline
from nnzip import reader as reader_module
from nnzip.errors import FormatError
from nnzip.limits import DecodeLimits
from nnzip.options import rules_from_options
from nnzip.reader import NnzReader
from .samples import SAMPLES
from .test_api import CountingBytes as CountingFile  # records every (offset, size) read

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = sorted(FIXTURES.glob("golden-*.nnz"))


@pytest.fixture(scope="module")
def mlp_nnz(tmp_path_factory) -> Path:
    """samples/mlp.h5 with 4-bit codebooks: several tensors, each with its own chain."""
    path = tmp_path_factory.mktemp("one_reader") / "mlp.nnz"
    api.compress(SAMPLES / "mlp.h5", path, rules=rules_from_options(bits=4))
    return path


@pytest.fixture
def entry_checks(monkeypatch) -> collections.Counter:
    """How often each tensor entry is checked, by name, wherever the check is called from."""
    counts: collections.Counter = collections.Counter()
    real = pipeline.check_tensor_entry

    def counting(entry, blob_sizes, limits=DecodeLimits()):
        counts[entry.get("name") if isinstance(entry, dict) else None] += 1
        return real(entry, blob_sizes, limits)

    monkeypatch.setattr(pipeline, "check_tensor_entry", counting)  # decode_tensor's own call
    monkeypatch.setattr(header_rules, "check_tensor_entry", counting)  # the reader's call
    return counts


def tensor_names(path: Path) -> list[str]:
    with NnzReader(path) as reader:
        return list(reader)


# --- every entry checked once ---------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cli_decompress_checks_each_entry_once(mlp_nnz, tmp_path, entry_checks, jobs):
    names = tensor_names(mlp_nnz)
    entry_checks.clear()
    assert cli.main(["decompress", str(mlp_nnz), "-o", str(tmp_path / "out.h5"), "-q", "--jobs", jobs]) == 0
    assert dict(entry_checks) == {name: 1 for name in names}


def test_cli_decompress_opens_the_file_once(mlp_nnz, tmp_path, monkeypatch):
    opened = []
    real = reader_module.open_container
    monkeypatch.setattr(reader_module, "open_container", lambda path: opened.append(path) or real(path))
    assert cli.main(["decompress", str(mlp_nnz), "-o", str(tmp_path / "out.h5"), "-q"]) == 0
    assert [os.fspath(p) for p in opened] == [str(mlp_nnz)]


@pytest.mark.parametrize("path", ["inspect", "test", "load", "open", "library-decompress", "decompress-to-file-object"])
def test_every_read_path_checks_each_entry_once(mlp_nnz, tmp_path, entry_checks, capsys, path):
    names = tensor_names(mlp_nnz)
    entry_checks.clear()
    if path == "inspect":
        assert cli.main(["inspect", str(mlp_nnz)]) == 0
    elif path == "test":
        assert cli.main(["decompress", "-t", str(mlp_nnz), "-q"]) == 0
    elif path == "load":
        assert list(nnzip.load(mlp_nnz.read_bytes())) == names
    elif path == "open":
        with nnzip.open(mlp_nnz) as f:
            for name in f:
                f[name]
                f[name]  # decoding twice checks nothing again
    elif path == "library-decompress":
        nnzip.decompress(mlp_nnz, tmp_path / "out.h5")
    else:
        nnzip.decompress(mlp_nnz, io.BytesIO())
    capsys.readouterr()
    assert dict(entry_checks) == {name: 1 for name in names}


def test_decode_tensor_still_checks_its_entry(mlp_nnz, entry_checks):
    """The unchecked path (dask workers, sweep) = check_tensor_entry + decode_checked, same array."""
    with NnzReader(mlp_nnz) as reader:
        name = next(iter(reader))
        entry_checks.clear()
        alone = pipeline.decode_tensor(reader.entry(name), reader.blob, reader.blob_sizes)
        assert entry_checks[name] == 1
        assert np.array_equal(alone, reader.tensor(name)) and entry_checks[name] == 1
        broken = {**reader.entry(name), "parts": []}
        with pytest.raises(FormatError, match="rule 4.2"):
            pipeline.decode_tensor(broken, reader.blob, reader.blob_sizes)


@pytest.mark.parametrize("fixture", GOLDEN, ids=lambda p: p.name)
def test_decode_checked_gives_what_decode_tensor_gives(fixture):
    with NnzReader(fixture) as reader:
        for name in reader:
            checked = reader.checked(name)
            assert checked.name == name
            assert [part.chunk_size for part in checked.parts] == [part.get("chunk_size") for part in reader.entry(name)["parts"]]
            a = pipeline.decode_checked(checked, reader.blob)
            b = pipeline.decode_tensor(reader.entry(name), reader.blob, reader.blob_sizes)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- the same refusal on every path ------------------------------------------------------------


def _broken(tmp_path: Path, change) -> bytes:
    """The golden tiny file with its header changed by *change(header)*, re-assembled with valid CRCs."""
    data = golden_tiny_bytes(tmp_path)
    header = split_file(data)[0]
    change(header)
    return rebuild(header, blobs_of(data))


def _set(key, value):
    return lambda header: header.__setitem__(key, value)


BROKEN = {
    "3.1": _set("format", "zip"),
    "3.3": lambda h: h["tensors"].reverse(),
    "3.6": lambda h: h["source"].__setitem__("filename", "../x.h5"),
    "3.9": lambda h: h["tensors"][0].__setitem__("stats", {"error": -1}),
    "4.2": lambda h: h["tensors"][0].__setitem__("parts", []),
    "4.4": lambda h: h["tensors"][1]["parts"][0].__setitem__("blob", 7),
}


def _refusal(action) -> str:
    with pytest.raises(FormatError) as info:
        action()
    return str(info.value)


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_every_read_path_gives_the_same_refusal(tmp_path, capsys, rule):
    data = _broken(tmp_path, BROKEN[rule])
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "bad.nnz"
    source.write_bytes(data)
    messages = {
        "open": _refusal(lambda: nnzip.open(data)),
        "load": _refusal(lambda: nnzip.load(io.BytesIO(data))),
        "inspect": _refusal(lambda: nnzip.inspect(source)),
        "read_tensors": _refusal(lambda: api.read_tensors(source)),
        "decompress": _refusal(lambda: nnzip.decompress(source, tmp_path / "out.h5")),
        "decompress-to-file-object": _refusal(lambda: nnzip.decompress(source, io.BytesIO())),
        "reader": _refusal(lambda: NnzReader(source)),
    }
    assert len(set(messages.values())) == 1, messages
    message = messages["reader"]
    assert message.startswith(f"rule {rule}"), message
    assert not (tmp_path / "out.h5").exists() and os.listdir(tmp_path / "src") == ["bad.nnz"]
    err = assert_decompress_rejects(tmp_path, data, capsys, f"rule {rule}", inspect_too=True)
    assert message in err
    assert cli.main(["decompress", "-t", str(tmp_path / "bad.nnz")]) == 1
    assert message in capsys.readouterr().err


def test_a_corrupt_blob_is_refused_when_read_the_same_way(tmp_path, capsys):
    """Rule 6.13 is found on reading the blob: open succeeds, the tensor (and every full read) refuses."""
    data = bytearray(golden_tiny_bytes(tmp_path))
    data[-1] ^= 0xFF  # the last blob's last byte
    data = bytes(data)
    with nnzip.open(data) as f:
        names = list(f)
        f[names[0]]  # the first tensor's blob is intact
        with pytest.raises(FormatError, match="rule 6.13"):
            f[names[-1]]
    source = tmp_path / "src.nnz"
    source.write_bytes(data)
    for action in (lambda: nnzip.inspect(source), lambda: nnzip.load(data), lambda: nnzip.decompress(source, tmp_path / "o.h5")):
        with pytest.raises(FormatError, match="rule 6.13: blob .* is corrupt"):
            action()
    assert_decompress_rejects(tmp_path, data, capsys, "rule 6.13", inspect_too=True)


def test_rule_4_7_refusal_is_the_readers_for_every_path(mlp_nnz, tmp_path, capsys):
    small = DecodeLimits(max_output=1000)
    messages = {_refusal(lambda: NnzReader(mlp_nnz, limits=small)), _refusal(lambda: nnzip.inspect(mlp_nnz, limits=small)),
                _refusal(lambda: api.decompress(mlp_nnz, tmp_path / "o.h5", limits=small)),
                _refusal(lambda: nnzip.load(mlp_nnz, limits=small))}
    assert len(messages) == 1 and next(iter(messages)).startswith("rule 4.7:"), messages
    assert cli.main(["decompress", str(mlp_nnz), "-o", str(tmp_path / "o.h5"), "--max-output", "1000"]) == 1
    assert "rule 4.7:" in capsys.readouterr().err and not (tmp_path / "o.h5").exists()


# --- lazy reading ------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [0, 2])
def test_reader_reads_only_the_asked_tensors_blobs_chunked_too(threads):
    """A chunked part's chunks are its blobs: reading the tensor (chunks on an executor or not) reads exactly those."""
    handle = CountingFile((FIXTURES / "golden-chunked.nnz").read_bytes())
    with NnzReader(handle) as reader, ThreadPoolExecutor(threads or 1) as pool:
        start, blobs = reader.container.data_start, reader.header["blobs"]
        for name in reader:
            handle.reads.clear()
            reader.tensor(name, pool if threads else None)
            indexes = [i for part in reader.entry(name)["parts"] for i in pipeline.part_blobs(part)]
            wanted = sorted((start + blobs[i]["offset"], blobs[i]["size"]) for i in indexes)
            assert sorted(handle.reads) == wanted, name
    assert any(len(pipeline.part_blobs(p)) > 1 for e in split_file((FIXTURES / "golden-chunked.nnz").read_bytes())[0]["tensors"]
               for p in e["parts"]), "the fixture should have a chunked part"


def test_reader_closes_and_says_so(mlp_nnz):
    reader = NnzReader(mlp_nnz)
    name = next(iter(reader))
    reader.close()
    assert reader.closed
    with pytest.raises(ValueError, match="closed"):
        reader.tensor(name)
    with nnzip.open(mlp_nnz) as f:
        pass
    assert "closed" in repr(f)
    with pytest.raises(KeyError):
        f["nosuch"]  # a missing name is a KeyError even once closed, as before


def test_reader_inspect_of_bytes_equals_inspect_of_the_path(mlp_nnz):
    """One summary for both: the bytes' only difference is the file name."""
    by_path = nnzip.inspect(mlp_nnz)
    with nnzip.open(mlp_nnz.read_bytes()) as f:
        by_bytes = f.inspect()
    assert by_bytes == {**by_path, "file": "<stream>"}


# --- layering ----------------------------------------------------------------------------------


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions (relative names resolved in nnzip)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: within nnzip (these files are nnzip/*.py)
            base = "nnzip" + (f".{node.module}" if node.module else "")
            found.update([base] if node.module else [f"{base}.{alias.name}" for alias in node.names])
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_container_imports_nothing_above_it():
    """container.py is the byte layer: no stage, pipeline, source format or reader, not even inside a function."""
    imported = _imported_modules(Path(nnzip.__file__).parent / "container.py")
    nnzip_modules = {name for name in imported if name.startswith("nnzip")}
    assert nnzip_modules <= {"nnzip.errors"}, nnzip_modules


def test_the_reader_side_does_not_import_the_writer_side():
    """reader, header_rules and reports read through the checks only: no compress, no api facade at their top."""
    root = Path(nnzip.__file__).parent
    for name in ("reader.py", "header_rules.py"):
        imported = _imported_modules(root / name)
        assert not imported & {"nnzip.api", "nnzip.public", "nnzip.cli", "nnzip.search", "nnzip.sweep"}, (name, imported)


def test_the_formats_hand_the_container_its_source_rules(monkeypatch):
    """The compact form's names (§3.1 item 5) and an ONNX subgraph's 1.2 (§2) come from nnzip.formats, installed on import."""
    from nnzip import container, formats

    with NnzReader(FIXTURES / "golden-compact.nnz") as reader:
        header = reader.header
    subgraph = {"source": {"format": "onnx", "structure": {"tensors": [{"name": "w", "at": ["initializer", 0, [[0, 0, -1]]]}]}}}
    assert container.format_minor(subgraph, 0) == 2
    assert all("name" not in entry for entry in container.compact_header(header)["tensors"])
    assert formats.structure_names(header["source"]) == [entry["name"] for entry in header["tensors"]]
    monkeypatch.setattr(container, "_source_rules", container.SourceRules())  # a container told nothing of the formats
    assert container.format_minor(subgraph, 0) == 0
    assert [entry["name"] for entry in container.compact_header(header)["tensors"]] == [entry["name"] for entry in header["tensors"]]
