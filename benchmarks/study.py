"""Reproduce the 2017 study's four experiments on the sample MLP, per layer and on both layers.

Usage::

    python benchmarks/study.py [--quick] [--out DIR] [--json FILE] [--from-json FILE]

Hy T. Son (2017), "MLP, autoencoder and softmax compression", measured accuracy
against the SVD rank, the fraction of weights pruned, the number of k-means bits
and the fraction of frequency (DCT) coefficients kept.  This script runs the same
four sweeps with :func:`nnzip.sweep.run_sweep` on ``samples/mlp.h5`` (784-256-10:
layer ``hidden`` has a 784x256 kernel, layer ``output`` a 256x10 one) three times
each -- changing only ``hidden``, only ``output``, then both -- scores every
setting on the held-out ``samples/fashion-mnist-test.npz`` and records the size
of the complete ``.nnz`` file the setting gives (biases and untouched kernels
stay lossless, as in ``nnzip sweep``).

Writes ``study.md`` (one table and one paragraph per method) and
``study-{svd,prune,kmeans,fft}.png`` into ``--out`` (default: ``docs/``).
``--quick`` scores on the first 500 test images only (a smoke run, about a
minute); its default output directory is ``$TMPDIR/nnzip-study-quick`` so that
it does not replace the committed full-run results.  ``--json`` also saves the
raw points; ``--from-json`` redraws the outputs from such a file without
sweeping again.  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing, too

import nnzip  # noqa: E402
from nnzip import api  # noqa: E402
from nnzip import formats  # noqa: E402
from nnzip.container import write_container  # noqa: E402
from nnzip.evaluate import Dataset, load_data, make_evaluator  # noqa: E402
from nnzip.sweep import METHODS, run_sweep, targets  # noqa: E402

MODEL = REPO / "samples" / "mlp.h5"
DATA = REPO / "samples" / "fashion-mnist-test.npz"
QUICK_SAMPLES = 500
CONFIGS = (("hidden", "hidden"), ("output", "output"), ("both", None))  # (column, --layer)
TOLERANCE = 0.005  # "within half a point of the original accuracy"

SETTING_NAMES = {
    "svd": "rank",
    "prune": "fraction pruned",
    "kmeans": "k-means bits",
    "fft": "DCT coefficients kept",
}
TITLES = {
    "svd": "SVD: accuracy vs rank",
    "prune": "Magnitude pruning: accuracy vs fraction pruned",
    "kmeans": "k-means quantization: accuracy vs bits per weight",
    "fft": "DCT: accuracy vs fraction of coefficients kept",
}


# --- measuring ---------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_printer(label: str, started: float):
    """A ``run_sweep`` progress callback that prints one line per setting to stderr."""

    def report(index: int, total: int, what: str) -> None:
        if what:
            log(f"  [{time.perf_counter() - started:6.1f} s] {label}: {index + 1}/{total} {what}")

    return report


def measure(quick: bool) -> dict:
    """Run every sweep; returns a JSON-able dict of the results."""
    started = time.perf_counter()
    model = formats.read_model(MODEL)
    data = load_data(DATA)
    if quick:
        data = Dataset(data.x[:QUICK_SAMPLES], None if data.y is None else data.y[:QUICK_SAMPLES])
    evaluator = make_evaluator(model, data)
    original = evaluator.measure(model.tensors)
    header, blobs, _ = api.encode_model(model, MODEL.name)
    lossless_bytes = write_container(io.BytesIO(), header, blobs)
    float_bytes = sum(int(a.nbytes) for a in model.tensors.values())
    log(f"{MODEL.name}: {evaluator.metric} {original:.4f} on {len(data.x)} test images; "
        f"lossless .nnz {lossless_bytes:,} bytes; float tensors {float_bytes:,} bytes")
    names = {column: targets(model, layer) for column, layer in CONFIGS}
    sweeps: dict[str, dict[str, list[dict]]] = {}
    for method in METHODS:
        sweeps[method] = {}
        for column, layer in CONFIGS:
            label = f"{method} / {column}"
            points = run_sweep(model, MODEL.name, evaluator, method, layer, progress_printer(label, started))
            sweeps[method][column] = [
                {
                    "setting": p.setting,
                    "accuracy": p.value,
                    "file_bytes": p.file_bytes,
                    "tensor_error": p.tensor_error,
                    # Targets the setting could not apply to, as run_sweep reports them.
                    "lossless": sorted(name.split("/")[1] for name in p.fallbacks),
                }
                for p in points
            ]
    elapsed = time.perf_counter() - started
    log(f"all sweeps done in {elapsed:.0f} s")
    return {
        "model": f"samples/{MODEL.name}",
        "data": f"samples/{DATA.name}",
        "samples": int(len(data.x)),
        "quick": quick,
        "metric": evaluator.metric,
        "original": original,
        "lossless_bytes": lossless_bytes,
        "float_bytes": float_bytes,
        "kernels": {name.split("/")[1]: list(model.tensors[name].shape) for name in names["both"]},
        "nnzip_version": nnzip.__version__,
        "revision": git_revision(),
        "date": datetime.date.today().isoformat(),
        "seconds": round(elapsed, 1),
        "cpus": os.cpu_count(),
        "sweeps": sweeps,
    }


def git_revision() -> str | None:
    """``<short commit>`` (``+ local changes`` when the nnzip sources differ), or None outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "nnzip"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (" + local changes to nnzip/" if dirty else "")



