"""`rvmpq search` end to end: on RTL-measured costs (the default) and on the STAND-IN cost model
(results are marked as such)."""

import json

import pytest

from rvmpq.sw.cli import main


def test_search_end_to_end_stand_in(tmp_path, capsys):
    rc = main(["search", "--model", "digits-cnn", "--budget", "latency=0.6", "--budget",
               "wmem=0.9", "--method", "dp", "--no-qat", "--configs", "8", "--costs", "stand-in",
               "-o", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "STAND-IN" in cap.err and "NOT final" in cap.err
    assert "[search" in cap.out  # progress lines
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["cost_source"] == "stand-in" and cfg["final"] is False
    assert cfg["method"] == "dp" and len(cfg["layers"]) == 3
    assert all(l["w_bits"] in (2, 4, 8, 16) and l["training"] in ("PTQ", "QAT")
               for l in cfg["layers"])
    assert cfg["cycles_vs_int8"] <= 0.6 + 1e-9
    assert cfg["costs"]["weight_bytes"] <= 0.9 * cfg["int8_costs"]["weight_bytes"] + 1e-6
    assert 0 <= cfg["validated_accuracy"] <= 100 and "predicted_accuracy" in cfg
    assert {"uniform-8", "uniform-4", "hawq-ilp"} <= set(cfg["all_methods"])
    for f in ("report.md", "pareto.png", "qnet.json"):
        assert (tmp_path / f).stat().st_size > 0
    assert "STAND-IN" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_search_infeasible_budget_names_closest(tmp_path, capsys):
    rc = main(["search", "--model", "digits-cnn", "--budget", "latency=0.05", "--method", "ilp",
               "--no-qat", "--configs", "4", "--costs", "stand-in", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "closest one is" in err and "relax" in err
    assert not (tmp_path / "config.json").exists()


def test_search_bad_budget_name(tmp_path, capsys):
    rc = main(["search", "--model", "digits-cnn", "--budget", "speed=0.5", "-o", str(tmp_path)])
    assert rc == 2 and "allowed values" in capsys.readouterr().err


def test_search_bench_model_must_be_builtin(tmp_path, capsys):
    """`--bench --model NAME` benchmarks one built-in model; anything else is refused before
    any work, naming the allowed ones (mnist1d-cnn-l and mnist1d-resnet among them)."""
    rc = main(["search", "--bench", "--model", "no-such-model", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "allowed values" in err and "mnist1d-cnn-l" in err
    assert "mnist1d-resnet" in err
    assert not (tmp_path / "search_bench.md").exists()


def test_search_model_path(tmp_path, capsys):
    import torch

    from rvmpq.sw.search.models import build_model

    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    torch.save(build_model("digits-cnn"), path)  # untrained: only the plumbing is checked
    rc = main(["search", "--model", str(path), "--budget", "latency=0.8", "--method", "greedy",
               "--no-qat", "--configs", "4", "--costs", "stand-in", "-o", str(tmp_path / "out")])
    assert rc == 2 and "--data" in capsys.readouterr().err
    rc = main(["search", "--model", str(path), "--data", "digits", "--budget", "latency=0.8",
               "--method", "greedy", "--no-qat", "--configs", "4", "--costs", "stand-in",
               "-o", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model"] == str(path) and cfg["cost_source"] == "stand-in"


def test_search_default_costs_are_rtl(tmp_path, capsys):
    """Without --costs the search reads RTL-measured cycles (rvmpq.sw.costs, cached under
    build/costs) and its result is final; the logits layer is costed with int32 output."""
    from rvmpq.sw import costs
    from rvmpq.sw.search.costs_api import BITS

    rc = main(["search", "--model", "digits-cnn", "--budget", "latency=0.7", "--method", "dp",
               "--no-qat", "--configs", "4", "-o", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "STAND-IN" not in cap.err
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["cost_source"] == "rtl-measured" and cfg["final"] is True
    assert cfg["cycles_vs_int8"] <= 0.7 + 1e-9
    # the predicted cycles are the whole program's, from cached RTL measurements of the chosen
    # bits: each layer's kernel (output at its own bits) corrected for the precision its output
    # really gets, and the glue in front of each layer, charged to the consumer
    cm = costs.RtlCostModel(measure_missing=False, verbose=False)
    shapes, links = costs.model_network("digits-cnn")
    assert shapes[-1].logits and all(cm.cached(s, b) for s in shapes for b in BITS)
    bits = [l["w_bits"] for l in cfg["layers"]]
    assert all(cm.cached_glue(ln, b) for ln, b in zip(links[1:], bits[1:]))
    total = sum(cm.in_network_cycles(s, b, b, ln) for s, b, ln in zip(shapes, bits, links))
    assert cfg["predicted_cycles"] == pytest.approx(total)
    alone = sum(cm.cached(s, b).cycles for s, b in zip(shapes, bits))
    glue = sum(cm.cached_glue(ln, b).cycles for ln, b in zip(links[1:], bits[1:]))
    assert glue > 0
    # the same total from the measurements directly: the layers alone, the glue, and each
    # layer's output-side cycles at the next layer's bits instead of its own
    out = sum(cm.out_delta(s, b2) - cm.out_delta(s, b)
              for s, b, b2 in zip(shapes[:-1], bits[:-1], bits[1:]))
    assert cfg["predicted_cycles"] == pytest.approx(alone + glue + out)
