"""Outputs of a search: config.json, report.md and the Pareto PNG (matplotlib Agg)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["STAND_IN_WARNING", "config_json", "write_outputs", "pareto_png", "markdown"]

STAND_IN_WARNING = ("WARNING: costs come from the analytic STAND-IN cost model, not from the RTL; "
                    "this result is NOT final (plug in rvmpq.sw.costs for RTL-measured cycles)")


def _write(path: Path, text: str):
    """Write only when the content changed (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def config_json(setup, res: dict) -> dict:
    """The ``config.json`` document of one search result."""
    best = res["results"][res["best"]]
    src = setup.cost_model.source
    return {
        "format": "rvmpq-search-config-1",
        "model": setup.name,
        "cost_source": src,
        "final": src == "rtl-measured",
        "budgets": res["budgets"],
        "method": res["best"],
        "metric": setup.metric,
        "float_accuracy": setup.float_acc,
        "layers": best["layers"],
        # layers that read one tensor: the search gives each group one precision
        "tie_groups": [[best["layers"][k]["name"] for k in g] for g in getattr(setup, "ties", [])],
        "predicted_accuracy": best["predicted_accuracy"],
        "validated_accuracy": best["validated_accuracy"],
        "predicted_cycles": best["costs"]["cycles"],
        "cycles_vs_int8": best["cycles_vs_int8"],
        "costs": best["costs"],
        # why rvmpq deploy's kernels cannot run the configuration (None: they can)
        "deploy_error": best.get("deploy_error"),
        "int8_costs": setup.int8_totals(),
        "spearman": setup.corr["spearman"],
        "all_methods": {m: _public(r) for m, r in res["results"].items()},
    }


def pareto_png(setup, res: dict, path: Path, sweep: list | None = None):
    """Accuracy vs cycles (fraction of INT8) for every method and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if sweep:
        xs, ys = zip(*sorted(sweep))
        ax.plot(xs, ys, "-", color="0.7", label="dp budget sweep (PTQ)")
    for m, r in res["results"].items():
        mk = "s" if m.startswith("uniform") else ("x" if m in ("random", "hawq-ilp") else "o")
        ax.scatter([r["cycles_vs_int8"]], [r["validated_accuracy"]], marker=mk, label=m)
    ax.axhline(setup.float_acc, ls="--", color="k", lw=0.8, label="float")
    if "cycles" in res["budgets"]:
        ax.axvline(res["budgets"]["cycles"] / setup.int8_totals()["cycles"], ls=":", color="r",
                   lw=0.8, label="latency budget")
    ax.set_xlabel("cycles / uniform INT8")
    ax.set_ylabel("integer-model test accuracy (%)")
    title = f"{setup.name}"
    if setup.cost_model.source != "rtl-measured":
        title += " (STAND-IN costs, not final)"
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(setup, res: dict) -> str:
    """Human-readable report."""
    lines = [f"# rvmpq search: {setup.name}", ""]
    if setup.cost_model.source != "rtl-measured":
        lines += [f"**{STAND_IN_WARNING}**", ""]
    lines += [f"float test accuracy: {setup.float_acc:.2f}%  ", f"budgets: {res['budgets']}  ",
              f"sensitivity metric driving the solvers: `{setup.metric}`  ",
              f"best method (validation split): `{res['best']}`", ""]
    names = [l["name"] for l in res["results"][res["best"]]["layers"]]
    if getattr(setup, "ties", None):
        lines[-1:-1] = ["", "tie groups (read one tensor, so one precision each): " + "; ".join(
            ", ".join(f"`{names[k]}`" for k in g) for g in setup.ties) + "  "]
    lines += [
              "| method | bits per layer | training | predicted acc | validated acc | cycles / INT8 | weight bytes | solver s |",
              "|---|---|---|---|---|---|---|---|"]
    for m, r in res["results"].items():
        tr = "".join("Q" if l["training"] == "QAT" else "P" for l in r["layers"])
        lines.append(f"| {m} | {r['bits']} | {tr} | {r['predicted_accuracy']:.2f} | "
                     f"{r['validated_accuracy']:.2f} | {r['cycles_vs_int8']:.3f}"
                     f"{'' if r['feasible'] else ' (over)'} | {r['costs']['weight_bytes']:.0f} | "
                     f"{r['solver_seconds']:.3f} |")
    best = res["results"][res["best"]]
    lines += ["", "training: P = PTQ, Q = QAT fine-tuned (per layer)", ""]
    cannot = [m for m, r in res["results"].items() if r.get("deploy_error")]
    if cannot:
        lines += ["configurations the layer kernels cannot run on the `mpq` core (never picked "
                  "as the best while another can run): " + "; ".join(
                      f"`{m}` ({res['results'][m]['deploy_error']})" for m in cannot), ""]
    lines += [f"## Per-layer costs of the best configuration (`{res['best']}`, "
              f"{setup.cost_model.source})", "",
              "energy: proxy in units of one INT16 `mpq.dot` (see `rvmpq.sw.costs`)", "",
              "| layer | shape | bits | training | cycles | weight bytes | act bytes | energy |",
              "|---|---|---|---|---|---|---|---|"]
    for l in best["layers"]:
        lines.append(f"| {l['name']} | `{l.get('shape', '')}` | {l['w_bits']} | {l['training']} "
                     f"| {l.get('cycles', 0):.0f} | {l.get('weight_bytes', 0):.0f} | "
                     f"{l.get('act_bytes', 0):.0f} | {l.get('energy', 0):.0f} |")
    lines += ["", "## Sensitivity metrics vs integer-model accuracy", "",
              f"Spearman rank correlation over {len(setup.corr['configs'])} random mixed "
              f"configurations (seed {setup.corr['seed']}):", "",
              "| metric | spearman | points per unit |", "|---|---|---|"]
    for k, v in setup.corr["spearman"].items():
        lines.append(f"| {k} | {v:+.3f} | {setup.corr['scale'][k]:.4g} |")
    lines.append("")
    return "\n".join(lines)


def write_outputs(setup, res: dict, out: Path, sweep=None) -> dict:
    """Write config.json, report.md, pareto.png and qnet.json (best integer network)."""
    out = Path(out)
    cfg = config_json(setup, res)
    _write(out / "config.json", json.dumps(cfg, indent=1, default=float) + "\n")
    _write(out / "report.md", markdown(setup, res))
    res["results"][res["best"]]["_net"].save(out / "qnet.json")
    pareto_png(setup, res, out / "pareto.png", sweep)
    return cfg
