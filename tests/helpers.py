"""Exact spectra used as ground truth by the tests."""

import torch


def circular_conv_singular_values(weight: torch.Tensor, size: int) -> torch.Tensor:
    """All singular values of the circular convolution with ``weight`` on size x size
    (Sedghi et al. 2019), float64."""
    symbol = torch.fft.fft2(weight.detach().double(), s=(size, size))
    return torch.linalg.svdvals(symbol.permute(2, 3, 0, 1)).flatten()


def power_iteration_norm(fn, shape, iters: int = 300, seed: int = 0) -> float:
    """Largest singular value of an *affine* map ``fn`` by power iteration on J^T J,
    using autograd for the adjoint (so it checks the real forward, float64)."""
    offset = fn(torch.zeros((1, *shape), dtype=torch.float64)).detach()
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
    v /= v.norm()
    sigma = 0.0
    for _ in range(iters):
        v.requires_grad_(True)
        out = fn(v) - offset
        (grad,) = torch.autograd.grad(out, v, grad_outputs=out)  # J^T J v
        sigma = grad.norm().sqrt().item()
        v = (grad / grad.norm()).detach()
    return sigma
