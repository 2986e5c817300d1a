"""Command line: argument parsing and printing only; the work is done by :mod:`nnzip.api`.

Every user-caused error prints one line ``nnzip: error: …`` on stderr and exits
with status 1 (2, as argparse does, for a malformed command line or flags that
contradict or need each other).  No input shows a
traceback: an unexpected exception is one ``nnzip: internal error: …`` line and
status 1 (``NNZIP_DEBUG=1`` prints the traceback too), running out of memory is one
line naming the memory limit, and Ctrl-C exits with status 130 quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import traceback
from pathlib import Path
from typing import Callable


from . import api, writer
from .budget import Budget
from .chains import describe_chain
from .errors import NnzipError, UsageError, os_error_text
from .header_rules import decoded_bytes
from .limits import DEFAULT_LIMITS, DEFAULT_MIN_OUTPUT, DEFAULT_OUTPUT_PER_FILE_BYTE, DecodeLimits
from .distributed import DEFAULT_TIMEOUT
from .options import HOLDOUT_HELP, MARGIN_HELP, budget_from_options, rules_from_options, scheduler_from_options
from .outputs import private_directory
from .plan import PlanRules
from .version import __version__
from .reader import NnzReader
from .rebuild import default_decompressed, rebuild
from .workers import bound_malloc

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
    p.add_argument("--max-work", type=parse_size, metavar="SIZE",
                   help="cap on the working memory one tensor's decode may use beyond its output (spec rule 4.8.1; default: "
                   "the larger of 256M and 2 x the tensor); bytes or K/M/G/T")
    p.add_argument("--max-ops", type=parse_size, metavar="N",
                   help="cap on the arithmetic a file's decode may cost, in multiply-adds (spec rule 4.8.2; default: the larger of "
                   "2^35 and 2^15 x the stored bytes); a number, K/M/G/T multiply by powers of 1024")


#: The exit status of a usage error: argparse's own, and flags that contradict or need each other (:class:`UsageError`).
USAGE_STATUS = 2

_EXIT_CODES = """\
exit status:
  0  success
  1  error (bad input, corrupt .nnz, bad setting, I/O error)
  2  usage error (bad command line, or flags that contradict or need each other)
  3  accuracy budget exceeded (verify --max-drop)
