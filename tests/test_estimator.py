"""estimate_w1 / exact_w1 / crosscheck against closed forms and POT."""

import json

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wdist
from wdist.training import CriticTrainer


def _shifted_gaussians(n: int, d: int, shift: float = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    c = torch.randn(d, generator=gen)
    y = torch.randn(n, d, generator=gen) + shift * c / c.norm()
    return x, y


# --------------------------------------------------------------------------- exact


def test_exact_w1_matches_the_one_dimensional_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.exponential(size=250)
    expected = scipy.stats.wasserstein_distance(a, b)  # quantile formula, exact in 1-D
    assert wdist.exact_w1(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-9)


def test_exact_w1_of_a_translation_is_the_shift_norm():
    x = torch.rand(400, 1, 6, 6, dtype=torch.float64)
    assert wdist.exact_w1(x, x + 0.05) == pytest.approx(0.05 * 6, rel=1e-9)


def test_exact_w1_refuses_problems_too_large_for_memory():
    x = np.zeros((9000, 2))
    with pytest.raises(ValueError, match=r"9000 x 9000 points need about 3\.2 GB"):
        wdist.exact_w1(x, x)


# --------------------------------------------------------------------------- estimator


def test_translation_estimate_with_the_linear_critic(device):
    x, y = _shifted_gaussians(4000, 8, shift=1.0)
    res = wdist.estimate_w1(x, y, critic="linear", progress=False, device=device)
    assert res.value == pytest.approx(1.0, abs=0.06)
    assert res.lower <= 1.0
    assert res.lipschitz <= 1 + 1e-4
    assert res.lower < res.value < res.upper
    # The interval is the CLT interval of the independent test values.
    assert res.upper - res.value == pytest.approx(1.959964 * res.std_error, rel=1e-5)


def test_identical_distributions_interval_contains_zero(device):
    x, _ = _shifted_gaussians(2000, 4)
    y = torch.randn(2000, 4, generator=torch.Generator().manual_seed(99))
    res = wdist.estimate_w1(x, y, steps=200, progress=False, device=device)
    assert res.lower <= 0 <= res.upper
    assert res.train_value > res.value  # in-sample gap is optimistic


def test_deterministic_for_a_fixed_seed(device):
    x, y = _shifted_gaussians(600, 4, shift=0.5)
    kwargs = dict(critic="mlp", steps=60, eval_every=20, progress=False, device=device)
    runs = [wdist.estimate_w1(x, y, seed=3, **kwargs) for _ in range(2)]
    assert runs[0].value == runs[1].value and runs[0].history == runs[1].history
    other = wdist.estimate_w1(x, y, seed=4, **kwargs)
    assert other.value != runs[0].value


def test_datasets_and_dataloaders_give_the_same_result_as_tensors(device):
    x, y = _shifted_gaussians(300, 3, shift=0.5)
    kwargs = dict(critic="mlp", steps=40, eval_every=20, progress=False, device=device)
    ref = wdist.estimate_w1(x, y, **kwargs)
    labels = torch.zeros(300)
    ds = wdist.estimate_w1(TensorDataset(x, labels), DataLoader(TensorDataset(y)), **kwargs)
    assert ds.value == pytest.approx(ref.value, abs=1e-6)


def test_images_numpy_and_uneven_sample_counts(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 8, 8, generator=gen)
    y = (torch.rand(90, 1, 8, 8, generator=gen) + 0.1).numpy()
    res = wdist.estimate_w1(x, y, critic="bcop", steps=30, eval_every=10, progress=False, device=device)
    assert res.n_test == (60, 45)
    assert res.lipschitz <= 1 + 1e-4
    assert 0 < res.value <= wdist.exact_w1(x, y)  # shift of 0.1 per pixel: clearly positive


def test_result_to_dict_is_json_and_complete():
    x, y = _shifted_gaussians(200, 2)
    res = wdist.estimate_w1(x, y, critic="linear", steps=20, eval_every=10, progress=False)
    d = json.loads(json.dumps(res.to_dict()))
    for key in ("value", "lower", "upper", "lipschitz", "train_value", "history", "settings"):
        assert key in d
    assert "critic" not in d
    assert d["history"][0]["step"] == 10
    assert res.summary().startswith("W1: ")
    assert "95% CI [" in res.summary() and "Lipschitz <= " in res.summary()


def test_user_module_is_certified_and_value_is_rescaled(device):
    x, y = _shifted_gaussians(400, 4, shift=1.0)
    critic = nn.Sequential(nn.Linear(4, 1))
    # holdout=0: the evaluation set is all samples, so the raw gap can be recomputed here.
    res = wdist.estimate_w1(x, y, critic=critic, steps=100, lr=1e-2, holdout=0.0, progress=False, device=device)
    with torch.no_grad():
        raw_gap = float(critic(x.to(device)).mean() - critic(y.to(device)).mean())
    # The unconstrained linear critic grows its norm; the certified value divides by it.
    assert res.lipschitz == pytest.approx(float(critic[0].weight.norm()), rel=1e-6)
    assert res.lipschitz > 1.5
    assert res.value == pytest.approx(raw_gap / res.lipschitz, rel=1e-5)
    assert res.value <= wdist.exact_w1(x, y) * (1 + 1e-5)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, device):
    x, y = _shifted_gaussians(500, 4, shift=0.7)
    kwargs = dict(critic="mlp", steps=120, eval_every=20, progress=False, seed=1, device=device)
    reference = wdist.estimate_w1(x, y, **kwargs)

    original = CriticTrainer._evaluate

    def crash_at_80(self, train_gap):
        stop = original(self, train_gap)
        if self.state.step == 80:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(CriticTrainer, "_evaluate", crash_at_80)
    with pytest.raises(KeyboardInterrupt):
        wdist.estimate_w1(x, y, checkpoint=tmp_path, checkpoint_every=20, **kwargs)
    monkeypatch.setattr(CriticTrainer, "_evaluate", original)
    resumed = wdist.estimate_w1(x, y, checkpoint=tmp_path, checkpoint_every=20, resume=True, **kwargs)
    assert resumed.value == reference.value
    assert resumed.history == reference.history


