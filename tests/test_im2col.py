"""im2col / col2im against the reference and torch's unfold / fold."""
import numpy as np
import pytest

import cyconv
import reference as ref
from conftest import assert_close, random, to_first, to_last

CASES = [  # (N, C, H, W, kernel, stride, padding, dilation)
    (2, 3, 7, 6, (3, 3), 1, 1, 1),
    (1, 2, 9, 8, (2, 3), (2, 1), (1, 0), 1),
    (2, 1, 10, 9, (3, 3), 3, 2, 2),
    (1, 3, 5, 5, (5, 5), 1, 0, 1),
    (2, 2, 8, 7, (3, 2), 2, ((0, 2), (1, 0)), (1, 2)),
    (1, 2, 6, 7, (1, 1), 1, 0, 1),
]


def _pairs(case):
    N, C, H, W, k, s, p, d = case
    if isinstance(p, int):
        return ((p, p), (p, p))
    return tuple((v, v) if isinstance(v, int) else v for v in p)


def _t(v):
    return (v, v) if isinstance(v, int) else v


def _last_cols(cols, C, kk):
    """(N, C*kk, L) rows (c, i, j) -> (N, L, kk*C) columns (i, j, c)."""
    N, _, L = cols.shape
    return np.ascontiguousarray(cols.reshape(N, C, kk, L).transpose(0, 3, 2, 1)
                                .reshape(N, L, kk * C))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_im2col_col2im_match_reference(case, dtype, channels_last):
    N, C, H, W, k, s, p, d = case
    rng = np.random.default_rng(0)
    x = random(rng, (N, C, H, W), dtype)
    pads = _pairs(case)
    cols = ref.im2col(x, k, _t(s), pads, _t(d))
    kk = k[0] * k[1]
    if channels_last:
        got = cyconv.im2col(to_last(x), k, s, p, d, channels_last=True)
        assert_close(got, _last_cols(cols, C, kk), dtype, "im2col")
    else:
        assert_close(cyconv.im2col(x, k, s, p, d), cols, dtype, "im2col")
    c = random(rng, cols.shape, dtype)
    back = ref.col2im(c, (H, W), k, _t(s), pads, _t(d))
    if channels_last:
        got = cyconv.col2im(_last_cols(c, C, kk), (H, W), k, s, p, d, channels_last=True)
        assert_close(got, to_last(back), dtype, "col2im")
    else:
        assert_close(cyconv.col2im(c, (H, W), k, s, p, d), back, dtype, "col2im")


@pytest.mark.parametrize("case", [c for c in CASES if not isinstance(c[6], tuple)
                                  or all(isinstance(v, int) for v in c[6])])
def test_matches_torch_unfold_fold(case):
    torch = pytest.importorskip("torch")
    N, C, H, W, k, s, p, d = case
    x = random(np.random.default_rng(1), (N, C, H, W), np.float64)
    unf = torch.nn.functional.unfold(torch.tensor(x), k, dilation=d, padding=p, stride=s)
    assert_close(cyconv.im2col(x, k, s, p, d), unf.numpy(), np.float64, "unfold")
    cols = unf.numpy() * 1.5 + 1
    fold = torch.nn.functional.fold(torch.tensor(cols), (H, W), k, dilation=d, padding=p,
                                    stride=s)
    assert_close(cyconv.col2im(cols, (H, W), k, s, p, d), fold.numpy(), np.float64, "fold")


def test_col2im_is_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for any x, c."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 8))
    cols = cyconv.im2col(x, (3, 2), 2, 1, (2, 1))
    c = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * c)
    rhs = np.sum(x * cyconv.col2im(c, (9, 8), (3, 2), 2, 1, (2, 1)))
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_inputs_unchanged_and_odd_layouts():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7))
    expected = cyconv.im2col(x, 3, padding=1)
    f = np.asfortranarray(x)
    f.flags.writeable = False
    before = f.copy()
    assert np.array_equal(cyconv.im2col(f, 3, padding=1), expected)
    assert np.array_equal(f, before)
    c = expected[:, :, ::-1].copy()[:, :, ::-1]
    assert np.array_equal(cyconv.col2im(c, (6, 7), 3, padding=1),
                          cyconv.col2im(expected, (6, 7), 3, padding=1))