"""


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions, keeps texts laid out in lines (examples, the exit codes) as they are."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


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
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the per-tensor work on the dask cluster at ADDRESS (e.g. tcp://host:8786; needs nnzip[dask]); the workers read "
                   "the input from the same path on a shared file system; the output is the same as a local run's")
    p.add_argument("--scheduler-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for the scheduler and its first worker (default: {DEFAULT_TIMEOUT:g})")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in nnzip's style, no abbreviated options and the exit codes in --help.

    Abbreviations are off: ``--keep`` must never silently mean ``--keep-optimizer``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("epilog", _EXIT_CODES)
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(USAGE_STATUS, f"nnzip: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in the README)."""
    parser = _Parser(prog="nnzip", description=_DESCRIPTION)
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
    p.add_argument("model", type=Path, nargs="+", help="the model file(s), recognised by their content; '-' reads standard input (and writes standard output)")
    p.add_argument("-o", "--output", type=Path, help="output file, '-' for standard output (default: MODEL with suffix .nnz; one input only)")
    _add_manners(p)
    p.add_argument("--keep-optimizer", action="store_true", help="keep optimizer state (dropped by default: deployment does not need it)")
    p.add_argument("--strip", action="store_true", help="also leave out what the rebuilt file does not need to load and run: Keras' training "
                   "configuration (.h5 training_config, .keras compile_config: loss, metrics, optimizer settings; the rebuilt "
                   "model then loads uncompiled, with the same weights and predictions) and the header's informative plan and "
                   "per-tensor errors (inspect then shows none)")
    p.add_argument("--lossless", action="store_true", help="store every tensor bit for bit (the default when no lossy option is given)")
    g = p.add_argument_group("lossy representations (pick at most one of --prune/--rank/--energy/--fft-keep, optionally with one of --bits/--uniform/--uniform-step/--float16)")
    g.add_argument("--bits", type=int, metavar="B", help="k-means codebook with 2**B entries (B = 1..8), indices bit-packed")
    g.add_argument("--prune", type=float, metavar="F", help="remove the fraction F of smallest-magnitude weights (sparse CSR layout)")
    g.add_argument("--rank", type=int, metavar="R", help="low-rank SVD factors of rank R")
    g.add_argument("--energy", type=float, metavar="E", help="low-rank SVD keeping the fraction E of the squared singular values")
    g.add_argument("--fft-keep", type=float, metavar="F", help="keep the fraction F of frequency coefficients (real DCT-II by default)")
    g.add_argument("--fft-select", choices=("low", "largest"), default="largest", help="keep the lowest frequencies or the largest coefficients (default: largest)")
    g.add_argument("--fft-transform", choices=("dct", "rfft"), default="dct", help="real transform used by --fft-keep (default: dct)")
    g.add_argument("--uniform", type=float, metavar="S", help="round values to multiples of S standard deviations (entropy-coded uniform quantization; e.g. 0.35)")
    g.add_argument("--uniform-step", type=float, metavar="STEP", help="round values to multiples of the absolute STEP, the same for every tensor "
                   "(fewest bits for a given total squared error over the model, as NNCodec's QP; e.g. 0.0067)")
    g.add_argument("--dq", action="store_true", help="with --uniform or --uniform-step: dependent (trellis-coded) quantization, NNCodec's DQ: "
                   "two interleaved grids chosen by the parity of earlier levels (stage dq; about 3%% fewer bytes at the same error, format 1.3)")
    g.add_argument("--rdo", type=float, metavar="W", help="with --uniform or --uniform-step: rate-distortion rounding (RDOQ): a value moves one step toward zero where "
                   "that saves W bits per squared step of added error (0.12 suits most weights; smaller files at the same error for steps near 1 sd)")
    g.add_argument("--float16", action="store_true", help="store kept float values as float16")
    g.add_argument("--layer", action="append", default=[], metavar="NAME:K=V,...",
                   help="per-layer override, e.g. --layer dense_1:bits=2,prune=0.5 (NAME: a tensor name, a path component such as the layer name, or a glob); repeatable, last match wins")
    g.add_argument("--plan", type=Path, metavar="PLAN.json", help="JSON plan file with default settings and per-tensor overrides (spec/plan.md)")
    b = p.add_argument_group("accuracy budget (search the smallest plan instead of fixed settings)")
    b.add_argument("--data", type=Path, metavar="DATA", help="data set (.npz or .h5 with arrays x and y) to measure accuracy on; use a validation split, then 'nnzip verify' on another")
    b.add_argument("--max-drop", type=float, metavar="D", help="largest accepted drop: absolute accuracy (0.005 = half a point), relative MSE increase for autoencoders, "
                   "or with --eval the hook's score drop in its own units (relative if the hook sets nnzip_drop = \"relative\")")
    b.add_argument("--margin", type=float, default=Budget.margin, metavar="K", help=MARGIN_HELP)
    b.add_argument("--holdout", type=float, default=Budget.holdout, metavar="F", help=HOLDOUT_HELP)
    _add_scoring(b)
    _add_max_output(p, reading=False)
    _add_jobs(p)
    p.set_defaults(run=_run_compress)


def _add_manners(p) -> None:
    """The gzip/xz/zstd options compress and decompress share."""
    p.add_argument("-c", "--stdout", action="store_true", help="write to standard output, keep the input (one input only)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-k", "--keep", action="store_true", help="keep the input file (the default)")
    p.add_argument("--rm", action="store_true", help="remove the input file once its output is complete and has been read back")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("-v", "--verbose", action="store_true", help="say more: one line per tensor")


def _add_scoring(group) -> None:
    group.add_argument("--metric", choices=("accuracy", "mse", "cosine"), help="what to measure (default: accuracy when the data has labels y and the output is not shaped like the input, else reconstruction MSE; ONNX models: cosine to the original outputs when neither fits)")
    group.add_argument("--eval", dest="eval_hook", metavar="MODULE:FUNCTION", help="score weights with your function(weights, x, y) (or function(weights)) returning one higher-is-better "
                       "number, for files without an architecture; MODULE is importable from the current directory, or a path "
                       "to a .py file. The drop is in the score's own units; set function.nnzip_drop = \"relative\" to count it "
                       "as a fraction of the original score")


