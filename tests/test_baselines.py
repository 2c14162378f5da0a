"""Baseline critics (RKO, OSSN, WGAN-GP, ReLU variants): the properties that define them."""


import pytest
import torch
from torch import nn

import wdist
from wdist.critics import CONV_GROUP, CRITICS, GradientPenaltyCritic, build_critic, lipschitz_by_construction
from wdist.nn import GroupSort, OSSNConv2d, RKOConv2d

from helpers import circular_conv_singular_values
from test_nn import _train_randomly


@pytest.mark.parametrize("cin,cout,k", [(3, 16, 3), (16, 16, 3), (16, 8, 2), (4, 8, 1)])
def test_rko_exact_conv_norm_is_at_most_one_after_training(cin, cout, k):
    conv = _train_randomly(RKOConv2d(cin, cout, k), (cin, 16, 16))
    sv = circular_conv_singular_values(conv.weight, 16)
    assert sv.max() <= 1 + 1e-4
    assert wdist.lipschitz_bound(conv, (cin, 16, 16)) <= 1 + 1e-4
    # The reshaped (out, in*k*k) matrix, times k, has orthonormal rows or columns.
    svals = torch.linalg.svdvals(conv.weight.detach().double().flatten(1) * k)
    torch.testing.assert_close(svals, torch.ones_like(svals), atol=1e-3, rtol=0)


def test_rko_attenuates_gradients_exactly_by_one_over_k():
    """Parseval: for out <= in the mean squared singular value of the conv is
    ||M||_F^2 / (k^2 out) = 1 / k^2 (BCOP: 1), the attenuation the BCOP paper fixes."""
    conv = _train_randomly(RKOConv2d(16, 16, 3), (16, 12, 12))
    sv = circular_conv_singular_values(conv.weight, 12)
    assert abs(float(sv.pow(2).mean()) - 1 / 9) < 1e-4


def test_ossn_normalizes_the_reshaped_matrix_not_the_convolution():
    """All 3x3 taps equal to I/3: ||M|| = 1 (OSSN leaves it unchanged), but the
    symbol at frequency 0 is 9 * I/3, so the exact conv norm is k = 3."""
    conv = OSSNConv2d(8, 8, 3)
    with torch.no_grad():
        conv.parametrizations.weight.original.copy_(torch.eye(8)[:, :, None, None].expand(8, 8, 3, 3) / 3)
    conv(torch.randn(2, 8, 8, 8))  # one training forward: one power-iteration step
    assert abs(float(torch.linalg.matrix_norm(conv.weight.detach().double().flatten(1), 2)) - 1) < 1e-6
    assert abs(wdist.lipschitz_bound(conv, (8, 8, 8)) - 3) < 1e-5


def test_ossn_reshaped_norm_is_one_after_training_but_conv_norm_exceeds_it():
    conv = _train_randomly(OSSNConv2d(8, 8, 3), (8, 16, 16))
    raw = conv.parametrizations.weight.original.detach().flatten(1)
    assert torch.linalg.matrix_norm(raw, 2) > 1.5  # the raw weights grew: normalization is active
    for _ in range(30):  # let the one-step-per-forward power iteration catch up
        conv(torch.randn(1, 8, 4, 4))
    reshaped = float(torch.linalg.matrix_norm(conv.weight.detach().double().flatten(1), 2))
    assert abs(reshaped - 1) < 1e-3
    assert wdist.lipschitz_bound(conv, (8, 16, 16)) > 1.05  # not a certified conv bound


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    """f(x) = <w, x> + b has ||grad f|| = ||w|| everywhere: penalty = 10 (||w|| - 1)^2,
    d penalty / dw = 20 (||w|| - 1) w / ||w||."""
    lin = nn.Linear(5, 1).double()
    critic = GradientPenaltyCritic(nn.Flatten(), lin)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
    pen = critic.penalty(x, y)
    w = lin.weight.detach().flatten()
    norm = float(w.norm())
    assert abs(float(pen.detach()) - 10 * (norm - 1) ** 2) < 1e-12
    pen.backward()
    torch.testing.assert_close(lin.weight.grad.flatten(), 20 * (norm - 1) * w / norm)


