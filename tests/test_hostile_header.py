"""Hostile header fields: every member a reader uses is checked (rules 3.5-3.9, 6.7, 6.16-6.19).

Each crafted file has valid CRCs and a valid blob table, so only the header member under test
is wrong.  It goes through the real CLI (``cli.main``) for ``decompress`` (with ``-o`` and with
the default output name), ``inspect`` (text and ``--json``) and ``verify``: each must exit 1
with a one-line error naming the rule, print nothing on stdout and leave no file behind.  A
structure-aware mutation test then retypes and deletes every header member of real files in
turn: ``decompress`` and ``inspect`` either succeed or raise an NnzipError, nothing else.
"""

from __future__ import annotations

import copy
import json
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from .nnz_tools import assemble, blobs_of, rebuild, split_file
from nnzip import api, cli
from nnzip.container import encode_header
from nnzip.errors import NnzipError
from nnzip.plan import PlanRules, Settings
from nnzip.verification import _original_beside
from .samples import SAMPLES

GOLDEN = Path(__file__).parent / "fixtures" / "golden-tiny.nnz"
SEARCH = {"metric": "accuracy", "max_drop": 0.005, "baseline": 0.84, "result": 0.845, "drop": -0.005, "drop_bound": -0.001,
          "margin": 1.0, "seconds": 5.2, "evaluations": 31}


# --- helpers --------------------------------------------------------------------------------


def short_id(value) -> str:
    """A readable test id for a hostile value (some are kilobytes long)."""
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def golden_parts() -> tuple[dict, bytes]:
    """(header, data section) of the worked example."""
    header, _, section = split_file(GOLDEN.read_bytes())
    return header, section


def mutated(mutate) -> bytes:
    """The worked example with its header changed by *mutate* (CRCs and blob table kept valid)."""
    header, section = golden_parts()
    header = copy.deepcopy(header)
    mutate(header)
    return rebuild(header, blobs_of(GOLDEN.read_bytes()))


def with_text(edit) -> bytes:
    """The worked example with its header *text* edited (for forms json.dumps never writes)."""
    header, section = golden_parts()
    text = json.dumps(header, separators=(",", ":"))
    new = edit(text)
    assert new != text, "the edit did not apply"
    return assemble(header, section, header_bytes=new.encode())


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_rejected(tmp_path: Path, data: bytes, capsys, *fragments: str) -> None:
    """Every reading command refuses *data* with one line naming *fragments*, and writes nothing."""
    work = tmp_path / "work"
    work.mkdir()
    bad = work / "bad.nnz"
    bad.write_bytes(data)
    commands = [
        ["decompress", bad, "-o", work / "out.h5"],
        ["decompress", bad],
        ["decompress", bad, "-f"],
        ["inspect", bad],
        ["inspect", "--json", bad],
        ["verify", bad, "--data", tmp_path / "data.npz"],
    ]
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    for argv in commands:
        status, out, err = run(argv, capsys)
        assert status == 1, (argv, out, err)
        assert out == "", (argv, out)
        assert err.startswith("nnzip: error: ") and err.count("\n") == 1, (argv, err)
        for fragment in fragments:
            assert fragment in err, (argv, err)
        assert sorted(p.name for p in work.iterdir()) == ["bad.nnz"], f"{argv[0]} left files behind"


def assert_accepted(tmp_path: Path, data: bytes, capsys) -> tuple[dict, str]:
    """decompress and inspect (text and JSON) accept *data*; returns (inspect JSON, inspect text)."""
    nnz = tmp_path / "ok.nnz"
    nnz.write_bytes(data)
    status, out, err = run(["decompress", nnz, "-o", tmp_path / "ok.h5"], capsys)
    assert status == 0 and (tmp_path / "ok.h5").exists(), err
    status, text, err = run(["inspect", nnz], capsys)
    assert status == 0, err
    status, out, err = run(["inspect", "--json", nnz], capsys)
    assert status == 0, err
    return json.loads(out), text


# --- rule 6.16: duplicate member names ------------------------------------------------------


