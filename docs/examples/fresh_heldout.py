"""Score MNIST-1D configurations on a fresh held-out set that no search step has seen.

The search benchmark judges its targets on the standard MNIST-1D test split (1,000 samples):
one standard error of an accuracy *difference* there is about 0.3 points, as large as the
differences it judges. MNIST-1D is generated, so a much larger held-out set can be drawn by
its own generator (another seed, the standard set's scale). This script trains each given
configuration exactly as ``rvmpq search`` does (the same PTQ/QAT necessity step, seeded,
one torch thread) and prints its integer-model accuracy on the validation split, the
standard test split and the fresh set, with the float model's alongside and the paired
standard error of each difference to float on the fresh set.

It is a supplementary measurement: the benchmark's figures stay the standard test split's.

    .venv/bin/python docs/examples/fresh_heldout.py mnist1d-cnn "[16,4,4,4]" "[8,4,4,16]"
    .venv/bin/python docs/examples/fresh_heldout.py mnist1d-cnn "[8,8,8,8]" --n 20000 --seed 3

Each configuration lists one precision per compute layer (weights and activations alike, as
the search's options are). Training a configuration takes seconds to a minute on one core.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def fresh_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST-1D samples drawn by the standard generator with ``seed`` (not 42, the
    standard set's, nor 1, the extra validation samples'), on the standard set's scale
    (:func:`rvmpq.sw.search.models.mnist1d_draw`)."""
    from rvmpq.sw.search.models import MNIST1D_EXTRA_SEED, mnist1d_draw

    if seed in (42, MNIST1D_EXTRA_SEED):
        raise SystemExit(f"--seed {seed}: that seed drew samples the search has seen")
    return mnist1d_draw(n, seed)


def main(argv=None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a built-in MNIST-1D model (mnist1d-cnn, mnist1d-cnn-l, "
                                  "mnist1d-resnet)")
    ap.add_argument("configs", nargs="+", help='one JSON list of bits per layer each, "[8,4,4,4]"')
    ap.add_argument("--n", type=int, default=10_000, help="fresh samples (default 10000)")
    ap.add_argument("--seed", type=int, default=2, help="seed of the fresh samples (default 2)")
    a = ap.parse_args(argv)
    if not a.model.startswith("mnist1d"):
        ap.error(f"{a.model}: only the MNIST-1D models have a generator to draw from")
    try:
        configs = [json.loads(c) for c in a.configs]
    except json.JSONDecodeError as e:
        ap.error(f"a configuration is not a JSON list: {e}")

    import torch

    from rvmpq.sw.search import pipeline
    from rvmpq.sw.search.cli import paired_se
    from rvmpq.sw.search.models import float_forward
    from rvmpq.sw.search.qnn import int_forward

    torch.set_num_threads(1)
    xf, yf = fresh_set(a.n, a.seed)
    print(f"preparing {a.model} (float model, calibration, sensitivities) ...", flush=True)
    setup = pipeline.prepare(a.model, log=lambda *_: None)
    d = setup.data
    n = setup.qz.n_compute
    for c in configs:
        if not isinstance(c, list) or len(c) != n or any(b not in (2, 4, 8, 16) for b in c):
            ap.error(f"{c}: need {n} precisions from 2, 4, 8, 16 for {a.model}")
    # the float model as the benchmark scores it: its traced layers (float64)
    fc = {k: float_forward(setup.qz.layers, x).argmax(1) == y for k, (x, y) in
          {"val": (d.x_val, d.y_val), "test": (d.x_test, d.y_test), "fresh": (xf, yf)}.items()}
    print(f"{'float':>20}: val {fc['val'].mean() * 100:6.2f}  test {fc['test'].mean() * 100:6.2f}"
          f"  fresh {fc['fresh'].mean() * 100:6.2f}  ({len(yf)} fresh samples, seed {a.seed})")
    for c in configs:
        r = pipeline.train_and_score(setup, c, c)
        ok = {k: int_forward(r["net"], x).argmax(1) == y for k, (x, y) in
              {"test": (d.x_test, d.y_test), "fresh": (xf, yf)}.items()}
        diff = (ok["fresh"].mean() - fc["fresh"].mean()) * 100
        print(f"{str(c):>20}: val {r['val_acc']:6.2f}  test {ok['test'].mean() * 100:6.2f}  fresh "
              f"{ok['fresh'].mean() * 100:6.2f}  (fresh - float {diff:+.2f}, SE "
              f"{paired_se(ok['fresh'], fc['fresh']):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