def _interpolate_grad_norms(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    eps = torch.rand(len(x), 1, generator=gen)
    x_hat = (eps * x + (1 - eps) * y).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    return grad.norm(dim=1)


def test_wgan_gp_training_drives_the_gradient_norm_to_its_penalized_optimum():
    """For a shift c the best critic is linear along c with gradient norm g; the
    penalized objective  g ||c|| - lambda (g - 1)^2  peaks at g = 1 + ||c|| / (2 lambda)
    = 1.15 for ||c|| = 3, lambda = 10: near 1, and above it (WGAN-GP over-estimates)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 4, generator=gen)
    y = torch.randn(1000, 4, generator=gen) + torch.tensor([3.0, 0, 0, 0])
    torch.manual_seed(0)
    before = _interpolate_grad_norms(build_critic("wgan-gp", (4,)), x, y).mean()
    res = wdist.estimate_w1(x, y, critic="wgan-gp", steps=300, progress=False, device="cpu")
    after = _interpolate_grad_norms(res.critic, x, y)
    assert abs(float(before) - 1) > 0.5  # PyTorch's default init is far from unit gradients
    assert abs(float(after.mean()) - 1.15) < 0.03
    assert res.lipschitz > 1 + 1e-4  # layer-norm product: the critic is not constrained
    assert not res.settings["lipschitz_by_construction"]
    assert "not Lipschitz-constrained" in res.summary().splitlines()[1]
    assert res.value <= 3 + 3 * res.std_error  # gap / L: a valid bound of W1 = 3


NEW = ["rko", "ossn", "bcop-relu", "rko-relu", "ossn-relu", "wgan-gp"]


@pytest.mark.parametrize("name", NEW + ["mlp"])
def test_baseline_critics_give_certified_bounds_on_an_image_translation(name):
    """y = x + c on 8x8 images, W1 = ||c|| = 2: every critic's certified held-out value is
    below 2 (up to CLT noise) and, after a few steps, clearly above 0."""
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(1, 8, 8, generator=gen)
    c *= 2 / c.norm()
    x = torch.randn(400, 1, 8, 8, generator=gen)
    y = torch.randn(400, 1, 8, 8, generator=gen) + c
    res = wdist.estimate_w1(x, y, critic=name, steps=30, eval_every=15, batch_size=64, progress=False,
                            device="cpu")
    assert res.settings["critic"] == name
    assert res.value <= 2 + 3 * res.std_error
    assert res.value > 0.1
    constrained = name not in ("ossn", "ossn-relu", "wgan-gp")
    assert res.settings["lipschitz_by_construction"] is constrained
    if constrained:
        assert res.lipschitz <= 1 + 1e-4
    assert (len(res.summary().splitlines()) == 1) is constrained


def test_relu_variants_use_relu_and_the_same_shapes():
    shape = (3, 16, 16)
    for base in ("bcop", "rko", "ossn"):
        plain, relu = build_critic(base, shape), build_critic(f"{base}-relu", shape)
        sorts = [m for m in plain if isinstance(m, GroupSort)]
        assert sorts and all(m.group_size == CONV_GROUP for m in sorts)  # the certified critics sort groups of 8
        assert [type(m).__name__ for m in relu if not isinstance(m, nn.ReLU)] == \
               [type(m).__name__ for m in plain if not isinstance(m, GroupSort)]
        assert sum(isinstance(m, nn.ReLU) for m in relu) == len(sorts)
        assert sum(p.numel() for p in relu.parameters()) == sum(p.numel() for p in plain.parameters())


def test_critic_names_and_flags():
    assert set(NEW) <= set(CRITICS)
    assert lipschitz_by_construction(build_critic("rko", (1, 8, 8)))
    assert not lipschitz_by_construction(build_critic("ossn", (1, 8, 8)))
    assert not lipschitz_by_construction(build_critic("wgan-gp", (1, 8, 8)))
    with pytest.raises(ValueError, match="images"):
        build_critic("rko", (64,))