# --- reading the results -----------------------------------------------------------------


class Results:
    """Look-ups over the JSON-able results of :func:`measure`."""

    def __init__(self, data: dict):
        self.data = data
        self.original = data["original"]
        self.float_bytes = data["float_bytes"]
        self.lossless_bytes = data["lossless_bytes"]

    def points(self, method: str, column: str) -> list[dict]:
        return self.data["sweeps"][method][column]

    def at(self, method: str, column: str, setting: float) -> dict | None:
        return next((p for p in self.points(method, column) if p["setting"] == setting), None)

    def settings(self, method: str) -> list[float]:
        return sorted({p["setting"] for column, _ in CONFIGS for p in self.points(method, column)})

    def within(self, point: dict) -> bool:
        """True when *point* is at most TOLERANCE below the original accuracy."""
        return point["accuracy"] >= self.original - TOLERANCE - 1e-9

    def smallest_within(self, method: str, column: str) -> dict | None:
        good = [p for p in self.points(method, column) if self.within(p)]
        return min(good, key=lambda p: p["file_bytes"]) if good else None

    def best(self, method: str) -> tuple[str, dict] | None:
        """(column, point) of the smallest file within TOLERANCE over the three columns."""
        found = [(column, p) for column, _ in CONFIGS if (p := self.smallest_within(method, column))]
        return min(found, key=lambda cp: cp[1]["file_bytes"]) if found else None

    def ratio(self, point: dict) -> float:
        return self.float_bytes / point["file_bytes"]

    def drop(self, point: dict) -> float:
        """Accuracy lost, in percentage points (negative: above the original)."""
        return 100 * (self.original - point["accuracy"])

    def output_more_sensitive(self, method: str) -> bool:
        """True when changing only ``output`` costs more accuracy than changing only ``hidden``, on average."""
        common = [s for s in self.settings(method) if self.at(method, "hidden", s) and self.at(method, "output", s)]
        gaps = [self.at(method, "hidden", s)["accuracy"] - self.at(method, "output", s)["accuracy"] for s in common]
        return bool(gaps) and float(np.mean(gaps)) > 0


def fmt_setting(method: str, setting: float) -> str:
    if method == "svd":
        return f"{int(setting)}"
    if method == "kmeans":
        return f"{int(setting)} bit" + ("s" if setting != 1 else "")
    return f"{100 * setting:g} %"


def fmt_label(method: str, setting: float) -> str:
    """'rank 16', '4 bits', '70 % pruned', '30 % kept'."""
    if method == "svd":
        return f"rank {int(setting)}"
    return fmt_setting(method, setting) + {"prune": " pruned", "fft": " kept"}.get(method, "")


def fmt_acc(value: float) -> str:
    return f"{value:.4f}"


