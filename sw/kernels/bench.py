"""The Edge-MPQ kernel experiment: layer kernels on the baseline core vs the MPQ core.

``bench_kernels(out_dir, quick=False)`` runs each benchmark layer (the Edge-MPQ conv layer:
3x3, 32 -> 32 channels, 16x16 map; plus layers shaped like ResNet-18 and MobileNetV2 layers,
scaled to fit the 64 KiB DMEM) at INT16/8/4/2 on

* ``baseline``: plain RV32IM C (int8 storage, int16 at INT16), on the ``baseline`` core;
* ``mpq``: the generated MPQ kernel, on the ``mpq`` core;

checks both outputs bit for bit against the integer network model, and reports kernel cycles
(``rdcycle`` around the call), the speedup, the achieved MACs/cycle against the unit's peak
(2/4/8/16 for INT16/8/4/2: one ``mpq.dot`` per cycle) and the inner loop's share of peak.

The inner-loop figure is static: the innermost loop with the most ``mpq.dot`` in the ELF, its
cycles counted as one per instruction plus the taken-branch penalty of the core (loads
are scheduled so that no load-use bubble remains; the whole-kernel cycles are measured).

Writes ``<out_dir>/kernels.json`` and ``<out_dir>/kernels.md``.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .layer import random_input, random_layer, reference_output
from .run import run_layer

__all__ = ["BENCH_LAYERS", "bench_kernels", "inner_loop_stats"]

#: name -> (variant, cin, cout, h, w, k, stride, description)
BENCH_LAYERS: dict[str, tuple] = {
    "edge-conv3x3": ("conv", 32, 32, 16, 16, 3, 1, "Edge-MPQ conv layer: 3x3, 32->32, 16x16"),
    "resnet-conv3x3-s2": ("conv", 32, 48, 12, 12, 3, 2,
                          "ResNet-18 downsampling 3x3/2 (128->256 @14x14 scaled to 32->48 @12x12)"),
    "resnet-conv1x1-s2": ("pointwise", 32, 64, 12, 12, 1, 2,
                          "ResNet-18 1x1/2 shortcut (scaled to 32->64 @12x12)"),
    "mbv2-expand1x1": ("pointwise", 16, 96, 8, 8, 1, 1,
                       "MobileNetV2 expand 1x1 (24->144 @28x28 scaled to 16->96 @8x8)"),
    "mbv2-dw3x3": ("depthwise", 96, 96, 8, 8, 3, 1,
                   "MobileNetV2 depthwise 3x3 (144 @28x28 scaled to 96 @8x8)"),
    "mbv2-project1x1": ("pointwise", 96, 24, 8, 8, 1, 1,
                        "MobileNetV2 project 1x1 (144->24 @28x28 scaled to 96->24 @8x8)"),
    "fc": ("linear", 256, 64, 1, 1, 1, 1, "fully connected 256->64 (int32 logits)"),
}
QUICK_LAYERS = ("edge-conv3x3",)
PRECISIONS = (16, 8, 4, 2)
#: Peak MACs/cycle of the unit per precision (one mpq.dot per cycle).
PEAK = {b: 32 // b for b in PRECISIONS}


def _is_back_branch(w: int) -> bool:
    """A backward conditional branch, or a backward ``jal x0`` (a loop too long for a branch)."""
    return (w & 0x7F == 0x63 or (w & 0x7F == 0x6F and (w >> 7) & 31 == 0)) and bool(w >> 31)


def _back_offset(w: int) -> int | None:
    """The (negative) byte offset of a backward branch / ``jal x0``, else None."""
    if not _is_back_branch(w):
        return None
    if w & 0x7F == 0x63:
        imm = (((w >> 31) & 1) << 12) | (((w >> 7) & 1) << 11) | (((w >> 25) & 0x3F) << 5) | \
            (((w >> 8) & 0xF) << 1)
        return imm - 0x2000
    imm = (((w >> 31) & 1) << 20) | (((w >> 12) & 0xFF) << 12) | (((w >> 20) & 1) << 11) | \
        (((w >> 21) & 0x3FF) << 1)
    return imm - 0x200000


def inner_loop_stats(elf) -> dict:
    """Static figures of the innermost dot loop of a kernel ELF.

    Returns ``{"instrs", "dots", "loads", "cycles", "dot_share"}`` for the innermost loop
    (a backward branch, or ``jal x0`` when the body is too long for a branch, with no backward
    branch inside) whose body holds the most dot products
    (``mpq.dot`` or ``mpq.ldot``; ``cycles`` = instructions + the taken branch's bubbles,
    :data:`~rvmpq.hw.core.core.TAKEN_BRANCH_BUBBLES`);
    zeros when the ELF has no dot.
    """
    from rvmpq.hw import isa
    from rvmpq.hw.core.core import TAKEN_BRANCH_BUBBLES
    from rvmpq.sw.runtime.elf import load_elf

    img = load_elf(elf)
    words = img.words()
    text = {a: w for a, w in words.items() if a < 0x1000_0000}
    best = {"instrs": 0, "dots": 0, "loads": 0, "cycles": 0, "dot_share": 0.0}
    for pc, w in sorted(text.items()):
        imm = _back_offset(w)         # loops close with a backward branch (or jal x0)
        if imm is None:
            continue
        body = [text.get(a, 0) for a in range(pc + imm, pc + 4, 4)]
        if any(_is_back_branch(b) for b in body[:-1]):
            continue                  # not innermost
        dots = sum(1 for b in body if (d := isa.decode(b)) and d[0].kind in ("dot", "ldot"))
        loads = sum(1 for b in body if b & 0x7F == 0x03)
        if dots > best["dots"] or (dots == best["dots"] and dots and len(body) < best["instrs"]):
            cyc = len(body) + TAKEN_BRANCH_BUBBLES
            best = {"instrs": len(body), "dots": dots, "loads": loads, "cycles": cyc,
                    "dot_share": dots / cyc}
    return best


def _one(name: str, bits: int, seed: int) -> dict:
    variant, cin, cout, h, w, k, s, desc = BENCH_LAYERS[name]
    rng = np.random.default_rng(seed)
    layer = random_layer(variant, bits, cin, cout, h, w, k, s, rng=rng, a_signed=False,
                         relu=variant != "linear", out_bits=32 if variant == "linear" else bits)
    a = random_input(layer, rng)
    ref = reference_output(layer, a)
    row = {"layer": name, "description": desc, "bits": bits, "seed": seed}
    from rvmpq.sw.search.costs_api import LayerShape
    shape = LayerShape("linear" if variant == "linear" else "conv", cin, cout, h, w, k, k,
                       (s, s), tuple(layer.padding), layer.groups)
    row["macs"] = shape.macs
    for impl in ("baseline", "mpq"):
        r = run_layer(layer, a, impl)
        row[f"{impl}_cycles"] = r.cycles
        row[f"{impl}_instret"] = r.instret
        row[f"{impl}_exact"] = bool(np.array_equal(r.output, ref))
        if impl == "mpq":
            row["inner"] = inner_loop_stats(r.elf)
    row["speedup"] = row["baseline_cycles"] / row["mpq_cycles"]
    row["macs_per_cycle"] = row["macs"] / row["mpq_cycles"]
    row["peak_macs_per_cycle"] = PEAK[bits]
    row["peak_share"] = row["macs_per_cycle"] / PEAK[bits]
    row["inner_peak_share"] = row["inner"]["dot_share"]
    if variant == "depthwise":   # one-hot weights: 1 MAC per dot
        row["inner_peak_share"] = row["inner"]["dot_share"] / PEAK[bits]
    return row


def bench_kernels(out_dir, quick: bool = False, jobs: int = 2, seed: int = 2024) -> dict:
    """Run the kernel benchmark; write ``kernels.json`` / ``kernels.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    quick : bool
        Only the Edge-MPQ conv layer (all four precisions).
    jobs : int
        Layers run in parallel (each run is a separate Verilator process).
    seed : int
        Seed of the random weights and inputs (printed in the report).

    Returns
    -------
    dict
        The JSON document (``rows`` one per layer and precision, ``summary``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = QUICK_LAYERS if quick else tuple(BENCH_LAYERS)
    tasks = [(n, b) for n in names for b in PRECISIONS]
    t0 = time.time()
    rows = []
    # build the two models once before fanning out
    from .run import soc_verilog_cached
    for cfg in ("mpq", "baseline"):
        soc_verilog_cached(cfg)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futs = {ex.submit(_one, n, b, seed): (n, b) for n, b in tasks}
        for i, f in enumerate(futs, 1):
            r = f.result()
            rows.append(r)
            print(f"[{i}/{len(tasks)}] {r['layer']} INT{r['bits']}: baseline {r['baseline_cycles']} "
                  f"mpq {r['mpq_cycles']} cycles, speedup {r['speedup']:.1f}x, "
                  f"{r['macs_per_cycle']:.2f} MAC/cycle", file=sys.stderr, flush=True)
    doc = {"format": "rvmpq-bench-kernels-1", "seed": seed, "quick": quick,
           "replay": f"rvmpq.sw.kernels.bench.bench_kernels(out, quick={quick}, seed={seed})",
           "wall_s": round(time.time() - t0, 1), "rows": rows,
           "summary": {
               "all_exact": all(r["baseline_exact"] and r["mpq_exact"] for r in rows),
               "edge_speedup": {r["bits"]: round(r["speedup"], 2) for r in rows
                                if r["layer"] == "edge-conv3x3"},
               "min_inner_peak_share": min(r["inner_peak_share"] for r in rows
                                           if r["layer"] != "mbv2-dw3x3"),
           }}
    (out / "kernels.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "kernels.md").write_text(markdown(doc))
    return doc


def markdown(doc: dict) -> str:
    """The benchmark as a Markdown table."""
    from rvmpq.hw.core.core import TAKEN_BRANCH_BUBBLES
    L = ["# Layer kernels: baseline RV32IM vs MPQ", "",
         f"Seed {doc['seed']}; every output checked bit for bit against the integer model "
         f"(all exact: {doc['summary']['all_exact']}). Cycles: `rdcycle` around the kernel on "
         "the Verilator model of the RTL. Inner loop: static count (instructions + "
         f"{TAKEN_BRANCH_BUBBLES} bubbles of the taken branch), share of one dot product (`mpq.dot` / `mpq.ldot`) per cycle.", "",
         "| layer | bits | MACs | baseline cycles | mpq cycles | speedup | MAC/cycle | peak | "
         "of peak | inner loop dots/instrs/loads | inner of peak |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        i = r["inner"]
        L.append(f"| {r['layer']} | {r['bits']} | {r['macs']} | {r['baseline_cycles']} | "
                 f"{r['mpq_cycles']} | {r['speedup']:.1f}x | {r['macs_per_cycle']:.2f} | "
                 f"{r['peak_macs_per_cycle']} | {100 * r['peak_share']:.0f}% | "
                 f"{i['dots']}/{i['instrs']}/{i['loads']} | {100 * r['inner_peak_share']:.0f}% |")
    L += ["", "Depthwise uses one-hot weights (1 MAC per dot): its share is of the unit's peak.", ""]
    return "\n".join(L)


if __name__ == "__main__":  # pragma: no cover
    quick = "--quick" in sys.argv
    from rvmpq.sw.tools import build_root

    d = bench_kernels(build_root() / "bench", quick=quick)
    print(markdown(d))