@pytest.mark.parametrize("edit", [
    lambda t: t.replace('{"format":"nnzip",', '{"format":"nnzip","format":"nnzip",', 1),
    lambda t: t.replace('"dtype":"<f4","shape":[2,3],', '"dtype":"<f2","shape":[2,3],"dtype":"<f4",', 1),
    lambda t: t.replace('"offset":0,', '"offset":0,"offset":0,', 1),
    lambda t: t.replace('"encoding":"utf-8",', '"encoding":"ascii","encoding":"utf-8",', 1),
], ids=["top-level", "tensor-dtype", "blob-table", "deep-in-structure"])
def test_rule6_16_duplicate_member_names(tmp_path, capsys, edit):
    """A parser keeping the first copy would decode other data than one keeping the last: reject both."""
    assert_rejected(tmp_path, with_text(edit), capsys, "rule 6.16", "two members named")


# --- §1 integers and rule 6.18 ----------------------------------------------------------------


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.replace('"size":24,', '"size":24.0,', 1), "rule 6.10"),
    (lambda t: t.replace('"size":24,', '"size":2.4e1,', 1), "rule 6.10"),
    (lambda t: t.replace('"offset":0,', '"offset":0e0,', 1), "rule 6.10"),
    (lambda t: t.replace('"shape":[2,3],', '"shape":[2.0,3],', 1), "bad shape"),  # rule 4.1 (its message names no number yet)
    (lambda t: t.replace('"shape":[2,3],', '"shape":[2,3e0],', 1), "bad shape"),
    (lambda t: t.replace('"blob":0}', '"blob":0.0}', 1), "rule 4.4"),
    (lambda t: t.replace('"blob":0}', '"blob":false}', 1), "rule 4.4"),
    (lambda t: t.replace('"crc32":423224612', '"crc32":4.23224612e8', 1), "rule 6.10"),
])
def test_integers_are_written_without_fraction_or_exponent(tmp_path, capsys, edit, fragment):
    """§1: 12.0 and 1e1 are not integers, nor are booleans; the member's own rule rejects them."""
    assert_rejected(tmp_path, with_text(edit), capsys, fragment)


@pytest.mark.parametrize("edit", [
    lambda t: t.replace('"error":0.0', '"error":1e400', 1),
    lambda t: t.replace('"error":0.0', '"error":-1e999', 1),
    lambda t: t.replace('"size":24,', '"size":18446744073709551616,', 1),
    lambda t: t.replace('"size":24,', '"size":-9223372036854775809,', 1),
    lambda t: t.replace('"size":24,', '"size":' + "9" * 5000 + ",", 1),
], ids=["1e400", "-1e999", "2**64", "-2**63-1", "5000-digits"])
def test_rule6_18_numbers_out_of_range(tmp_path, capsys, edit):
    """1e400 would read as infinity; a 5000-digit integer once escaped as Python's conversion limit."""
    assert_rejected(tmp_path, with_text(edit), capsys, "rule 6.18")


def test_integer_limits_are_accepted_by_the_parser():
    from nnzip.container import parse_header

    header = parse_header(b'{"a":18446744073709551615,"b":-9223372036854775808,"c":1.5e308,"d":[1,2.5]}', 0)
    assert header == {"a": 2**64 - 1, "b": -(2**63), "c": 1.5e308, "d": [1, 2.5]}
    assert type(parse_header(b'{"x":12.0}', 0)["x"]) is float and type(parse_header(b'{"x":1e1}', 0)["x"]) is float


# --- rule 6.17: nesting -----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [600, 100_000])
def test_rule6_17_nesting_depth(tmp_path, capsys, depth):
    """600 levels pass Python's parser and fail the cap; 100 000 levels once escaped as a RecursionError."""
    assert_rejected(tmp_path, with_text(lambda t: t.replace('{"format":"nnzip",', '{"format":"nnzip","x":' + "[" * depth + "]" * depth + ",", 1)),
                    capsys, "rule 6.17")


def test_deep_but_allowed_nesting_is_accepted(tmp_path, capsys):
    """An unknown member (ignored) nested 400 deep: within the cap of 512."""
    assert_accepted(tmp_path, with_text(lambda t: t.replace('{"format":"nnzip",', '{"format":"nnzip","x":' + "[" * 400 + "]" * 400 + ",", 1)), capsys)


# --- rule 6.19: lone surrogates ---------------------------------------------------------------