def test_checkpoint_loads_with_weights_only(tmp_path, device):
    x, y = _shifted_gaussians(100, 2)
    wdist.estimate_w1(x, y, critic="linear", steps=20, eval_every=10, progress=False,
                      checkpoint=tmp_path, device=device)
    state = torch.load(tmp_path / "linear" / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["progress"]["step"] == 20


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "x,y,match",
    [
        (torch.zeros(10, 3), torch.zeros(10, 4), "sample shapes differ"),
        (torch.full((10, 3), float("nan")), torch.zeros(10, 3), "x: 10 sample.*NaN or Inf"),
        (torch.zeros(10, 3), torch.tensor([[0.0, 1, float("inf")]] * 5), "y: 5 sample.*NaN or Inf"),
        (torch.zeros(1, 3), torch.zeros(10, 3), "x: need at least 2 samples"),
        (torch.zeros(0, 3), torch.zeros(10, 3), "x: need at least 2 samples"),
        (np.array([["a", "b"]] * 4), torch.zeros(4, 2), "x: unsupported dtype"),
        (torch.zeros(4, 2, dtype=torch.complex64), torch.zeros(4, 2), "x: unsupported dtype"),
        (torch.zeros(4, 2), torch.zeros(4, 2, dtype=torch.bool), "y: unsupported dtype"),
        (torch.zeros(4, 2, 2, 2, 2), torch.zeros(4, 2), "x: expected shape"),
        ("not data", torch.zeros(4, 2), "x: expected a torch tensor"),
        (TensorDataset(torch.zeros(1, 2)), torch.zeros(4, 2), "x: need at least 2 samples"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(x, y, match):
    with pytest.raises(ValueError, match=match):
        wdist.estimate_w1(x, y, steps=1, progress=False)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(holdout=1.0), "holdout"),
        (dict(confidence=1.5), "confidence"),
        (dict(steps=0), "steps"),
        (dict(batch_size=-1), "batch_size"),
        (dict(lr=float("nan")), "lr"),
        (dict(critic="nope"), "critic: unknown name 'nope'"),
        (dict(critic=nn.Sequential(nn.Linear(3, 3), nn.Softplus())), "critic: cannot be certified"),
        (dict(device="tpu"), "device"),
        (dict(device="cuda:7"), "device"),
    ],
)
def test_bad_options_raise_value_error_naming_the_argument(kwargs, match):
    x, y = torch.zeros(10, 3), torch.ones(10, 3)
    with pytest.raises(ValueError, match=match):
        wdist.estimate_w1(x, y, progress=False, **kwargs)


def test_too_few_samples_for_the_holdout():
    with pytest.raises(ValueError, match="x: 3 samples are too few"):
        wdist.estimate_w1(torch.zeros(3, 2), torch.ones(30, 2), holdout=0.3, progress=False)


# --------------------------------------------------------------------------- crosscheck


