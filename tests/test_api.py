"""The deployment API (issue 10): nnzip.open / nnzip.load on paths, bytes and file objects,
the keyword compress front end, decompress to a file object, docstrings and doctests."""

from __future__ import annotations

import doctest
import io as pyio
import pydoc
import shutil
import subprocess

import numpy as np
import pytest

import nnzip
import nnzip.options
import nnzip.public
import nnzip.reader
from nnzip import api, formats
from .samples import SAMPLES


class CountingBytes(pyio.BytesIO):
    """A seekable in-memory file recording every (offset, size) read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, size=-1):
        start = self.tell()
        data = super().read(size)
        self.reads.append((start, len(data)))
        return data


@pytest.fixture(scope="module")
def mlp_nnz(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "mlp.nnz"
    api.compress(SAMPLES / "mlp.h5", path, rules=nnzip.options.rules_from_options(bits=4))
    return path


def blob_ranges(header: dict, data_start: int, indices) -> set[tuple[int, int]]:
    return {(data_start + header["blobs"][i]["offset"], header["blobs"][i]["size"]) for i in indices}


def test_open_reads_only_the_asked_tensors_blobs(mlp_nnz):
    handle = CountingBytes(mlp_nnz.read_bytes())
    with nnzip.open(handle) as f:
        data_start = f.reader.container.data_start
        every_blob = blob_ranges(f.header, data_start, range(len(f.header["blobs"])))
        # opening reads the preamble, header and inter-blob padding: no blob byte
        for offset, size in handle.reads:
            assert not any(offset < b + n and b < offset + size for b, n in every_blob if size and n), (offset, size)
        for name in f:
            handle.reads.clear()
            array = f[name]
            wanted = blob_ranges(f.header, data_start, [part["blob"] for part in f.entry(name)["parts"]])
            assert set(handle.reads) == wanted and len(handle.reads) == len(wanted), name
            assert array.shape == tuple(f.entry(name)["shape"])
    assert not handle.closed  # the caller's file object stays the caller's


def test_open_is_a_read_only_mapping_with_header_and_inspect(mlp_nnz):
    expected = api.inspect(mlp_nnz)
    with nnzip.open(mlp_nnz) as f:
        assert list(f.keys()) == [t["name"] for t in expected["tensors"]] and len(f) == len(expected["tensors"])
        assert f.source_format == "keras-h5" and f.header["format"] == "nnzip"
        assert f.inspect() == expected
        with pytest.raises(KeyError):
            f["nosuch"]
        with pytest.raises(TypeError):
            f["x"] = np.zeros(1)  # read-only
        assert "keras-h5" in repr(f)
    with pytest.raises(ValueError, match="closed"):
        f[next(iter(expected["tensors"]))["name"]]
    with nnzip.open(mlp_nnz.read_bytes()) as f:  # bytes: the same summary, the file named <stream>
        assert {**f.inspect(), "file": None} == {**expected, "file": None}


def test_load_of_bytes_equals_decompress_then_reading_the_file(mlp_nnz, tmp_path):
    rebuilt = tmp_path / "rebuilt.h5"
    nnzip.decompress(mlp_nnz, rebuilt)
    from_file = formats.read_model(rebuilt, keep_optimizer=True).tensors
    loaded = nnzip.load(mlp_nnz.read_bytes())
    assert list(loaded) == list(from_file)
    for name, array in from_file.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
    # a stream that cannot seek (a real pipe, as an HTTP body would be) is read into memory
    with subprocess.Popen(["cat", str(mlp_nnz)], stdout=subprocess.PIPE) as cat:
        assert not cat.stdout.seekable()
        piped = nnzip.load(cat.stdout)
    assert all(np.array_equal(piped[name], from_file[name]) for name in from_file)
    with open(mlp_nnz, "rb") as handle:
        assert all(np.array_equal(a, from_file[n]) for n, a in nnzip.load(handle).items())


def test_open_refuses_bad_files_with_the_rule(mlp_nnz):
    with pytest.raises(nnzip.FormatError, match="rule 6.1"):
        nnzip.open(b"not an nnz file at all, no")
    data = bytearray(mlp_nnz.read_bytes())
    data[-3] ^= 0xFF  # inside the last blob: the header is fine, that tensor is not
    with nnzip.open(bytes(data)) as f:
        last = [name for name in f if f.entry(name)["parts"][-1]["blob"] == len(f.header["blobs"]) - 1][0]
        first = next(iter(f))
        assert f[first].size  # the untouched tensors still decode
        with pytest.raises(nnzip.FormatError, match="rule 6.13"):
            f[last]
    with pytest.raises(TypeError):
        nnzip.open(12345)


# --- keyword compress ---------------------------------------------------------------------


def test_compress_takes_the_cli_options_as_keywords(tmp_path):
    out = tmp_path / "m.nnz"
    report = nnzip.compress(SAMPLES / "mlp.h5", out, bits=3, layers={"output": {"bits": 6}})
    assert report.output == out and report.file_bytes == out.stat().st_size and report.ratio > 1
    methods = {t.name: t.method for t in report.tensors}
    assert any("kmeans(bits=3)" in m for m in methods.values()) and any("kmeans(bits=6)" in m for m in methods.values())
    # the same refusals as the CLI, before anything is written
    bad = tmp_path / "bad.nnz"
    for kwargs, fragment in (({"bits": 3, "lossless": True}, "contradicts --bits"), ({"bits": 99}, "bits"),
                             ({"layers": ["hiden:bits=2"]}, "close matches: hidden"),
                             ({"budget": {"data": "x.npz", "max_drop": -0.1}}, "--max-drop must be >= 0"),
                             ({"budget": {"data": "x.npz", "max_drop": 0.01, "margin": -1}}, "--margin must be >= 0"),
                             ({"budget": nnzip.Budget("x.npz", 0.01), "bits": 4}, "searches the settings itself"),
                             ({"budget": {"max_drop": 0.01}}, "needs --data")):
        with pytest.raises(nnzip.NnzipError, match=fragment):
            nnzip.compress(SAMPLES / "mlp.h5", bad, **kwargs)
        assert not bad.exists() and not [p for p in tmp_path.iterdir() if ".nnzip-" in p.name]


def test_compress_a_dict_of_arrays_to_a_file_object_and_load_it_back(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"dense/kernel": rng.standard_normal((128, 64)).astype(np.float32), "dense/bias": np.arange(64, dtype=np.float32),
               "steps": np.array([7], dtype=np.int64)}
    stream = pyio.BytesIO()
    report = nnzip.compress(weights, stream, bits=4)
    assert report.output is stream and report.file_bytes == len(stream.getvalue())
    loaded = nnzip.load(stream.getvalue())
    assert list(loaded) == list(weights)
    assert np.array_equal(loaded["dense/bias"], weights["dense/bias"]) and np.array_equal(loaded["steps"], weights["steps"])
    error = np.linalg.norm(loaded["dense/kernel"] - weights["dense/kernel"]) / np.linalg.norm(weights["dense/kernel"])
    assert 0 < error < 0.2 and loaded["dense/kernel"].dtype == np.float32
    exact = nnzip.load(nnzip.compress(weights, tmp_path / "w.nnz").output)
    assert all(np.array_equal(exact[k], weights[k]) for k in weights)
    with pytest.raises(nnzip.ConfigError, match="only numeric"):
        nnzip.compress({"x": np.array([object()])}, tmp_path / "o.nnz")
    with pytest.raises(nnzip.ConfigError, match="needs dst"):
        nnzip.compress(weights)


def test_compress_a_dict_keeps_scalars_and_layouts(tmp_path):
    """A 0-d scalar stays 0-d (np.ascontiguousarray would make it 1-d) and a Fortran-ordered array keeps its values."""
    weights = {"step": np.array(7, dtype=np.int64), "w": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))}
    loaded = nnzip.load(nnzip.compress(weights, tmp_path / "s.nnz").output)
    assert loaded["step"].shape == () and int(loaded["step"]) == 7
    assert np.array_equal(loaded["w"], weights["w"])


def test_decompress_to_a_file_object(mlp_nnz, tmp_path):
    stream = pyio.BytesIO()
    assert nnzip.decompress(mlp_nnz, stream) is stream
    copy = tmp_path / "copy.h5"
    copy.write_bytes(stream.getvalue())
    expected = nnzip.load(mlp_nnz)
    got = formats.read_model(copy, keep_optimizer=True).tensors
    assert all(np.array_equal(got[name], expected[name]) for name in expected)


# --- documentation --------------------------------------------------------------------------


def test_every_public_name_has_a_docstring_and_help_is_a_page():
    for name in nnzip.__all__:
        if name != "__version__":
            assert (getattr(nnzip, name).__doc__ or "").strip(), name
    page = pydoc.render_doc(nnzip, renderer=pydoc.plaintext)
    for word in ("nnzip.open", "nnzip.load", "bits=4", "FormatError"):
        assert word in page


@pytest.mark.parametrize("module", [nnzip.reader, nnzip.public, nnzip.options])
def test_doctests_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_readme_api_examples_run(tmp_path, monkeypatch):
    """The README's API section is a doctest: run it with the samples copied beside it."""
    readme = (SAMPLES.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("## API")
    section = readme[start:readme.index("\n## ", start + 5)]
    section = "\n".join(line for line in section.splitlines() if not line.startswith("```"))  # fences end no output
    for name in ("mlp.h5", "fashion-mnist-val.npz", "fashion-mnist-test.npz"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(section, {}, "README API", "README.md", 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0


def test_jobs_and_rdo_are_keywords_like_the_cli_flags(tmp_path):
    """``jobs=`` and ``rdo=`` are ``--jobs`` and ``--rdo``: the file is the same for any jobs; bad values are refused."""
    rng = np.random.default_rng(1)
    weights = {"w": rng.standard_normal((256, 128)).astype(np.float32)}
    one = nnzip.compress(weights, tmp_path / "1.nnz", uniform=1.0, rdo=0.12, jobs=1).output.read_bytes()
    two = nnzip.compress(weights, tmp_path / "2.nnz", uniform=1.0, rdo=0.12, jobs=2).output.read_bytes()
    plain = nnzip.compress(weights, tmp_path / "p.nnz", uniform=1.0).output.read_bytes()
    assert one == two and len(one) < len(plain)
    assert nnzip.decompress(tmp_path / "1.nnz", tmp_path / "a.npz", jobs=2).read_bytes() == nnzip.decompress(tmp_path / "1.nnz", tmp_path / "b.npz").read_bytes()
    for bad in (0, -1, 1.5):
        with pytest.raises(nnzip.ConfigError, match="jobs"):
            nnzip.compress(weights, tmp_path / "x.nnz", jobs=bad)
    with pytest.raises(nnzip.ConfigError, match="--rdo"):
        nnzip.compress(weights, tmp_path / "y.nnz", rdo=0.12)
