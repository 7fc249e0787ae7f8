"""cyconv.dask equals the in-memory ops, whatever the chunking, under the
threaded scheduler and a dask.distributed LocalCluster."""
import numpy as np
import pytest

import cyconv
from conftest import assert_close, to_last

da = pytest.importorskip("dask.array")
cd = pytest.importorskip("cyconv.dask")

CHUNKINGS = {
    "batch_only": lambda s: (2,) + s[1:],
    "small_uneven": lambda s: (3, s[1]) + tuple(max(1, n // 3 + 1) for n in s[2:]),
    "smaller_than_halo": lambda s: (2, s[1]) + s[2:-1] + (2,),
    "one_block": lambda s: s,
}

CONV = [  # nd, kwargs
    (2, dict(stride=1, padding=1)),
    (2, dict(stride=2, padding=((1, 2), (0, 3)), dilation=2, groups=3)),
    (2, dict(stride=3, padding="same")),
    (2, dict(stride=2, padding=2, padding_mode="reflect")),
    (2, dict(stride=2, padding=6)),  # windows wholly in the padding
    (1, dict(stride=2, padding=1, dilation=2)),
    (3, dict(stride=(1, 2, 1), padding=1, padding_mode="circular")),
]


def _x(rng, nd):
    return rng.standard_normal((5, 3) + (19, 17, 9)[:nd])


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("nd, kw", CONV)
def test_conv_matches_in_memory(nd, kw, chunking):
    rng = np.random.default_rng(0)
    x = _x(rng, nd)
    w = rng.standard_normal((6, 3 // kw.get("groups", 1)) + (3,) * nd)
    b = rng.standard_normal(6)
    xd = da.from_array(x, chunks=CHUNKINGS[chunking](x.shape))
    got = getattr(cd, f"conv{nd}d")(xd, w, b, **kw).compute(scheduler="threads")
    assert_close(got, getattr(cyconv, f"conv{nd}d")(x, w, b, **kw), np.float64)


def test_conv_channels_last_float32():
    rng = np.random.default_rng(1)
    x = to_last(rng.standard_normal((4, 3, 15, 14))).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    xd = da.from_array(x, chunks=(3, 4, 5, 3))
    got = cd.conv2d(xd, w, stride=2, padding="same", channels_last=True).compute()
    assert got.dtype == np.float32
    assert_close(got, cyconv.conv2d(x, w, stride=2, padding="same", channels_last=True),
                 np.float32)


POOL = [
    ("max", 2, dict(kernel_size=3, stride=2, padding=1)),
    ("max", 2, dict(kernel_size=2, ceil_mode=True, padding=((1, 0), (0, 1)))),
    ("avg", 2, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", 2, dict(kernel_size=(2, 3), stride=(3, 2), padding=(1, 1), ceil_mode=True,
                    count_include_pad=False)),
    ("avg", 1, dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    ("lp", 2, dict(norm_type=2, kernel_size=3, stride=2)),
    ("max", 3, dict(kernel_size=2, stride=(1, 2, 2), dilation=(2, 1, 1))),
]


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("kind, nd, kw", POOL)
def test_pool_matches_in_memory(kind, nd, kw, chunking):
    rng = np.random.default_rng(2)
    x = np.abs(_x(rng, nd))
    xd = da.from_array(x, chunks=CHUNKINGS[chunking](x.shape))
    kw = dict(kw)
    if kind == "lp":
        args = (kw.pop("norm_type"),)
    else:
        args = ()
    got = getattr(cd, f"{kind}_pool{nd}d")(xd, *args, **kw).compute(scheduler="threads")
    assert_close(got, getattr(cyconv, f"{kind}_pool{nd}d")(x, *args, **kw), np.float64)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("flip", [False, True])
def test_filtering_matches_cyconv_signal(mode, boundary, flip):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 23, 21))
    k = rng.standard_normal((4, 5))
    xd = da.from_array(x, chunks=(1, 6, 4))
    name = "convolve2d" if flip else "correlate2d"
    got = getattr(cd, name)(xd, k, mode, boundary, 0.5).compute()
    assert_close(got, getattr(cyconv.signal, name)(x, k, mode, boundary, 0.5), np.float64)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_integer_filtering_matches_scipy(mode, boundary):
    import scipy.signal as ss

    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (23, 21), dtype=np.uint8)   # sums wrap modulo 256
    k = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    xd = da.from_array(x, chunks=(6, 4))
    for name in ("convolve2d", "correlate2d"):
        got = getattr(cd, name)(xd, k, mode, boundary, 3).compute()
        expected = getattr(ss, name)(x, k, mode, boundary, 3)
        assert got.dtype == expected.dtype == np.uint8
        assert np.array_equal(got, expected)


def test_predict_batch_by_batch():
    from cyconv import nn

    nn.seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = np.random.default_rng(4).standard_normal((11, 1, 8, 8)).astype(np.float32)
    got = cd.predict(model, da.from_array(x, chunks=(4, 1, 3, 8))).compute()
    assert got.dtype == np.float32
    assert_close(got, model.eval()(x), np.float32)


def test_weights_are_one_task():
    x = da.ones((8, 2, 16, 16), chunks=(2, 2, 8, 8))
    w = np.ones((3, 2, 3, 3))
    graph = dict(cd.conv2d(x, w, padding=1).__dask_graph__())
    weight_keys = [k for k in graph if str(k).startswith("ndarray-")]
    assert len(weight_keys) == 1  # one task, shared by the 16 output blocks


def test_threads_per_task_default_and_override(monkeypatch):
    import dask

    with cyconv.num_threads(4):
        with dask.config.set(num_workers=2):
            assert cd.default_threads_per_task() == 2
        with dask.config.set(num_workers=8):
            assert cd.default_threads_per_task() == 1
    monkeypatch.setenv("CYCONV_DASK_THREADS", "3")
    assert cd.default_threads_per_task() == 3


def test_errors():
    with pytest.raises(ValueError, match="input has 2 channels, weight expects 3"):
        cd.conv2d(da.ones((2, 2, 8, 8)), np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="kernel_size 9 is larger than the padded input"):
        cd.max_pool2d(da.ones((2, 2, 8, 8)), 9)
    with pytest.raises(ValueError, match="SciPy's swap is not supported"):
        cd.correlate2d(da.ones((4, 4)), np.ones((5, 5)), "valid")


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=40)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_under_a_local_cluster(cluster_client):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 3, 20, 18))
    w = rng.standard_normal((4, 3, 3, 3))
    xd = da.from_array(x, chunks=(2, 3, 7, 5))
    got = cluster_client.compute(cd.conv2d(xd, w, stride=2, padding="same")).result()
    assert_close(got, cyconv.conv2d(x, w, stride=2, padding="same"), np.float64)
    got = cluster_client.compute(cd.avg_pool2d(xd, 3, 2, 1, ceil_mode=True)).result()
    assert_close(got, cyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True), np.float64)
    img = da.from_array(rng.standard_normal((40, 37)), chunks=(9, 11))
    k = rng.standard_normal((5, 5))
    got = cluster_client.compute(cd.correlate2d(img, k, "same", "symm")).result()
    assert_close(got, cyconv.signal.correlate2d(img.compute(), k, "same", "symm"),
                 np.float64)
    # inside a task, cyconv's threads times the cluster's task slots fit the cores
    per_task = cluster_client.submit(cd.default_threads_per_task, pure=False).result()
    slots = sum(cluster_client.nthreads().values())
    cpus = len(__import__("os").sched_getaffinity(0))
    assert per_task >= 1 and per_task * slots <= max(cpus, slots)


def test_big_image_example_small(tmp_path):
    from cyconv.examples import big_image

    res = big_image.run(size=700, k=7, band=64, folder=str(tmp_path), progress=False,
                        log=lambda *a: None)
    assert res["max_abs_diff"] <= 1e-6
    out = np.load(tmp_path / "filtered.npy", mmap_mode="r")
    img = np.load(tmp_path / "image.npy")
    assert_close(np.asarray(out[:50, -50:]),
                 cyconv.signal.correlate2d(img, big_image._kernel(7), "same", "symm")
                 [:50, -50:], np.float32)
