"""Synthesis reports: JSON for programs, Markdown for people, both written atomically.

``compare.json`` holds ``{"schema": 1, "baselines": [...], "designs": [SynthResult dicts]}``;
``compare.md`` a table with the absolute figures and, per baseline design present in the run,
the ratio of each design's area (generic gates, transistors, ECP5 LUT4 equivalents, Liberty
area) and Fmax to that baseline's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rvmpq.synth.flow import SynthResult, write_if_changed

__all__ = ["BASELINES", "results_to_json", "results_from_json", "markdown_table",
           "write_reports"]

#: Designs the ratios are taken against (when present in the run).
BASELINES = ("mul33", "separate")

SCHEMA = 1


def results_to_json(results: Sequence[SynthResult], baselines: Sequence[str] = BASELINES) -> str:
    """The JSON text of a run (stable key order, ending in a newline)."""
    doc = {"schema": SCHEMA, "baselines": list(baselines),
           "designs": [r.to_dict() for r in results]}
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def results_from_json(text: str) -> list[SynthResult]:
    """Parse what :func:`results_to_json` wrote; ``ValueError`` on another schema."""
    doc = json.loads(text)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"synthesis report schema {doc.get('schema')!r} is not supported "
                         f"(expected {SCHEMA})")
    return [SynthResult.from_dict(d) for d in doc["designs"]]


def _lut_equiv(r: SynthResult):
    """LUT4s plus two per CCU2C carry cell (each CCU2C is two LUT4s + carry logic)."""
    return None if r.ecp5 is None else r.ecp5.lut4 + 2 * r.ecp5.carry


#: (column title, getter, format, larger is better)
_METRICS = [
    ("gates", lambda r: r.generic and r.generic.gates, "{:,}", False),
    ("FF", lambda r: r.generic and r.generic.flip_flops, "{:,}", False),
    ("RAM bits", lambda r: (r.generic and r.generic.memory_bits) or None, "{:,}", False),
    ("transistors", lambda r: r.generic and r.generic.transistors, "{:,}", False),
    ("depth", lambda r: r.generic and r.generic.depth, "{}", False),
    ("ECP5 LUT4+2*CCU2C", _lut_equiv, "{:,}", False),
    ("ECP5 FF", lambda r: r.ecp5 and r.ecp5.ff, "{:,}", False),
    ("ECP5 DSP", lambda r: r.ecp5 and r.ecp5.dsp, "{}", False),
    ("Fmax MHz", lambda r: r.ecp5 and r.ecp5.fmax_mhz, "{:.1f}", True),
    ("area um^2", lambda r: r.liberty and r.liberty.area_um2, "{:,.0f}", False),
]

#: metrics that get ratio columns
_RATIO_METRICS = ("gates", "transistors", "ECP5 LUT4+2*CCU2C", "Fmax MHz", "area um^2")


def markdown_table(results: Sequence[SynthResult], baselines: Sequence[str] = BASELINES) -> str:
    """A Markdown report: absolute figures, then one ratio table per baseline present.

    Columns with no value for any design (a target that was not run) are left out; a failed
    step shows as ``failed``.
    """
    cols = [m for m in _METRICS if any(m[1](r) is not None for r in results)]
    lines = ["# Synthesis comparison", ""]
    lines.append("| design | " + " | ".join(c[0] for c in cols) + " |")
    lines.append("|---|" + "---:|" * len(cols))
    for r in results:
        cells = []
        for title, get, fmt, _ in cols:
            v = get(r)
            cells.append(fmt.format(v) if v is not None else ("failed" if r.errors else "-"))
        lines.append(f"| {r.design} | " + " | ".join(cells) + " |")
    lines.append("")
    by_name = {r.design: r for r in results}
    for base in baselines:
        if base not in by_name:
            continue
        rcols = [c for c in cols if c[0] in _RATIO_METRICS]
        if not rcols:
            continue
        b = by_name[base]
        lines.append(f"## Ratios vs `{base}` (design / {base})")
        lines.append("")
        lines.append("| design | " + " | ".join(c[0] for c in rcols) + " |")
        lines.append("|---|" + "---:|" * len(rcols))
        for r in results:
            cells = []
            for title, get, fmt, _ in rcols:
                v, bv = get(r), get(b)
                cells.append(f"{v / bv:.2f}x" if v is not None and bv else "-")
            lines.append(f"| {r.design} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = [
        "Generic: `synth -flatten -noabc; abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX` "
        "(fast script `strash;dc2;map`); gates exclude flip-flops and memories (kept as RAM "
        "macros, their size in `RAM bits`); transistors from "
        "`stat -tech cmos` (logic only); depth from `ltp -noff` (gates).",
        "All designs have one register stage on every input and on the output.",
    ]
    if any(r.ecp5 for r in results):
        notes.append("ECP5: `synth_ecp5` + nextpnr-ecp5 (LFE5U-25F CABGA381, target 100 MHz, "
                     "seed 1); `LUT4+2*CCU2C` counts each carry cell as two LUT4s.")
        dsp = {r.ecp5.dsp_allowed for r in results if r.ecp5}
        notes.append("DSP blocks " + ("allowed" if dsp == {True} else "not used (`-nodsp`)")
                     + " on ECP5.")
    for r in results:
        for target, err in r.errors.items():
            notes.append(f"`{r.design}` {target} failed: {err.splitlines()[0]}")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_reports(results: Sequence[SynthResult], out: Path, stem: str = "compare",
                  baselines: Sequence[str] = BASELINES) -> tuple[Path, Path]:
    """Write ``<out>/<stem>.json`` and ``<out>/<stem>.md`` atomically; return both paths."""
    out = Path(out)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    write_if_changed(js, results_to_json(results, baselines))
    write_if_changed(md, markdown_table(results, baselines))
    return js, md
