"""cyconv.nn: whole-network gradients, PyTorch interoperability, losses,
optimisers, state, summary and the digits example."""
import math
import os

import numpy as np
import pytest

import cyconv
from cyconv import nn
from conftest import assert_close


def net2d(with_local=True, dtype=np.float64):
    """Every 2-D layer type in one Sequential: 2x2x8x8 -> 2x4."""
    layers = [nn.Conv2d(2, 3, 3, padding=1, dtype=dtype), nn.BatchNorm2d(3, dtype=dtype),
              nn.LeakyReLU(0.1), nn.MaxPool2d(2),
              nn.ConvTranspose2d(3, 2, 2, stride=2, dtype=dtype), nn.Tanh()]
    if with_local:
        layers += [nn.LocallyConnected2d(2, 2, (8, 8), 3, padding=1, dtype=dtype)]
    layers += [nn.Sigmoid(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d((3, 2)), nn.ReLU(),
               nn.Dropout(0.25), nn.Flatten(), nn.Linear(12, 4, dtype=dtype)]
    return nn.Sequential(*layers)


def net1d(dtype=np.float64):
    return nn.Sequential(nn.Conv1d(2, 3, 3, stride=1, padding=2, dtype=dtype),
                         nn.MaxPool1d(2), nn.ConvTranspose1d(3, 2, 3, stride=2, dtype=dtype),
                         nn.AvgPool1d(3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(2 * 3, 3, dtype=dtype))


def net3d(dtype=np.float64):
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1, dtype=dtype), nn.MaxPool3d(2),
                         nn.ConvTranspose3d(2, 2, 2, stride=2, dtype=dtype),
                         nn.AvgPool3d(2), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(2 * 8, 3, dtype=dtype))


NETS = {"2d": (net2d, (2, 2, 8, 8)), "1d": (net1d, (2, 2, 9)), "3d": (net3d, (2, 1, 4, 4, 4))}


def _loss(net, x, G):
    nn.seed(123)  # the same dropout mask on every evaluation
    return float(np.sum(net(x) * G))


@pytest.mark.parametrize("name", list(NETS))
def test_whole_network_gradients_match_finite_differences(name):
    make, shape = NETS[name]
    nn.seed(0)
    net = make()
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    nn.seed(123)
    y = net(x)
    G = rng.standard_normal(y.shape)
    net.zero_grad()
    gx = net.backward(G)
    eps = 1e-6
    checks = [("input", x, gx)] + [(n, p, p.grad) for n, p in net.named_parameters()]
    for label, arr, grad in checks:
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = _loss(net, x, G)
            flat[i] = old - eps
            down = _loss(net, x, G)
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - grad.reshape(-1)[i]) <= 1e-5 * max(1.0, abs(numeric)), \
                (label, i, numeric, grad.reshape(-1)[i])


