"""Sharded safetensors checkpoints (spec/container.md §5.8, rules 5.8.x and 8.20-8.23).

The checkpoints are made with the real ``safetensors`` package (``safetensors.numpy.save_file``)
and an index written the way ``transformers``' ``save_pretrained`` writes it
(``json.dumps({"metadata": {"total_size": ...}, "weight_map": ...}, indent=2, sort_keys=True) + "\\n"``;
transformers itself is not a test dependency).  Every hostile index goes through
``nnzip.cli.main`` and must give exit status 1, one stderr line naming the rule, and no file
created anywhere under the test folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from .nnz_tools import blobs_of, rebuild, split_file
from nnzip import api, cli
from nnzip.formats import sharded

INDEX = "model.safetensors.index.json"


def make_checkpoint(folder: Path, shards: int = 3, dtype=np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    """A transformers-style sharded checkpoint in *folder*; returns every tensor by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map, everything = {}, {}
    for k in range(1, shards + 1):
        name = f"model-{k:05d}-of-{shards:05d}.safetensors"
        tensors = {
            f"layers.{k}.weight": (rng.normal(size=(96, 64)) * 0.05).astype(dtype),
            f"layers.{k}.bias": rng.normal(size=64).astype(dtype) * 0.01,
        }
        if k == shards:
            tensors["head.steps"] = np.arange(10, dtype=np.int64)
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        everything.update(tensors)
    write_index(folder, weight_map, sum(v.nbytes for v in everything.values()))
    return everything


def write_index(folder: Path, weight_map: dict, total: int = 0, name: str = INDEX) -> Path:
    """The index as transformers writes it."""
    path = folder / name
    path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    return path


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def refuse(capsys, folder: Path, command: str, source: Path, rule: str, *fragments: str) -> str:
    """``nnzip <command> source -o folder/out/...`` fails: status 1, one line naming *rule*, no file created."""
    (folder / "out").mkdir(exist_ok=True)
    output = folder / "out" / ("model.nnz" if command == "compress" else INDEX)
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


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("as_folder", [False, True])
def test_lossless_round_trip_is_byte_identical(tmp_path, as_folder):
    source = tmp_path / "ckpt"
    make_checkpoint(source)
    nnz = tmp_path / "ckpt.nnz"
    assert cli.main(["compress", str(source if as_folder else source / INDEX), "-o", str(nnz), "-q"]) == 0
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["decompress", str(nnz), "-o", str(out / INDEX), "-q"]) == 0
    assert files_of(out) == files_of(source)  # the same shards and the same index, byte for byte
    header = split_file(nnz.read_bytes())[0]
    assert header["source"]["format"] == "safetensors-sharded"
    assert [s["file"] for s in header["source"]["structure"]["shards"]] == sorted(p.name for p in source.glob("*.safetensors"))


def test_default_names_give_the_index_back_beside_the_nnz(tmp_path):
    make_checkpoint(tmp_path / "ckpt", shards=2)
    assert cli.main(["compress", str(tmp_path / "ckpt" / INDEX), "-q"]) == 0
    nnz = tmp_path / "ckpt" / "model.safetensors.index.nnz"
    assert nnz.is_file()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.replace(nnz, moved / nnz.name)
    assert cli.main(["decompress", str(moved / nnz.name), "-q"]) == 0
    assert files_of(moved) == {**files_of(tmp_path / "ckpt"), nnz.name: (moved / nnz.name).read_bytes()}


def test_bf16_shards_round_trip(tmp_path):
    import ml_dtypes  # noqa: F401  (safetensors.numpy writes bfloat16 through it)

    source = tmp_path / "ckpt"
    make_checkpoint(source, shards=2, dtype=np.dtype("bfloat16"))
    nnz = tmp_path / "c.nnz"
    api.compress(source, nnz)
    out = tmp_path / "out"
    out.mkdir()
    api.decompress(nnz, out / INDEX)
    assert files_of(out) == files_of(source)


