"""ReLU with an upper bound (``ReLU6``, ``Hardtanh(0, m)``, ``clamp(x, 0, m)``, ONNX ``Clip``):
traced as a ReLU with ``relu_max``, and followed by the quantizer and the integer model.

References: the model's own ``forward`` (torch), never the traced layers.
"""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, trace_model)
from rvmpq.sw.search.qnn import int_forward  # noqa: E402
from rvmpq.sw.search.quantizer import Quantizer  # noqa: E402


def _seq():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                      nn.Conv2d(8, 8, 3, padding=1), nn.Hardtanh(0.0, 3.0), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():                 # pre-activations well beyond the bounds
        m[0].weight.mul_(6.0)
        m[3].weight.mul_(3.0)
    return m.eval()


class _Res(nn.Module):
    """conv - relu6 - conv, add, relu6 - maxpool - fc: bounded tensors into and out of an add."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)
        with torch.no_grad():
            self.c1.weight.mul_(8.0)
            self.c2.weight.mul_(2.0)

    def forward(self, x):
        """The network."""
        h = F.relu6(self.c1(x))
        h = F.relu6(h + self.c2(h))
        return self.fc(torch.flatten(F.max_pool2d(h, 2), 1))


def _x(n=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("make, bounds", [(_seq, [6.0, 3.0, None]),
                                          (_Res, [6.0, None, 6.0, None])],
                         ids=["sequential", "residual"])
def test_bounded_relu_reaches_the_integer_model(make, bounds):
    """At 16 bits the integer model's logits track the model's own forward, which differs
    materially from the same network with plain ReLUs: the bound is not lost on the way
    (calibration, the integer clamp, the add's grids; at 16 bits the accumulator headroom
    would otherwise let integer values run past the calibrated clip, see Quantizer.qmax)."""
    model, x = make(), _x()
    layers = trace_model(model)
    assert [l.relu_max for l in layers if l.relu or l.is_compute] == bounds
    check_trace(model, layers, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    unbounded = float_forward([dataclasses.replace(l, relu_max=None) for l in layers], x)
    scale = np.abs(ref).max()
    assert np.abs(unbounded - ref).max() > 0.05 * scale      # the bounds matter here
    qz = Quantizer(layers, x)
    n = sum(l.is_compute for l in layers)
    net = qz.export([16] * n, [16] * n)
    z = int_forward(net, x).astype(np.float64) * net.logit_scale
    assert np.abs(z - ref).max() <= 1e-2 * scale, np.abs(z - ref).max() / scale
    assert np.abs(z - unbounded).max() > 0.04 * scale


class _Fn(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        """conv, the activation under test, flatten, fc."""
        h = self.c(x)
        h = {"relu6": lambda: F.relu6(h), "hardtanh": lambda: F.hardtanh(h, 0.0, 4.0),
             "clamp": lambda: h.clamp(0, 2.5), "torch_clamp_min": lambda: torch.clamp(h, min=0),
             "hardtanh_default": lambda: F.hardtanh(h),
             "clamp_sym": lambda: torch.clamp(h, -1.0, 1.0)}[self.how]()
        return self.fc(torch.flatten(h, 1))


@pytest.mark.parametrize("how, bound", [("relu6", 6.0), ("hardtanh", 4.0), ("clamp", 2.5),
                                        ("torch_clamp_min", None)])
def test_functional_bounded_relu_forms(how, bound):
    model = _Fn(how).eval()
    layers = trace_model(model)
    assert layers[0].relu and layers[0].relu_max == bound
    x = _x(8) * 40 - 20
    check_trace(model, layers, x)


@pytest.mark.parametrize("make, message", [
    (lambda: _Fn("hardtanh_default"), r"a clamp to \[-1.0, 1.0\]"),
    (lambda: _Fn("clamp_sym"), r"a clamp to \[-1.0, 1.0\]"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Hardtanh(), nn.Flatten(), nn.Linear(72, 3)),
     r"0: a clamp to \[-1.0, 1.0\]|1: a clamp to \[-1.0, 1.0\]"),
])
def test_clamps_that_are_not_a_bounded_relu_are_refused(make, message):
    with pytest.raises(UnsupportedModelError, match=message):
        trace_model(make().eval())


def test_onnx_clip_is_a_bounded_relu(tmp_path):
    """torch writes ReLU6 / Hardtanh(0, m) as Clip(x, 0, m) (both exporters)."""
    pytest.importorskip("onnx")
    from rvmpq.sw.search.onnx_intake import load_onnx
    from test_search_onnx import _export

    model, x = _seq(), _x(8)
    path = tmp_path / "r6.onnx"
    _export(model, (1, 8, 8), path, dynamo=False)
    layers = trace_model(load_onnx(path))
    assert [l.relu_max for l in layers if l.is_compute] == [6.0, 3.0, None]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    assert np.allclose(float_forward(layers, x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