@pytest.mark.parametrize("edit", [
    lambda t: t.replace('"writer":"nnzip (golden example)"', '"writer":"nnzip \\ud800"', 1),
    lambda t: t.replace('"plan":{', '"plan":{"\\udfff":1,', 1),
    lambda t: t.replace('"value":["dense"]', '"value":["dense\\udc7f"]', 1),
    lambda t: t.replace('"filename":"tiny.weights.h5"', '"filename":"tiny\\ud83d.h5"', 1),
], ids=["writer", "member-name", "attribute-value", "filename-high-surrogate"])
def test_rule6_19_lone_surrogates(tmp_path, capsys, edit):
    """UTF-8 cannot hold them: the HDF5 writer and every print would fail on them."""
    assert_rejected(tmp_path, with_text(edit), capsys, "rule 6.19")


def test_surrogate_pairs_and_byte_escapes_are_accepted(tmp_path, capsys):
    """A \\ud83d\\ude00 pair is one character; U+DC80-U+DCFF stand for undecodable bytes (§1)."""
    data = with_text(lambda t: t.replace('"writer":"nnzip (golden example)"', '"writer":"nnzip \\ud83d\\ude00"', 1)
                     .replace('"filename":"tiny.weights.h5"', '"filename":"tiny\\udcff\\u001b[2J.weights.h5"', 1))
    info, text = assert_accepted(tmp_path, data, capsys)
    assert info["writer"] == "nnzip \U0001F600" and info["source_filename"] == "tiny\udcff\x1b[2J.weights.h5"
    assert "tiny\\udcff\\x1b[2J.weights.h5" in text  # printed escaped: no crash, no terminal control


# --- rule 6.7: the preset dictionary -----------------------------------------------------------


def test_rule6_7_dictionary_flag_needs_a_dictionary_stream(tmp_path, capsys):
    """Flag bits 0 and 1 with a stream that never asks for dictionary 1 (zlib would accept it)."""
    header, section = golden_parts()
    text, _ = encode_header(header, compress=False)
    stored = zlib.compress(text, 9)
    assert not stored[1] & 0x20
    assert_rejected(tmp_path, assemble(header, section, flags=3, header_bytes=stored), capsys, "rule 6.7", "dictionary 1")


def test_rule6_7_dictionary_flag_with_another_dictionary(tmp_path, capsys):
    header, section = golden_parts()
    text, _ = encode_header(header, compress=False)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=b"another dictionary")
    stored = deflater.compress(text) + deflater.flush()
    assert stored[1] & 0x20
    assert_rejected(tmp_path, assemble(header, section, flags=3, header_bytes=stored), capsys, "rule 6.7", "FDICT/DICTID")


def test_rule6_7_dictionary_stream_starts_as_the_spec_says():
    """§2.1: nnzip writes 78 F9 and DICTID 81 78 0E E4, the Adler-32 of dictionary 1."""
    from nnzip.container import header_dictionary

    stored, flags = encode_header(golden_parts()[0], dictionary=1)
    assert flags == 3 and stored[:6] == bytes.fromhex("78F981780EE4") and zlib.adler32(header_dictionary()) == 0x81780EE4


# --- rules 3.5-3.9: the informative members ---------------------------------------------------


@pytest.mark.parametrize("writer", [5, None, ["nnzip"], "x" * 1025], ids=short_id)
def test_rule3_5_writer(tmp_path, capsys, writer):
    assert_rejected(tmp_path, mutated(lambda h: h.update(writer=writer)), capsys, "rule 3.5")


@pytest.mark.parametrize("filename", [5, None, "", "../x.h5", "/etc/passwd", "a/b.h5", "dir/", ".", "..", "a\x00b.h5", "x" * 256,
                                      "\u00e9" * 128, 1.5, {"name": "x"}], ids=short_id)
def test_rule3_6_filename(tmp_path, capsys, filename):
    """A recorded name with directories, or one no file system could hold, must not steer where output goes."""
    assert_rejected(tmp_path, mutated(lambda h: h["source"].update(filename=filename)), capsys, "rule 3.6")


def test_rule3_2_source_not_an_object(tmp_path, capsys):
    assert_rejected(tmp_path, mutated(lambda h: h.update(source="keras-weights-h5")), capsys, "rule 3.2")