def _torch_net(torch, name):
    tn = torch.nn
    if name == "2d":
        return tn.Sequential(tn.Conv2d(2, 3, 3, padding=1), tn.BatchNorm2d(3),
                             tn.LeakyReLU(0.1), tn.MaxPool2d(2),
                             tn.ConvTranspose2d(3, 2, 2, stride=2), tn.Tanh(), tn.Sigmoid(),
                             tn.AvgPool2d(2), tn.AdaptiveAvgPool2d((3, 2)), tn.ReLU(),
                             tn.Dropout(0.25), tn.Flatten(), tn.Linear(12, 4))
    if name == "1d":
        return tn.Sequential(tn.Conv1d(2, 3, 3, stride=1, padding=2), tn.MaxPool1d(2),
                             tn.ConvTranspose1d(3, 2, 3, stride=2), tn.AvgPool1d(3), tn.Tanh(),
                             tn.Flatten(), tn.Linear(2 * 3, 3))
    return tn.Sequential(tn.Conv3d(1, 2, 3, padding=1), tn.MaxPool3d(2),
                         tn.ConvTranspose3d(2, 2, 2, stride=2), tn.AvgPool3d(2), tn.Sigmoid(),
                         tn.Flatten(), tn.Linear(2 * 8, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(NETS))
def test_pytorch_weights_load_and_gradients_match(name, dtype):
    torch = pytest.importorskip("torch")
    make, shape = NETS[name]
    torch.manual_seed(0)
    tnet = _torch_net(torch, name).to(torch.float32 if dtype == np.float32 else torch.float64)
    state = {k: v.detach().numpy() for k, v in tnet.state_dict().items()}
    net = make(with_local=False, dtype=dtype) if name == "2d" else make(dtype=dtype)
    net.load_state_dict(state)  # PyTorch's names and shapes, unchanged
    tnet.eval()
    net.eval()  # dropout off; BatchNorm on running statistics
    for mode in ("eval", "train"):
        if mode == "train":  # BatchNorm on batch statistics; dropout stays off
            tnet.train()
            net.train()
            for m in tnet:
                if isinstance(m, torch.nn.Dropout):
                    m.eval()
            for m in net:
                if isinstance(m, nn.Dropout):
                    m.eval()
        x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        yt = tnet(xt)
        G = np.random.default_rng(3).standard_normal(tuple(yt.shape)).astype(dtype)
        yt.backward(torch.tensor(G))
        y = net(x)
        assert_close(y, yt.detach().numpy(), dtype, f"{mode} forward")
        net.zero_grad()
        assert_close(net.backward(G), xt.grad.numpy(), dtype, f"{mode} input grad")
        tgrads = dict(tnet.named_parameters())
        for pname, p in net.named_parameters():
            assert_close(p.grad, tgrads[pname].grad.numpy(), dtype, f"{mode} {pname}")
        tnet.zero_grad()
    tstate = tnet.state_dict()
    for k, v in net.state_dict().items():  # running statistics moved the same way
        if v.dtype.kind == "f":
            assert_close(v, tstate[k].numpy(), dtype, k)
        else:
            assert v.dtype == np.int64 and np.array_equal(v, tstate[k].numpy()), k


def test_parameter_names_shapes_and_init_like_pytorch():
    nn.seed(0)
    conv = nn.Conv2d(3, 8, (3, 5), groups=1)
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    assert conv.weight.shape == (8, 3, 3, 5) and conv.weight.dtype == np.float32
    bound = 1 / math.sqrt(3 * 3 * 5)
    assert np.abs(conv.weight).max() <= bound and np.abs(conv.weight).max() > 0.8 * bound
    t = nn.ConvTranspose2d(4, 6, 3, groups=2)
    assert t.weight.shape == (4, 3, 3, 3)
    assert np.abs(t.weight).max() <= 1 / math.sqrt(3 * 9)
    lin = nn.Linear(10, 3, bias=False)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    bn = nn.BatchNorm2d(4)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2, 2))
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                      "2.bias"]
    nn.seed(5)
    a = nn.Conv2d(2, 2, 3).weight.copy()
    nn.seed(5)
    assert np.array_equal(nn.Conv2d(2, 2, 3).weight, a)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batchnorm_momentum_none_is_the_cumulative_average(channels_last):
    """momentum=None (PyTorch's cumulative moving average): after t batches the
    running mean and variance are the plain means of the t batch means and
    unbiased batch variances."""
    rng = np.random.default_rng(7)
    bn = nn.BatchNorm2d(3, momentum=None, channels_last=channels_last, dtype=np.float64)
    axes = (0, 1, 2) if channels_last else (0, 2, 3)
    batches = [rng.standard_normal((4, 5, 6, 3) if channels_last else (4, 3, 5, 6)) * (i + 1)
               + i for i in range(3)]
    for x in batches:
        bn(x)
    assert int(bn.num_batches_tracked) == 3
    assert_close(bn.running_mean, np.mean([x.mean(axis=axes) for x in batches], axis=0),
                 np.float64)
    assert_close(bn.running_var,
                 np.mean([x.var(axis=axes, ddof=1) for x in batches], axis=0), np.float64)
    torch = pytest.importorskip("torch")
    tb = torch.nn.BatchNorm2d(3, momentum=None).double()
    for x in batches:
        tb(torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if channels_last else x))
    assert_close(bn.running_mean, tb.running_mean.numpy(), np.float64)
    assert_close(bn.running_var, tb.running_var.numpy(), np.float64)


