"""Properties of the 1-Lipschitz layers, checked against exact spectra."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wdist
from wdist.nn import BCOPConv2d, BjorckLinear, DistanceMin, FullSort, GroupSort, InvertibleDownsample, MaxMin, retract_
from wdist.nn.bjorck import bjorck_orthonormalize

from helpers import _train_randomly, circular_conv_singular_values, power_iteration_norm

GRID = [(3, 16, 3), (16, 16, 3), (16, 16, 2), (32, 16, 3), (16, 32, 5), (1, 8, 1), (8, 8, 4), (5, 7, 3)]


@pytest.mark.parametrize("cin,cout,k", GRID)
def test_bcop_exact_singular_values_after_training(cin, cout, k, device):
    conv = _train_randomly(BCOPConv2d(cin, cout, k), (cin, 16, 16), device=device)
    raw = conv.parametrizations.weight.original
    assert (raw.detach() - conv.kernel_builder.init_raw().to(device)).abs().max() > 0.05  # really moved
    sv = circular_conv_singular_values(conv.weight, 16)
    assert sv.max() <= 1 + 1e-4
    # in <= out: isometry; in > out: orthonormal rows.  Either way every one of
    # the min(in, out) singular values is 1.
    assert sv.min() >= 1 - 1e-3
    assert conv.weight.shape == (cout, cin, k, k)


@pytest.mark.parametrize("cin,cout,k", [(3, 16, 3), (16, 16, 2), (4, 8, 5)])
def test_bcop_forward_is_an_isometry(cin, cout, k, device):
    """The module's own forward (padding, asymmetric even kernels) preserves norms."""
    conv = BCOPConv2d(cin, cout, k).double().to(device)
    x = torch.randn(4, cin, 12, 10, dtype=torch.float64, device=device)
    out = conv(x) - conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("cin,cout,k", [(4, 8, 3), (8, 8, 2)])
