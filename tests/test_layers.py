"""Dependencies point down: nnzip's import graph has no cycle and follows a declared layer order.

Every module of ``nnzip`` is parsed (nothing is imported) and every import is an edge:
module level, inside functions, under ``if TYPE_CHECKING``, and a registry's lazy
``"nnzip.pkg.module:Class"`` string.  :data:`LAYERS` places each module on a layer; a module
may import modules of a lower layer, or of its own layer as long as no cycle forms.  A
new module fails :func:`test_every_module_has_a_layer` until it is placed there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nnzip

PACKAGE = Path(nnzip.__file__).resolve().parent

#: The layer of each module, bottom (0) to top.  The names are what each layer is for.
LAYERS: dict[str, int] = {
    # 0 -- leaves: errors, decode caps, the in-memory model, numba's switch, pure maths
    "nnzip.errors": 0,
    "nnzip.limits": 0,
    "nnzip.model": 0,
    "nnzip.stages._jit": 0,
    "nnzip.stages.kmeans1d": 0,
    "nnzip.infer.ops": 0,
    "nnzip.version": 0,
    "nnzip.metrics": 0,
    # 1 -- shared checks and mechanics: dtype/shape parsing, safe output files, the binary
    #      container (§2/§6, which knows nothing of stages or source formats), compiled kernels
    "nnzip.dtypes": 1,
    "nnzip.outputs": 1,
    "nnzip.container": 1,
    "nnzip.infer.errors": 1,
    "nnzip.stages._arith_kernels": 1,
    "nnzip.stages._huffman_kernels": 1,
    "nnzip.stages._rans_kernels": 1,
    "nnzip.stages._lzw_kernels": 1,
    "nnzip.stages._uniform_kernels": 1,
    # 2 -- the bases the plug-ins build on
    "nnzip.stages.base": 2,
    "nnzip.formats.zipmeta": 2,
    "nnzip.formats.hdf5_tree": 2,
    "nnzip.formats.base": 2,
    "nnzip.infer.config": 2,
    # 3 -- plug-ins: one module per stage, source format and layer family
    "nnzip.stages.arith": 3,
    "nnzip.stages.bitpack": 3,
    "nnzip.stages.byteplanes": 3,
    "nnzip.stages.cast": 3,
    "nnzip.stages.csr": 3,
    "nnzip.stages.delta": 3,
    "nnzip.stages.dense": 3,
    "nnzip.stages.entropy": 3,
    "nnzip.stages.fft": 3,
    "nnzip.stages.huffman": 3,
    "nnzip.stages.kmeans": 3,
    "nnzip.stages.lzw": 3,
    "nnzip.stages.matrix": 3,
    "nnzip.stages.raw": 3,
    "nnzip.stages.svd": 3,
    "nnzip.stages.uniform": 3,
    "nnzip.formats.keras_h5": 3,
    "nnzip.formats.keras_v3": 3,
    "nnzip.formats.npz": 3,
    "nnzip.formats.onnx_format": 3,
    "nnzip.formats.safetensors": 3,
    "nnzip.formats.sharded": 3,
    "nnzip.infer.activations": 3,
    "nnzip.infer.registry": 3,
    "nnzip.infer.core_layers": 3,
    "nnzip.infer.conv_layers": 3,
    "nnzip.infer.graph": 3,
    "nnzip.infer.model": 3,
    # 4 -- the registries: each package's __init__ is the one door to its plug-ins
    "nnzip.stages": 4,
    "nnzip.formats": 4,
    "nnzip.infer": 4,
    # the tail policy: which bytes stage a blob gets (it asks the registry for the coders)
    "nnzip.stages.policy": 4,
    # 5 -- one tensor through its stage chain (§4); scoring a model (Keras and ONNX evaluators); bias correction
    "nnzip.pipeline": 5,
    "nnzip.evaluate": 5,
    "nnzip.calibrate": 5,
    "nnzip.scoring": 5,
    # 6 -- building and describing chains, choosing them; the header rules (§3)
    "nnzip.chains": 6,
    "nnzip.plan": 6,
    "nnzip.header_rules": 6,
    "nnzip.reports": 6,
    "nnzip.onnx_eval": 5,
    # 7 -- the budget search over plans and evaluators; the one reader of a .nnz; tensors to and from a dask cluster
    "nnzip.search": 7,
    "nnzip.reader": 7,
    "nnzip.distributed": 7,
    # 8 -- whole files: where the work runs, encoding, the budget, writing, rebuilding, verifying, sweeps
    "nnzip.workers": 8,
    "nnzip.encoder": 8,
    "nnzip.budget": 8,
    "nnzip.writer": 8,
    "nnzip.rebuild": 8,
    "nnzip.verification": 8,
    "nnzip.sweep": 8,
    # 9 -- the facade
    "nnzip.api": 9,
    # 10 -- options as the CLI and nnzip.compress spell them, and the public functions
    "nnzip.options": 10,
    "nnzip.public": 10,
    # 11 -- the package (``import nnzip``), then the command line on top
    "nnzip": 11,
    "nnzip.cli": 12,
    "nnzip.__main__": 13,
}

#: Edges that break the shape and are tolerated for now: empty since issue 12's merge.  Never
#: add to it lightly: place a new module on a layer, or move the code that needs the upward import.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

#: A registry entry naming a module as a string: "nnzip.stages.dense:Dense" or "nnzip.stages.dense".
_MODULE_STRING = re.compile(r"nnzip(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?")


def module_name(path: Path) -> str:
    """The dotted name of the nnzip module at *path*."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of nnzip, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.AST, here: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The nnzip modules one import statement (or registry string) refers to."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
        name = node.value.split(":")[0]
        return [name] if name in known else []
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name == "nnzip" or alias.name.startswith("nnzip.")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        package = ".".join(base + ([node.module] if node.module else []))
    elif node.module == "nnzip" or (node.module or "").startswith("nnzip."):
        package = node.module
    else:
        return []
    # ``from pkg import name``: the submodule pkg.name if there is one, else pkg itself.
    return [f"{package}.{alias.name}" if f"{package}.{alias.name}" in known else package for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the nnzip modules it imports anywhere in its text."""
    known = modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges = {target for node in ast.walk(tree) for target in _targets(node, name, path.name == "__init__.py", known)}
        graph[name] = edges - {name}
    return graph


def target_graph() -> dict[str, set[str]]:
    """The import graph without the known violations being removed now."""
    return {name: {t for t in edges if (name, t) not in KNOWN_VIOLATIONS} for name, edges in import_graph().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt) and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


#: Packages whose modules are plug-ins of a registry (one stage, one source format each): an
#: unlisted public module there takes the plug-ins' layer, so adding a stage or format is its
#: module and its registry line, not also an entry here.
PLUGIN_PACKAGES = {"nnzip.stages": 3, "nnzip.formats": 3}


def layer_of(module: str) -> int | None:
    """*module*'s layer: its LAYERS entry, or a plug-in package's layer for its public modules."""
    if module in LAYERS:
        return LAYERS[module]
    package, _, name = module.rpartition(".")
    return PLUGIN_PACKAGES.get(package) if not name.startswith("_") else None


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if layer_of(m) is None)
    assert not missing, (f"new module(s) {missing} have no layer: add each to LAYERS in tests/test_layers.py, on the layer "
                         "of what it imports and what imports it (a module may import only its own or lower layers)")
    gone = sorted(set(LAYERS) - set(modules()))
    assert not gone, f"LAYERS in tests/test_layers.py lists module(s) that no longer exist: {gone}"


def test_imports_point_down_or_sideways():
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})" for a, edges in target_graph().items() for b in edges
                    if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a))
    assert not upward, "imports must point to the same or a lower layer (tests/test_layers.py, LAYERS):\n" + "\n".join(upward)


def test_no_import_cycle():
    cycle = find_cycle(target_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_known_violations_are_still_real():
    """Each listed exception is an edge of today's code that breaks the target; a fixed one leaves the list."""
    graph, fixed = import_graph(), []
    for a, b in sorted(KNOWN_VIOLATIONS):
        if b not in graph.get(a, set()):
            fixed.append((a, b))
            continue
        graph_without = {m: e - {b} if m == a else e for m, e in target_graph().items()}
        graph_without[a] = graph_without[a] | {b}
        upward = layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
        assert upward or find_cycle(graph_without), f"KNOWN_VIOLATIONS lists {a} -> {b}, which breaks no rule: remove it"
    assert not fixed, f"KNOWN_VIOLATIONS lists edges the code no longer has: {fixed}: remove them from tests/test_layers.py"


def test_the_checker_sees_what_it_must():
    """The graph finds imports inside functions and registry strings, and the cycle finder finds a cycle."""
    graph = import_graph()
    assert "nnzip.stages.dense" in graph["nnzip.stages"]  # "nnzip.stages.dense:Dense" in the registry
    assert "nnzip.errors" in graph["nnzip.stages.huffman"]  # from ..errors import ...
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
