"""``rvmpq report``: one Markdown report (plus PNGs) from what the other commands wrote.

The report is assembled only from the JSON files the flow's commands leave under ``build/``;
it computes nothing of its own, so every figure in it can be traced to one command:

===========================  ======================================  ==============================
section                      read from                               written by
===========================  ======================================  ==============================
search (Pareto, bit map)     ``search/config.json``, ``pareto.png``  ``rvmpq search``
deployment on the RTL        ``deploy/deploy.json``                  ``rvmpq deploy``
kernel speedup               ``bench/kernels.json``                  ``rvmpq bench --only kernels``
SIMD unit throughput         ``bench/unit.json``                     ``rvmpq bench --only unit``
area / Fmax (unit, cores)    ``synth/compare.json``                  ``rvmpq synth --compare``
===========================  ======================================  ==============================

A missing input is reported as "not run" rather than failing, so a partial flow still gives
a report of what it did. Output: ``<out>/report.md``, ``bits.png``, ``speedup.png`` and a copy
of ``pareto.png``, written into a temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from rvmpq.sw.tools import BUILD_HELP, build_root

__all__ = ["collect", "write_report", "summary_lines", "add_arguments", "main"]

#: Inputs of the report, relative to the build folder.
INPUTS = {
    "search": "search/config.json",
    "pareto": "search/pareto.png",
    "deploy": "deploy/deploy.json",
    "deploy_md": "deploy/report.md",
    "kernels": "bench/kernels.json",
    "unit": "bench/unit.json",
    "compare": "synth/compare.json",
}


def _load(path: Path):
    """Parsed JSON of ``path``, or ``None`` when it does not exist; a clear error when corrupt."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rerun the command that writes it") from exc


def collect(build: Path) -> dict:
    """The report's inputs found under ``build``: ``{name: parsed JSON or None}`` (PNG: path)."""
    build = Path(build)
    doc = {}
    for name, rel in INPUTS.items():
        p = build / rel
        if rel.endswith(".png"):
            doc[name] = p if p.exists() else None
        elif rel.endswith(".md"):
            doc[name] = p.read_text() if p.exists() else None
        else:
            doc[name] = _load(p)
    return doc


def _fmt(v, spec: str = "{:,.0f}") -> str:
    return "-" if v is None else spec.format(v)


