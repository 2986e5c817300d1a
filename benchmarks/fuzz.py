"""Long structure-aware fuzz run of every .nnz read path (see tests/fuzzing.py and benchmarks/README.md).

    python benchmarks/fuzz.py --cases 20000 --jobs 2 --seed 1
    python benchmarks/fuzz.py --seed 1 --replay 1234      # rerun one case here, with tracebacks

Prints the counts by outcome class and, for each distinct crash signature (class,
exception type, where raised, read path), one reproducer; exits 1 if any case
crashed, hung, hit a limit or wrote outside its folder.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

# The repository root, so that the tests package (tests/fuzzing.py and its sibling nnz_tools) imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fuzzing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the campaign described by the command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="number of cases (default 2000)")
    parser.add_argument("--jobs", type=int, default=1, help="children run at once (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="run seed: (seed, case index) reproduces a case")
    parser.add_argument("--start", type=int, default=0, help="first case index (to split a run)")
    parser.add_argument("--replay", type=int, help="run only this case index, in this process, and show tracebacks")
    parser.add_argument("--work", type=Path, help="working folder (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the folders of failing cases (their in.nnz) under --work")
    parser.add_argument("--log", type=Path, help="append one line per non-ok/nnzip result to this file")
    args = parser.parse_args(argv)
    root = args.work or Path(tempfile.mkdtemp(prefix="nnzip-fuzz-"))
    started = time.monotonic()
    seeds = fuzzing.build_corpus(root / "corpus")
    data = fuzzing.small_data(root)
    print(f"corpus: {len(seeds)} files in {root / 'corpus'} ({time.monotonic() - started:.1f} s)", flush=True)
    if args.replay is not None:
        case = fuzzing.make_case(seeds, args.seed, args.replay, root)
        print(case.reproducer())
        for path, outcome in fuzzing.replay(case, root, data).paths.items():
            print(f"{path}: {outcome}")
        return 0
    runner = fuzzing.Runner(root, seeds, data, args.jobs)
    runner.warm()
    counts, signatures = collections.Counter(), {}
    per_path = collections.Counter()
    started = time.monotonic()
    cases = (fuzzing.make_case(seeds, args.seed, i, root) for i in range(args.start, args.start + args.cases))
    log = open(args.log, "a") if args.log else None
    for done, result in enumerate(runner.run(cases, keep=args.keep), 1):
        counts[result.outcome] += 1
        for path, outcome in result.paths.items():
            per_path[path, outcome] += 1
        if result.outcome not in ("ok", "nnzip"):
            sig = result.signature()
            if sig not in signatures:
                signatures[sig] = [result, 0]
                print(f"NEW {sig}\n    {result.message[:300]}\n    {result.case.reproducer()}", flush=True)
            signatures[sig][1] += 1
            if log:
                log.write(f"{sig}\t{result.message[:200]!r}\t{result.case.reproducer()}\n")
                log.flush()
        if done % 500 == 0:
            rate = done / (time.monotonic() - started)
            print(f"... {done} cases, {rate:.1f}/s: {dict(counts)}", flush=True)
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    print(f"\n{total} cases in {elapsed:.0f} s ({total / elapsed:.1f}/s, {args.jobs} jobs), seed {args.seed}")
    for outcome in fuzzing.CLASSES:
        print(f"  {outcome:7} {counts[outcome]}")
    print("read paths (ok / nnzip error / other):")
    for path in ("read_tensors", "inspect-json", "inspect-text", "decompress", "verify"):
        print(f"  {path:13} " + " / ".join(str(per_path[path, o]) for o in ("ok", "nnzip")) +
              f" / {sum(n for (p, o), n in per_path.items() if p == path and o not in ('ok', 'nnzip'))}")
    print(f"{len(signatures)} distinct failure signatures")
    for sig, (result, n) in sorted(signatures.items(), key=lambda item: -item[1][1]):
        print(f"\n[{n}x] {sig}\n    {result.message[:300]}\n    {result.case.reproducer()}")
        if result.traceback:
            print("    " + result.traceback.strip().splitlines()[-3].strip())
    return 1 if signatures else 0


if __name__ == "__main__":
    sys.exit(main())
