"""locally_connected2d (+ backward) and conv2d_matrix."""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random, to_last

LC = [  # (N, C, H, W, C_out, (kh, kw), stride, padding, dilation)
    (2, 3, 7, 6, 4, (3, 3), 1, 1, 1),
    (3, 2, 9, 8, 2, (3, 2), (2, 1), (1, 0), (1, 2)),
    (1, 1, 6, 6, 3, (2, 2), 2, 0, 1),
    (33, 2, 5, 4, 3, (3, 3), 1, 1, 1),  # many samples: several blocks
]


def _t(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", LC)
def test_locally_connected_matches_reference(case, dtype, channels_last, monkeypatch):
    N, C, H, W, K, k, s, p, d = case
    if N > 30:  # force blocks of a few samples
        from cyconv import _workspace
        monkeypatch.setattr(_workspace, "TILE_BYTES", 8 * (C * k[0] * k[1] + K) * 5)
    rng = np.random.default_rng(N)
    pads = (_t(p)[0], _t(p)[0]), (_t(p)[1], _t(p)[1])
    Ho, Wo = cyconv.conv_output_shape((H, W), k, s, p, d)
    x = random(rng, (N, C, H, W), np.float64)
    w = random(rng, (Ho, Wo, K, C, *k), np.float64)
    b = random(rng, (K, Ho, Wo), np.float64)
    y = ref.locally_connected2d(x, w, b, _t(s), pads, _t(d))
    gy = random(rng, y.shape, np.float64)
    gx, gw, gb = ref.locally_connected2d_backward(gy, x, w, _t(s), pads, _t(d))
    lay = to_last if channels_last else (lambda a: a)
    kw = dict(stride=s, padding=p, dilation=d, channels_last=channels_last)
    assert_close(cyconv.locally_connected2d(lay(x).astype(dtype), w.astype(dtype),
                                            b.astype(dtype), **kw), lay(y), dtype, "forward")
    g = cyconv.locally_connected2d_backward(lay(gy).astype(dtype), lay(x).astype(dtype),
                                            w.astype(dtype), **kw)
    assert_close(g.input, lay(gx), dtype, "grad input")
    assert_close(g.weight, gw, dtype, "grad weight")
    assert_close(g.bias, gb, dtype, "grad bias")


def test_locally_connected_with_shared_weights_is_conv2d():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    Ho, Wo = cyconv.conv_output_shape((8, 7), 3, 2, 1)
    shared = np.broadcast_to(w, (Ho, Wo, *w.shape))
    assert_close(cyconv.locally_connected2d(x, shared, None, 2, 1),
                 cyconv.conv2d(x, w, None, 2, 1), np.float64)


def test_locally_connected_errors_and_threads():
    x = np.ones((2, 3, 6, 6))
    with pytest.raises(ValueError, match="weight must have 6 dimensions"):
        cyconv.locally_connected2d(x, np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"weight has 3x3 output positions, but .* give 4x4"):
        cyconv.locally_connected2d(x, np.ones((3, 3, 2, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 4, 4\)"):
        cyconv.locally_connected2d(x, np.ones((4, 4, 2, 3, 3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="input has 3 channels, weight expects 2"):
        cyconv.locally_connected2d(x, np.ones((4, 4, 2, 2, 3, 3)))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 9, 9))
    w = rng.standard_normal((7, 7, 4, 3, 3, 3))
    runs = []
    for n in (1, 2):
        with cyconv.num_threads(n):
            y = cyconv.locally_connected2d(x, w)
            runs.append((y, *cyconv.locally_connected2d_backward(y, x, w)))
    for a, c in zip(*runs):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("C, H, W, K, k, s, p, d, g", [
    (3, 7, 6, 4, (3, 3), 1, 1, 1, 1),
    (4, 9, 8, 6, (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 2), 2),
    (2, 5, 5, 2, (2, 2), 2, "same", 1, 2),
    (3, 6, 7, 3, (1, 1), 1, 0, 1, 3),
    (2, 8, 8, 4, (5, 5), 3, 2, 1, 1),
])
def test_conv2d_matrix(C, H, W, K, k, s, p, d, g):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((K, C // g, *k))
    x = rng.standard_normal((3, C, H, W))
    M = cyconv.conv2d_matrix(w, (C, H, W), s, p, d, g)
    y = cyconv.conv2d(x, w, None, s, p, d, g)
    assert M.shape == (y[0].size, x[0].size)
    for n in range(3):
        assert_close(M @ x[n].ravel(), y[n].ravel(), np.float64)
    # non-zeros per row: the receptive field's weights, less the padding taps
    ones = cyconv.conv2d(np.ones((1, C, H, W)), np.ones_like(w), None, s, p, d, g)
    assert np.array_equal(np.diff(M.indptr), ones[0].ravel().astype(int))
    assert np.diff(M.indptr).max() <= C // g * k[0] * k[1]


def test_conv2d_matrix_keeps_structural_zeros_and_errors():
    w = np.zeros((2, 1, 3, 3))
    M = cyconv.conv2d_matrix(w, (1, 4, 4))
    assert M.nnz == 2 * 2 * 2 * 9
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        cyconv.conv2d_matrix(w, (4, 4))
    with pytest.raises(ValueError, match="input has 2 channels, weight expects 1"):
        cyconv.conv2d_matrix(w, (2, 4, 4))
