"""Every invalid argument raises ValueError/TypeError naming it, before any work,
and leaves the inputs untouched."""
import numpy as np
import pytest

import cyconv

X = np.arange(2 * 3 * 10 * 10, dtype=np.float32).reshape(2, 3, 10, 10) / 100
W = np.ones((4, 3, 3, 3), np.float32)


def _raises(exc, match, fn, *args, **kwargs):
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
    for a, a0 in zip(arrays, before):
        assert a.dtype == a0.dtype and a.tobytes() == a0.tobytes()


def test_wrong_input_ndim():
    _raises(ValueError, r"input must have 4 dimensions \(N, C, H, W\), got shape \(3, 10, 10\)",
            cyconv.conv2d, X[0], W)
    _raises(ValueError, r"input must have 4 dimensions \(N, H, W, C\)",
            cyconv.conv2d, X[0], W, channels_last=True)


def test_wrong_weight_ndim():
    _raises(ValueError, r"weight must have 4 dimensions \(C_out, C_in // groups, kH, kW\), "
            r"got shape \(4, 3, 3\)", cyconv.conv2d, X, W[..., 0])


def test_channel_mismatch():
    w = np.ones((4, 4, 3, 3), np.float32)
    _raises(ValueError, r"input has 3 channels, weight expects 4 \(C_in // groups = 4, "
            r"groups = 1\)", cyconv.conv2d, X, w)
    _raises(ValueError, r"input has 3 channels, weight expects 4",
            cyconv.conv2d, np.moveaxis(X, 1, -1), w, channels_last=True)


def test_groups_do_not_divide():
    x = np.ones((1, 6, 5, 5))
    _raises(ValueError, r"groups=4 does not divide the input's 6 channels",
            cyconv.conv2d, x, np.ones((4, 1, 3, 3)), groups=4)
    _raises(ValueError, r"groups=2 does not divide the weight's 5 output channels",
            cyconv.conv2d, x, np.ones((5, 3, 3, 3)), groups=2)


@pytest.mark.parametrize("name", ["stride", "dilation", "groups"])
@pytest.mark.parametrize("value", [0, -1, (1, 0)])
def test_non_positive_hyperparameters(name, value):
    if name == "groups" and isinstance(value, tuple):
        value = -2
    _raises(ValueError, rf"{name} must be positive, got {value!r}".replace("(", r"\(")
            .replace(")", r"\)"), cyconv.conv2d, X, W, **{name: value})


def test_zero_kernel():
    _raises(ValueError, r"weight has shape \(4, 3, 0, 3\); every kernel size",
            cyconv.conv2d, X, np.ones((4, 3, 0, 3), np.float32))


@pytest.mark.parametrize("value", [1.5, "2", None, True])
def test_non_integer_hyperparameters(value):
    _raises(TypeError, r"stride must be an int or a tuple of ints",
            cyconv.conv2d, X, W, stride=value)


def test_wrong_tuple_length():
    _raises(ValueError, r"stride must be an int or a tuple of 2 ints, got \(1, 2, 3\)",
            cyconv.conv2d, X, W, stride=(1, 2, 3))