def _bits_png(search: dict, path: Path) -> bool:
    """Per-layer bit map: one row per method/baseline, one column per compute layer."""
    methods = search.get("all_methods") or {}
    rows = [(m, r["bits"]) for m, r in methods.items() if r.get("bits")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [l["name"] for l in search.get("layers", [])] or [str(i) for i in range(len(rows[0][1]))]
    grid = np.array([[np.log2(b) for b in bits] for _, bits in rows])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 0.9 * len(names)), 1.2 + 0.42 * len(rows)))
    ax.imshow(grid, cmap="viridis", vmin=1, vmax=4, aspect="auto")
    for i, (_, bits) in enumerate(rows):
        for j, b in enumerate(bits):
            ax.text(j, i, str(b), ha="center", va="center",
                    color="white" if b <= 4 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [m + (" (chosen)" if m == search.get("method") else "")
                                      for m, _ in rows], fontsize=8)
    ax.set_title(f"{search.get('model', '')}: bits per layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _speedup_png(kernels: dict, path: Path) -> bool:
    """Speedup over the baseline core per layer and precision (grouped bars)."""
    rows = kernels.get("rows") or []
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    bits = sorted({r["bits"] for r in rows}, reverse=True)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(layers), 3.8))
    width = 0.8 / len(bits)
    for k, b in enumerate(bits):
        ys = [next((r["speedup"] for r in rows if r["layer"] == l and r["bits"] == b), 0)
              for l in layers]
        ax.bar([i + k * width for i in range(len(layers))], ys, width, label=f"INT{b}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))], layers, rotation=25,
                  ha="right", fontsize=8)
    ax.set_ylabel("speedup over baseline core (x)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _search_section(s: dict | None) -> list[str]:
    if not s:
        return ["## Precision search", "", "not run (`rvmpq search`)", ""]
    L = ["## Precision search", "",
         f"Model `{s.get('model')}`, cost source **{s.get('cost_source')}**, budgets "
         f"`{s.get('budgets')}`, sensitivity metric `{s.get('metric')}`. Float accuracy "
         f"{_fmt(s.get('float_accuracy'), '{:.2f}')}%.", "",
         "| method | bits per layer | validated acc. % | cycles vs INT8 | feasible |",
         "|---|---|---:|---:|---|"]
    for m, r in (s.get("all_methods") or {}).items():
        mark = " **(chosen)**" if m == s.get("method") else ""
        L.append(f"| {m}{mark} | {r.get('bits')} | {_fmt(r.get('validated_accuracy'), '{:.2f}')} "
                 f"| {_fmt(r.get('cycles_vs_int8'), '{:.3f}')} | {r.get('feasible')} |")
    L += ["", "Accuracies are test-set accuracies of the bit-exact integer model.", "",
          "![Pareto](pareto.png)", "", "![bits](bits.png)", ""]
    return L


def _deploy_section(d: dict | None, md: str | None) -> list[str]:
    if not d:
        return ["## Deployment on the RTL", "", "not run (`rvmpq deploy`)", ""]
    L = ["## Deployment on the RTL", ""]
    if md:       # deploy's own report, one heading level down
        body = md.split("\n", 1)[1] if md.startswith("# ") else md
        L += [("#" + line if line.startswith("#") else line)
              for line in body.strip().splitlines()]
        L.append("")
    return L


def _kernels_section(k: dict | None) -> list[str]:
    if not k:
        return ["## Kernel speedup (Edge-MPQ experiment)", "", "not run (`rvmpq bench`)", ""]
    L = ["## Kernel speedup (Edge-MPQ experiment)", "",
         "| layer | bits | baseline cycles | mpq cycles | speedup | MAC/cycle | % of peak | "
         "inner loop % of peak | bit-exact |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in k.get("rows", []):
        L.append(f"| {r['layer']} | {r['bits']} | {r['baseline_cycles']:,} | {r['mpq_cycles']:,} "
                 f"| {r['speedup']:.1f}x | {r['macs_per_cycle']:.2f} | {100 * r['peak_share']:.0f} "
                 f"| {100 * r['inner_peak_share']:.0f} | "
                 f"{'yes' if r['baseline_exact'] and r['mpq_exact'] else 'NO'} |")
    L += ["", "![speedup](speedup.png)", ""]
    return L


def _synth_rows(doc: dict | None) -> list[dict]:
    return (doc or {}).get("designs") or []


def _area_section(compare: dict | None) -> list[str]:
    L = ["## Area and Fmax", ""]
    rows = _synth_rows(compare)
    if not rows:
        return L + ["not run (`rvmpq synth`)", ""]
    L += ["| design | generic gates | FF | transistors | depth | ECP5 LUT4 | ECP5 FF | ECP5 DSP | "
          "Fmax MHz |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        g, e = r.get("generic") or {}, r.get("ecp5") or {}
        L.append(f"| {r['design']} | {_fmt(g.get('gates'))} | {_fmt(g.get('flip_flops'))} | "
                 f"{_fmt(g.get('transistors'))} | {_fmt(g.get('depth'))} | {_fmt(e.get('lut4'))} | "
                 f"{_fmt(e.get('ff'))} | {_fmt(e.get('dsp'))} | {_fmt(e.get('fmax_mhz'), '{:.1f}')} |")
    by = {r["design"]: r for r in rows}
    ratios = []
    for a, b in (("core-mpq", "core-baseline"), ("simd", "mul33"), ("simd", "separate")):
        if a in by and b in by:
            ga, gb = (by[a].get("generic") or {}).get("gates"), (by[b].get("generic") or {}).get("gates")
            fa, fb = (by[a].get("ecp5") or {}).get("fmax_mhz"), (by[b].get("ecp5") or {}).get("fmax_mhz")
            ratios.append(f"- `{a}` / `{b}`: generic gates "
                          f"{_fmt(ga / gb if ga and gb else None, '{:.2f}x')}, ECP5 Fmax "
                          f"{_fmt(fa / fb if fa and fb else None, '{:.2f}x')}")
    L += [""] + ratios + [""]
    return L


def summary_lines(doc: dict) -> list[str]:
    """A few lines for the terminal: the headline figure of each section that ran."""
    out = []
    s = doc.get("search")
    if s:
        out.append(f"search: {s.get('method')} picked bits {[l.get('w_bits') for l in s.get('layers', [])]} "
                   f"-> {s.get('validated_accuracy', 0):.2f}% (float {s.get('float_accuracy', 0):.2f}%) "
                   f"at {s.get('cycles_vs_int8', 0):.3f}x INT8 cycles ({s.get('cost_source')} costs)")
    d = doc.get("deploy")
    if d and (d.get("runs") or {}).get("mpq"):
        r = d["runs"]["mpq"]
        sp = (d.get("speedups") or {}).get("baseline-int8 / mpq")
        err = r.get("prediction_error_pct")
        out.append(f"deploy: {r.get('cycles_per_inference', 0):,.0f} cycles/inference on mpq, "
                   f"bit-exact {r.get('bit_exact')}, accuracy RTL {r.get('accuracy_rtl', 0):.2f}% "
                   f"= numpy {r.get('accuracy_numpy', 0):.2f}%"
                   + (f", whole-program prediction error {err:+.1f}%" if err is not None else "")
                   + (f", {sp:.1f}x over baseline INT8" if sp else ""))
    k = doc.get("kernels")
    if k:
        sp = (k.get("summary") or {}).get("edge_speedup") or {}
        out.append("kernels: Edge-MPQ conv speedup " + ", ".join(f"INT{b} {v}x" for b, v in sp.items()))
    rows = {r["design"]: r for r in _synth_rows(doc.get("compare"))}
    if "core-mpq" in rows and "core-baseline" in rows:
        gm = (rows["core-mpq"].get("generic") or {}).get("gates")
        gb = (rows["core-baseline"].get("generic") or {}).get("gates")
        if gm and gb:
            out.append(f"synth: core-mpq / core-baseline generic gates {gm / gb:.2f}x")
    return out


def write_report(build: Path, out: Path | None = None) -> Path:
    """Write ``report.md`` and its PNGs into ``out`` (default ``<build>/report``); return it."""
    build = Path(build)
    out = Path(out) if out else build / "report"
    doc = collect(build)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        if doc["pareto"]:
            shutil.copyfile(doc["pareto"], tmp / "pareto.png")
        if doc["search"]:
            _bits_png(doc["search"], tmp / "bits.png")
        if doc["kernels"]:
            _speedup_png(doc["kernels"], tmp / "speedup.png")
        L = ["# rvmpq report", "",
             "Every figure below comes from a JSON file written by one `rvmpq` command under "
             f"`{build}`; see `rvmpq.sw.report` for the mapping.", ""]
        L += _search_section(doc["search"]) + _deploy_section(doc["deploy"], doc["deploy_md"])
        L += _kernels_section(doc["kernels"]) + _area_section(doc["compare"])
        (tmp / "report.md").write_text("\n".join(L) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rvmpq report``."""
    parser.add_argument("-b", "--build", type=Path, default=None,
                        help=f"build folder to read (default: <build>; {BUILD_HELP})")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="report folder (default: <build>/report)")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq report``."""
    build = args.build or build_root()
    try:
        out = write_report(build, args.out)
    except ValueError as exc:
        print(f"rvmpq report: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(collect(build)):
        print(line)
    print(f"report: {out / 'report.md'}")
    return 0
