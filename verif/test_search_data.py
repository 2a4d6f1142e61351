"""The built-in data sets' splits (``rvmpq.sw.search.models.load_dataset``).

MNIST-1D: train and test must be the standard ``make_dataset(get_dataset_args())`` splits,
untouched; the validation split is the standard train split's first 500 samples plus extra
samples drawn by the same generator with another seed, on the standard set's scale.
"""

from __future__ import annotations

import numpy as np
import pytest

from rvmpq.sw.search import models


@pytest.fixture(scope="module")
def mnist1d():
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args()), models.load_dataset("mnist1d")


def test_mnist1d_train_test_are_the_standard_splits(mnist1d):
    std, ds = mnist1d
    x = std["x"].astype(np.float32)[:, None, None, :]
    assert np.array_equal(ds.x_train, x[500:]) and np.array_equal(ds.y_train, std["y"][500:])
    assert np.array_equal(ds.x_test, std["x_test"].astype(np.float32)[:, None, None, :])
    assert np.array_equal(ds.y_test, std["y_test"])
    assert np.array_equal(ds.x_val[:500], x[:500]) and np.array_equal(ds.y_val[:500],
                                                                        std["y"][:500])
    assert ds.x_val.shape == (500 + models.MNIST1D_EXTRA_VAL, 1, 1, 40)
    assert ds.x_val.dtype == np.float32 and ds.y_val.dtype == np.int64


def test_mnist1d_extra_validation_is_new_balanced_and_on_the_standard_scale(mnist1d):
    std, ds = mnist1d
    xe, ye = ds.x_val[500:, 0, 0], ds.y_val[500:]
    # balanced classes, as the generator draws them
    assert np.array_equal(np.bincount(ye, minlength=10),
                          np.full(10, models.MNIST1D_EXTRA_VAL // 10))
    # no extra sample repeats a standard one (train, first validation part or test)
    every = np.concatenate([std["x"], std["x_test"]])
    a = xe.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (every * every).sum(1)[None, :] - 2.0 * a @ every.T
    assert d2.min() > 1e-2
    # normalised with the standard set's statistics: mean ~0 and std ~1 like the standard set
    # (4,500 samples: a standard error of about 0.005 on the mean)
    assert abs(float(xe.mean())) < 0.05 and abs(float(xe.std()) - 1.0) < 0.05
    # labelled like the standard set: a 1-nearest-neighbour classifier fitted on the train
    # split scores the same on them as on the test split (55.1 % test, 57.2 % extra when
    # written; wrongly labelled samples would score about 10 %)
    from sklearn.neighbors import KNeighborsClassifier

    flat = lambda x: x.reshape(len(x), -1)
    knn = KNeighborsClassifier(1).fit(flat(ds.x_train), ds.y_train)
    on_test = knn.score(flat(ds.x_test), ds.y_test)
    on_extra = knn.score(flat(ds.x_val[500:]), ye)
    assert abs(on_extra - on_test) < 0.05, (on_test, on_extra)


def test_mnist1d_raw_reproduces_make_dataset():
    """The re-drawn raw samples, normalised by their own statistics, are the standard set;
    another seed gives other samples (so the equality above is not vacuous)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    std = make_dataset(args)
    raw, y = models.mnist1d_raw(args)
    norm = (raw - raw.mean()) / raw.std()
    assert np.array_equal(norm, np.concatenate([std["x"], std["x_test"]]))
    assert np.array_equal(y, np.concatenate([std["y"], std["y_test"]]))
    args.seed = models.MNIST1D_EXTRA_SEED
    other, _ = models.mnist1d_raw(args)
    assert not np.allclose(other, raw)


def test_mnist1d_extra_validation_refuses_a_generator_that_differs(monkeypatch):
    """If the mnist1d package draws other samples than ``mnist1d_raw`` assumes, the extra
    samples cannot be put on the standard scale: a clear error, not silently shifted data."""
    real = models.mnist1d_raw
    monkeypatch.setattr(models, "mnist1d_raw", lambda args: (real(args)[0] * 1.001,
                                                             real(args)[1]))
    with pytest.raises(RuntimeError, match="cannot reproduce make_dataset"):
        models.mnist1d_extra_validation()


def test_digits_splits():
    ds = models.load_dataset("digits")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1197, 240, 360)
    every = np.concatenate([ds.x_train, ds.x_val, ds.x_test])[:, 0].reshape(1797, -1)
    from sklearn.datasets import load_digits

    ref = load_digits().images.reshape(1797, -1) / 16.0
    # the three splits are a permutation of the whole set
    assert np.array_equal(np.sort(every, axis=0), np.sort(ref.astype(np.float32), axis=0))


def _fresh_heldout():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "fresh_heldout.py"
    spec = importlib.util.spec_from_file_location("fresh_heldout", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fresh_heldout_example_draws_unseen_samples(mnist1d, capsys):
    """docs/examples/fresh_heldout.py: its fresh samples are new, balanced and on the standard
    scale; the seeds of the standard and extra validation samples, a non-MNIST-1D model and a
    malformed configuration are refused before any training."""
    fh = _fresh_heldout()
    std, ds = mnist1d
    x, y = fh.fresh_set(200, 2)
    assert x.shape == (200, 1, 1, 40) and np.array_equal(np.bincount(y), np.full(10, 20))
    assert not any(np.array_equal(x[0], v) for v in ds.x_val)
    assert abs(float(x.mean())) < 0.2 and abs(float(x.std()) - 1.0) < 0.2
    for argv, msg in ((["mnist1d-cnn", "[8,8,8,8]", "--seed", "42"], "seen"),
                      (["mnist1d-cnn", "[8,8,8,8]", "--seed", "1"], "seen"),
                      (["digits-cnn", "[8,8,8]"], "only the MNIST-1D")):
        with pytest.raises(SystemExit) as e:
            fh.main(argv)
        assert e.value.code not in (0, None), argv
        assert msg in str(e.value.code) + capsys.readouterr().err, argv
    with pytest.raises(SystemExit) as e:
        fh.main(["mnist1d-cnn", "[8,8"])
    assert e.value.code == 2
