"""Command line: argument parsing and printing only; the work is done by :mod:`nnzip.api`.

Every user-caused error prints one line ``nnzip: error: …`` on stderr and exits
with status 1 (2 for a malformed command line, as argparse does).  No input shows a
traceback: an unexpected exception is one ``nnzip: internal error: …`` line and
status 1 (``NNZIP_DEBUG=1`` prints the traceback too), running out of memory is one
line naming the memory limit, and Ctrl-C exits with status 130 quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path

from . import __version__, api
from .errors import NnzipError
from .limits import DEFAULT_LIMITS, DEFAULT_MIN_OUTPUT, DEFAULT_OUTPUT_PER_FILE_BYTE, DecodeLimits
from .plan import PlanRules, Settings, load_plan_file, parse_layer_override, parse_settings, validate

_DESCRIPTION = """\
Make trained neural-network weight files small, and prove they still work.

  nnzip compress model.h5              # -> model.nnz (lossless unless you ask for more)
  nnzip compress model.h5 --bits 4     # 4-bit k-means codebooks on weight matrices
  nnzip compress model.h5 --prune 0.8 --bits 4   # Deep-Compression style
  nnzip decompress model.nnz -o out.h5 # rebuild a file Keras loads as it is
  nnzip inspect model.nnz [--json]     # what is inside, per tensor