def test_bcop_zero_padding_is_one_lipschitz_and_bound_is_certified(cin, cout, k):
    conv = BCOPConv2d(cin, cout, k, padding="zeros", bias=False).double()
    true_norm = power_iteration_norm(conv, (cin, 8, 8))
    bound = wdist.lipschitz_bound(conv, (cin, 8, 8))
    assert true_norm <= bound + 1e-9
    assert bound <= 1 + 1e-6
    x = torch.randn(16, cin, 8, 8, dtype=torch.float64)
    ratio = conv(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert ratio.max() < 1 - 1e-3  # zero padding loses the border: not an isometry


@pytest.mark.parametrize("k", [2, 3, 4])
def test_bcop_kernel_symbol_is_the_product_of_paraunitary_factors(k):
    """The DFT of the kernel equals H prod_i (P_i + (I-P_i) z1)(Q_i + (I-Q_i) z2),
    with z = exp(-2 pi i w / n) -- the construction of Li et al. / Xiao et al."""
    conv = BCOPConv2d(6, 6, k).double()
    builder = conv.kernel_builder
    h, v = builder._orthonormal_factors(conv.parametrizations.weight.original.detach())
    n = 5
    symbol = torch.fft.fft2(conv.weight.detach(), s=(n, n)).permute(2, 3, 0, 1)
    eye = torch.eye(6, dtype=torch.complex128)
    proj = (v @ v.mT).to(torch.complex128)
    for w1 in range(n):
        for w2 in range(n):
            z1 = torch.exp(torch.tensor(-2j * torch.pi * w1 / n, dtype=torch.complex128))
            z2 = torch.exp(torch.tensor(-2j * torch.pi * w2 / n, dtype=torch.complex128))
            expected = h.to(torch.complex128)
            for i in range(k - 1):
                p, q = proj[2 * i], proj[2 * i + 1]
                expected = expected @ (p + (eye - p) * z1) @ (q + (eye - q) * z2)
            torch.testing.assert_close(symbol[w1, w2], expected)


def test_bcop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        BCOPConv2d(3, 3, 3, padding="reflect")
    with pytest.raises(ValueError, match="kernel_size"):
        BCOPConv2d(3, 3, 0)


@pytest.mark.parametrize("fin,fout", [(16, 16), (10, 30), (30, 10), (64, 1)])
def test_bjorck_linear_exact_singular_values_after_training(fin, fout, device):
    layer = _train_randomly(BjorckLinear(fin, fout), (fin,), device=device)
    sv = torch.linalg.svdvals(layer.weight.detach().double())
    assert sv.max() <= 1 + 1e-4
    assert sv.min() >= 1 - 1e-3


def test_bjorck_iterates_stay_below_one_before_convergence():
    w = torch.randn(6, 40, 20, dtype=torch.float64) * 5
    for iters in (0, 1, 2, 5):
        sv = torch.linalg.svdvals(bjorck_orthonormalize(w, iters=iters, tol=None))
        assert sv.max() <= 1 + 1e-12
    assert torch.linalg.svdvals(bjorck_orthonormalize(w, iters=2, tol=None)).min() < 0.9  # not converged yet


def test_groupsort_is_a_sort_with_permutation_jacobian():
    x = torch.randn(3, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    y = GroupSort(4)(x)
    expected = x.detach().view(3, 2, 4, 2, 2).sort(dim=2, descending=True).values.view(3, 8, 2, 2)
    torch.testing.assert_close(y.detach(), expected)
    jac = torch.autograd.functional.jacobian(lambda t: MaxMin()(t.view(1, 8)).view(8), x.detach()[0, :, 0, 0])
    assert torch.equal(jac.abs().sum(0), torch.ones(8, dtype=torch.float64))  # a permutation matrix
    assert torch.equal(jac.abs().sum(1), torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(FullSort()(x.detach()[:, :, 0, 0]), x.detach()[:, :, 0, 0].sort(1, descending=True).values)
    with pytest.raises(ValueError, match="divisible"):
        GroupSort(3)(torch.randn(2, 8))


def test_invertible_downsample_is_orthogonal():
    x = torch.randn(2, 3, 8, 6)
    y = InvertibleDownsample(2)(x)
    assert y.shape == (2, 12, 4, 3)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    torch.testing.assert_close(F.pixel_shuffle(y, 2), x)


def _gnp_critic(channels: int = 4, size: int = 8) -> nn.Sequential:
    """Every layer square-orthogonal or a permutation, scalar output by a unit row."""
    c = channels
    return nn.Sequential(
        BCOPConv2d(c, c, 3), MaxMin(),
        BCOPConv2d(c, c, 2), MaxMin(),
        InvertibleDownsample(2),
        BCOPConv2d(4 * c, 4 * c, 3), GroupSort(4),
        nn.Flatten(),
        BjorckLinear(4 * c * (size // 2) ** 2, 4 * c * (size // 2) ** 2), MaxMin(),
        BjorckLinear(4 * c * (size // 2) ** 2, 1),
    )


def test_gradient_norm_is_one_almost_everywhere(device):
    net = _gnp_critic()
    _train_randomly(net, (4, 8, 8), steps=20, device=device)
    net = net.double().eval()
    x = torch.randn(64, 4, 8, 8, dtype=torch.float64, device=device, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    norms = grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-3, rtol=0)


def test_eval_forward_is_bitwise_equal_and_does_not_rebuild(device):
    net = _gnp_critic()
    _train_randomly(net, (4, 8, 8), steps=3, device=device)
    x = torch.randn(5, 4, 8, 8, device=device)
    train_out = net.train()(x)
    builders = [m.parametrizations.weight[0] for m in net.modules() if hasattr(m, "parametrizations")]
    net.eval()
    first = net(x)
    counts = [b.builds for b in builders]
    second = net(x)
    assert torch.equal(train_out, first) and torch.equal(first, second)
    assert [b.builds for b in builders] == counts  # second eval forward: no rebuild
    # A parameter update invalidates the cache.
    with torch.no_grad():
        net[0].parametrizations.weight.original.add_(0.01)
    third = net(x)
    assert builders[0].builds == counts[0] + 1
    assert not torch.equal(third, second)


def test_training_forward_builds_each_kernel_once(device):
    conv = BCOPConv2d(4, 4, 3).to(device)
    before = conv.kernel_builder.builds
    conv(torch.randn(2, 4, 6, 6, device=device)).sum().backward()
    assert conv.kernel_builder.builds == before + 1


def test_kernel_construction_stays_float32_under_autocast(device):
    conv = BCOPConv2d(8, 8, 3).to(device)
    linear = BjorckLinear(8, 8).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        assert conv.weight.dtype == torch.float32
        assert linear.weight.dtype == torch.float32
        sv = circular_conv_singular_values(conv.weight, 8)
    assert (sv - 1).abs().max() < 1e-4


def test_state_dict_round_trips(device):
    a, b = BCOPConv2d(3, 6, 3), BCOPConv2d(3, 6, 3).to(device)
    _train_randomly(a, (3, 8, 8), steps=3, device=device)
    assert "parametrizations.weight.original" in a.state_dict()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 8, 8, device=device)
    assert torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("dim", [0, 1])
def test_projector_factor_backward_matches_finite_differences(dim):
    """The hand-written backward of the kernel-build step against float64 gradcheck."""
    from wdist.nn.bcop import _ProjectorFactor

    gen = torch.Generator().manual_seed(dim)
    taps = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    v = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64, generator=gen))[0].requires_grad_()
    assert torch.autograd.gradcheck(lambda t, u: _ProjectorFactor.apply(t, u, dim), (taps, v))


def test_retraction_keeps_the_kernel_and_makes_the_next_build_free(device):
    """retract_ changes the free parameters, not the kernel; the next build needs no Björck step."""
    from wdist.nn import bjorck

    torch.manual_seed(0)
    layer = BCOPConv2d(16, 16, 3).to(device)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    layer(torch.randn(4, 16, 8, 8, device=device)).square().mean().backward()
    opt.step()
    with torch.no_grad():
        before = layer.weight.clone()
        retract_(layer)
        after = layer.weight.clone()
    # Both kernels are within the Björck tolerance (2e-4) of the same polar factors.
    assert float((after - before).norm() / before.norm()) < 5e-4
    raw = layer.parametrizations.weight.original
    h, v = raw[0], raw[1:, :, : layer.kernel_builder.rank]
    for m in (h.detach(), v.detach()):
        gram = m.mT @ m
        scaled = gram / bjorck._gram_bound(gram)
        assert float((scaled - torch.eye(m.shape[-1], device=device)).abs().amax()) <= bjorck.DEFAULT_BJORCK_TOL


def test_maxmin_backward_is_a_permutation_of_the_output_gradient_ties_included(device):
    """MaxMin's gradient: each output gradient goes to the input it came from, also on ties."""
    x = torch.tensor([[3.0, 1.0, -2.0, 5.0, 4.0, 4.0]], device=device, requires_grad=True)
    y = MaxMin()(x)
    assert y.tolist() == [[3.0, 1.0, 5.0, -2.0, 4.0, 4.0]]
    g = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]], device=device)
    (grad,) = torch.autograd.grad(y, x, g)
    assert grad.tolist() == [[10.0, 20.0, 40.0, 30.0, 50.0, 60.0]]
    x64 = torch.randn(3, 6, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(MaxMin(), (x64,))
    assert torch.autograd.gradgradcheck(MaxMin(), (x64,))


@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (0, 1, 0, 1), (1, 0, 1, 0), (2, 1, 0, 3)])
def test_circular_pad_matches_torch_values_and_gradients(pad, device):
    from wdist.nn import circular_pad

    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
    expected = F.pad(x, pad, mode="circular")
    assert torch.equal(circular_pad(x, pad), expected)
    g = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(circular_pad(x, pad), x, g)[0],
                               torch.autograd.grad(expected, x, g)[0])
    assert torch.autograd.gradgradcheck(lambda t: circular_pad(t, pad), (x,))
    with pytest.raises(ValueError, match="larger than"):
        circular_pad(x, (5, 0, 0, 0))


