"""The known-truth benchmark's quick mode: it runs, and every row is honest."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run_quick(out: Path, *options: str, timeout: int = 600) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "known_truth.py"), "--quick", *options,
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_known_truth_quick_writes_honest_rows(tmp_path):
    _run_quick(tmp_path)
    rows = json.loads((tmp_path / "known_truth-quick.json").read_text())["rows"]
    assert {r["regime"] for r in rows.values()} == {"finite", "sampler"}
    for row in rows.values():
        assert row["lipschitz"] <= 1 + 1e-4
        assert row["lower"] <= row["truth"] + 3 * row["truth_se"]  # a certified lower bound
        assert 0 < row["ratio"] < 1.2
        if not row["pair"].startswith("shift"):  # the funnel pairs have transport rays to check
            assert 0 < row["ray_grad_norm"] <= 1 + 1e-3 and -1 <= row["ray_cosine"] <= 1
    assert (tmp_path / "known_truth-quick.md").read_text().count("\n|") >= len(rows) + 1
    assert (tmp_path / "known_truth-quick.png").stat().st_size > 10_000
    # --render writes the report again from the saved rows, running nothing.
    report = (tmp_path / "known_truth-quick.md").read_text()
    for suffix in ("md", "png"):
        (tmp_path / f"known_truth-quick.{suffix}").unlink()
    _run_quick(tmp_path, "--render", timeout=120)
    assert (tmp_path / "known_truth-quick.md").read_text() == report
    assert (tmp_path / "known_truth-quick.png").stat().st_size > 10_000


@pytest.fixture
def known_truth_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import known_truth
        yield known_truth
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_critic_column_names_the_noise_level_validation_chose(known_truth_module):
    """A row says which input-noise level won where several were tried, and only there."""
    cell = known_truth_module._critic_cell
    levels = {"bcop": 1.0, "mlp (input_noise=0.7)": 2.0, "mlp (input_noise=0)": 3.0}
    assert cell({"critic": "mlp", "folds": 1, "input_noise": 0.0, "candidates": levels}) == "mlp (noise 0)"
    assert cell({"critic": "bcop", "folds": 5, "input_noise": 0.0, "candidates": levels}) == "bcop x5"
    assert cell({"critic": "mlp", "folds": 1, "input_noise": 0.7, "candidates": {"mlp": 1.0}}) == "mlp"
    assert cell({"critic": "mlp", "folds": 1}) == "mlp"  # a row recorded before the levels


class _Funnel(torch.nn.Module):
    """``sign * u`` for a pair's min-funnel potential u (``-u`` is an optimal critic)."""

    def __init__(self, pair, sign: float) -> None:
        super().__init__()
        self.centres = torch.nn.Parameter(torch.from_numpy(pair.centres), requires_grad=False)
        self.offsets = torch.from_numpy(pair.offsets)
        self.sign = sign

    def forward(self, z):
        u = (torch.cdist(z.flatten(1).double(), self.centres) + self.offsets).amin(dim=1)
        return self.sign * u


@pytest.mark.parametrize("name", ["k16-4", "img-digits-16-100"])
def test_ray_diagnostic_is_one_for_the_optimal_potential_and_scales_with_the_critic(known_truth_module, name):
    pair = known_truth_module.funnel_pair(name)
    norm, cosine = known_truth_module.ray_diagnostic(_Funnel(pair, -1.0), pair, 1.0, m=256)
    assert norm == pytest.approx(1.0, abs=1e-9) and cosine == pytest.approx(1.0, abs=1e-9)
    # The potential itself points against every ray; a critic scaled by 1/2 has half the norm.
    norm, cosine = known_truth_module.ray_diagnostic(_Funnel(pair, 1.0), pair, 2.0, m=256)
    assert norm == pytest.approx(0.5, abs=1e-9) and cosine == pytest.approx(-1.0, abs=1e-9)