"""


#: Binary unit suffixes of ``--max-output`` (``512M``, ``4G``; plain numbers are bytes).
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``512M`` -> 536870912: a byte count with an optional K, M, G or T suffix (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or a number with K, M, G or T: 512M, 4G)")
    return max(1, int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]))


def format_size(size: int) -> str:
    """The shortest exact form :func:`parse_size` reads back: ``536870912`` -> ``512M``."""
    for unit in "TGMK":
        if size % _SIZE_UNITS[unit.lower()] == 0:
            return f"{size // _SIZE_UNITS[unit.lower()]}{unit}"
    return str(size)


def _add_max_output(p, reading: bool = True) -> None:
    what = ("the tensors a .nnz may decode to" if reading else
            "the tensors the .nnz may decode to; a file beyond the default needs the same option to decompress, inspect and verify")
    p.add_argument("--max-output", type=parse_size, metavar="SIZE",
                   help=f"cap on {what} (spec rule 4.7; default: the larger of {format_size(DEFAULT_MIN_OUTPUT)} and "
                   f"{DEFAULT_OUTPUT_PER_FILE_BYTE} x the .nnz's size); "
                   "bytes or K/M/G/T, e.g. 4G")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_jobs(p) -> None:
    p.add_argument("--jobs", "-j", type=_positive_int, default=None, metavar="N",
                   help="worker threads for the chunks of large tensors (default: the machine's cores); the output is the same for every N")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in nnzip's style."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"nnzip: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in the README)."""
    parser = _Parser(prog="nnzip", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nnzip {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_compress(commands)
    _add_decompress(commands)
    _add_inspect(commands)
    _add_verify(commands)
    _add_sweep(commands)
    return parser


def _add_compress(commands) -> None:
    p = commands.add_parser("compress", help="compress a model file into a .nnz container",
                            description="Compress a model file (Keras .h5, .weights.h5 or .keras; .safetensors; .npz) into a .nnz container. "
                            "Without lossy options every tensor is stored bit for bit. Lossy options apply to "
                            "float weight tensors of at least 2 dimensions and 1024 elements (in Keras files only layer "
                            "weights: kernels, embeddings); biases, statistics, states, small tensors and tensors holding "
                            "NaN or infinity always stay exact.")
    p.add_argument("model", type=Path, help="the model file, recognised by its content")
    p.add_argument("-o", "--output", type=Path, help="output file (default: MODEL with suffix .nnz)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--keep-optimizer", action="store_true", help="keep optimizer state (dropped by default: deployment does not need it)")
    p.add_argument("--lossless", action="store_true", help="store every tensor bit for bit (the default when no lossy option is given)")
    g = p.add_argument_group("lossy representations (pick at most one of --prune/--rank/--energy/--fft-keep, optionally with one of --bits/--uniform/--float16)")
    g.add_argument("--bits", type=int, metavar="B", help="k-means codebook with 2**B entries (B = 1..8), indices bit-packed")
    g.add_argument("--prune", type=float, metavar="F", help="remove the fraction F of smallest-magnitude weights (sparse CSR layout)")
    g.add_argument("--rank", type=int, metavar="R", help="low-rank SVD factors of rank R")
    g.add_argument("--energy", type=float, metavar="E", help="low-rank SVD keeping the fraction E of the squared singular values")
    g.add_argument("--fft-keep", type=float, metavar="F", help="keep the fraction F of frequency coefficients (real DCT-II by default)")
    g.add_argument("--fft-select", choices=("low", "largest"), default="largest", help="keep the lowest frequencies or the largest coefficients (default: largest)")
    g.add_argument("--fft-transform", choices=("dct", "rfft"), default="dct", help="real transform used by --fft-keep (default: dct)")
    g.add_argument("--uniform", type=float, metavar="S", help="round values to multiples of S standard deviations (entropy-coded uniform quantization; e.g. 0.35)")
    g.add_argument("--float16", action="store_true", help="store kept float values as float16")
    g.add_argument("--layer", action="append", default=[], metavar="NAME:K=V,...",
                   help="per-layer override, e.g. --layer dense_1:bits=2,prune=0.5 (NAME: a tensor name, a path component such as the layer name, or a glob); repeatable, last match wins")
    g.add_argument("--plan", type=Path, metavar="PLAN.json", help="JSON plan file with default settings and per-tensor overrides (spec/plan.md)")
    b = p.add_argument_group("accuracy budget (search the smallest plan instead of fixed settings)")
    b.add_argument("--data", type=Path, metavar="DATA", help="data set (.npz or .h5 with arrays x and y) to measure accuracy on; use a validation split, then 'nnzip verify' on another")
    b.add_argument("--max-drop", type=float, metavar="D", help="largest accepted drop: absolute accuracy (0.005 = half a point), or relative MSE increase for autoencoders")
    b.add_argument("--margin", type=float, default=1.0, metavar="K", help="require drop + K standard errors of the measured drop <= D, so the plan holds beyond the data's sampling noise (default 1; 0 trusts the data exactly)")
    _add_scoring(b)
    _add_max_output(p, reading=False)
    _add_jobs(p)
    p.set_defaults(run=_run_compress)


def _add_scoring(group) -> None:
    group.add_argument("--metric", choices=("accuracy", "mse", "cosine"), help="what to measure (default: accuracy when the data has labels y and the output is not shaped like the input, else reconstruction MSE; ONNX models: cosine to the original outputs when neither fits)")
    group.add_argument("--eval", dest="eval_hook", metavar="MODULE:FUNCTION", help="score weights with your function(weights, x, y) -> higher-is-better, for files without an architecture")


def _add_decompress(commands) -> None:
    p = commands.add_parser("decompress", help="rebuild the original model file format from a .nnz",
                            description="Rebuild a file of the source's own format (Keras .h5, .weights.h5 or .keras, .safetensors, .npz) that its framework loads as it is.")
    p.add_argument("file", type=Path, help="the .nnz file")
    p.add_argument("-o", "--output", type=Path, help="output file (default: FILE without .nnz plus the source's suffix, e.g. model.h5)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    _add_max_output(p)
    _add_jobs(p)
    p.set_defaults(run=_run_decompress)


def _add_verify(commands) -> None:
    p = commands.add_parser("verify", help="check a .nnz's accuracy against the original on data",
                            description="Rebuild the weights of a .nnz, run the original and the rebuilt model on DATA with "
                            "numpy (from the Keras model_config), and report accuracy (or reconstruction MSE), the drop, "
                            "top-1 agreement and each layer's relative output error.")
    p.add_argument("file", type=Path, help="the .nnz file")
    p.add_argument("--data", type=Path, required=True, help="data set: .npz or .h5 with arrays x (and y)")
    p.add_argument("--original", type=Path, help="the model file the .nnz was made from (default: the source file name recorded in the .nnz, if it lies beside it)")
    p.add_argument("--max-drop", type=float, metavar="D", help="exit with status 3 when the drop exceeds D")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    _add_scoring(p)
    _add_max_output(p)
    p.set_defaults(run=_run_verify)


def _add_sweep(commands) -> None:
    p = commands.add_parser("sweep", help="accuracy against one method's setting, with the real file size",
                            description="The 2017 study's experiments: for each setting of one method (SVD rank, fraction "
                            "pruned, k-means bits, fraction of DCT coefficients kept) compress the weight matrices "
                            "(or one layer's), rebuild, run the model on DATA and record the accuracy (or MSE) and the "
                            "size of the whole .nnz file.")
    p.add_argument("model", type=Path, help="the model file (with an architecture: Keras .h5 or .keras; others need --eval)")
    p.add_argument("--data", type=Path, required=True, help="data set: .npz or .h5 with arrays x (and y)")
    p.add_argument("--method", choices=("svd", "prune", "kmeans", "fft"), required=True, help="the representation to sweep")
    p.add_argument("--layer", metavar="NAME", help="change only the tensors matching NAME (a layer name, tensor name or glob)")
    p.add_argument("--csv", type=Path, metavar="OUT.csv", help="write the points as CSV")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="draw quality and file size against the setting (needs nnzip[plot])")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing --csv/--plot files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    _add_scoring(p)
    p.set_defaults(run=_run_sweep)


def _add_inspect(commands) -> None:
    p = commands.add_parser("inspect", help="show what is inside a .nnz",
                            description="Per tensor: shape, dtype, method (stage chain), stored bytes, bits per weight and relative error.")
    p.add_argument("file", type=Path, help="the .nnz file")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    _add_max_output(p)
    p.set_defaults(run=_run_inspect)


# --- commands ---------------------------------------------------------------------------


def rules_from_args(args: argparse.Namespace) -> PlanRules:
    """The plan rules the compress flags describe."""
    flags = {"bits": args.bits, "uniform": args.uniform, "prune": args.prune, "rank": args.rank, "energy": args.energy, "fft_keep": args.fft_keep}
    asked = {k: v for k, v in flags.items() if v is not None}
    if args.float16:
        asked["float16"] = True
    if args.lossless and asked:
        raise NnzipError(f"--lossless contradicts --{next(iter(asked)).replace('_', '-')}")
    # Without lossy settings a tensor is stored losslessly (plan.tensor_plan), so the
    # defaults need no lossless flag unless asked: a plan file may still add settings.
    default = parse_settings({**asked, "fft_select": args.fft_select, "fft_transform": args.fft_transform}, Settings(lossless=args.lossless), "flags")
    rules = load_plan_file(args.plan, default) if args.plan else PlanRules(validate(default), [])
    for text in args.layer:
        name, items = parse_layer_override(text)
        parse_settings(items, rules.default, f"--layer {text}")  # reject bad overrides before reading the model
        rules.overrides.append((name, items))
    return rules


def _progress(verb: str, quiet: bool):
    """A progress callback drawing one updating line on a terminal; silent otherwise."""
    if quiet or not sys.stderr.isatty():
        return None

    def show(done: int, total: int, name: str) -> None:
        line = f"\r{verb} {done}/{total} {name}"[:100]
        sys.stderr.write(line.ljust(101) if done < total else "\r" + " " * 101 + "\r")
        sys.stderr.flush()

    return show


def budget_from_args(args: argparse.Namespace) -> api.Budget | None:
    """The accuracy budget the compress flags describe, or None."""
    if args.max_drop is None:
        if args.data is not None:
            raise NnzipError("--data needs --max-drop (the accuracy budget)")
        return None
    if args.data is None and args.eval_hook is None:
        raise NnzipError("--max-drop needs --data (or --eval)")
    if args.max_drop < 0:
        raise NnzipError(f"--max-drop must be >= 0, got {args.max_drop}")
    fixed = [flag for flag, value in (("--bits", args.bits), ("--uniform", args.uniform), ("--prune", args.prune), ("--rank", args.rank), ("--energy", args.energy),
                                      ("--fft-keep", args.fft_keep), ("--plan", args.plan)) if value is not None]
    fixed += ["--layer"] * bool(args.layer) + ["--lossless"] * args.lossless + ["--float16"] * args.float16
    if fixed:
        raise NnzipError(f"--max-drop searches the settings itself; drop {fixed[0]}")
    log = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr))
    if args.margin < 0:
        raise NnzipError(f"--margin must be >= 0, got {args.margin}")
    return api.Budget(args.data, args.max_drop, args.eval_hook, args.metric, log, args.margin)