@pytest.mark.parametrize("nd", [2, 3])
def test_one_element_tuples_count_as_an_int(nd):
    # PyTorch takes stride=(2,) for stride=2 in every dimension (and an empty
    # stride as the omitted one in pooling); cyconv takes them the same way.
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 3) + (7,) * nd)
    w = rng.standard_normal((4, 3) + (3,) * nd)
    conv = getattr(cyconv, f"conv{nd}d")
    np.testing.assert_array_equal(conv(x, w, None, (2,), [1], (2,)), conv(x, w, None, 2, 1, 2))
    grads = getattr(cyconv, f"conv{nd}d_backward")(
        np.ones((2, 4) + (3,) * nd), x, w, [2], (1,), (2,))
    want = getattr(cyconv, f"conv{nd}d_backward")(np.ones((2, 4) + (3,) * nd), x, w, 2, 1, 2)
    for g, g0 in zip(grads, want):
        np.testing.assert_array_equal(g, g0)
    convt = getattr(cyconv, f"conv_transpose{nd}d")
    wt = rng.standard_normal((3, 2) + (3,) * nd)
    np.testing.assert_array_equal(convt(x, wt, None, (2,), (1,), (1,), 1, (2,)),
                                  convt(x, wt, None, 2, 1, 1, 1, 2))
    for pool in ("max_pool", "avg_pool"):
        fn = getattr(cyconv, f"{pool}{nd}d")
        np.testing.assert_array_equal(fn(x, (3,), (), (1,)), fn(x, 3, None, 1))
        np.testing.assert_array_equal(fn(x, [3], [2], [1], [1]), fn(x, 3, 2, 1, 1))
    lp = getattr(cyconv, f"lp_pool{nd}d")
    np.testing.assert_array_equal(lp(np.abs(x), 2, (2,), ()), lp(np.abs(x), 2, 2))
    assert cyconv.conv_output_shape((7,) * nd, (3,), (2,), (1,)) == (4,) * nd
    _raises(ValueError, rf"stride must be an int or a tuple of {nd} ints, got \(1, 2, 3, 4\)",
            conv, x, w, stride=(1, 2, 3, 4))
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = torch.from_numpy(x)
    np.testing.assert_allclose(conv(x, w, None, (2,), (1,), (2,)),
                               getattr(F, f"conv{nd}d")(t, torch.from_numpy(w), None, (2,),
                                                        (1,), (2,)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(getattr(cyconv, f"avg_pool{nd}d")(x, (3,), (), (1,)),
                               getattr(F, f"avg_pool{nd}d")(t, (3,), (), (1,)).numpy(),
                               rtol=1e-12)
    np.testing.assert_array_equal(getattr(cyconv, f"max_pool{nd}d")(x, (3,), (), (1,)),
                                  getattr(F, f"max_pool{nd}d")(t, (3,), (), (1,)).numpy())


def test_a_size_is_not_taken_from_one_element():
    # an output size names every dim (PyTorch's fold refuses one value too)
    cols = cyconv.im2col(X, 3)
    _raises(ValueError, r"col2im: output_size must be an int or a tuple of 2 ints, "
            r"got \(10,\) \(1 values\)", cyconv.col2im, cols, (10,), 3)


@pytest.mark.parametrize("padding", [-1, (0, -2), ((1, -1), (0, 0))])
def test_negative_padding(padding):
    _raises(ValueError, r"padding must be non-negative", cyconv.conv2d, X, W,
            padding=padding)


@pytest.mark.parametrize("padding", ["full", (1, 2, 3), ((1, 2, 3), (0, 0))])
def test_malformed_padding(padding):
    _raises(ValueError, r"padding", cyconv.conv2d, X, W, padding=padding)


def test_kernel_larger_than_padded_input():
    w = np.ones((4, 3, 13, 3), np.float32)
    _raises(ValueError, r"kernel_size 13 is larger than the padded input height 12 "
            r"\(input 10 \+ padding 1 \+ 1\)", cyconv.conv2d, X, w, padding=1)
    _raises(ValueError, r"kernel_size 3 \(dilated to 11\) is larger than the padded "
            r"input width 10", cyconv.conv2d, X, W, dilation=(1, 5))
    _raises(ValueError, r"larger than the padded input",
            cyconv.conv2d_backward, np.ones((2, 4, 1, 1), np.float32), X, w)


def test_bias_shape():
    _raises(ValueError, r"bias must have shape \(4,\) to match the weight's 4 output "
            r"channels, got shape \(3,\)", cyconv.conv2d, X, W, np.ones(3, np.float32))
    _raises(ValueError, r"bias must have shape \(4,\)", cyconv.conv2d, X, W,
            np.ones((4, 1), np.float32))


@pytest.mark.parametrize("bad", [X.astype(np.complex64), X.astype(object), X.astype("U3")])
def test_unsupported_dtypes(bad):
    _raises(TypeError, rf"input has dtype {bad.dtype}; expected a real dtype",
            cyconv.conv2d, bad, W)


def test_mixed_float32_float64():
    _raises(TypeError, r"mixed float32 and float64 operands \(input is float32, "
            r"weight is float64\)", cyconv.conv2d, X, W.astype(np.float64))
    _raises(TypeError, r"bias is float64", cyconv.conv2d, X, W, np.zeros(4))
    _raises(TypeError, r"grad_output is float64",
            cyconv.conv2d_backward, np.zeros((2, 4, 8, 8)), X, W)


def test_bad_out():
    good = np.zeros((2, 4, 8, 8), np.float32)
    _raises(ValueError, r"out has shape \(2, 4, 8, 9\), expected \(2, 4, 8, 8\)",
            cyconv.conv2d, X, W, out=np.empty((2, 4, 8, 9), np.float32))
    _raises(ValueError, r"out has dtype float64, expected float32",
            cyconv.conv2d, X, W, out=good.astype(np.float64))
    _raises(ValueError, r"out must be C-contiguous",
            cyconv.conv2d, X, W, out=np.asfortranarray(good))
    ro = good.copy()
    ro.flags.writeable = False
    _raises(ValueError, r"out is read-only", cyconv.conv2d, X, W, out=ro)
    _raises(ValueError, r"out must be a numpy.ndarray, got list",
            cyconv.conv2d, X, W, out=good.tolist())
    x = np.ones((1, 4, 10, 10), np.float32)
    _raises(ValueError, r"out shares memory with input",
            cyconv.conv2d, x, np.ones((4, 4, 1, 1), np.float32), out=x)


def test_strict_shows_the_arithmetic():
    x = np.ones((1, 1, 10, 10))
    w = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError) as err:
        cyconv.conv2d(x, w, stride=2, strict=True)
    msg = str(err.value)
    assert "(10 - 3 + 0) / 2 + 1 = 4.5" in msg
    assert "height" in msg
    assert "The last 1 row of the padded input would be ignored" in msg
    assert "(0, 1)" in msg  # the nearest padding that fits
    # that suggestion really fits
    assert cyconv.conv2d(x, w, stride=2, padding=((0, 1), (0, 1)), strict=True).shape \
        == (1, 1, 5, 5)
    # exact configurations pass strict, and strict=False floors as documented
    assert cyconv.conv2d(x, w, stride=1, strict=True).shape == (1, 1, 8, 8)
    assert cyconv.conv2d(x, w, stride=2).shape == (1, 1, 4, 4)


def test_strict_width_and_symmetric_padding():
    x = np.ones((1, 1, 9, 14))
    w = np.ones((1, 1, 3, 5))
    with pytest.raises(ValueError) as err:
        cyconv.conv2d(x, w, stride=(2, 3), padding=1, strict=True)
    msg = str(err.value)
    assert "width" in msg and "(14 - 5 + 2*1) / 3 + 1 = 4.66667" in msg
    assert "The last 2 columns" in msg


def test_grad_output_shape():
    _raises(ValueError, r"grad_output has shape \(2, 4, 7, 8\), expected \(2, 4, 8, 8\)",
            cyconv.conv2d_backward, np.ones((2, 4, 7, 8), np.float32), X, W)


def test_needs():
    gy = np.ones((2, 4, 8, 8), np.float32)
    _raises(ValueError, r"needs must name gradients from .*got 'weights'",
            cyconv.conv2d_backward, gy, X, W, needs=("weights",))
    _raises(TypeError, r"needs must be a tuple", cyconv.conv2d_backward, gy, X, W, needs=3)


def test_padding_mode():
    _raises(ValueError, r"padding_mode must be one of 'zeros', 'reflect', 'replicate', "
            r"'circular', got 'mirror'", cyconv.conv2d, X, W, padding_mode="mirror")
    _raises(ValueError, r"padding_mode='reflect' needs padding smaller than the input "
            r"height 10, got padding \(10, 10\)", cyconv.conv2d, X, W, padding=10,
            padding_mode="reflect")
    _raises(ValueError, r"padding_mode='circular' needs padding at most the input",
            cyconv.conv2d, X, W, padding=11, padding_mode="circular")


def test_channels_last_must_be_bool():
    _raises(TypeError, r"channels_last must be a bool", cyconv.conv2d, X, W,
            channels_last="yes")


def test_not_array_like():
    _raises(TypeError, r"input must be array-like|input has dtype object",
            cyconv.conv2d, [[1, 2], [3]], W)


def test_im2col_errors():
    _raises(ValueError, r"im2col: input must have 4 dimensions", cyconv.im2col, X[0], 3)
    _raises(ValueError, r"im2col: kernel_size must be positive", cyconv.im2col, X, 0)
    _raises(ValueError, r"kernel_size 11 is larger than the padded input height 10",
            cyconv.im2col, X, 11)
    cols = cyconv.im2col(X, 3)
    _raises(ValueError, r"col2im: cols has 64 positions, expected L = 9 \* 9 = 81",
            cyconv.col2im, cols, (11, 11), 3)
    _raises(ValueError, r"col2im: cols has 27 patch entries per position, expected a "
            r"multiple of kh\*kw = 4", cyconv.col2im, cols, (10, 10), 2)
    _raises(ValueError, r"col2im: output_size must be positive",
            cyconv.col2im, cols, (0, 10), 3)
    _raises(TypeError, r"col2im: cols has dtype complex128",
            cyconv.col2im, cols.astype(complex), (10, 10), 3)


# conv_geometry keeps results for plain arguments (see _params._GEOMETRIES):
# a value that equals a plain one but has another type must still be checked.
@pytest.mark.parametrize("name, bad, exc", [
    ("stride", True, TypeError), ("stride", 1.0, TypeError), ("stride", (1, True), TypeError),
    ("padding", 1.0, TypeError), ("padding", (1, 1.0), TypeError),
    ("padding", ((1, 1), (1.0, 1)), TypeError),
    ("dilation", True, TypeError), ("groups", True, TypeError), ("groups", 1.0, TypeError),
    ("channels_last", 0, TypeError),
])
def test_errors_not_hidden_by_equal_plain_arguments(name, bad, exc):
    plain = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1,
             "channels_last": False, "strict": False}
    if isinstance(bad, tuple) and name == "padding" and isinstance(bad[0], tuple):
        plain[name] = ((1, 1), (1, 1))
    elif isinstance(bad, tuple):
        plain[name] = (1, 1)
    y = cyconv.conv2d(X, W, **plain)   # the plain value, now remembered
    assert y.shape == (2, 4, 10, 10)
    assert y.shape == cyconv.conv2d(X, W, **plain).shape
    _raises(exc, name, cyconv.conv2d, X, W, **dict(plain, **{name: bad}))


def test_geometry_cache_matches_and_is_bounded():
    from cyconv import _params as P
    P._GEOMETRIES.clear()
    for n in range(1, P._GEOMETRIES_MAX + 40):
        x = np.empty((1, 3, 4 + n % 7, 5 + n // 7), np.float32)
        args = ("conv2d", 2, x, W, None, (1, 2), ((1, 0), (2, 1)), 1, 1)
        geo = P.conv_geometry(*args)
        assert geo is P.conv_geometry(*args)
        assert geo == P._conv_geometry(*args, padding_mode="zeros", channels_last=False,
                                       strict=False)
        assert len(P._GEOMETRIES) <= P._GEOMETRIES_MAX
    with pytest.raises(ValueError, match="divide"):   # errors are not remembered
        P.conv_geometry("conv2d", 2, X, W, None, 1, 0, 1, 2)
    with pytest.raises(ValueError, match="divide"):
        P.conv_geometry("conv2d", 2, X, W, None, 1, 0, 1, 2)