def test_batchnorm_needs_more_than_one_value_per_channel():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.ones((1, 3, 1, 1), np.float32))
    bn.eval()   # running statistics: one value is fine
    assert bn(np.ones((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batchnorm_refuses_another_channel_count(channels_last):
    # the statistics of 1 or 4 channels would broadcast against 3 features
    # (a (2, 3, 5, 5) output from a (2, 1, 5, 5) input) instead of failing
    bn = nn.BatchNorm2d(3, channels_last=channels_last)
    for c in (1, 4):
        x = np.ones((2, 5, 5, c) if channels_last else (2, c, 5, 5), np.float32)
        for mode in ("train", "eval"):
            getattr(bn, mode)()
            with pytest.raises(ValueError, match=f"BatchNorm2d: input has {c} channels, "
                                                 f"expected num_features = 3"):
                bn(x)
    assert bn.running_mean.tolist() == [0, 0, 0] and int(bn.num_batches_tracked) == 0


def test_batchnorm_on_an_empty_batch(recwarn):
    # As PyTorch: an empty output, running statistics untouched (the batch is
    # counted), no gradient; no NaN in the running statistics, no warnings.
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    x = np.zeros((0, 3, 4, 4))
    y = bn(x)
    assert y.shape == x.shape and y.dtype == np.float64
    g = bn.backward(np.ones_like(y))
    assert g.shape == x.shape
    assert bn.running_mean.tolist() == [0, 0, 0] and bn.running_var.tolist() == [1, 1, 1]
    assert int(bn.num_batches_tracked) == 1
    assert bn.weight.grad.tolist() == [0, 0, 0] and bn.bias.grad.tolist() == [0, 0, 0]
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    torch = pytest.importorskip("torch")
    tb = torch.nn.BatchNorm2d(3).double()
    tx = torch.zeros((0, 3, 4, 4), dtype=torch.float64, requires_grad=True)
    tb(tx).sum().backward()
    for name, v in tb.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[name], v.numpy(), err_msg=name)


@pytest.mark.parametrize("make", [lambda: nn.BatchNorm2d(3, dtype=np.float64), nn.ReLU,
                                  nn.Sigmoid, nn.Tanh, lambda: nn.LeakyReLU(0.2),
                                  lambda: nn.Dropout(0.5)])
def test_integer_input_is_computed_in_float64(make, recwarn):
    # The ops' dtype rule: an integer input gives what its float64 values give
    # (it was truncated back to integers by BatchNorm2d, Sigmoid and LeakyReLU,
    # and Dropout divided by int(1 - p) = 0).
    x = np.arange(-12, 12).reshape(2, 3, 2, 2)
    a, b = make(), make()
    nn.seed(3)
    got = a(x)
    nn.seed(3)
    want = b(x.astype(np.float64))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(a.backward(np.ones_like(got)), b.backward(np.ones_like(want)))
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    with pytest.raises(TypeError, match="has dtype complex128; expected a real dtype"):
        make()(x.astype(complex))


@pytest.mark.parametrize("cls, kwargs", [(nn.ReLU, {}), (nn.LeakyReLU, {"negative_slope": 0.2}),
                                         (nn.Dropout, {"p": 0.5})])
def test_inplace_layers_overwrite_their_input(cls, kwargs):
    """inplace=True, as in PyTorch: the input array holds the result, and
    backward gives what the out-of-place layer gives (the signs are taken
    before the overwrite)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 5))
    nn.seed(3)
    plain = cls(**kwargs)
    want = plain(x.copy())
    want_grad = plain.backward(g)
    nn.seed(3)   # the same dropout mask
    layer = cls(**kwargs, inplace=True)
    y = layer(x)
    assert y is x and np.array_equal(x, want)
    assert np.array_equal(layer.backward(g), want_grad)
    ro = rng.standard_normal(3)
    ro.flags.writeable = False
    before = ro.copy()
    out = cls(**kwargs, inplace=True)(ro)   # read-only: a new array
    assert out is not ro and np.array_equal(ro, before)


def test_inplace_relu_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 4))
    for ours, theirs in ((nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
                         (nn.LeakyReLU(0.3, inplace=True), torch.nn.LeakyReLU(0.3, inplace=True))):
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt * 1)   # torch refuses in-place on a leaf
        yt.backward(torch.tensor(g))
        xo = x.copy()
        y = ours(xo)
        assert y is xo
        assert_close(y, yt.detach().numpy(), np.float64)
        assert_close(ours.backward(g), xt.grad.numpy(), np.float64)


def test_activations_pass_nan_gradients_as_pytorch():
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, -1.0, 2.0, 0.0, -np.inf, np.inf])
    g = np.arange(1.0, 7.0)
    for ours, fn in ((nn.ReLU(), torch.relu),
                     (nn.LeakyReLU(0.1), lambda t: torch.nn.functional.leaky_relu(t, 0.1))):
        xt = torch.tensor(x, requires_grad=True)
        yt = fn(xt)
        yt.backward(torch.tensor(g))
        np.testing.assert_array_equal(ours(x), yt.detach().numpy())
        np.testing.assert_array_equal(ours.backward(g), xt.grad.numpy())


def test_dropout_p_one_zeroes_everything():
    d = nn.Dropout(1.0)
    x = np.ones((3, 4), np.float32)
    assert np.array_equal(d(x), np.zeros_like(x)) and not np.isnan(d(x)).any()
    assert np.array_equal(d.backward(np.ones_like(x)), np.zeros_like(x))
    d.eval()
    assert d(x) is x or np.array_equal(d(x), x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        nn.Dropout(1.5)


def test_batchnorm_without_bias_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 3, 5, 6))
    g = rng.standard_normal((4, 3, 5, 6))
    ours = nn.BatchNorm2d(3, bias=False, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, bias=False).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.weight[...] = rng.standard_normal(3)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(np.asarray(ours.weight)))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    assert_close(ours(x), yt.detach().numpy(), np.float64)
    assert_close(ours.backward(g), xt.grad.numpy(), np.float64)
    assert_close(ours.weight.grad, theirs.weight.grad.numpy(), np.float64)
    assert ours.bias is None and [n for n, _ in ours.named_parameters()] == ["weight"]


@pytest.mark.parametrize("nd, spatial, k, stride, pad, dil", [
    (1, (7,), 4, 3, 1, 2), (2, (5, 6), 3, 2, 1, 1), (3, (3, 4, 2), 2, 2, 0, 1)])
def test_conv_transpose_output_size_picks_the_output_padding(nd, spatial, k, stride, pad,
                                                             dil):
    """forward(x, output_size) as PyTorch's: sizes from the smallest output to
    stride - 1 more; backward uses the padding that forward picked."""
    rng = np.random.default_rng(11)
    layer = getattr(nn, f"ConvTranspose{nd}d")(4, 6, k, stride=stride, padding=pad,
                                                dilation=dil, dtype=np.float64)
    x = rng.standard_normal((2, 4, *spatial))
    smallest = tuple((n - 1) * stride - 2 * pad + dil * (k - 1) + 1 for n in spatial)
    for extra in range(stride):
        size = tuple(v + extra for v in smallest)
        op = (extra,) * nd
        want = getattr(cyconv, f"conv_transpose{nd}d")(
            x, layer.weight, layer.bias, stride, pad, op, 1, dil)
        for request in (size, (2, 6, *size)):
            assert_close(layer(x, output_size=request), want, np.float64)
        g = rng.standard_normal(want.shape)
        want_grad = getattr(cyconv, f"conv_transpose{nd}d_backward")(
            g, x, layer.weight, stride, pad, op, 1, dil).input
        assert_close(layer.backward(g), want_grad, np.float64)
    with pytest.raises(ValueError, match="valid sizes range from"):
        layer(x, output_size=tuple(v + stride for v in smallest))
    with pytest.raises(ValueError, match=f"output_size must have {nd} or {nd + 2} elements"):
        layer(x, output_size=(1,) * (nd + 1))
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn, f"ConvTranspose{nd}d")(4, 6, k, stride=stride, padding=pad,
                                                      dilation=dil).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(np.asarray(layer.weight)))
        theirs.bias.copy_(torch.from_numpy(np.asarray(layer.bias)))
        size = tuple(v + stride - 1 for v in smallest)
        assert_close(layer(x, output_size=size),
                     theirs(torch.from_numpy(x), output_size=size).numpy(), np.float64)


def test_conv_transpose_output_size_channels_last():
    rng = np.random.default_rng(12)
    first = nn.ConvTranspose2d(3, 5, 3, stride=2, dtype=np.float64)
    last = nn.ConvTranspose2d(3, 5, 3, stride=2, channels_last=True, dtype=np.float64)
    last.load_state_dict(first.state_dict())
    x = rng.standard_normal((2, 3, 4, 5))
    want = first(x, output_size=(10, 12))
    got = last(x.transpose(0, 2, 3, 1), output_size=(2, 10, 12, 5))   # (N, H, W, C)
    assert_close(got, want.transpose(0, 2, 3, 1), np.float64)


def test_module_walks_and_slices_as_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(),
                         nn.Sequential(nn.Flatten(), nn.Linear(8, 3)), nn.Linear(3, 2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3)),
                                 torch.nn.Linear(3, 2))
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.modules()] == \
        [type(m).__name__ for m in theirs.modules()]
    seen = []
    assert ours.apply(lambda m: seen.append(type(m).__name__)) is ours
    order = []
    theirs.apply(lambda m: order.append(type(m).__name__))
    assert seen == order
    part = ours[1:3]
    assert isinstance(part, nn.Sequential) and len(part) == 2
    assert list(part.state_dict()) == list(theirs[1:3].state_dict()) == ["2.1.weight",
                                                                      "2.1.bias"]
    assert ours[-1] is ours[3]


def test_sequential_of_an_ordered_dict_names_its_layers():
    # PyTorch's Sequential(OrderedDict(...)): the names are the state_dict's,
    # the repr's and the summary's; a PyTorch model built so loads unchanged
    from collections import OrderedDict

    def layers(m):
        return OrderedDict([("conv1", m.Conv2d(1, 2, 3)), ("act", m.ReLU()),
                            ("pool", m.MaxPool2d(2)), ("flat", m.Flatten()),
                            ("fc", m.Linear(8, 3))])

    net = nn.Sequential(layers(nn))
    assert list(net.state_dict()) == ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"]
    assert "(conv1): Conv2d(1, 2" in repr(net) and "(fc): Linear(" in repr(net)
    rows = net.summary((1, 6, 6)).splitlines()
    assert rows[2].startswith("conv1: Conv2d") and rows[6].startswith("fc: Linear")
    assert list(net[1:3].state_dict()) == [] and "(pool): MaxPool2d" in repr(net[1:3])
    assert isinstance(net[0], nn.Conv2d) and len(net) == 5
    for bad, match in [(OrderedDict([("a.b", nn.ReLU())]), "without '.'"),
                       (OrderedDict([("", nn.ReLU())]), "non-empty string"),
                       (OrderedDict([("forward", nn.ReLU())]), "'forward' is taken"),
                       (OrderedDict([("a", np.ones(2))]), "layer a is ndarray")]:
        with pytest.raises((ValueError, TypeError), match=match):
            nn.Sequential(bad)
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(layers(torch.nn))
    net.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    assert_close(net(x), theirs(torch.from_numpy(x)).detach().numpy(), np.float32)


def test_load_state_dict_reports_keys_as_pytorch():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = net.state_dict()
    result = net.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    del state["1.bias"]
    state["extra"] = np.zeros(1)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["1.bias"] and unexpected == ["extra"]


def test_save_load_round_trip_exactly(tmp_path):
    nn.seed(0)
    net = net2d()
    net(np.random.default_rng(0).standard_normal((2, 2, 8, 8)))  # move BN statistics
    path = tmp_path / "model.npz"
    net.save(path)
    nn.seed(99)
    other = net2d().load(path)
    for (k, a), (k2, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and np.array_equal(a, b)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("CYCONV_EVIL", "/tmp/cyconv_evil"),))


def test_loading_a_pickle_raises_and_executes_nothing(tmp_path, monkeypatch):
    flag = tmp_path / "executed"
    monkeypatch.setenv("CYCONV_EVIL", str(flag))
    path = tmp_path / "evil.npz"
    np.savez(path, **{"0.weight": np.array([_Evil()], dtype=object)})
    with pytest.raises(ValueError, match="refusing to load pickled objects"):
        nn.Sequential(nn.Conv2d(1, 1, 1)).load(path)
    assert not flag.exists()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a cyconv model file"):
        nn.Sequential(nn.Conv2d(1, 1, 1)).load(tmp_path / "junk.npz")


def test_parameters_survive_pickling_for_worker_processes():
    import pickle

    nn.seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    net[0].weight.grad += 1
    copy = pickle.loads(pickle.dumps(net))
    x = np.ones((1, 1, 3, 3), np.float32)
    assert np.array_equal(copy(x), net(x))
    assert isinstance(copy[0].weight, nn.Parameter) and not copy[0].weight.grad.any()


def test_load_state_dict_errors():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    before = net.state_dict()
    for exc in (KeyError, ValueError):     # bad input: a ValueError (and a KeyError)
        with pytest.raises(exc, match=r"^load_state_dict: missing keys \['0.bias', "):
            net.load_state_dict({"0.weight": np.zeros((2, 3))})
    # a wrong entry is found before anything is copied: the module is unchanged
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    bad["1.weight"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"1.weight has shape \(3, 2\)"):
        net.load_state_dict(bad)
    bad["1.weight"] = np.zeros((2, 2), complex)
    with pytest.raises(TypeError, match=r"1.weight has dtype complex128"):
        net.load_state_dict(bad)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_batchnorm_state_without_num_batches_tracked_loads():
    # A checkpoint from before PyTorch 0.4.1 (or a plain dict, which has no
    # version metadata) has no num_batches_tracked; PyTorch loads it strictly
    # and keeps the module's own count.  So does cyconv.
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    net(np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32))
    state = {k: v for k, v in net.state_dict().items() if "num_batches" not in k}
    state["1.running_mean"] = np.full(3, 0.5, np.float32)
    other = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    assert other.load_state_dict(state) == ([], [])
    assert other[1].running_mean.tolist() == [0.5] * 3
    assert int(other[1].num_batches_tracked) == 0
    with pytest.raises(KeyError, match=r"missing keys \['1.running_var'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "1.running_var"})
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    result = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert int(theirs[1].num_batches_tracked) == 0


def test_losses_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    s = rng.standard_normal((6, 5)) * 3
    y = rng.integers(0, 5, 6)
    ce = nn.SoftmaxCrossEntropy()
    st = torch.tensor(s, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(st, torch.tensor(y))
    lt.backward()
    assert abs(ce.forward(s, y) - lt.item()) < 1e-12
    assert_close(ce.backward(), st.grad.numpy(), np.float64)
    hinge = nn.MulticlassHinge()
    st = torch.tensor(s, requires_grad=True)
    lt = torch.nn.functional.multi_margin_loss(st, torch.tensor(y)) * 5  # torch divides by C
    lt.backward()
    assert abs(hinge.forward(s, y) - lt.item()) < 1e-12
    assert_close(hinge.backward(), st.grad.numpy(), np.float64)
    with pytest.raises(ValueError, match="labels must lie in"):
        ce.forward(s, np.full(6, 5))


def test_svm_loss_worked_example():
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    loss = nn.MulticlassHinge().forward(scores, np.array([0, 1, 2]))
    assert abs(loss - (2.9 + 0 + 12.9) / 3) < 1e-12


OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_momentum_decay": ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_decay_betas": ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.9))),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_match_pytorch(name):
    torch = pytest.importorskip("torch")
    cls, kwargs = OPTIMIZERS[name]
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((3, 4))
    p = nn.Parameter(w0)
    tp = torch.tensor(w0, requires_grad=True)
    ours = getattr(nn, cls)([p], **kwargs)
    theirs = getattr(torch.optim, cls)([tp], **kwargs)
    for step in range(4):
        g = rng.standard_normal((3, 4))
        ours.zero_grad()
        p.grad += g
        ours.step()
        theirs.zero_grad()
        tp.grad = torch.tensor(g)
        theirs.step()
        assert_close(np.asarray(p), tp.detach().numpy(), np.float64, f"step {step}")


@pytest.mark.parametrize("cls, kwargs", [
    ("SGD", dict(lr=-0.1)), ("SGD", dict(lr=0.1, momentum=-0.5)),
    ("SGD", dict(lr=0.1, weight_decay=-1)), ("Adam", dict(lr=-1)), ("Adam", dict(eps=-1)),
    ("Adam", dict(betas=(1.0, 0.9))), ("Adam", dict(betas=(0.9, -0.1))),
    ("Adam", dict(weight_decay=-1))])
def test_optimizer_arguments_checked_as_pytorch(cls, kwargs):
    p = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"must be (>= 0|two numbers in \[0, 1\))"):
        getattr(nn, cls)([p], **kwargs)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError):
        getattr(torch.optim, cls)([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_zero_learning_rate_leaves_parameters():   # allowed, as in torch.optim
    for cls in ("SGD", "Adam"):
        p = nn.Parameter(np.ones(2))
        opt = getattr(nn, cls)([p], lr=0)
        p.grad += 1.0
        opt.step()
        assert np.array_equal(np.asarray(p), np.ones(2))


def test_summary_alexnet_first_layer():
    text = nn.Sequential(nn.Conv2d(3, 96, 11, stride=4)).summary((3, 227, 227))
    assert "55x55x96" in text and "34,944" in text and "not fit" not in text
    text = nn.Sequential(nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2)) \
        .summary((3, 224, 224))
    assert "54x54x96" in text and "* input does not fit" in text
    assert "11 (jump 4)" in text and "19 (jump 8)" in text



class _Residual(nn.Module):
    """A ResNet basic block written by a user: a module with a forward (and
    backward) of its own, so its output shape is not a chain of layers."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False, dtype=np.float64)
        self.bn1 = nn.BatchNorm2d(cout, dtype=np.float64)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False, dtype=np.float64)
        self.down = nn.Conv2d(cin, cout, 1, stride, bias=False, dtype=np.float64)

    def forward(self, x):
        return self.bn1(self.conv2(self.relu(self.conv1(x)))) + self.down(x)

    def backward(self, grad):
        g = self.conv1.backward(self.relu.backward(self.conv2.backward(self.bn1.backward(grad))))
        return g + self.down.backward(grad)


def _residual_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, dtype=np.float64), nn.ReLU(),
                         _Residual(8, 16, 2), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(16, 4, dtype=np.float64))


