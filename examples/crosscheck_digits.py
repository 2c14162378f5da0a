"""
Cross-check against exact optimal transport on scikit-learn's digits
=====================================================================

:func:`wdist.crosscheck` trains a critic on *all* the given samples and
compares its gap with the exact W1 between the same two empirical
distributions (POT's network simplex, Euclidean cost, float64).  On the same
samples no 1-Lipschitz critic can exceed the exact value
(Kantorovich-Rubinstein duality), so

.. math::

    \\mathrm{ratio} = \\frac{\\tfrac1n \\sum_i g(x_i) - \\tfrac1m \\sum_j g(y_j)}
                          {W_1(\\hat P_n, \\hat Q_m)} \\le 1,
    \\qquad g = f / \\max(1, \\mathrm{Lip}(f)),

measures how tight the critic is (1 = optimal), and a ratio above
``1 + 1e-5`` would expose a broken certificate (``sound`` is False).

The data: the 1797 images of ``sklearn.datasets.load_digits()`` (8x8, values
0-16, shipped with scikit-learn), scaled to [0, 1] and flattened to 64-d
vectors.  Two pairs:

1. digits 0-4 against digits 5-9 (two different image sets);
2. all digits against the same digits with every pixel raised by 0.05: a
   translation by ``s = 0.05 * 1``, so the exact sample W1 is
   ``||s|| = 0.05 * sqrt(64) = 0.4`` (the identity pairing is optimal).

What to look at
---------------
* ``ratio``: the semi-dual ``anchors`` critic (``min_j phi_j + ||x - y_j||``)
  is nearly exact in-sample; a Björck/GroupSort MLP alone is looser.
* ``noise floor``: the exact W1 between two random halves of the *same*
  set, whose population value is 0.  In 64 dimensions it is large (about
  1.2), because the sample W1 converges like ``n^(-1/d)``: most of the exact
  2.2 between the two digit groups is sampling noise, and only a held-out
  estimate (:func:`wdist.estimate_w1`) bounds the population W1.  Pair 2 is
  exact at 0.4 *despite* the floor because its two samples are paired.
* In-sample values are optimistic for the population; this is a check of the
  critic and its certificate, not an estimate.

Run ``python examples/crosscheck_digits.py`` (under a minute on 2 CPU cores)
or ``--quick`` (120 images per side, a few seconds).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits

import wdist


def digit_vectors(limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as 64-d vectors in [0, 1] and their labels (the first ``limit`` of each group)."""
    digits = load_digits()
    pixels = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    labels = torch.tensor(digits.target)
    if limit is not None:
        low, high = (labels < 5).nonzero().flatten()[:limit], (labels >= 5).nonzero().flatten()[:limit]
        keep = torch.cat([low, high]).sort().values
        pixels, labels = pixels[keep], labels[keep]
    return pixels, labels


def report(title: str, cc: wdist.CrossCheck) -> None:
    """Print one cross-check in parseable ``name: value`` lines."""
    print(f"== {title}  ({cc.n_x} vs {cc.n_y} images)")
    print(f"exact: {cc.exact:.6f}")
    print(f"critic ({cc.critic_name}): {cc.critic:.6f}  Lipschitz <= {cc.lipschitz:.6g}")
    print(f"ratio: {cc.ratio:.6f}")
    print(f"noise floor: {cc.noise_floor:.6f}")
    print(f"sound: {cc.sound}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="120 images per side, 50 steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    limit, steps = (120, 50) if args.quick else (None, 300)
    pixels, labels = digit_vectors(limit)
    low, high = pixels[labels < 5], pixels[labels >= 5]
    options = dict(steps=steps, seed=args.seed, progress=False)

    report("digits 0-4 vs 5-9, critic auto", wdist.crosscheck(low, high, **options))
    report("digits 0-4 vs 5-9, critic mlp", wdist.crosscheck(low, high, critic="mlp", **options))
    shift = 0.05
    print(f"translation truth: {shift * pixels.shape[1] ** 0.5:.6f}  (0.05 * sqrt(64))")
    report("digits vs digits + 0.05, critic auto", wdist.crosscheck(pixels, pixels + shift, **options))


if __name__ == "__main__":
    main()