def _limits(args: argparse.Namespace) -> DecodeLimits:
    return DecodeLimits(max_output=args.max_output) if args.max_output is not None else DEFAULT_LIMITS


def _run_compress(args: argparse.Namespace) -> int:
    budget = budget_from_args(args)
    rules = None if budget else rules_from_args(args)
    report = api.compress(args.model, args.output, rules=rules, budget=budget, keep_optimizer=args.keep_optimizer, force=args.force,
                          progress=_progress("searching" if budget else "compressing", args.quiet), limits=_limits(args), jobs=args.jobs)
    if not args.quiet:
        for tensor in report.tensors:
            if tensor.note:
                print(f"note: {tensor.name}: {tensor.note}", file=sys.stderr)
        print(f"{args.model} -> {report.output}: {report.original_bytes:,} tensor bytes -> {report.file_bytes:,} bytes "
              f"({report.ratio:.2f}x)")
    if report.needs_max_output:  # said even with -q: without it the file looks unreadable later
        print(f"note: {report.output} decodes to {report.original_bytes:,} bytes, beyond rule 4.7's default cap for its size: "
              f"decompress, inspect and verify need --max-output {format_size(args.max_output)} too", file=sys.stderr)
    return 0


def _run_decompress(args: argparse.Namespace) -> int:
    written = api.decompress(args.file, args.output, force=args.force, progress=_progress("decoding", args.quiet), limits=_limits(args), jobs=args.jobs)
    if not args.quiet:
        print(f"{args.file} -> {written}")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    report = api.verify(args.file, args.data, args.original, eval_hook=args.eval_hook, metric=args.metric, limits=_limits(args))
    if args.max_drop is not None and report.comparison is None:
        raise NnzipError("--max-drop needs the original model (--original MODEL)")
    info = report.to_json()
    exceeded = args.max_drop is not None and report.comparison.drop > args.max_drop
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_verify(printable(info)))
    if exceeded:
        print(f"nnzip: drop {report.comparison.drop:.5f} exceeds --max-drop {args.max_drop}", file=sys.stderr)
        return 3
    return 0