def test_summary_measures_modules_of_the_users_own():
    """Each row's shape is the shape forward produces, also after a residual
    block that halves the size and doubles the channels (it used to be taken
    for a layer that keeps its input's shape); the receptive field is '?'
    from there on, and a layer inside it that does not fit is marked."""
    nn.seed(0)
    net = _residual_net()
    for hw, fits in ((15, True), (16, False)):   # 16: its stride-2 layers ignore a row
        text = net.summary((3, hw, hw))
        rows = text.splitlines()[2:2 + len(net)]
        x = np.zeros((1, 3, hw, hw))
        for row, layer in zip(rows, net):
            x = layer(x)
            cells = row.split()
            expected = x.shape[1:] if x.ndim == 2 else (*x.shape[2:], x.shape[1])
            assert cells[2] == "x".join(map(str, expected)), (hw, row)
        block = rows[2]
        assert block.split()[1] == "_Residual" and block.split()[4] == "?"
        assert ("* input does not fit" in block) is not fits
        assert "? receptive field unknown" in text
        assert "(jump" in rows[0] and "(jump" not in rows[3]
    assert net[2].output_shape((8, 15, 15)) == (16, 8, 8)


def test_summary_and_output_shape_leave_the_model_as_it_was():
    """output_shape runs a zero sample through the user's forward: the mode
    and what forward kept for backward are restored, so a backward after a
    summary gives the gradients it gives without one."""
    nn.seed(1)
    net = _residual_net()
    x = np.random.default_rng(0).standard_normal((2, 3, 10, 10))
    g = np.random.default_rng(1).standard_normal((2, 4))
    net.train()
    net(x)
    expected = net.backward(g)
    grads = [p.grad.copy() for p in net.parameters()]
    net.zero_grad()
    net(x)
    net.summary((3, 6, 6))
    assert net[2].output_shape((8, 7, 7)) == (16, 4, 4)
    assert all(m.training for m in net.modules())
    np.testing.assert_array_equal(net.backward(g), expected)
    for p, want in zip(net.parameters(), grads):
        np.testing.assert_array_equal(p.grad, want)
    net.eval()
    net[2].output_shape((8, 7, 7))
    assert not any(m.training for m in net.modules())