def _add_decompress(commands) -> None:
    p = commands.add_parser("decompress", help="rebuild the original model file format from a .nnz",
                            description="Rebuild a file of the source's own format (Keras .h5, .weights.h5 or .keras, .safetensors, .npz) that its framework loads as it is.")
    p.add_argument("file", type=Path, nargs="+", help="the .nnz file(s); '-' reads standard input (and writes standard output)")
    p.add_argument("-o", "--output", type=Path, help="output file, '-' for standard output (default: FILE without .nnz plus the source's suffix, e.g. model.h5; one input only)")
    p.add_argument("-t", "--test", action="store_true", help="check every CRC and decode every tensor; write nothing (as gzip -t)")
    _add_manners(p)
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
    p.add_argument("--max-drop", type=float, metavar="D", help="exit with status 3 when the drop exceeds D (in the units verify prints: an accuracy fraction, a relative MSE increase, or the --eval hook's units)")
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
    """The plan rules the compress flags describe (see :func:`nnzip.options.rules_from_options`)."""
    return rules_from_options(bits=args.bits, prune=args.prune, rank=args.rank, energy=args.energy, fft_keep=args.fft_keep,
                              uniform=args.uniform, float16=args.float16, lossless=args.lossless, fft_select=args.fft_select,
                              fft_transform=args.fft_transform, layers=args.layer, plan=args.plan, rdo=getattr(args, "rdo", None),
                              uniform_step=getattr(args, "uniform_step", None), dq=getattr(args, "dq", False))


def budget_from_args(args: argparse.Namespace, log=None) -> Budget | None:
    """The accuracy budget the compress flags describe, or None (see :func:`nnzip.options.budget_from_options`)."""
    fixed = [flag for flag, value in (("--bits", args.bits), ("--uniform", args.uniform), ("--uniform-step", getattr(args, "uniform_step", None)), ("--rdo", getattr(args, "rdo", None)), ("--prune", args.prune), ("--rank", args.rank), ("--energy", args.energy),
                                      ("--fft-keep", args.fft_keep), ("--plan", args.plan)) if value is not None]
    fixed += ["--dq"] * bool(getattr(args, "dq", False))
    fixed += ["--layer"] * bool(args.layer) + ["--lossless"] * args.lossless + ["--float16"] * args.float16
    return budget_from_options(args.data, args.max_drop, eval_hook=args.eval_hook, metric=args.metric, margin=args.margin, log=log, fixed=fixed,
                               holdout=args.holdout)


def _scheduler(args: argparse.Namespace):
    """``--scheduler``/``--scheduler-timeout`` as a checked :class:`nnzip.distributed.Scheduler`, or None."""
    return scheduler_from_options(args.scheduler, args.scheduler_timeout)


def _limits(args: argparse.Namespace) -> DecodeLimits:
    """The reader's caps the command line raised or lowered (``--max-output``, ``--max-work``, ``--max-ops``)."""
    given = {name: getattr(args, name, None) for name in ("max_output", "max_work", "max_ops")}
    return DecodeLimits(**given) if any(v is not None for v in given.values()) else DEFAULT_LIMITS


