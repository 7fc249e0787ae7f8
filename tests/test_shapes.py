"""conv_output_shape, explain_conv and receptive_field."""
import numpy as np
import pytest

import cyconv


def test_explain_imagenet_first_layer():
    text = cyconv.explain_conv((3, 227, 227), 11, stride=4, padding=0, out_channels=96)
    for needle in ("(227 - 11 + 0) / 4 + 1 = 55 -> fits", "55x55x96", "290,400 neurons",
                   "363 weights + 1 bias", "34,848 weights", "34,944 parameters",
                   "105,705,600 parameters", "fit neatly"):
        assert needle in text, needle


def test_explain_224_does_not_fit_and_says_which_padding_would():
    text = cyconv.explain_conv((3, 224, 224), 11, stride=4, out_channels=96)
    assert "(224 - 11 + 0) / 4 + 1 = 54.25" in text
    assert "the neurons do not fit" in text
    assert "(0, 3) or (1, 2)" in text
    # and the suggestion really fits
    assert cyconv.conv_output_shape((224, 224), 11, 4, ((1, 2), (1, 2))) == (55, 55)
    assert "(224 - 11 + 2*1)" in cyconv.explain_conv((3, 224, 224), 11, 4, padding=1)


def test_explain_without_k_and_in_1d_3d():
    assert "Each neuron sees 3x5 = 15 weights + 1 bias." in cyconv.explain_conv((5, 32), 3)
    text = cyconv.explain_conv((2, 8, 8, 8), 3, padding=1, out_channels=4)
    assert "8x8x8x4 = 2,048 neurons" in text and "3x3x3x2 = 54 weights" in text


@pytest.mark.parametrize("spatial, k, s, p, d, ceil", [
    ((10, 10), 3, 2, 0, 1, False), ((9, 8), (3, 2), (2, 1), ((1, 0), (1, 2)), (1, 2), False),
    ((12,), 4, 3, "same", 1, False), ((5, 5), 2, 2, 1, 1, True), ((7, 6, 5), 2, 1, 0, 2, False),
])
def test_conv_output_shape_agrees_with_the_ops(spatial, k, s, p, d, ceil):
    got = cyconv.conv_output_shape(spatial, k, s, p, d, ceil_mode=ceil)
    nd = len(spatial)
    x = np.zeros((1, 1, *spatial))
    pool = getattr(cyconv, f"max_pool{nd}d")
    assert pool(x, k, s, p, d, ceil_mode=ceil).shape[2:] == got
    if nd == 2 and not ceil:
        kk = (k, k) if isinstance(k, int) else k
        assert cyconv.conv2d(x, np.zeros((1, 1, *kk)), None, s, p, d).shape[2:] == got


def test_conv_output_shape_errors():
    with pytest.raises(ValueError, match="larger than the padded input"):
        cyconv.conv_output_shape((4, 4), 5)
    with pytest.raises(ValueError, match="1 to 3 positive spatial sizes"):
        cyconv.conv_output_shape((4, 4, 4, 4), 2)


def _brute_force(layers, spatial, unit):
    """Input pixels that influence output ``unit`` of the last layer, found by
    back-propagating a one-hot gradient through all-ones 2-D convolutions."""
    shapes = [spatial]
    for k, s, p, d in layers:
        shapes.append(cyconv.conv_output_shape(shapes[-1], k, s, p, d))
    g = np.zeros((1, 1, *shapes[-1]))
    g[(0, 0, *unit)] = 1.0
    for (k, s, p, d), shape in zip(reversed(layers), reversed(shapes[:-1])):
        g = cyconv.conv2d_backward(g, np.zeros((1, 1, *shape)), np.ones((1, 1, k, k)), s, p,
                                   d, needs=("input",)).input
    rows, cols = np.nonzero(g[0, 0])
    return (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1), \
        ((rows.max() + rows.min()) / 2, (cols.max() + cols.min()) / 2)


@pytest.mark.parametrize("layers", [
    [(3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 1, 1)],
    [(5, 2, 2, 1), (3, 2, 1, 1), (3, 1, 0, 2)],
    [(7, 3, 3, 1), (3, 1, 1, 3)],
])
def test_receptive_field_matches_brute_force(layers):
    spatial = (64, 64)
    rf = cyconv.receptive_field(layers, spatial)
    assert len(rf) == len(layers)
    out = rf[-1]["output"]
    unit = (out[0] // 2, out[1] // 2)  # an interior unit: no clipping by the border
    size, centre = _brute_force(layers, spatial, unit)
    assert rf[-1]["size"] == size
    expected = tuple(st + u * j for st, u, j in zip(rf[-1]["start"], unit, rf[-1]["jump"]))
    assert expected == centre


def test_receptive_field_skips_layers_without_a_window():
    class ReLU:
        pass

    class Pool:
        kernel_size, stride, padding, dilation = 2, None, 0, 1

    rf = cyconv.receptive_field([(3, 1, 1, 1), ReLU(), Pool()], (8, 8))
    assert rf[1] == rf[0]
    assert rf[2]["size"] == (4, 4) and rf[2]["jump"] == (2, 2) and rf[2]["output"] == (4, 4)



def test_receptive_field_of_nested_sequentials_and_user_modules():
    from cyconv import nn

    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, 2)]
    nested = nn.Sequential(nn.Sequential(*layers[:2]), layers[2], nn.Sequential(layers[3]))
    assert cyconv.receptive_field(nested, (32, 32)) == cyconv.receptive_field(layers, (32, 32))

    class Block(nn.Module):   # a residual block: not a chain of windows
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    with pytest.raises(ValueError, match="Block is a module with a forward of its own"):
        cyconv.receptive_field(layers + [Block()], (32, 32))


@pytest.mark.parametrize("n, k, s, d, pad", [(10, 3, 2, 1, 0), (224, 11, 4, 1, 2), (8, 2, 3, 2, 1),
                                             (9, 4, 4, 1, 0), (15, 5, 3, 1, (1, 0))])
def test_suggested_paddings_fit_and_are_distinct(n, k, s, d, pad):
    """Every padding that explain_conv and strict=True suggest makes the
    division exact, and none is listed twice."""
    import re

    text = cyconv.explain_conv((1, n), k, s, [pad], d)
    with pytest.raises(ValueError) as err:
        cyconv.conv1d(np.ones((1, 1, n)), np.ones((1, 1, k)), stride=s, padding=[pad],
                      dilation=d, strict=True)
    eff = d * (k - 1) + 1
    for message in (text, str(err.value)):
        pairs = [(int(b), int(a)) for b, a in re.findall(r"\((\d+), (\d+)\)", message)
                 if "fit" in message]
        pairs = [p for p in pairs if p != ((pad, pad) if isinstance(pad, int) else pad)]
        assert pairs and len(pairs) == len(set(pairs)), message
        for b, a in pairs:
            assert (n + b + a - eff) % s == 0, (b, a, message)