def test_summary_walks_into_nested_sequentials():
    inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    net = nn.Sequential(inner, nn.Sequential(nn.Conv2d(4, 4, 3, stride=2)))
    flat = [inner[0], inner[1], inner[2], net[1][0]]
    rf = cyconv.receptive_field(flat, (16, 16))
    text = net.summary((3, 16, 16))
    rows = text.splitlines()[2:4]
    assert f"{rf[2]['size'][0]} (jump {rf[2]['jump'][0]})" in rows[0]
    assert f"{rf[3]['size'][0]} (jump {rf[3]['jump'][0]})" in rows[1]
    assert "7x7x4" in rows[0] and "3x3x4" in rows[1] and "not fit" not in text
    # 16 -> 14 -> 7 -> (7 - 3) / 2 + 1 = 3 fits; from 17, 15 -> 7 and 3x3 / 2 ignores a row
    assert "* input does not fit" in net.summary((3, 17, 17)).splitlines()[2]



@pytest.mark.parametrize("make", [
    lambda m: m.Conv2d(3, 8, 3),
    lambda m: m.Conv2d(3, 8, (3, 5), stride=2, padding=1, dilation=2, groups=1, bias=False),
    lambda m: m.Conv2d(4, 8, 3, padding="same", groups=2, padding_mode="reflect"),
    lambda m: m.Conv1d(2, 4, 5, stride=3, padding="valid"),
    lambda m: m.Conv3d(2, 4, 3, padding=(1, 0, 2), padding_mode="circular"),
    lambda m: m.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, dilation=2),
    lambda m: m.ConvTranspose1d(2, 4, 3, groups=2, bias=False),
    lambda m: m.Linear(5, 3), lambda m: m.Linear(5, 3, bias=False),
    lambda m: m.BatchNorm2d(6), lambda m: m.BatchNorm2d(6, eps=1e-3, momentum=None, affine=False),
    lambda m: m.BatchNorm2d(6, bias=False),
    lambda m: m.Dropout(), lambda m: m.Dropout(0.3, inplace=True),
    lambda m: m.ReLU(), lambda m: m.ReLU(inplace=True),
    lambda m: m.LeakyReLU(), lambda m: m.LeakyReLU(0.2, inplace=True),
    lambda m: m.Flatten(), lambda m: m.Flatten(2, 3),
    lambda m: m.AdaptiveAvgPool2d((2, 3)), lambda m: m.AdaptiveAvgPool2d(1),
    lambda m: m.Sigmoid(), lambda m: m.Tanh(),
])
def test_layer_repr_matches_pytorch(make):
    """print(model) shows what PyTorch's shows for the same layer: every
    argument that differs from its default."""
    torch = pytest.importorskip("torch")
    assert repr(make(nn)) == repr(make(torch.nn))