class _Progress:
    """A tqdm progress bar (rate and ETA) on a terminal's stderr, nothing elsewhere or with -q.

    Called as :data:`nnzip.workers.Progress` ``(done, total, name)``.  :meth:`log` prints a line
    above the bar (tqdm.write) so that search log lines and the bar never share a line.
    """

    def __init__(self, verb: str, quiet: bool):
        self.verb, self.bar = verb, None
        self.enabled = not quiet and sys.stderr.isatty()

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        if self.bar is None or self.bar.total != total:
            self.close()
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.verb, unit=_unit(name), file=sys.stderr, leave=False, dynamic_ncols=True)
        self.bar.set_postfix_str(name[:40], refresh=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def log(self, line: str) -> None:
        """Print one log line on stderr, above the bar when one is drawn."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        """Remove the bar (if any) from the terminal."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


#: What a budget search counts in each of its steps (its progress names start "1/2 ..." and "2/2 ...").
_SEARCH_UNITS = {"1/2": "candidate", "2/2": "round"}


def _unit(name: str) -> str:
    """The progress bar's unit: the search's own for its steps, else tensors."""
    return _SEARCH_UNITS.get(name[:3], "tensor")


def _progress(verb: str, quiet: bool) -> _Progress | None:
    """A progress callback drawing a bar on a terminal; None when nothing would be shown."""
    progress = _Progress(verb, quiet)
    return progress if progress.enabled else None


#: Standard input is spooled to a private temporary file (readers need to seek); at most this much.
STDIN_CAP = 2**36
#: The name that means standard input (as input) or standard output (as output).
STDIO = "-"


def format_bytes(size: int) -> str:
    """``872900`` -> ``872.9 KB`` (decimal units, as the summary line shows sizes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _spool_stdin(directory: Path, name: str) -> Path:
    """Copy standard input into *directory*/*name* (the readers seek), refusing more than :data:`STDIN_CAP` bytes."""
    if sys.stdin is None or sys.stdin.isatty():
        raise NnzipError("standard input is a terminal: pipe a file in, or name it")
    path, total = directory / name, 0
    source = getattr(sys.stdin, "buffer", sys.stdin)
    with open(path, "wb") as handle:
        while chunk := source.read(2**20):
            total += len(chunk)
            if total > STDIN_CAP:
                raise NnzipError(f"standard input exceeds {format_size(STDIN_CAP)} bytes (the spool cap)")
            handle.write(chunk)
    if total == 0:
        raise NnzipError("standard input is empty")
    return path


def _to_stdout(path: Path) -> None:
    """Copy the finished file *path* to standard output."""
    target = getattr(sys.stdout, "buffer", sys.stdout)
    with open(path, "rb") as handle:
        shutil.copyfileobj(handle, target, 2**20)
    target.flush()


def _check_stdio(args: argparse.Namespace, inputs: list[Path], data_kind: str) -> bool:
    """Check -o/-c/--rm against the inputs; returns whether the output goes to standard output."""
    stdin = [p for p in inputs if str(p) == STDIO]
    if len(stdin) > 1:
        raise UsageError("standard input ('-') can be read only once")
    to_stdout = args.stdout or (args.output is not None and str(args.output) == STDIO) or (bool(stdin) and args.output is None)
    if len(inputs) > 1 and args.output is not None:
        raise UsageError("-o/--output names one output: give one input, or drop -o (each input gets its own default output)")
    if to_stdout and len(inputs) > 1:
        raise UsageError("-c/--stdout writes one stream: give one input")
    if args.rm and (to_stdout or stdin):
        raise UsageError("--rm removes an input file after writing its output file: not with standard input or output")
    if to_stdout and sys.stdout.isatty() and not getattr(args, "test", False):
        raise NnzipError(f"{data_kind} not written to a terminal: redirect standard output (or use -o FILE)")
    return to_stdout


def _say(args: argparse.Namespace, to_stdout: bool, line: str) -> None:
    """A summary line: on stdout, or on stderr when stdout carries the data; nothing with -q."""
    if not args.quiet:
        print(line, file=sys.stderr if to_stdout else sys.stdout)


def _run_compress(args: argparse.Namespace) -> int:
    to_stdout = _check_stdio(args, args.model, "compressed data")
    progress = _Progress("searching" if args.max_drop is not None else "compressing", args.quiet or not sys.stderr.isatty())
    log = None if args.quiet else (lambda line: progress.log(f"  {line}"))
    budget = budget_from_args(args, log)
    if budget is not None and args.verbose:  # -v: every candidate the search tries, in words
        budget.detail = log

    def one(source: Path) -> tuple[int, int]:
        rules = None if budget else rules_from_args(args)  # fresh per input: the rules record the tensors they saw
        try:
            with private_directory() as directory:
                path = _spool_stdin(directory, "stdin") if str(source) == STDIO else source
                output = directory / "stdout.nnz" if to_stdout else args.output
                report = writer.compress(path, output, rules=rules, budget=budget, keep_optimizer=args.keep_optimizer, force=args.force,
                                         progress=progress if progress.enabled else None, limits=_limits(args), jobs=args.jobs, strip=args.strip,
                                         scheduler=_scheduler(args))
                in_size = os.stat(path).st_size
                if to_stdout:
                    _to_stdout(report.output)
        finally:
            progress.close()  # an error line must not land on a half-drawn bar
        if args.rm:
            _verified_remove(source, lambda: api.read_tensors(report.output, _limits(args)))
        _compress_summary(args, source, report, in_size, to_stdout)
        return in_size, report.file_bytes

    def total(count: str, sizes: tuple[int, int]) -> str:
        return f"total: {count}, {format_bytes(sizes[0])} -> {format_bytes(sizes[1])} ({sizes[0] / max(sizes[1], 1):.1f}x)"

    return _for_each(args, args.model, one, total, to_stdout)


def _tensor_lines(args: argparse.Namespace, header: dict, to_stdout: bool) -> None:
    """-v on decompress and -t: one line per tensor (its chain, stored and decoded bytes, error), from the checked header."""
    if not args.verbose or args.quiet:
        return
    sizes = api.blob_sizes(header)
    for entry in header["tensors"]:
        stored = sum(sizes[index] for part in entry["parts"] for index in api.part_blobs(part))
        decoded = decoded_bytes(entry)
        error = entry.get("stats", {}).get("error")
        error = "exact" if error == 0 else ("error not recorded" if error is None else f"relative error {error:.4f}")
        _say(args, to_stdout, f"  {printable(entry['name'])}: {describe_chain(entry)}, {stored:,} -> {decoded:,} bytes, {error}")


def _for_each(args: argparse.Namespace, inputs: list[Path], one: Callable[[Path], tuple[int, int]],
              total: Callable[[str, tuple[int, int]], str], to_stdout: bool) -> int:
    """Run *one* on each input, as gzip does: with several, an input that fails is one error line and the rest go on.

    The total line (several inputs only) counts the inputs done, and says how many failed;
    the status is 1 when any failed.  A single input's error propagates to :func:`main`.
    """
    sizes, failed = [0, 0], 0
    for source in inputs:
        try:
            done = one(source)
        except (NnzipError, OSError) as exc:
            if len(inputs) == 1 or isinstance(exc, BrokenPipeError):
                raise
            failed += 1
            _fail(f"nnzip: error: {source}: {_error_text(exc)}")
            continue
        sizes[0] += done[0]
        sizes[1] += done[1]
    if len(inputs) > 1:
        count = f"{len(inputs) - failed} files" + (f" ({failed} failed)" if failed else "")
        _say(args, to_stdout, total(count, tuple(sizes)))
    return 1 if failed else 0


def _error_text(exc: Exception) -> str:
    """The one-line message of an error :func:`main` reports (an OSError's reason and file name)."""
    if isinstance(exc, OSError) and not isinstance(exc, NnzipError):
        return os_error_text(exc)
    return str(exc)


def _compress_summary(args: argparse.Namespace, source: Path, report, in_size: int, to_stdout: bool) -> None:
    """Notes, -v's per-tensor lines and the summary line of one compressed input."""
    if not args.quiet:
        for tensor in report.tensors:
            if tensor.note:
                print(f"note: {printable(tensor.name)}: {tensor.note}", file=sys.stderr)
        if args.verbose:
            for t in report.tensors:
                error = "exact" if t.error == 0 else f"relative error {t.error:.4f}"
                _say(args, to_stdout, f"  {printable(t.name)}: {t.method}, {t.original_bytes:,} -> {t.stored_bytes:,} bytes, {error}")
        where = "stdout" if to_stdout else report.output
        name = "stdin" if str(source) == STDIO else source
        _say(args, to_stdout, f"{name} -> {where}: {format_bytes(in_size)} -> {format_bytes(report.file_bytes)} "
             f"({in_size / max(report.file_bytes, 1):.1f}x the file, {report.ratio:.1f}x the tensors)")
    if report.needs_max_output:  # said even with -q: without it the file looks unreadable later
        print(f"note: {report.output if not to_stdout else 'the output'} decodes to {report.original_bytes:,} bytes, beyond rule 4.7's default cap for its size: "
              f"decompress, inspect and verify need --max-output {format_size(args.max_output)} too", file=sys.stderr)


def _verified_remove(source: Path, check) -> None:
    """--rm: remove *source* only after *check()* (reading the finished output back) succeeds."""
    try:
        check()
    except NnzipError as exc:
        raise NnzipError(f"output check failed, {source} kept: {exc}") from None
    os.unlink(source)


def _run_decompress(args: argparse.Namespace) -> int:
    to_stdout = False if args.test else _check_stdio(args, args.file, "decompressed data")
    if args.test and (args.output is not None or args.stdout or args.rm):
        raise UsageError("-t/--test writes nothing: not with -o, -c or --rm")

    def one(source: Path) -> tuple[int, int]:
        progress = _progress("testing" if args.test else "decoding", args.quiet)
        try:
            with private_directory() as directory:
                path = _spool_stdin(directory, "stdin.nnz") if str(source) == STDIO else source
                name = "stdin" if str(source) == STDIO else source
                in_size = os.stat(path).st_size
                if args.test:
                    header, tensors = api.read_tensors(path, _limits(args))
                    _tensor_lines(args, header, False)
                    _say(args, False, f"{name}: OK ({len(tensors)} tensors decoded, {len(header['blobs'])} blob CRCs checked)")
                    return in_size, sum(t.nbytes for t in tensors.values())
                output = args.output
                with NnzReader(path, limits=_limits(args)) as reader:  # every check, once
                    header = reader.header
                    if to_stdout:
                        output = directory / ("stdout" + default_decompressed(Path("x.nnz"), header).suffix)
                    written = rebuild(reader, output, force=args.force, progress=progress, jobs=args.jobs, scheduler=_scheduler(args))
                _tensor_lines(args, header, to_stdout)
                out_size = os.stat(written).st_size
                if to_stdout:
                    _to_stdout(written)
        finally:
            if progress is not None:
                progress.close()
        if args.rm:
            from . import formats

            _verified_remove(source, lambda: formats.read_model(written, keep_optimizer=True, limits=_limits(args)))
        _say(args, to_stdout, f"{name} -> {'stdout' if to_stdout else written}: {format_bytes(in_size)} -> {format_bytes(out_size)}")
        return in_size, out_size

    def total(count: str, sizes: tuple[int, int]) -> str:
        if args.test:
            return f"total: {count} tested, {format_bytes(sizes[0])} -> {format_bytes(sizes[1])} of tensors"
        return f"total: {count} decompressed, {format_bytes(sizes[0])} -> {format_bytes(sizes[1])}"

    return _for_each(args, args.file, one, total, to_stdout)


def _run_verify(args: argparse.Namespace) -> int:
    report = api.verify(args.file, args.data, args.original, eval_hook=args.eval_hook, metric=args.metric, limits=_limits(args))
    if args.max_drop is not None and report.comparison is None:
        raise UsageError("--max-drop needs the original model (--original MODEL)")
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
    drop_text = _drop_text(metric, info.get("drop_kind", "absolute"), info["drop"])
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


def _drop_text(metric: str, kind: str, drop: float) -> str:
    """The drop in the metric's own terms: accuracy points, a relative change, or a hook's units."""
    if metric == "mse" or kind == "relative":
        return f"{drop:+.2%} (relative)"
    if metric in ("accuracy", "cosine"):
        return f"{drop:+.4f}"
    return f"{drop:+.6g} (absolute, in the hook's units)"


def _run_sweep(args: argparse.Namespace) -> int:
    report = api.sweep(args.model, args.data, args.method, layer=args.layer, eval_hook=args.eval_hook, metric=args.metric,
                       csv_path=args.csv, plot_path=args.plot, force=args.force, progress=_progress("sweeping", args.quiet))
    print(f"{args.model} {report.method} sweep{' on ' + report.layer if report.layer else ''}: {report.metric}, original {report.baseline:.6g}")
    print(f"  {'setting':>8}  {report.metric:>10}  {'.nnz bytes':>11}  {'weight error':>12}")
    for p in report.points:
        kept = f"  (kept lossless: {', '.join(p.fallbacks)})" if p.fallbacks else ""
        print(f"  {p.setting:>8g}  {p.value:>10.6g}  {p.file_bytes:>11,}  {p.tensor_error:>12.4f}{kept}")
    report.save()
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
        f"  {info['file_bytes']:,} bytes (header {info['header_bytes']:,}, {info['header_share']:.1%} of the file); tensors {info['tensor_bytes_original']:,} bytes as stored in their own dtypes (float or integer); ratio {info['ratio']:.2f}x",
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
        if "holdout_samples" in search:
            lines.append(f"    checked on {search['holdout_samples']:,} samples held out of the search: drop {search['holdout_drop']:.5f}")
        for tensor in info["tensors"]:
            if tensor.get("choice"):
                lines.append(f"    {tensor['name']}: {tensor['choice']}")
    for tensor in info["tensors"]:  # the values differ from the source's although no lossy option touched them: say why
        if tensor.get("bias_correction"):
            lines.append(f"  bias corrected: {tensor['name']} was changed by the budget search to offset the error of "
                         f"{tensor['bias_correction']} (stored exact; its error is against the source's values)")
    rows = [("tensor", "shape", "method", "coders", "bytes", "entropy", "bits/w", "error")]
    feeds = any("feeds" in t for t in info["tensors"])  # ONNX: the operator inputs each tensor reaches
    if feeds:
        rows[0] += ("feeds",)
    for t in info["tensors"]:
        error = "exact" if t["error"] == 0 else ("-" if t["error"] is None else f"{t['error']:.4f}")
        coders = "+".join(sorted({p["codecs"][-1] for p in t["parts"]}))
        bound = [p.get("entropy_bytes") for p in t["parts"]]
        entropy = f"{sum(bound):,.0f}" if bound and None not in bound else "-"
        if entropy != "-" and sum(bound) > t["stored_bytes"]:
            entropy += "*"  # explained below the table: a bound above the stored size is not an error
        method = t["method"] + (" (bias corrected)" if t.get("bias_correction") else "")
        rows.append((t["name"], "x".join(map(str, t["shape"])) or "scalar", method, coders, f"{t['stored_bytes']:,}", entropy,
                     f"{t['bits_per_weight']:.3f}", error) + ((",".join(t.get("feeds", [])) or "-",) if feeds else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(w) if i < 4 or i == 8 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if any(row[5].endswith("*") for row in rows[1:]):
        lines.append("  * entropy is the order-0 (symbol-frequency) bound of the coded bytes; a coder that uses "
                     "repeats or context (LZW, byte planes) can store less than it")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nnzip`` command; returns the exit status (never raises but SystemExit)."""
    _tolerant_output()
    bound_malloc()  # the command owns its process; the library never retunes its caller's allocator
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as exc:  # settings that contradict each other: a usage error, as argparse's own
        return _fail(f"nnzip: error: {exc}", USAGE_STATUS)
    except NnzipError as exc:
        return _fail(f"nnzip: error: {exc}")
    except MemoryError:
        return _fail(f"nnzip: error: out of memory ({_memory_limit()})")
    except BrokenPipeError:  # stdout piped into head & co: stop quietly, as cat does
        _silence_stdout()
        return 1
    except OSError as exc:
        return _fail(f"nnzip: error: {os_error_text(exc)}")
    except KeyboardInterrupt:
        return 130  # the shell has shown ^C; a temporary output was already removed
    except Exception as exc:  # a bug: one line asking for a report, the traceback on request
        return _fail(f"nnzip: internal error: {type(exc).__name__}: {exc} — please report (NNZIP_DEBUG=1 shows the traceback)")


def _fail(line: str, status: int = 1) -> int:
    """Print *line* as one line on stderr (with the traceback first under NNZIP_DEBUG); returns *status*."""
    if os.environ.get("NNZIP_DEBUG", "") not in ("", "0"):
        traceback.print_exc()
    print(re.sub(r"\s*[\r\n]+\s*", " ", line).strip(), file=sys.stderr)
    return status


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