def test_crosscheck_small_case_is_sound(device):
    x, y = _shifted_gaussians(300, 2, shift=1.0)
    res = wdist.crosscheck(x, y, critic="mlp", steps=300, progress=False, device=device)
    assert res.sound and res.critic <= res.exact * (1 + 1e-5)
    assert 0.8 < res.ratio <= 1 + 1e-5
    assert res.noise_floor > 0


# --------------------------------------------------------------------------- statistical (slow)


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.as_tensor(digits.target)


@pytest.mark.slow
def test_translation_of_32d_gaussians_default_settings():
    """W1(N(0, I), N(c, I)) = ||c|| = 1; 20,000 samples per side, all defaults."""
    x, y = _shifted_gaussians(20_000, 32, shift=1.0, seed=1)
    res = wdist.estimate_w1(x, y, progress=False)
    assert res.value == pytest.approx(1.0, rel=0.03)
    assert res.lower <= 1.0
    assert res.lipschitz <= 1 + 1e-4


@pytest.mark.slow
def test_crosscheck_digits_translation_is_exact():
    """Same samples shifted by 0.05 per pixel: sample W1 = 0.05 * 8 = 0.4 exactly."""
    images, _ = _digits()
    res = wdist.crosscheck(images, images + 0.05, steps=600, progress=False)
    assert res.exact == pytest.approx(0.4, rel=0.01)
    assert res.critic == pytest.approx(0.4, rel=0.01)
    assert res.sound


@pytest.mark.slow
def test_crosscheck_digits_low_vs_high_is_tight_and_sound():
    images, labels = _digits()
    res = wdist.crosscheck(images[labels < 5], images[labels >= 5], steps=800, progress=False)
    assert res.sound, "critic gap above the exact W1: broken Lipschitz certificate"
    assert res.ratio >= 0.90
    assert res.noise_floor > 0


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 8])
def test_crosscheck_gaussian_mixtures_is_tight_and_sound(d):
    gen = torch.Generator().manual_seed(d)
    centers = 3 * torch.randn(4, d, generator=gen)
    x = centers[torch.randint(4, (600,), generator=gen)] + 0.5 * torch.randn(600, d, generator=gen)
    y = centers[torch.randint(4, (600,), generator=gen)].flip(1) + 0.5 * torch.randn(600, d, generator=gen)
    res = wdist.crosscheck(x, y, steps=800, progress=False)
    assert res.sound
    assert res.ratio >= 0.97
    neural = wdist.crosscheck(x, y, critic="mlp", steps=400, progress=False)
    assert neural.sound and neural.ratio > 0.5


def test_resuming_a_converged_run_does_not_train_again(tmp_path, device):
    x, y = _shifted_gaussians(300, 2, shift=0.5)
    kwargs = dict(critic="linear", eval_every=10, progress=False, checkpoint=tmp_path, device=device)
    first = wdist.estimate_w1(x, y, **kwargs)
    assert first.stopped == "converged"
    again = wdist.estimate_w1(x, y, resume=True, **kwargs)
    assert again.value == first.value and again.steps == first.steps


# --------------------------------------------------------------------------- CUDA levers


def test_cuda_levers_come_from_the_environment_and_never_apply_on_cpu(monkeypatch):
    from wdist.cuda_options import CudaOptions

    monkeypatch.setenv("WDIST_AUTOCAST", "bf16")
    monkeypatch.setenv("WDIST_COMPILE", "1")
    monkeypatch.setenv("WDIST_PIN_MEMORY", "0")
    assert CudaOptions.for_device("cuda") == CudaOptions(pin_memory=False, cudnn_benchmark=True,
                                                         autocast_bf16=True, compile=True)
    assert CudaOptions.for_device("cpu") == CudaOptions()  # all off
    monkeypatch.setenv("WDIST_COMPILE", "maybe")
    with pytest.raises(ValueError, match="WDIST_COMPILE"):
        CudaOptions.for_device("cuda:0")


def test_cpu_results_ignore_the_cuda_levers(monkeypatch):
    x, y = _shifted_gaussians(300, 4, shift=0.5)
    kwargs = dict(critic="mlp", steps=30, eval_every=10, progress=False, device="cpu")
    plain = wdist.estimate_w1(x, y, **kwargs)
    for name, value in (("WDIST_AUTOCAST", "bf16"), ("WDIST_COMPILE", "1"), ("WDIST_CUDNN_BENCHMARK", "0")):
        monkeypatch.setenv(name, value)
    levered = wdist.estimate_w1(x, y, **kwargs)
    assert levered.value == plain.value and levered.history == plain.history