def test_pooling_and_local_repr_show_their_arguments():
    assert repr(nn.MaxPool2d(3, 2, 1, ceil_mode=True)) == \
        "MaxPool2d(kernel_size=(3, 3), stride=(2, 2), padding=1, dilation=(1, 1), ceil_mode=True)"
    assert repr(nn.AvgPool1d(2)) == "AvgPool1d(kernel_size=(2,), stride=(2,), padding=0)"
    assert repr(nn.AvgPool2d(2, dilation=2)) == \
        "AvgPool2d(kernel_size=(2, 2), stride=(2, 2), padding=0, dilation=(2, 2))"
    assert repr(nn.AvgPool2d(3, 1, 1, count_include_pad=False, divisor_override=2)) == \
        ("AvgPool2d(kernel_size=(3, 3), stride=(1, 1), padding=1, count_include_pad=False, "
         "divisor_override=2)")
    assert repr(nn.LocallyConnected2d(2, 3, (8, 8), 3, padding=1, bias=False)) == \
        ("LocallyConnected2d(2, 3, input_size=(8, 8), kernel_size=(3, 3), stride=(1, 1), "
         "padding=1, bias=False)")


@pytest.mark.parametrize("layer", [
    nn.Conv1d(1, 1, 1), nn.Conv2d(1, 1, 1), nn.Conv3d(1, 1, 1), nn.ConvTranspose2d(1, 1, 1),
    nn.LocallyConnected2d(1, 1, (2, 2), 1), nn.MaxPool2d(2), nn.AvgPool2d(2),
    nn.AdaptiveAvgPool2d(1), nn.ReLU(), nn.LeakyReLU(), nn.Sigmoid(), nn.Tanh(),
    nn.Linear(1, 1), nn.Flatten(), nn.Dropout(), nn.BatchNorm2d(1)], ids=repr)