def format_verify(info: dict) -> str:
    """The human report printed by ``nnzip verify``."""
    metric = info["metric"]
    show = (lambda v: f"{v:.4f}") if metric in ("accuracy", "cosine") else (lambda v: f"{v:.6g}")
    lines = [f"{info['file']}: {metric} on {info['samples']} samples"]
    if info.get("original_file") is None:
        lines.append(f"  rebuilt  {show(info['rebuilt'])}   (no original given: use --original MODEL to compare)")
        return "\n".join(lines)
    drop_text = f"{info['drop']:+.4f}" if metric in ("accuracy", "cosine") else f"{info['drop']:+.2%} (relative)"
    lines.append(f"  original {show(info['original'])}   ({info['original_file']})")
    lines.append(f"  rebuilt  {show(info['rebuilt'])}")
    lines.append(f"  drop     {drop_text}")
    if info.get("top1_agreement") is not None:
        lines.append(f"  top-1 agreement {info['top1_agreement']:.4f}")
    errors = info.get("layer_output_errors") or {}
    if errors:
        lines.append("  relative output error per layer:")
        width = max(map(len, errors))
        lines += [f"    {name.ljust(width)}  {value:.5f}" for name, value in errors.items()]
    return "\n".join(lines)


def _run_sweep(args: argparse.Namespace) -> int:
    from . import io as model_io
    from .evaluate import load_data, make_evaluator
    from .outputs import atomic_output, check_writable
    from .sweep import plot, run_sweep, write_csv

    for path in (args.csv, args.plot):
        if path is not None:
            check_writable(path, args.force)
    model = model_io.read_model(args.model)
    evaluator = make_evaluator(model, load_data(args.data), args.eval_hook, args.metric)
    baseline = evaluator.measure(model.tensors)
    points = run_sweep(model, args.model.name, evaluator, args.method, args.layer, _progress("sweeping", args.quiet))
    print(f"{args.model} {args.method} sweep{' on ' + args.layer if args.layer else ''}: {evaluator.metric}, original {baseline:.6g}")
    print(f"  {'setting':>8}  {evaluator.metric:>10}  {'.nnz bytes':>11}  {'weight error':>12}")
    for p in points:
        kept = f"  (kept lossless: {', '.join(p.fallbacks)})" if p.fallbacks else ""
        print(f"  {p.setting:>8g}  {p.value:>10.6g}  {p.file_bytes:>11,}  {p.tensor_error:>12.4f}{kept}")
    if args.csv is not None:
        with atomic_output(args.csv, args.force) as temporary:
            write_csv(points, temporary)
    if args.plot is not None and points:
        with atomic_output(args.plot, args.force) as temporary:
            plot(points, temporary, f"{args.model.name}: {args.method}{' (' + args.layer + ')' if args.layer else ''}", baseline)
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    info = api.inspect(args.file, limits=_limits(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(format_inspect(printable(info)))
    return 0


#: Characters a report must not print as they are: control characters (a newline in a name
#: would forge a report line) and surrogates (a header's escapes of undecodable bytes, §5.1,
#: which stdout cannot encode).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(value):
    """*value* (a report: dicts, lists, strings, numbers) with every string safe to print.

    Names and file names in a report come from the file being reported on; a crafted one
    must neither crash the print (UnicodeEncodeError) nor move the terminal's cursor, so
    unprintable characters become backslash escapes, as do those stdout cannot encode.
    """
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    if not isinstance(value, str):
        return value
    text = _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], value)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def format_inspect(info: dict) -> str:
    """The human table printed by ``nnzip inspect``.

    ``coders`` is the last stage of each part's chain (the entropy coder chosen per blob, or
    the serializer when none paid); ``entropy`` is the order-0 Shannon bound of what was
    coded, next to the bytes really stored.
    """
    lines = [
        f"{info['file']}: nnzip format {info['format_version']}, source {info['source_format']} ({info['source_filename']})",
        f"  {info['file_bytes']:,} bytes (header {info['header_bytes']:,}); tensors {info['tensor_bytes_original']:,} bytes as float; ratio {info['ratio']:.2f}x",
    ]
    for dropped in info["dropped"]:
        lines.append(f"  optimizer state dropped: /{dropped['path']} ({dropped['tensors']} tensors, {dropped['bytes']:,} bytes)")
    if not info["dropped"]:
        lines.append("  optimizer state: kept or absent in the source")
    search = (info.get("plan") or {}).get("search")
    if search:
        lines.append(f"  plan: budget search on data: {search['metric']} {search['baseline']:.6g} -> {search['result']:.6g} "
                     f"(drop {search['drop']:.5f}, {search['drop_bound']:.5f} with a {search['margin']}-standard-error margin, "
                     f"within {search['max_drop']}), {search['evaluations']} evaluations, {search['seconds']} s")
        for tensor in info["tensors"]:
            if tensor.get("choice"):
                lines.append(f"    {tensor['name']}: {tensor['choice']}")
    rows = [("tensor", "shape", "method", "coders", "bytes", "entropy", "bits/w", "error")]
    for t in info["tensors"]:
        error = "exact" if t["error"] == 0 else ("-" if t["error"] is None else f"{t['error']:.4f}")
        coders = "+".join(sorted({p["codecs"][-1] for p in t["parts"]}))
        bound = [p.get("entropy_bytes") for p in t["parts"]]
        entropy = f"{sum(bound):,.0f}" if bound and None not in bound else "-"
        rows.append((t["name"], "x".join(map(str, t["shape"])) or "scalar", t["method"], coders, f"{t['stored_bytes']:,}", entropy,
                     f"{t['bits_per_weight']:.3f}", error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nnzip`` command; returns the exit status (never raises but SystemExit)."""
    _tolerant_output()
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except NnzipError as exc:
        return _fail(f"nnzip: error: {exc}")
    except MemoryError:
        return _fail(f"nnzip: error: out of memory ({_memory_limit()})")
    except BrokenPipeError:  # stdout piped into head & co: stop quietly, as cat does
        _silence_stdout()
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"nnzip: error: {exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        return 130  # the shell has shown ^C; a temporary output was already removed
    except Exception as exc:  # a bug: one line asking for a report, the traceback on request
        return _fail(f"nnzip: internal error: {type(exc).__name__}: {exc} — please report (NNZIP_DEBUG=1 shows the traceback)")


def _fail(line: str) -> int:
    """Print *line* as one line on stderr (with the traceback first under NNZIP_DEBUG); status 1."""
    if os.environ.get("NNZIP_DEBUG", "") not in ("", "0"):
        traceback.print_exc()
    print(re.sub(r"\s*[\r\n]+\s*", " ", line).strip(), file=sys.stderr)
    return 1


def _memory_limit() -> str:
    """The memory limit that was hit, as far as the process can tell."""
    try:
        import resource

        soft, infinity = resource.getrlimit(resource.RLIMIT_AS)[0], resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        soft = infinity = -1
    if soft not in (-1, infinity):
        return f"the process may use at most {soft / 2**30:.3g} GiB of address space (RLIMIT_AS)"
    return "the machine's memory is exhausted; no process limit is set"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's captured stream): nothing to flush at exit


def _tolerant_output() -> None:
    """Names from files may hold unencodable characters (surrogate escapes): print them escaped, never fail."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


if __name__ == "__main__":
    sys.exit(main())