def fmt_point(results: Results, method: str, column: str, point: dict) -> str:
    """'4 bits on both layers: accuracy 0.8835, 96,466 bytes (8.44x)'."""
    where = {"hidden": "`hidden` only", "output": "`output` only", "both": "both layers"}[column]
    label = fmt_label(method, point["setting"])
    return f"{label} on {where}: {fmt_acc(point['accuracy'])}, {point['file_bytes']:,} bytes ({results.ratio(point):.2f}x)"


# --- the report ---------------------------------------------------------------------------


def table(results: Results, method: str) -> list[str]:
    """The markdown table of one method (one row per setting, plus the lossless reference)."""
    head = [SETTING_NAMES[method], "accuracy (hidden only)", ".nnz bytes (hidden only)", "accuracy (output only)", "bytes",
            "accuracy (both)", "bytes", "ratio (both)"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    daggers = False
    for setting in results.settings(method):
        cells = [fmt_setting(method, setting)]
        for column, _ in CONFIGS:
            point = results.at(method, column, setting)
            if point is None:
                cells += ["—", "—"]
                continue
            mark = " †" if point["lossless"] else ""
            daggers = daggers or bool(mark)
            cells += [fmt_acc(point["accuracy"]) + mark, f"{point['file_bytes']:,}"]
        both = results.at(method, "both", setting)
        cells.append(f"{results.ratio(both):.2f}x" if both else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lossless = fmt_acc(results.original), f"{results.lossless_bytes:,}"
    lines.append(f"| lossless | {lossless[0]} | {lossless[1]} | {lossless[0]} | {lossless[1]} | {lossless[0]} | {lossless[1]} | "
                 f"{results.float_bytes / results.lossless_bytes:.2f}x |")
    if daggers:
        lines += ["", "† the `output` kernel was left lossless at this setting (the sweep's plan does not apply to it)."]
    if any(results.at(method, "output", s) is None for s in results.settings(method)):
        lines += ["", "— not in the sweep's ladder for the 256×10 `output` kernel (SVD cannot save space on it at rank ≥ 10)."]
    return lines


def paragraph(results: Results, method: str) -> str:
    """What the numbers of *method* show, phrased from the numbers (so that --quick runs stay truthful)."""
    r = results
    out = []
    best_hidden = r.smallest_within(method, "hidden")
    best_output = r.smallest_within(method, "output")
    best_both = r.smallest_within(method, "both")
    sens = r.output_more_sensitive(method)

    def within_sentence(column: str, point: dict | None) -> str:
        if point is None:
            return "no setting stays within 0.5 points of the original"
        label = fmt_point(r, method, column, point).split(" on ", 1)[0]
        return (f"the smallest file within 0.5 points is {label}: {fmt_acc(point['accuracy'])}, "
                f"{point['file_bytes']:,} bytes ({r.ratio(point):.2f}x)")

    def accuracies(column: str, settings) -> str:
        found = [r.at(method, column, s) for s in settings]
        return ", ".join(f"{fmt_label(method, p['setting'])} → {fmt_acc(p['accuracy'])}" for p in found if p)

    if method == "svd":
        out.append(f"Rank *r* stores *r*·(*m*+*n*+1) float32 numbers instead of *m*·*n*. On `hidden` (784×256) "
                   f"{within_sentence('hidden', best_hidden)}; lower ranks cost accuracy fast "
                   f"({accuracies('hidden', (32, 16, 8, 1))}).")
        outputs = r.points("svd", "output")
        if outputs:
            top = outputs[-1]
            m, n = r.data["kernels"]["output"]
            limit = max(k for k in range(1, min(m, n) + 1) if k * (m + n + 1) < m * n)
            out.append(f"The {m}×{n} `output` kernel is too small for SVD to pay at higher ranks: rank *r* saves space only "
                       f"while *r*·{m + n + 1} < {m * n:,}, i.e. *r* ≤ {limit}, so its ladder stops at rank {int(top['setting'])}, which already "
                       f"costs {r.drop(top):.1f} points ({fmt_acc(top['accuracy'])}) for a file only "
                       f"{r.lossless_bytes - top['file_bytes']:,} bytes smaller than the lossless one.")
        lossless_ranks = [int(p["setting"]) for p in r.points("svd", "both") if p["lossless"]]
        if lossless_ranks:
            worse = all(r.at("svd", "both", s)["accuracy"] < r.at("svd", "hidden", s)["accuracy"]
                        for s in r.settings("svd") if s < min(lossless_ranks) and r.at("svd", "both", s) and r.at("svd", "hidden", s))
            out.append(f"In the \"both\" sweep, ranks ≥ {min(lossless_ranks)} leave `output` lossless (†), so those rows equal "
                       "\"hidden only\"" + ("; below that, rank-reducing `output` as well makes the small ranks worse still."
                                             if worse else "."))
        out.append(f"Over both layers, {within_sentence('both', best_both)}.")
    elif method == "prune":
        bigger = [p for p in r.points("prune", "hidden") if p["file_bytes"] > r.lossless_bytes]
        out.append("The smallest weights by magnitude are zeroed (the study removed the most negative ones instead) and "
                   "the survivors stored sparse, with their positions; nothing is retrained. "
                   f"On `hidden`, {within_sentence('hidden', best_hidden)}; beyond that, accuracy slides, then drops: "
                   f"{accuracies('hidden', (0.5, 0.7, 0.8, 0.9, 0.95))}.")
        if bigger:
            out.append(f"At {', '.join(fmt_setting('prune', p['setting']) for p in bigger)} pruned the file "
                       f"({bigger[0]['file_bytes']:,} bytes) is *larger* than the lossless one ({r.lossless_bytes:,}): the "
                       "kept values plus their positions cost more than the dense matrix stored losslessly.")
        if sens:
            sizes = {name: int(np.prod(shape)) for name, shape in r.data["kernels"].items()}
            share = 100 * sizes["output"] / sum(sizes.values())
            p70 = r.at("prune", "output", 0.7)
            h70 = r.at("prune", "hidden", 0.7)
            extra = (f" (70 % pruned: {fmt_acc(p70['accuracy'])} against {fmt_acc(h70['accuracy'])} for `hidden`)"
                     if p70 and h70 else "")
            out.append(f"The `output` layer is the sensitive one{extra}, and being {share:.1f} % of the weights, pruning it saves "
                       f"at most {r.lossless_bytes - min(p['file_bytes'] for p in r.points('prune', 'output')):,} bytes.")
        out.append(f"Over both layers, {within_sentence('both', best_both)}.")
    elif method == "kmeans":
        smallest = min((r.best(m) for m in METHODS if r.best(m)), key=lambda cp: cp[1]["file_bytes"], default=None)
        lead = (" It is the best of the four methods on this model." if smallest and smallest == r.best("kmeans") else "")
        out.append(f"Each weight becomes the index of one of 2^bits float32 centroids (1-D k-means per tensor); the indices "
                   f"are bit-packed and entropy-coded.{lead} On `hidden`, {within_sentence('hidden', best_hidden)}; "
                   f"over both layers, {within_sentence('both', best_both)}.")
        one = r.at("kmeans", "hidden", 1)
        if one:
            out.append(f"Even 1 bit (two values) on `hidden` alone keeps {fmt_acc(one['accuracy'])} ({r.drop(one):.1f} points "
                       f"below the original, {r.ratio(one):.1f}x).")
        bits = [int(p["setting"]) for p in (best_hidden, best_both) if p]
        if best_hidden and best_both:
            agree = max(bits) <= 4
            out.append(("This agrees with the study's finding that accuracy holds down to a few bits: "
                        if agree else "The study found that accuracy holds down to a few bits; here ")
                       + f"{int(best_hidden['setting'])} bits on `hidden` and {int(best_both['setting'])} on both layers "
                       "stay within 0.5 points.")
        if sens:
            out.append("Per bit, `output` loses more than `hidden` (" + ", ".join(
                f"{int(s)} bit{'s' if s > 1 else ''}: {fmt_acc(r.at('kmeans', 'output', s)['accuracy'])} vs "
                f"{fmt_acc(r.at('kmeans', 'hidden', s)['accuracy'])}"
                for s in (1, 2, 3) if r.at("kmeans", "output", s) and r.at("kmeans", "hidden", s)) + "), but its bytes barely matter.")
    elif method == "fft":
        out.append("The sweep keeps the largest coefficients of the kernel's orthonormal 2-D DCT (values and positions "
                   "stored) and zeroes the rest; unlike the study's one-sided complex spectrum, the rebuilt weights are real. "
                   f"On `hidden`, {within_sentence('hidden', best_hidden)} ({accuracies('hidden', (0.1, 0.05, 0.02))}).")
        if sens and best_output:
            out.append(f"`output` is much more sensitive ({accuracies('output', (0.1, 0.3))}): it needs "
                       f"{fmt_setting('fft', best_output['setting'])} of its coefficients to stay within 0.5 points, so over "
                       f"both layers {within_sentence('both', best_both)}"
                       + (" — a larger file than DCT on `hidden` alone." if best_hidden and best_both
                          and best_both["file_bytes"] > best_hidden["file_bytes"] else "."))
        else:
            out.append(f"Over both layers, {within_sentence('both', best_both)}.")
        bigger = [p for p in r.points("fft", "both") if p["file_bytes"] > r.lossless_bytes]
        if bigger:
            out.append(f"Keeping {', '.join(fmt_setting('fft', p['setting']) for p in bigger)} gives a file larger than the "
                       f"lossless one ({bigger[0]['file_bytes']:,} vs {r.lossless_bytes:,} bytes).")
        kmeans, fft = r.best("kmeans"), r.best("fft")
        if kmeans and fft and kmeans[1]["file_bytes"] < fft[1]["file_bytes"]:
            out.append(f"Within 0.5 points its smallest file is {fft[1]['file_bytes'] / kmeans[1]['file_bytes']:.1f} times "
                       "the size of k-means'.")
    return " ".join(out)


def summary(results: Results) -> list[str]:
    """The smallest file per method within 0.5 points, over the three columns."""
    lines = ["| method | smallest file within 0.5 points | accuracy | .nnz bytes | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    for method in METHODS:
        found = results.best(method)
        if not found:
            lines.append(f"| {method} | none | | | |")
            continue
        column, p = found
        label = fmt_label(method, p["setting"])
        where = {"hidden": "`hidden` only", "output": "`output` only", "both": "both layers"}[column]
        lines.append(f"| {method} | {label}, {where} | {fmt_acc(p['accuracy'])} | {p['file_bytes']:,} | {results.ratio(p):.2f}x |")
    lines.append(f"| (lossless) | every tensor bit for bit | {fmt_acc(results.original)} | {results.lossless_bytes:,} | "
                 f"{results.float_bytes / results.lossless_bytes:.2f}x |")
    return lines


def write_markdown(results: Results, out: Path) -> Path:
    d = results.data
    revision = f" ({d['revision']})" if d.get("revision") else ""
    rerun = "python benchmarks/study.py" + (" --quick" if d["quick"] else "")
    lines = [
        "# The 2017 study's experiments on the sample MLP",
        "",
        f"Original accuracy **{fmt_acc(results.original)}** on {d['samples']:,} held-out images ({d['data']}) · "
        f"nnzip {d['nnzip_version']}{revision} · {d['date']} · rerun: `{rerun}` "
        f"(this run: {d['seconds']:.0f} s on {d.get('cpus', '?')} cores)",
        "",
        f"Hy T. Son (2017), *MLP, autoencoder and softmax compression*, measured accuracy against the SVD rank, the "
        f"fraction of weights pruned, the k-means bits and the fraction of frequency coefficients kept. "
        f"[`benchmarks/study.py`](../benchmarks/study.py) repeats the four sweeps with `nnzip.sweep.run_sweep` (what "
        f"`nnzip sweep` runs) on `{d['model']}`, a 784-256-10 MLP: once changing only `hidden` (784×256 kernel), once "
        f"only `output` (256×10 kernel), once both. Every other tensor stays lossless. Accuracy is nnzip's numpy "
        f"inference of the rebuilt weights; *bytes* is the size of the complete `.nnz` file that setting writes; *ratio* "
        f"is the float32 tensor bytes ({results.float_bytes:,}) over the \"both\" file. The lossless `.nnz` is "
        f"{results.lossless_bytes:,} bytes ({results.float_bytes / results.lossless_bytes:.2f}x).",
        "",
        f"One test image is {100 / d['samples']:.2f} points of accuracy; differences under about half a point, "
        "including settings that score above the original, are noise of the test set.",
    ]
    if d["quick"]:
        lines += ["", f"**Quick run:** only the first {d['samples']} test images; use the full run for conclusions."]
    lines += ["", "## Summary", "", *summary(results)]
    for method in METHODS:
        lines += ["", f"## {TITLES[method]}", "", f"![{method}](study-{method}.png)", "", *table(results, method), "",
                  paragraph(results, method)]
    path = out / "study.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the figures --------------------------------------------------------------------------


def write_plot(results: Results, method: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    styles = {"hidden": ("tab:blue", "o", 7), "output": ("tab:green", "^", 6), "both": ("black", "s", 4)}
    fig, left = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    right = left.twinx()
    for column, _ in CONFIGS:
        points = results.points(method, column)
        color, marker, size = styles[column]
        xs, ys = [p["setting"] for p in points], [p["accuracy"] for p in points]
        label = {"hidden": "hidden only", "output": "output only", "both": "both layers"}[column]
        if any(p["lossless"] for p in points):
            label += " (hollow: output lossless)"
        left.plot(xs, ys, "-", marker=marker, color=color, markersize=size, linewidth=1.5, label=label, zorder=3)
        hollow = [p for p in points if p["lossless"]]
        if hollow:
            left.plot([p["setting"] for p in hollow], [p["accuracy"] for p in hollow], marker, color=color, markersize=size,
                      markerfacecolor="white", zorder=4)
    left.axhline(results.original, color="gray", linestyle=":", linewidth=1.5, label=f"original ({results.original:.3f})")
    both = results.points(method, "both")
    right.plot([p["setting"] for p in both], [p["file_bytes"] / 1024 for p in both], "--", color="tab:red", linewidth=1.5,
               marker="x", markersize=5, label=f".nnz KiB, both (lossless: {results.lossless_bytes / 1024:.0f})")
    right.set_ylim(0, max(results.lossless_bytes, max(p["file_bytes"] for p in both)) / 1024 * 1.08)
    right.set_ylabel(".nnz file size (KiB)", color="tab:red")
    right.tick_params(axis="y", colors="tab:red")
    left.set_ylabel("test accuracy")
    left.set_xlabel({"svd": "SVD rank (log scale)", "prune": "fraction of weights pruned", "kmeans": "k-means bits per weight",
                     "fft": "fraction of DCT coefficients kept (log scale)"}[method])
    settings = results.settings(method)
    if method in ("svd", "fft"):
        left.set_xscale("log")
        left.set_xticks([x for x in settings if not (method == "fft" and x == 0.7)])  # 70% would touch 90%
        left.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    elif method == "kmeans":
        left.set_xticks(settings)
    if method in ("svd",):
        left.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    if method in ("prune", "fft"):
        left.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:g}%"))
    left.grid(True, alpha=0.3)
    left.set_zorder(right.get_zorder() + 1)  # accuracy curves above the size curve
    left.patch.set_visible(False)
    quick = f", first {results.data['samples']} images" if results.data["quick"] else ""
    left.set_title(f"{TITLES[method]}\nMLP 784-256-10, Fashion-MNIST test split{quick}", fontsize=10)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = out / f"study-{method}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"score on the first {QUICK_SAMPLES} test images (smoke run)")
    parser.add_argument("--out", type=Path, help="output directory (default: docs/; with --quick: $TMPDIR/nnzip-study-quick)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw points as JSON")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="redraw from a --json file instead of sweeping")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = measure(args.quick)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.json}")
    out = args.out or (Path(tempfile.gettempdir()) / "nnzip-study-quick" if results["quick"] else REPO / "docs")
    out.mkdir(parents=True, exist_ok=True)
    data = Results(results)
    for method in METHODS:
        log(f"wrote {write_plot(data, method, out)}")
    log(f"wrote {write_markdown(data, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
