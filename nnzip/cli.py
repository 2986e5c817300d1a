"""Command line: argument parsing and printing only; the work is done by :mod:`nnzip.api`.

Every user-caused error prints one line ``nnzip: error: …`` on stderr and exits
with status 1 (2 for a malformed command line, as argparse does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, api
from .errors import NnzipError
from .plan import PlanRules, Settings, load_plan_file, parse_layer_override, parse_settings, validate

_DESCRIPTION = """\
Make trained neural-network weight files small, and prove they still work.

  nnzip compress model.h5              # -> model.nnz (lossless unless you ask for more)
  nnzip compress model.h5 --bits 4     # 4-bit k-means codebooks on weight matrices
  nnzip compress model.h5 --prune 0.8 --bits 4   # Deep-Compression style
  nnzip decompress model.nnz -o out.h5 # rebuild a file Keras loads as it is
  nnzip inspect model.nnz [--json]     # what is inside, per tensor
"""


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
    return parser


def _add_compress(commands) -> None:
    p = commands.add_parser("compress", help="compress a model file into a .nnz container",
                            description="Compress a Keras .h5 / .weights.h5 file into a .nnz container. "
                            "Without lossy options every tensor is stored bit for bit. Lossy options apply to "
                            "float weight tensors of at least 2 dimensions and 1024 elements; biases and small "
                            "tensors always stay exact.")
    p.add_argument("model", type=Path, help="the model file (Keras legacy .h5 or Keras 3 .weights.h5)")
    p.add_argument("-o", "--output", type=Path, help="output file (default: MODEL with suffix .nnz)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--keep-optimizer", action="store_true", help="keep optimizer state (dropped by default: deployment does not need it)")
    p.add_argument("--lossless", action="store_true", help="store every tensor bit for bit (the default when no lossy option is given)")
    g = p.add_argument_group("lossy representations (pick at most one of --prune/--rank/--energy/--fft-keep, optionally with --bits or --float16)")
    g.add_argument("--bits", type=int, metavar="B", help="k-means codebook with 2**B entries (B = 1..8), indices bit-packed")
    g.add_argument("--prune", type=float, metavar="F", help="remove the fraction F of smallest-magnitude weights (sparse CSR layout)")
    g.add_argument("--rank", type=int, metavar="R", help="low-rank SVD factors of rank R")
    g.add_argument("--energy", type=float, metavar="E", help="low-rank SVD keeping the fraction E of the squared singular values")
    g.add_argument("--fft-keep", type=float, metavar="F", help="keep the fraction F of frequency coefficients (real DCT-II by default)")
    g.add_argument("--fft-select", choices=("low", "largest"), default="largest", help="keep the lowest frequencies or the largest coefficients (default: largest)")
    g.add_argument("--fft-transform", choices=("dct", "rfft"), default="dct", help="real transform used by --fft-keep (default: dct)")
    g.add_argument("--float16", action="store_true", help="store kept float values as float16")
    g.add_argument("--layer", action="append", default=[], metavar="NAME:K=V,...",
                   help="per-layer override, e.g. --layer dense_1:bits=2,prune=0.5 (NAME: a tensor name, a path component such as the layer name, or a glob); repeatable, last match wins")
    g.add_argument("--plan", type=Path, metavar="PLAN.json", help="JSON plan file with default settings and per-tensor overrides (spec/plan.md)")
    p.set_defaults(run=_run_compress)


def _add_decompress(commands) -> None:
    p = commands.add_parser("decompress", help="rebuild the original model file format from a .nnz",
                            description="Rebuild a file of the source's own format (Keras .h5 or .weights.h5) that Keras loads as it is.")
    p.add_argument("file", type=Path, help="the .nnz file")
    p.add_argument("-o", "--output", type=Path, help="output file (default: FILE without .nnz plus the source's suffix, e.g. model.h5)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=_run_decompress)


def _add_inspect(commands) -> None:
    p = commands.add_parser("inspect", help="show what is inside a .nnz",
                            description="Per tensor: shape, dtype, method (stage chain), stored bytes, bits per weight and relative error.")
    p.add_argument("file", type=Path, help="the .nnz file")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(run=_run_inspect)


# --- commands ---------------------------------------------------------------------------


def rules_from_args(args: argparse.Namespace) -> PlanRules:
    """The plan rules the compress flags describe."""
    flags = {"bits": args.bits, "prune": args.prune, "rank": args.rank, "energy": args.energy, "fft_keep": args.fft_keep}
    asked = {k: v for k, v in flags.items() if v is not None}
    if args.float16:
        asked["float16"] = True
    if args.lossless and asked:
        raise NnzipError(f"--lossless contradicts --{next(iter(asked)).replace('_', '-')}")
    default = parse_settings({**asked, "fft_select": args.fft_select, "fft_transform": args.fft_transform}, Settings(), "flags")
    if args.lossless or not asked:
        default = Settings(lossless=True)
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


def _run_compress(args: argparse.Namespace) -> int:
    rules = rules_from_args(args)
    report = api.compress(args.model, args.output, rules=rules, keep_optimizer=args.keep_optimizer, force=args.force, progress=_progress("compressing", args.quiet))
    if not args.quiet:
        for tensor in report.tensors:
            if tensor.note:
                print(f"note: {tensor.name}: {tensor.note}", file=sys.stderr)
        print(f"{args.model} -> {report.output}: {report.original_bytes:,} tensor bytes -> {report.file_bytes:,} bytes "
              f"({report.ratio:.2f}x)")
    return 0


def _run_decompress(args: argparse.Namespace) -> int:
    written = api.decompress(args.file, args.output, force=args.force, progress=_progress("decoding", args.quiet))
    if not args.quiet:
        print(f"{args.file} -> {written}")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    info = api.inspect(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(format_inspect(info))
    return 0


def format_inspect(info: dict) -> str:
    """The human table printed by ``nnzip inspect``."""
    lines = [
        f"{info['file']}: nnzip format {info['format_version']}, source {info['source_format']} ({info['source_filename']})",
        f"  {info['file_bytes']:,} bytes (header {info['header_bytes']:,}); tensors {info['tensor_bytes_original']:,} bytes as float; ratio {info['ratio']:.2f}x",
    ]
    for dropped in info["dropped"]:
        lines.append(f"  optimizer state dropped: /{dropped['path']} ({dropped['tensors']} tensors, {dropped['bytes']:,} bytes)")
    if not info["dropped"]:
        lines.append("  optimizer state: kept or absent in the source")
    rows = [("tensor", "shape", "method", "bytes", "bits/w", "error")]
    for t in info["tensors"]:
        error = "exact" if t["error"] == 0 else ("-" if t["error"] is None else f"{t['error']:.4f}")
        rows.append((t["name"], "x".join(map(str, t["shape"])) or "scalar", t["method"], f"{t['stored_bytes']:,}", f"{t['bits_per_weight']:.3f}", error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nnzip`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except NnzipError as exc:
        print(f"nnzip: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"nnzip: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nnzip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