@pytest.mark.parametrize("filename, output", [
    ("x" * 251 + ".hdf", "bad.hdf"),             # the longest base name
    ("model.h5", "bad.h5"),
    ("model.hdf5", "bad.hdf5"),
    ("bad.nnz", "bad.weights.h5"),               # never the input's own name
    ("m.\x1b[2Jh5", "bad.weights.h5"),           # control characters never reach the output name
    ("m.\udcff", "bad.weights.h5"),
    ("m.a-very-long-suffix-indeed", "bad.weights.h5"),
    ("noext", "bad.weights.h5"),
], ids=short_id)
def test_default_output_name_is_beside_the_input_with_a_plain_suffix(tmp_path, capsys, filename, output):
    nnz = tmp_path / "bad.nnz"
    nnz.write_bytes(mutated(lambda h: h["source"].update(filename=filename)))
    status, out, err = run(["decompress", nnz], capsys)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bad.nnz", output])


@pytest.mark.parametrize("dropped", [
    "optimizer", None, {}, [1], [None],
    [{"path": 1, "tensors": 0, "bytes": 0}],
    [{"path": "optimizer", "tensors": -1, "bytes": 0}],
    [{"path": "optimizer", "tensors": 1.0, "bytes": 0}],
    [{"path": "optimizer", "tensors": True, "bytes": 0}],
    [{"path": "optimizer", "tensors": 2}],
    [{"tensors": 2, "bytes": 8}],
], ids=short_id)
def test_rule3_7_dropped(tmp_path, capsys, dropped):
    """inspect prints every record: a missing or mistyped member once escaped as KeyError/TypeError."""
    assert_rejected(tmp_path, mutated(lambda h: h["source"].update(dropped=dropped)), capsys, "rule 3.7")


@pytest.mark.parametrize("plan", [
    [], "lossless", 5, None,
    {"search": 1},
    {"search": {}},
    {"search": {**SEARCH, "baseline": "x"}},
    {"search": {**SEARCH, "baseline": True}},
    {"search": {**SEARCH, "evaluations": 1.5}},
    {"search": {**SEARCH, "evaluations": -1}},
    {"search": {**SEARCH, "metric": None}},
    {"search": {k: v for k, v in SEARCH.items() if k != "seconds"}},
    {"search": {**SEARCH, "holdout_samples": 100}},
    {"search": {**SEARCH, "holdout_drop": 0.01}},
    {"search": {**SEARCH, "holdout_samples": 0, "holdout_drop": 0.01}},
    {"search": {**SEARCH, "holdout_samples": 1.5, "holdout_drop": 0.01}},
    {"search": {**SEARCH, "holdout_samples": 100, "holdout_drop": "x"}},
    {"overrides": ["x" * 1024] * 1100},
], ids=short_id)
def test_rule3_8_plan(tmp_path, capsys, plan):
    """inspect prints plan.search: a non-object plan once escaped as AttributeError."""
    assert_rejected(tmp_path, mutated(lambda h: h.update(plan=plan)), capsys, "rule 3.8")


@pytest.mark.parametrize("stats", [None, [], "x", 0, {"error": "x"}, {"error": -1}, {"error": True}, {"error": None}, {"error": [0.1]},
                                   {"choice": 5}, {"choice": "x" * 1025}], ids=short_id)
def test_rule3_9_stats(tmp_path, capsys, stats):
    """A non-object stats once crashed inspect with AttributeError, a string error with ValueError."""
    assert_rejected(tmp_path, mutated(lambda h: h["tensors"][1].update(stats=stats)), capsys, "rule 3.9")


def test_informative_members_that_pass_are_shown(tmp_path, capsys):
    """The valid forms of rules 3.5-3.9, with a search plan and a choice, print in both forms."""

    def mutate(h):
        h["plan"] = {"search": SEARCH, "extra": {"kept": True}}
        h["source"]["dropped"] = [{"path": "optimizer\x1b[31m", "tensors": 2, "bytes": 64, "note": "extra members are ignored"}]
        h["tensors"][0]["stats"] = {"error": 0.25, "choice": "kmeans 4 bits\n"}
        h["tensors"][1]["stats"] = {}
        h["unknown_member"] = [1, 2]

    info, text = assert_accepted(tmp_path, mutated(mutate), capsys)
    assert info["plan"]["search"] == SEARCH and info["tensors"][0]["choice"] == "kmeans 4 bits\n" and info["tensors"][1]["error"] is None
    assert "budget search on data: accuracy 0.84 -> 0.845" in text and "kmeans 4 bits\\n" in text
    assert "/optimizer\\x1b[31m (2 tensors, 64 bytes)" in text and "\x1b" not in text


