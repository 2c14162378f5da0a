"""Artefacts of a result: the saved critic loads back with a recomputed certificate."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import wdist
from wdist.critics import build_critic

from helpers import _shifted_gaussians


def _images(n: int = 40, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.rand(n, 1, 8, 8, generator=gen) * 0.8


@pytest.mark.parametrize("critic", ["bcop", "anchors", "mlp", "ridge", "subspace"])
def test_saved_critic_loads_back_with_identical_values(tmp_path, critic):
    # The subspace critic projects onto 16 dimensions: its inputs need more.
    x, y = _images() if critic == "bcop" else _shifted_gaussians(120, 20 if critic == "subspace" else 3, shift=0.5)
    res = wdist.estimate_w1(x, y, critic=critic, steps=20, eval_every=10, progress=False, device="cpu")
    path = wdist.save_critic(res, tmp_path / "critic.safetensors")
    rng_before = torch.get_rng_state()
    loaded = wdist.load_critic(path)
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading leaves the caller's RNG alone
    assert not loaded.training and loaded.sample_shape == tuple(res.settings.sample_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.critic(x)) and torch.equal(loaded(y), res.critic(y))
    assert loaded.lipschitz == res.lipschitz  # recomputed from the same weights: the same float64


def test_the_certificate_is_recomputed_not_read_from_the_metadata(tmp_path):
    critic = build_critic("wgan-gp", (4,))  # unconstrained layers: the bound is what the weights say
    state = {k: v.contiguous() for k, v in critic.state_dict().items()}
    true_bound = wdist.lipschitz_bound(critic, (4,))
    assert true_bound > 1.01
    path = tmp_path / "tampered.safetensors"
    save_file(state, str(path), metadata={"critic": "wgan-gp", "sample_shape": "[4]", "lipschitz": "1.0",
                                          "architecture": str(critic)})
    loaded = wdist.load_critic(path)
    assert loaded.lipschitz == pytest.approx(true_bound, rel=1e-12)


@pytest.mark.parametrize("meta,match", [
    ({"critic": "nope", "sample_shape": "[4]"}, "not one of wdist's named critics"),
    ({"critic": "linear", "sample_shape": "[0, 4]"}, "sample_shape"),
    ({"critic": "linear", "sample_shape": "[5]"}, "do not fit"),
])
def test_bad_metadata_is_a_value_error_naming_the_file(tmp_path, meta, match):
    state = {k: v.contiguous() for k, v in build_critic("linear", (4,)).state_dict().items()}
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ValueError, match=match) as info:
        wdist.load_critic(path)
    assert str(path) in str(info.value)


def test_a_critic_saved_with_other_layers_is_refused_not_loaded_into_another_function(tmp_path):
    """Activations carry no weights: a bcop critic saved with MaxMin (before the
    convolutional critics sorted groups of 8) would load without error and compute
    another function; the recorded architecture makes it a ValueError naming the file."""
    from wdist.critics import bcop_critic
    from wdist.nn import MaxMin

    old = bcop_critic((1, 8, 8), activation=MaxMin)
    state = {k: v.contiguous() for k, v in old.state_dict().items()}
    path = tmp_path / "old.safetensors"
    save_file(state, str(path), metadata={"critic": "bcop", "sample_shape": "[1, 8, 8]", "architecture": str(old)})
    with pytest.raises(ValueError, match="other layers") as info:
        wdist.load_critic(path)
    assert str(path) in str(info.value) and "MaxMin" in str(info.value)
    # the same weights recorded with today's layers load
    save_file(state, str(path), metadata={"critic": "bcop", "sample_shape": "[1, 8, 8]",
                                          "architecture": str(build_critic("bcop", (1, 8, 8)))})
    assert wdist.load_critic(path).sample_shape == (1, 8, 8)


def test_a_file_without_a_layer_record_loads_only_where_its_weights_fix_the_function(tmp_path):
    """Files written before wdist recorded the layers: nothing tells a MaxMin file from
    a GroupSort one, so a critic with weightless layers is refused (naming the file and
    those layers); a linear critic's function is its weights, so it still loads."""
    for name, shape, loads in [("bcop", (1, 8, 8), False), ("mlp", (4,), False), ("linear", (4,), True)]:
        critic = build_critic(name, shape)
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in critic.state_dict().items()}, str(path),
                  metadata={"critic": name, "sample_shape": json.dumps(list(shape))})
        if loads:
            x = torch.randn(5, *shape)
            with torch.no_grad():
                assert torch.equal(wdist.load_critic(path)(x), critic(x))
            continue
        with pytest.raises(ValueError, match="without a record of its layers") as info:
            wdist.load_critic(path)
        message = str(info.value)
        assert str(path) in message and "GroupSort" in message and "\n" not in message


def test_a_file_that_is_not_safetensors_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors critic") as info:
        wdist.load_critic(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="missing.safetensors"):
        wdist.load_critic(tmp_path / "missing.safetensors")


def test_saved_metadata_names_the_critic_and_its_shape(tmp_path):
    x, y = _shifted_gaussians(60, 2)
    res = wdist.estimate_w1(x, y, critic="linear", steps=10, eval_every=10, progress=False)
    path = wdist.save_critic(res, tmp_path / "c.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["critic"] == "linear" and json.loads(meta["sample_shape"]) == [2]
    assert set(load_file(str(path))) == set(res.critic.state_dict())


def test_a_cross_fitted_critic_saves_and_loads_as_the_mean_of_its_folds(tmp_path):
    x, y = _shifted_gaussians(300, 3, shift=1.0)
    res = wdist.estimate_w1(x, y, critic="mlp", folds=3, steps=20, eval_every=10, progress=False)
    path = wdist.report.save_critic(res, tmp_path / "critic.safetensors")
    loaded = wdist.load_critic(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.critic(x))
    assert len(loaded.critics) == 3
    assert loaded.lipschitz == pytest.approx(wdist.lipschitz_bound(res.critic, (3,)), rel=1e-12)
    assert loaded.lipschitz <= 1 + 1e-4