def test_lossy_bits_4_keeps_headers_and_index(tmp_path):
    from safetensors.numpy import load_file

    source = tmp_path / "ckpt"
    original = make_checkpoint(source)
    nnz = tmp_path / "c.nnz"
    assert cli.main(["compress", str(source), "-o", str(nnz), "--bits", "4", "-q"]) == 0
    lossless = tmp_path / "l.nnz"
    api.compress(source, lossless)
    assert nnz.stat().st_size < lossless.stat().st_size * 0.5
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["decompress", str(nnz), "-o", str(out / INDEX), "-q"]) == 0
    assert (out / INDEX).read_bytes() == (source / INDEX).read_bytes()
    rebuilt = {}
    for shard in sorted(source.glob("*.safetensors")):
        size = int.from_bytes(shard.read_bytes()[:8], "little")
        assert (out / shard.name).read_bytes()[: 8 + size] == shard.read_bytes()[: 8 + size]  # same header
        rebuilt.update(load_file(str(out / shard.name)))
    assert set(rebuilt) == set(original)
    weight = original["layers.1.weight"]
    error = np.linalg.norm(rebuilt["layers.1.weight"] - weight) / np.linalg.norm(weight)
    assert 0 < error < 0.2
    np.testing.assert_array_equal(rebuilt["head.steps"], original["head.steps"])  # integers stay exact


# --- hostile indexes (rules 8.20-8.23) -------------------------------------------------------------


def _checkpoint(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "ckpt"
    make_checkpoint(folder, shards=2)
    return folder, json.loads((folder / INDEX).read_text())["weight_map"]


@pytest.mark.parametrize("text, fragment", [
    ("[1, 2]", "not a JSON object"),
    ('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}', "duplicate key"),
    ('{"weight_map": {"a": NaN}}', "NaN"),
    ('{"metadata": {}}', "no weight_map"),
    ('{"weight_map": {}}', "names no tensors"),
    ('{"weight_map": {"a": 3}}', "not a file name"),
    ('{"weight_map": ' + "[" * 40 + "]" * 40 + "}", "nests"),
    ('{"weight_map": {"a": "x.safetensors"', "not plain JSON"),
])
def test_malformed_index_is_refused(tmp_path, capsys, text, fragment):
    folder, _ = _checkpoint(tmp_path)
    (folder / INDEX).write_text(text)
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.20", fragment)


def test_index_not_utf8_and_oversized(tmp_path, capsys):
    folder, _ = _checkpoint(tmp_path)
    (folder / INDEX).write_bytes(b'{"weight_map": {"\xff": "a"}}')
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.20", "not UTF-8")
    with open(folder / INDEX, "wb") as handle:
        handle.write(b"{" + b" " * sharded.MAX_INDEX_BYTES + b"}")
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.20", "cap")


def test_folder_needs_exactly_one_index(tmp_path, capsys):
    folder, weight_map = _checkpoint(tmp_path)
    write_index(folder, weight_map, name="other.safetensors.index.json")
    refuse(capsys, tmp_path, "compress", folder, "8.20", "exactly one")


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", "..", "C:model.safetensors",
                                 "a\\b.safetensors", "x\u0000y", "again.safetensors.index.json", "\ud800.safetensors"])
