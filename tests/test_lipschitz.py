"""Certification: wdist.lipschitz_bound against exact spectra and power iteration."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdist
from wdist.nn import BCOPConv2d, BjorckLinear, InvertibleDownsample

from helpers import _shifted_gaussians, _train_randomly, power_iteration_norm


def test_lipschitz_bound_matches_power_iteration_on_linear_network(device):
    net = nn.Sequential(
        BCOPConv2d(3, 8, 3), InvertibleDownsample(2), BCOPConv2d(32, 32, 2),
        nn.Flatten(), BjorckLinear(32 * 16, 600),
    )  # a chain of isometries: the product of norms is the network's norm
    _train_randomly(net, (3, 8, 8), steps=20, device=device)  # weights trained on the device...
    net = net.double().eval()
    bound = wdist.lipschitz_bound(net, (3, 8, 8))  # ...certified where they live
    measured = power_iteration_norm(net.cpu(), (3, 8, 8))
    assert bound == pytest.approx(measured, abs=1e-3)
    assert bound == pytest.approx(1.0, abs=1e-4)


def test_lipschitz_bound_flags_a_broken_layer():
    good = BCOPConv2d(4, 4, 3, bias=False).double().eval()
    broken = nn.Conv2d(4, 4, 3, padding="same", padding_mode="circular", bias=False).double()
    with torch.no_grad():
        broken.weight.copy_(1.1 * good.weight)
    net = nn.Sequential(good, broken, nn.Flatten(), nn.Linear(4 * 64, 1, bias=False).double())
    with torch.no_grad():
        net[3].weight.copy_(torch.randn(1, 256, dtype=torch.float64).div_(16) )
    row_norm = net[3].weight.norm().item()
    bound = wdist.lipschitz_bound(net, (4, 8, 8))
    assert bound == pytest.approx(1.1 * row_norm, rel=1e-5)
    measured = power_iteration_norm(net, (4, 8, 8))
    assert measured <= bound * (1 + 1e-9)
    assert bound > 1.05 * row_norm  # the 10% excess is visible


def test_lipschitz_bound_rejects_unknown_layers():
    class Mystery(nn.Module):
        def forward(self, x):
            return 2 * x

    with pytest.raises(TypeError, match=r"layer 1 of type Mystery"):
        wdist.lipschitz_bound(nn.Sequential(nn.Flatten(), Mystery()), (3, 4, 4))
    with pytest.raises(TypeError, match="padding_mode"):
        wdist.lipschitz_bound(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (2, 4, 4))


@pytest.mark.parametrize("padding_mode,size", [("circular", 8), ("circular", 2), ("zeros", 7)])
def test_lipschitz_bound_is_exact_for_a_random_convolution(padding_mode, size):
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode).double()
    measured = power_iteration_norm(conv, (3, size, size), iters=2000)
    bound = wdist.lipschitz_bound(conv, (3, size, size))
    assert measured <= bound * (1 + 1e-9)
    if padding_mode == "circular":  # exact, also when the kernel wraps (size 2 < k)
        assert bound == pytest.approx(measured, rel=1e-6)
    else:  # the padded circular grid: an upper bound, close for a random kernel
        assert bound < 1.1 * measured


def test_lipschitz_bound_of_strided_and_dilated_convolutions_is_certified():
    for conv in (nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.Conv2d(3, 5, 3, dilation=2, padding=2),
                 nn.Conv2d(4, 6, 3, groups=2, padding=1)):
        conv = conv.double()
        fn = lambda x, c=conv: F.conv2d(x, c.weight, None, c.stride, c.padding, c.dilation, c.groups)
        measured = power_iteration_norm(fn, (conv.in_channels, 10, 10))
        assert measured <= wdist.lipschitz_bound(conv, (conv.in_channels, 10, 10)) * (1 + 1e-9)


def test_user_module_is_certified_and_value_is_rescaled(device):
    x, y = _shifted_gaussians(400, 4, shift=1.0)
    critic = nn.Sequential(nn.Linear(4, 1))
    # holdout=0: the evaluation set is all samples, so the raw gap can be recomputed here.
    res = wdist.estimate_w1(x, y, critic=critic, steps=100, lr=1e-2, holdout=0.0, progress=False, device=device)
    with torch.no_grad():
        raw_gap = float(critic(x.to(device)).mean() - critic(y.to(device)).mean())
    # The unconstrained linear critic grows its norm; the certified value divides by it.
    assert res.lipschitz == pytest.approx(float(critic[0].weight.detach().norm()), rel=1e-6)
    assert res.lipschitz > 1.5
    assert res.value == pytest.approx(raw_gap / res.lipschitz, rel=1e-5)
    assert res.value <= wdist.exact_w1(x, y) * (1 + 1e-5)