def test_verify_ignores_a_recorded_name_that_is_not_a_regular_file(tmp_path, capsys):
    """verify looks for source.filename beside the .nnz only as a regular file (a FIFO would block)."""
    import os

    nnz = tmp_path / "tiny.nnz"
    nnz.write_bytes(mutated(lambda h: h["source"].update(filename="fifo")))
    os.mkfifo(tmp_path / "fifo")
    assert _original_beside(nnz, split_file(nnz.read_bytes())[0]) is None
    (tmp_path / "fifo").unlink()
    (tmp_path / "fifo").write_bytes(b"")
    assert _original_beside(nnz, split_file(nnz.read_bytes())[0]) == tmp_path / "fifo"


# --- structure-aware mutation of real files -----------------------------------------------------


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory) -> dict[str, bytes]:
    """.nnz files of every source format, lossy and lossless, one with a search plan and choices."""
    work = tmp_path_factory.mktemp("samples")
    files = {"golden": GOLDEN.read_bytes()}
    api.compress(SAMPLES / "softmax.h5", work / "kmeans.nnz", rules=PlanRules(Settings(bits=4), []))
    files["keras-h5-kmeans"] = (work / "kmeans.nnz").read_bytes()
    api.compress(SAMPLES / "softmax.weights.h5", work / "w.nnz")
    header, _, _ = split_file((work / "w.nnz").read_bytes())
    header["plan"] = {"search": SEARCH}
    for entry in header["tensors"]:
        entry["stats"]["choice"] = "lossless"
    files["weights-h5-search"] = rebuild(header, blobs_of((work / "w.nnz").read_bytes()))
    api.compress(SAMPLES / "cnn.keras", work / "k.nnz")
    files["keras-v3"] = (work / "k.nnz").read_bytes()
    rng = np.random.default_rng(0)
    np.savez(work / "a.npz", w=rng.standard_normal((40, 40)).astype(np.float32), b=np.arange(3))
    api.compress(work / "a.npz", work / "n.nnz", rules=PlanRules(Settings(rank=4), []))
    files["npz-svd"] = (work / "n.nnz").read_bytes()
    from safetensors.numpy import save_file

    save_file({"w": rng.standard_normal((40, 40)).astype(np.float32), "m": np.ones(4, np.int8)}, str(work / "a.safetensors"), metadata={"format": "pt"})
    api.compress(work / "a.safetensors", work / "s.nnz", rules=PlanRules(Settings(prune=0.5), []))
    files["safetensors-csr"] = (work / "s.nnz").read_bytes()
    return files


def _member_paths(node, path=(), depth=0):
    """(path, value) of the members worth mutating: all outside source.structure, its top levels inside."""
    in_structure = path[:2] == ("source", "structure")
    if path and path[0] == "blobs":  # the blob table has its own tests (test_container.py)
        return
    if path:
        yield path, node
    if in_structure and depth >= 5:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _member_paths(value, path + (key,), depth + 1)
    elif isinstance(node, list):
        for index, value in enumerate(node[:2]):  # the first two entries of a list stand for the rest
            yield from _member_paths(value, path + (index,), depth + 1)


def _retypes(value) -> list:
    """Values of other types, or of the same type but odd, for a member that holds *value*."""
    if isinstance(value, bool):
        return [0, "true"]
    if isinstance(value, int):
        return [float(value), value > 0, -1, str(value)]
    if isinstance(value, float):
        return [str(value), None]
    if isinstance(value, str):
        return [0, "", value + "\udcff"]
    if isinstance(value, list):
        return [{}, None, [None]]
    if isinstance(value, dict):
        return [[], None]
    return [0, "x"]


def _mutations(header: dict, in_structure: bool):
    """(path, change) for every member inside (or outside) ``source.structure``: deleted, then retyped."""
    for path, value in _member_paths(header):
        if (path[:2] == ("source", "structure")) == in_structure:
            yield path, "delete"
            for replacement in _retypes(value):
                yield path, replacement


def _apply(header: dict, path: tuple, change) -> dict | None:
    header = copy.deepcopy(header)
    node = header
    for key in path[:-1]:
        node = node[key]
    if change == "delete":
        if not isinstance(node, dict):
            return None
        del node[path[-1]]
    else:
        node[path[-1]] = change
    return header