def test_shard_name_must_be_plain(tmp_path, capsys, bad):
    folder, weight_map = _checkpoint(tmp_path)
    (tmp_path / "outside.safetensors").write_bytes((folder / "model-00001-of-00002.safetensors").read_bytes())
    name = next(iter(weight_map))
    weight_map[name] = bad
    (folder / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.21", "plain file name")


def test_shard_missing_or_not_a_file(tmp_path, capsys):
    folder, weight_map = _checkpoint(tmp_path)
    os.unlink(folder / "model-00002-of-00002.safetensors")
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.21", "cannot open shard")
    (folder / "model-00002-of-00002.safetensors").mkdir()
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.21", "not a regular file")


def test_symlink_out_of_the_folder_is_refused_and_one_inside_followed(tmp_path, capsys):
    folder, weight_map = _checkpoint(tmp_path)
    shard = folder / "model-00002-of-00002.safetensors"
    os.replace(shard, tmp_path / "blob")
    os.symlink(tmp_path / "blob", shard)
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.21", "symbolic link")
    os.unlink(shard)
    os.replace(tmp_path / "blob", folder / "blob")
    os.symlink("blob", shard)
    assert cli.main(["compress", str(folder), "-o", str(tmp_path / "ok.nnz"), "-q"]) == 0


def test_map_and_shards_must_agree(tmp_path, capsys):
    folder, weight_map = _checkpoint(tmp_path)
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    moved = dict(weight_map, **{"layers.1.weight": second})  # mapped to the wrong shard
    (folder / INDEX).write_text(json.dumps({"weight_map": moved}))
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.22", "layers.1.weight")
    missing = {k: v for k, v in weight_map.items() if k != "layers.2.bias"}  # a shard tensor not mapped
    (folder / INDEX).write_text(json.dumps({"weight_map": missing}))
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.22", "does not name it")
    extra = dict(weight_map, ghost=first)  # a mapped tensor no shard holds
    (folder / INDEX).write_text(json.dumps({"weight_map": extra}))
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.22", "ghost")


def test_shard_header_checks_still_apply(tmp_path, capsys):
    folder, _ = _checkpoint(tmp_path)
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    refuse(capsys, tmp_path, "compress", folder / INDEX, "8.18", "runs past the end")


def test_total_declared_bytes_over_the_cap(tmp_path, capsys):
    folder, _ = _checkpoint(tmp_path)
    (tmp_path / "out").mkdir()
    before = sorted(tmp_path.rglob("*"))
    status = cli.main(["compress", str(folder), "-o", str(tmp_path / "out" / "m.nnz"), "--max-output", "40000"])
    _, err = capsys.readouterr()
    assert status == 1 and "rule 8.23:" in err and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before


# --- hostile .nnz structures (rules 5.8.x) ---------------------------------------------------------


def _nnz_with(tmp_path, change) -> Path:
    folder, _ = _checkpoint(tmp_path)
    nnz = tmp_path / "good.nnz"
    api.compress(folder, nnz)
    header, blobs = split_file(nnz.read_bytes())[0], blobs_of(nnz.read_bytes())
    change(header["source"]["structure"])
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs))
    return bad


@pytest.mark.parametrize("change, rule, fragment", [
    (lambda s: s.update(extra=1), "5.8.1", "exactly 'index' and 'shards'"),
    (lambda s: s["shards"][0].update(file="../escape.safetensors"), "5.8.2", "plain file name"),
    (lambda s: s["shards"][0].update(file="/tmp/escape.safetensors"), "5.8.2", "plain file name"),
    (lambda s: s.update(index=s["index"].replace("model-00001", "../model-00001")), "5.8.2", "plain file name"),
    (lambda s: s["shards"].reverse(), "5.8.3", "name order"),
    (lambda s: s.update(index=s["index"].replace('"layers.1.bias"', '"renamed"')), "5.8.3", "layers.1.bias"),
])
def test_hostile_structure_is_refused(tmp_path, capsys, change, rule, fragment):
    bad = _nnz_with(tmp_path, change)
    refuse(capsys, tmp_path, "decompress", bad, rule, fragment)
    assert not (tmp_path / "escape.safetensors").exists() and not Path("/tmp/escape.safetensors").exists()


def test_existing_shard_is_not_replaced_and_nothing_is_left(tmp_path, capsys):
    folder, _ = _checkpoint(tmp_path)
    nnz = tmp_path / "c.nnz"
    api.compress(folder, nnz)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00002-of-00002.safetensors").write_bytes(b"mine")
    refuse(capsys, tmp_path, "decompress", nnz, "5.8.4", "already exists")
    assert (out / "model-00002-of-00002.safetensors").read_bytes() == b"mine"


def test_failure_while_writing_leaves_no_shard(tmp_path):
    """A shard whose tensor does not decode to its structure's dtype stops the write: no shard, no index."""
    folder, _ = _checkpoint(tmp_path)
    nnz = tmp_path / "c.nnz"
    api.compress(folder, nnz)
    header = split_file(nnz.read_bytes())[0]
    structure = header["source"]["structure"]
    out = tmp_path / "out"
    out.mkdir()
    values = {}
    for shard in structure["shards"]:
        for item in shard["structure"]["tensors"]:
            values[item["name"]] = np.zeros(item["shape"], np.float32 if item["dtype"] == "F32" else np.int64)
    values["head.steps"] = np.zeros(10, np.int32)  # wrong dtype, in the last shard
    with pytest.raises(Exception, match="decodes to"):
        sharded.write(out / INDEX, structure, values.__getitem__)
    assert list(out.iterdir()) == []
