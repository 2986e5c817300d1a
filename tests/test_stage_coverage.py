"""Every registered stage is specified and pinned: a page in spec/stages/ and golden fixtures.

A new stage is one module, one registry line, one spec page and one fixture; this file fails
until the last two exist.  It reads the registry itself, so it cannot fall behind it.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from .common import FIXTURES, check_golden, input_of
from nnzip.stages import _REGISTRY, Kind, get_stage

SPEC_STAGES = Path(__file__).resolve().parent.parent / "spec" / "stages"
STAGE_IDS = sorted(_REGISTRY)
#: How a page's **Kind** line names each kind (spec/stages/TEMPLATE.md).
KIND_WORDS = {Kind.TRANSFORM: "transform", Kind.ARRAY: "array", Kind.SERIALIZE: "serialize", Kind.BYTES: "bytes"}
#: Sections every page has, in this order (TEMPLATE.md; the optional ones are not listed).
REQUIRED_SECTIONS = ("- **Name**", "- **Kind**", "- **Lossless**", "## Decoding algorithm", "## Errors", "## Decode cost")


def fixture_stems(stage_id: str) -> list[str]:
    """The golden cases of *stage_id* in tests/fixtures/stages (``<id>-<case>``)."""
    return sorted(p.stem for p in FIXTURES.glob(f"{stage_id}-*.json"))


def named_fixtures(text: str) -> set[str]:
    """Every fixture name a page mentions in backquotes, with ``{a,b}`` alternatives expanded."""
    names = set()
    for word in re.findall(r"`([a-z0-9][a-z0-9{},.-]*)`", text):
        pieces = re.split(r"\{([^}]*)\}", word)  # odd pieces are the alternatives
        options = [piece.split(",") if i % 2 else [piece] for i, piece in enumerate(pieces)]
        for combo in itertools.product(*options):
            names.add("".join(combo).split(".")[0])  # raw-f4-2x3.{json,bin} names raw-f4-2x3
    return names


def test_named_fixtures_expands_alternatives():
    """The helper the page check relies on reads the notations the pages use."""
    text = "fixtures `fft-f4-6x5-{dct,rfft}-{low,largest}` and `raw-f4-2x3.{json,bin}`"
    assert named_fixtures(text) >= {"fft-f4-6x5-dct-low", "fft-f4-6x5-rfft-largest", "raw-f4-2x3"}
    assert "fft-f4-6x5-dct" not in named_fixtures(text)


@pytest.mark.parametrize("stage_id", STAGE_IDS)
def test_every_stage_has_a_spec_page(stage_id):
    """spec/stages/<id>.md exists, names the stage and its kind, and has the template's sections."""
    page = SPEC_STAGES / f"{stage_id}.md"
    assert page.is_file(), f"stage {stage_id!r} is registered but spec/stages/{stage_id}.md is missing"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# `{stage_id}`"), f"{page.name}: the title must name the stage id"
    assert f"- **Name**: `{stage_id}`" in text
    kind = KIND_WORDS[get_stage(stage_id).kind]
    assert re.search(rf"^- \*\*Kind\*\*: {kind}\b", text, re.M), f"{page.name}: Kind must say {kind!r}"
    positions = [text.find(section) for section in REQUIRED_SECTIONS]
    assert -1 not in positions, f"{page.name}: missing {[s for s, p in zip(REQUIRED_SECTIONS, positions) if p < 0]}"
    assert positions == sorted(positions), f"{page.name}: sections out of the template's order"


@pytest.mark.parametrize("stage_id", STAGE_IDS)
def test_every_stage_has_golden_fixtures_its_page_names(stage_id):
    """At least one ``<id>-<case>`` pair (.json and .bin) exists, and the stage page names each one."""
    stems = fixture_stems(stage_id)
    assert stems, f"stage {stage_id!r} has no golden fixture in tests/fixtures/stages (see tests/regen_fixtures.py)"
    named = named_fixtures((SPEC_STAGES / f"{stage_id}.md").read_text(encoding="utf-8"))
    for stem in stems:
        assert (FIXTURES / f"{stem}.bin").is_file(), f"{stem}.json has no {stem}.bin"
        assert stem in named, f"spec/stages/{stage_id}.md does not name its golden fixture {stem!r}"


def test_no_fixture_or_page_without_a_stage():
    """Every fixture and page belongs to a registered stage (a renamed stage leaves none behind)."""
    for path in FIXTURES.iterdir():
        assert path.suffix in (".json", ".bin"), path.name
        assert path.with_suffix(".bin" if path.suffix == ".json" else ".json").is_file(), f"{path.name} has no pair"
        assert path.stem.split("-")[0] in _REGISTRY, f"fixture {path.name} belongs to no registered stage"
    pages = {p.stem for p in SPEC_STAGES.glob("*.md")} - {"TEMPLATE"}
    assert pages == set(_REGISTRY), f"pages without a stage: {sorted(pages - set(_REGISTRY))}"


# --- dense's golden fixture (the one stage that had none) -----------------------------------


def test_golden_dense_i2():
    """``dense`` of an int16 2x3 tensor: its one part, ``values``, is the tensor's own bytes."""
    data = np.array([[1, -2, 3], [32767, -32768, 0]], dtype="<i2")
    check_golden("dense", "i2-2x3", data)
    assert (FIXTURES / "dense-i2-2x3.bin").read_bytes() == data.tobytes()  # the layout, stated independently


@pytest.mark.parametrize("stem", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_every_fixture_is_pinned_from_its_own_record(stem):
    """Each fixture pins its stage from what it records (input and params): encoding gives its bytes and
    configuration again, decoding its bytes gives the input back as a fresh decode does.  So a new
    stage's fixture needs no test of its own; the stage modules' tests pin the same files case by case."""
    stage_id, case = stem.split("-", 1)
    record = json.loads((FIXTURES / f"{stem}.json").read_text())
    data = input_of(record["input"])
    check_golden(stage_id, case, bytes(data.tobytes()) if get_stage(stage_id).kind is Kind.BYTES else data, record["params"])