def _run_mutations(tmp_path: Path, data: bytes, name: str, in_structure: bool) -> tuple[int, int]:
    """Every mutation of one file through inspect (both renderings) and decompress; returns (cases, accepted)."""
    header, blobs = split_file(data)[0], blobs_of(data)
    checked = accepted = 0
    nnz, output = tmp_path / f"{name}.nnz", tmp_path / "out"
    for path, change in _mutations(header, in_structure):
        changed = _apply(header, path, change)
        if changed is None:
            continue
        nnz.write_bytes(rebuild(changed, blobs))
        where = f"{name}: {path} -> {change!r}"
        try:
            info = api.inspect(nnz)
            json.dumps(info)
            cli.format_inspect(cli.printable(info)).encode("utf-8")
            accepted += 1
        except NnzipError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"inspect: {where}: {type(exc).__name__}: {exc}")
        try:
            api.decompress(nnz, output, force=True)
        except NnzipError:
            pass
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"decompress: {where}: {type(exc).__name__}: {exc}")
        checked += 1
        leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (nnz.name, output.name)]
        assert not leftovers, f"{where}: left {leftovers}"
    return checked, accepted


SAMPLE_NAMES = ["golden", "keras-h5-kmeans", "weights-h5-search", "keras-v3", "npz-svd", "safetensors-csr"]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_mutated_header_members_never_escape_as_other_exceptions(tmp_path, sample_files, name):
    """Delete or retype each member outside source.structure: decompress and inspect succeed or raise NnzipError."""
    checked, accepted = _run_mutations(tmp_path, sample_files[name], name, in_structure=False)
    assert checked > 150 and accepted > 10  # both the refusing and the accepting paths were reached


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_mutated_structure_members_never_escape_as_other_exceptions(tmp_path, sample_files, name):
    """The same for the top levels of source.structure (whose rules, §5, the format modules check)."""
    checked, _ = _run_mutations(tmp_path, sample_files[name], name, in_structure=True)
    assert checked > 15


# --- JSON Schema -------------------------------------------------------------------------------


def test_schema_follows_the_new_rules(sample_files):
    """spec/header.schema.json accepts every sample header and refuses what rules 3.5-3.9 refuse."""
    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "spec" / "header.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    headers = {name: split_file(data)[0] for name, data in sample_files.items()}
    for name, header in headers.items():
        assert not list(validator.iter_errors(header)), name
    base = headers["weights-h5-search"]
    broken = [
        lambda h: h.update(writer="x" * 1025),
        lambda h: h["source"].update(filename="../x.h5"),
        lambda h: h["source"].update(filename=".."),
        lambda h: h["source"].update(filename="a\x00b"),
        lambda h: h["source"].update(dropped=[{"path": "o", "tensors": True, "bytes": 0}]),
        lambda h: h.update(plan=[]),
        lambda h: h["plan"]["search"].pop("seconds"),
        lambda h: h["plan"]["search"].update(evaluations=1.5),
        lambda h: h["tensors"][0].update(stats=[]),
        lambda h: h["tensors"][0]["stats"].update(error="x"),
        lambda h: h["tensors"][0]["stats"].update(error=-1),
        lambda h: h["tensors"][0]["stats"].update(choice=5),
    ]
    for index, mutate in enumerate(broken):
        header = copy.deepcopy(base)
        mutate(header)
        assert list(validator.iter_errors(header)), f"schema accepts broken header {index}"


# --- verify: the architecture texts the header carries ------------------------------------------


@pytest.mark.parametrize("text", ["not json", "[" * 100_000, '{"class_name": "Sequential", "config": {"layers": 5}}'], ids=["not-json", "deep", "no-layers"])
def test_verify_refuses_a_crafted_model_config_in_one_line(tmp_path, capsys, text):
    """model_config is carried verbatim (§5.1) and parsed only by verify: its errors once escaped as JSONDecodeError/RecursionError."""
    api.compress(SAMPLES / "softmax.h5", tmp_path / "s.nnz")
    data = (tmp_path / "s.nnz").read_bytes()
    header = split_file(data)[0]
    record = next(a for a in header["source"]["structure"]["attrs"] if a["name"] == "model_config")
    record["value"] = [text]
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs_of(data)))
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 784), np.float32), y=np.zeros(4, np.int64))
    status, out, err = run(["verify", bad, "--data", tmp_path / "data.npz"], capsys)
    assert status == 1 and out == "" and err.startswith("nnzip: error: ") and err.count("\n") == 1, err


