"""Model intake of a ``forward`` written with functional operations, the way most PyTorch code
is written (``F.relu``, ``F.max_pool2d``, ``F.dropout``, ``x.view(x.size(0), -1)``).

The reference is the model's own ``forward`` and the same network written as an
``nn.Sequential`` of modules, which the intake has always walked.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rvmpq.sw.cli import main  # noqa: E402
from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, load_dataset, torch_accuracy, trace_model)

FLATTENS = {
    "view_size0": lambda x: x.view(x.size(0), -1),
    "contiguous_view": lambda x: x.contiguous().view(x.size(0), -1),
    "reshape_shape0": lambda x: x.reshape(x.shape[0], -1),
    "view_size0_k": lambda x: x.view(x.size(0), 32 * 4 * 4),
    "view_minus1_k": lambda x: x.view(-1, 32 * 4 * 4),
    "method_flatten": lambda x: x.flatten(1),
    "torch_flatten": lambda x: torch.flatten(x, 1),
    "torch_reshape": lambda x: torch.reshape(x, (x.size(0), -1)),
}


class TutorialNet(nn.Module):
    """conv-relu, conv-relu-maxpool, dropout, flatten, fc-relu, fc: modules for the weights,
    functional calls for everything else."""

    def __init__(self, flatten="view_size0"):
        super().__init__()
        torch.manual_seed(0)
        self.how = flatten
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        """The network."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(x, 0.25, training=self.training)
        x = F.relu(self.fc1(FLATTENS[self.how](x)))
        return self.fc2(x)


def _sequential(net):
    """The same network as an nn.Sequential of modules (the same weight objects)."""
    return nn.Sequential(net.conv1, nn.ReLU(), net.conv2, nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), net.fc1, nn.ReLU(), net.fc2).eval()


@pytest.mark.parametrize("flatten", list(FLATTENS))
def test_functional_forward_traces_like_its_sequential_twin(flatten):
    net = TutorialNet(flatten).eval()
    layers, ref = trace_model(net), trace_model(_sequential(net))
    assert [l.kind for l in layers] == ["conv", "conv", "maxpool", "flatten", "linear", "linear"]
    for a, b in zip(layers, ref):
        assert (a.kind, a.relu, a.src, a.kernel, a.stride) == (b.kind, b.relu, b.src, b.kernel,
                                                                 b.stride)
        assert a.src is None                 # a chain: the sequential form, no graph
        if a.is_compute:
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    x = np.random.default_rng(1).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).double().numpy()
    assert np.allclose(float_forward(layers, x), want, rtol=1e-5, atol=1e-5)
    check_trace(net, layers, x)


def test_functional_forward_runs_on_the_builtin_data_layout():
    """The digits arrays have strides that torch reads as channels-last; a model's own
    ``x.view(x.size(0), -1)`` failed on them until the intake ran models on a row-major copy."""
    ds = load_dataset("digits")
    net = TutorialNet().eval()
    check_trace(net, trace_model(net, ds.x_val[:1]), ds.x_val[:16])
    assert 0 <= torch_accuracy(net, ds.x_test, ds.y_test) <= 100


class _Bad(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        if self.how == "pool_overlap":
            x = F.max_pool2d(x, 3, 2, padding=1)
        elif self.how == "avg_pool":
            x = F.avg_pool2d(x, 2)
        else:
            x = F.max_pool2d(x, 2)
        if self.how == "view_3d":
            return self.fc(x.view(x.size(0), 4, -1).flatten(1))
        if self.how == "size1":
            return self.fc(x.view(-1, x.size(1) * 16))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("how, message", [
    ("pool_overlap", "max_pool2d needs kernel == stride"),
    ("avg_pool", "(call_function avg_pool2d) is not supported"),
    ("view_3d", "a view to ('N', 4, -1); supported: a flatten"),
    ("size1", "the size of a dimension other than the batch"),
])
def test_functional_forms_the_kernels_cannot_run_are_refused(how, message):
    with pytest.raises(UnsupportedModelError, match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        trace_model(_Bad(how).eval())


def test_search_takes_a_saved_functional_model(tmp_path, capsys):
    """``rvmpq search --model PATH.pt`` on a tutorial-style model: the plumbing end to end."""
    path = tmp_path / "net.pt"
    torch.save(TutorialNet().eval(), path)
    rc = main(["search", "--model", str(path), "--data", "digits", "--budget", "latency=0.8",
               "--method", "greedy", "--no-qat", "--configs", "4", "--costs", "stand-in",
               "-o", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert [l["name"] for l in cfg["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
