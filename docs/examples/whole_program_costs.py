"""Whole-program cycles: what the search predicts vs what deploy measures on the RTL.

Reproduces the table of docs/costs.md ("Whole-program cost")::

    PYTHONPATH=<dir holding rvmpq> python docs/examples/whole_program_costs.py

Each configuration is exported from the built-in model (seeded, untrained: the cycles do not
depend on the data or on the weights' values), run by ``rvmpq.sw.deploy.run_network`` on the
Verilator model (2 inputs, cycles per inference), and predicted by
``rvmpq.sw.deploy.predicted_cycles`` (RTL measurements, cached under build/costs). "before" is
the sum of the layers alone at their own output bits, without glue (the cost table before the
whole-program terms), against the same program.
"""

import tempfile

import torch

from rvmpq.sw.costs import RtlCostModel
from rvmpq.sw.deploy import predicted_cycles, run_network
from rvmpq.sw.search.models import build_model, load_dataset, trace_model
from rvmpq.sw.search.qnn import quantize_input
from rvmpq.sw.search.quantizer import Quantizer

CONFIGS = {
    "digits-cnn": [[8, 8, 8], [4, 4, 4], [2, 2, 2], [16, 16, 16], [8, 2, 8], [16, 2, 4],
                   [2, 8, 4], [16, 4, 2], [2, 16, 8]],
    "mnist1d-cnn": [[8, 8, 8, 8], [4, 4, 4, 4], [2, 2, 2, 2], [16, 16, 16, 16], [8, 4, 2, 8],
                    [2, 8, 2, 4], [16, 2, 8, 2], [4, 16, 4, 16]],
}


def main() -> None:
    """Print the Markdown table."""
    cm = RtlCostModel(verbose=False)
    print("| model | bits | measured (kernels + glue) | predicted | error | before (layers alone) |")
    print("|---|---|---|---|---|---|")
    for name, data in (("digits-cnn", "digits"), ("mnist1d-cnn", "mnist1d")):
        torch.manual_seed(0)
        ds = load_dataset(data)
        qz = Quantizer(trace_model(build_model(name)), ds.x_val[:100])
        for bits in CONFIGS[name]:
            net = qz.export(bits, bits)
            with tempfile.TemporaryDirectory() as d:
                run = run_network(net, quantize_input(ds.x_test[:2], net), "mpq", d, "p")
            p = predicted_cycles(net, cm)
            m = run.cycles_per_inference
            alone = sum(t["kernel"] for t in p["terms"])
            print(f"| {name} | {', '.join(map(str, bits))} | {m:,.0f} ({run.kernel_cycles:,.0f}"
                  f" + {run.glue_cycles:,.0f}) | {p['total']:,.0f} | "
                  f"{100 * (p['total'] - m) / m:+.3f} % | {100 * (alone - m) / m:+.1f} % |",
                  flush=True)


if __name__ == "__main__":
    main()