class _Lattice(torch.nn.Module):
    """``-u`` for a lattice pair's potential, the distance to the nearest flat (an optimal critic)."""

    def __init__(self, pair) -> None:
        super().__init__()
        self.pair = pair
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a device

    def forward(self, z):
        return -self.pair._offset_torch(z.flatten(1).double()).norm(dim=1)


@pytest.mark.parametrize("name", ["lat16-1", "lat32-8-3"])
def test_the_lattice_pairs_optimal_potential_has_unit_rays_and_the_truth_as_gap(known_truth_module, name):
    pair = known_truth_module.funnel_pair(name)
    norm, cosine = known_truth_module.ray_diagnostic(_Lattice(pair), pair, 1.0, m=256)
    # 1e-6, not 1e-9: the diagnostic scores float32 points, and an offset from a flat of
    # 1e-6 or less (where the map contracts to) turns with their rounding.
    assert norm == pytest.approx(1.0, abs=1e-6) and cosine == pytest.approx(1.0, abs=1e-6)
    truth, truth_se = pair.truth(100_000)
    gap, se = known_truth_module.population_gap(_Lattice(pair), pair, 1.0, m=4_000)
    assert abs(gap - truth) < 4 * (se + truth_se)


def test_ray_diagnostic_has_no_row_for_a_translation(known_truth_module):
    assert known_truth_module.funnel_pair("shift16") is None


def test_population_gap_of_the_optimal_potential_is_the_truth(known_truth_module):
    """``-u`` reaches W1 on fresh draws (within 4 of its standard errors, plus the truth's own);
    ``u / 2`` reaches minus half of it; a finite base population has no fresh draws."""
    pair = known_truth_module.funnel_pair("k16-4")
    truth, truth_se = pair.truth(100_000)
    gap, se = known_truth_module.population_gap(_Funnel(pair, -1.0), pair, 1.0, m=4_000)
    assert 0 < se < 0.05 * truth
    assert abs(gap - truth) < 4 * (se + truth_se)
    half, half_se = known_truth_module.population_gap(_Funnel(pair, 1.0), pair, 2.0, m=4_000)
    assert half == pytest.approx(-gap / 2, abs=1e-9) and half_se == pytest.approx(se / 2, abs=1e-9)
    digits = known_truth_module.funnel_pair("img-digits-16-100")
    assert known_truth_module.population_gap(_Funnel(digits, -1.0), digits, 1.0, m=100) is None


def test_seed_lines_give_the_population_mean_only_where_every_seed_has_one(known_truth_module):
    summary = known_truth_module._population_summary
    runs = [{"population_ratio": 0.97}, {"population_ratio": 0.98}, {"population_ratio": 0.99}]
    assert summary(runs) == "; population gap / truth 0.980 ± 0.010 (0.970, 0.980, 0.990)"
    assert summary(runs[:2] + [{}]) == ""


def test_centre_cone_is_exact_where_every_apex_is_the_centre_and_a_lower_bound_elsewhere(known_truth_module):
    """``-||z||`` is the optimal potential when all apices sit at the box's centre: its gap is
    W1 to rounding on a finite population (both exact means) and within the Monte-Carlo
    errors on fresh draws; with apices spread over the box it is a 1-Lipschitz critic, so at
    most W1 (it is the floor the report compares learned critics with)."""
    gap = known_truth_module.centre_cone_gap
    digits = replace(known_truth_module.funnel_pair("img-digits-1-10"), centre_width=0.0)
    assert not digits.centres.any()
    assert gap(digits) == pytest.approx((digits.truth()[0], 0.0), abs=1e-12)
    centred = replace(known_truth_module.funnel_pair("k16-4"), centre_width=0.0)
    truth, truth_se = centred.truth(20_000)
    value, se = gap(centred, m=20_000)
    assert 0 < se < 0.02 * truth and abs(value - truth) < 4 * (se + truth_se)
    spread = known_truth_module.funnel_pair("k16-4")
    value, _ = gap(spread, m=20_000)
    assert value < 0.5 * spread.truth(20_000)[0]  # the apices' own rays point elsewhere