def test_backward_before_forward_says_so(layer):
    # Dropout and BatchNorm2d raised AttributeError for their missing mask or cache
    with pytest.raises(RuntimeError, match=f"{type(layer).__name__}.backward called "
                                           f"before forward"):
        layer.backward(np.ones((1, 1, 2, 2), np.float32))
    shape = {nn.Linear: (2, 1), nn.Conv1d: (2, 1, 2), nn.Conv3d: (2, 1, 2, 2, 2)}
    x = np.ones(shape.get(type(layer), (2, 1, 2, 2)), np.float32)
    layer.eval()          # and after a forward, backward runs (Dropout: no mask)
    y = layer(x)
    assert layer.backward(np.ones_like(y)).shape == x.shape


def test_layer_errors():
    with pytest.raises(ValueError, match="Linear: input has 5 features, expected 4"):
        nn.Linear(4, 2)(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError, match="layer 1 is int"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="strict=True"):
        nn.Conv2d(1, 1, 3, stride=2, strict=True)(np.ones((1, 1, 10, 10), np.float32))


def test_digits_example_short():
    pytest.importorskip("sklearn")
    from cyconv.examples import digits

    model, acc, _ = digits.train(epochs=4, seed=0, log=lambda *a: None)
    assert acc >= 0.90, acc