# --- the linear scan behind rules 6.17 and 6.20 ------------------------------------------------


def _reference_counts(text: str) -> tuple[int, int]:
    """(commas, '[' and '{' outside strings; deepest nesting) by a plain character loop."""
    in_string = escaped = False
    depth = deepest = separators = 0
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{,":
            separators += 1
            if char != ",":
                depth += 1
                deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return separators, deepest


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_structure_scan_matches_a_character_loop(monkeypatch, chunk):
    """Strings full of brackets, quotes and backslash runs, cut at every chunk size (the scan carries state across)."""
    from nnzip import container

    monkeypatch.setattr(container, "_CHUNK", chunk)
    rng = random.Random(6)
    pieces = ["[", "]", "{", "}", ",", ":", "0", "\\", '\\"', "\\\\", "a", "[{,", " "]

    def value(level: int):
        kind = rng.randrange(4 if level < 6 else 2)
        if kind == 0:
            return "".join(rng.choice(pieces) for _ in range(rng.randrange(8))).replace('"', "'")
        if kind == 1:
            return rng.choice([0, 1.5, None, True])
        if kind == 2:
            return [value(level + 1) for _ in range(rng.randrange(4))]
        return {"k" + "".join(rng.choice(pieces) for _ in range(3)) + str(i): value(level + 1) for i in range(rng.randrange(4))}

    for _ in range(200):
        text = json.dumps({"v": value(0)}, indent=rng.choice([None, 1]))
        assert container._structure_counts(text.encode()) == _reference_counts(text), text


# --- rule 6.20: the number of values ------------------------------------------------------------


def _bomb(body: str, count: int) -> bytes:
    """The worked example with a zlib-compressed header whose unknown member 'x' holds *count* copies of *body*."""
    header, section = golden_parts()
    text = json.dumps(header, separators=(",", ":"))
    text = text.replace('{"format":"nnzip",', '{"format":"nnzip","x":[' + body * count + "0],", 1).encode()
    return assemble(header, section, flags=1, header_bytes=zlib.compress(text, 9))


def test_rule6_20_too_many_values(tmp_path, capsys):
    """2^21 empty arrays in a zlib stream of a few KiB: refused on the text, before they are built."""
    data = _bomb("[],", 2**20 + 1)
    assert len(data) < 20_000
    assert_rejected(tmp_path, data, capsys, "rule 6.20")


def test_rule6_20_bomb_costs_little(tmp_path):
    """64 MiB of '[],' (once 2.4 GB and 11 s of CPU) from a 64 KiB file: peak memory and CPU, measured in a subprocess."""
    import subprocess
    import sys

    bad = tmp_path / "bomb.nnz"
    bad.write_bytes(_bomb("[],", (64 * 2**20 - 2000) // 3))
    assert bad.stat().st_size < 200_000
    script = (
        "import resource, sys, time\n"
        "from nnzip import cli\n"
        "status = cli.main(['inspect', sys.argv[1]])\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(status, int(next(l.split()[1] for l in open(\"/proc/self/status\") if l.startswith(\"VmHWM:\"))), usage.ru_utime + usage.ru_stime)\n"
    )
    root = Path(__file__).parent.parent
    result = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True, cwd=root, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)})
    status, peak_kib, cpu = result.stdout.split()
    assert status == "1" and "rule 6.20" in result.stderr, result.stderr
    assert int(peak_kib) < 700 * 1024, f"peak RSS {int(peak_kib) // 1024} MB"  # the interpreter and numpy alone take ~60 MB
    assert float(cpu) < 10


def test_writer_refuses_a_header_the_reader_would_refuse():
    """encode_header applies rules 6.17 and 6.20 itself: nnzip never writes what it cannot read."""
    header = golden_parts()[0]
    with pytest.raises(NnzipError, match="rule 6.20"):
        encode_header({**header, "x": [0] * (2**21 + 1)})
    with pytest.raises(NnzipError, match="rule 6.17"):
        encode_header({**header, "x": json.loads("[" * 600 + "]" * 600)})