def test_orthonormal_input_gets_the_tangent_gradient():
    """No Björck iteration runs on an orthonormal input, yet its gradient is the
    tangent projection G - W sym(W^T G), as one Björck step would give."""
    w = torch.linalg.qr(torch.randn(8, 5, dtype=torch.float64))[0].requires_grad_()
    g = torch.randn(8, 5, dtype=torch.float64)
    (grad,) = torch.autograd.grad(bjorck_orthonormalize(w), w, g)
    wd = w.detach()
    expected = g - wd @ (0.5 * (wd.T @ g + g.T @ wd))
    torch.testing.assert_close(grad, expected)
    # At the optimum of a linear objective the gradient is normal: its tangent part vanishes.
    u = torch.nn.functional.normalize(torch.randn(1, 6, dtype=torch.float64), dim=1).requires_grad_()
    (grad,) = torch.autograd.grad((bjorck_orthonormalize(u) * u.detach()).sum(), u)
    assert float(grad.abs().max()) < 1e-12


def test_distance_min_is_exact_at_its_anchors_and_one_lipschitz():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.rand(300, 3, 16, 16, generator=gen) * 2 - 1  # images in [-1, 1]
    layer = DistanceMin(anchors)
    with torch.no_grad():
        layer.raw_offsets.copy_(torch.rand(300, generator=gen))
        layer.eval()
        at_anchors = layer(anchors).squeeze(1)
        # f(z_j) = min_k (phi_k + ||z_j - z_k||) <= phi_j, exactly phi_j where z_j is its own argmin
        assert (at_anchors <= layer.offsets + 1e-6).all()
        own = at_anchors == layer.offsets
        assert own.sum() > 0
        a, b = torch.rand(2, 200, 3, 16, 16, generator=gen) * 2 - 1
        assert ((layer(a) - layer(b)).abs().squeeze(1) <= (a - b).flatten(1).norm(dim=1) + 1e-5).all()
        # Training steps use the matrix-product distances: values within 1e-2 of the exact ones.
        layer.train()
        assert torch.allclose(layer(a), layer.eval()(a), atol=1e-2)
