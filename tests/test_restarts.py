"""``restarts``: several starts to the first plateau, the best on validation goes on alone."""

import json

import pytest
import torch

import wdist
from wdist.datasets import translation_samplers
from wdist.estimator import RESTART_SEED_STRIDE
from wdist.training import CriticTrainer

from helpers import _shifted_gaussians, assert_bad_input, folders, invoke  # noqa: F401 (fixtures)


def _paused_then_resumed(monkeypatch, record: list) -> None:
    """Every fit() pauses at its first plateau, then goes on from there."""
    original = CriticTrainer.fit

    def fit(self, *args, pause_at_plateau=False, **kwargs):
        if not pause_at_plateau:
            original(self, *args, pause_at_plateau=True, **kwargs)
            record.append((self.state.stopped, self.state.step, len(self.state.history)))
        original(self, *args, pause_at_plateau=pause_at_plateau, **kwargs)

    monkeypatch.setattr(CriticTrainer, "fit", fit)


@pytest.mark.parametrize("regime", ["finite", pytest.param("sampler", marks=pytest.mark.slow)])
def test_a_fit_paused_at_its_first_plateau_goes_on_exactly_as_an_uninterrupted_one(monkeypatch, regime):
    """The pause keeps the raw and averaged parameters and the optimiser as they are, and the
    resumed fit takes the plateau's decision then (a drop with samplers; on finite samples with
    ``steps`` given, training on): the history and the value are those of a run that never paused."""
    if regime == "finite":
        x, y = _shifted_gaussians(600, 4, shift=0.7)
        inputs = lambda: (x, y)  # noqa: E731
        kw = dict(critic="mlp", steps=200, eval_every=10, input_noise=0.0)  # given steps: on past the plateau
    else:  # the samplers are rebuilt with their seed: both runs draw the same sequence
        inputs = lambda: translation_samplers((4,), shift_norm=0.7, seed=5)[:2]  # noqa: E731
        kw = dict(critic="mlp", eval_every=20, batch_size=64, test_size=2000, restarts=1)
    reference = wdist.estimate_w1(*inputs(), progress=False, seed=3, **kw)
    record = []
    _paused_then_resumed(monkeypatch, record)
    again = wdist.estimate_w1(*inputs(), progress=False, seed=3, **kw)
    (stopped, step, evaluations), = record
    assert stopped == "paused" and 0 < evaluations < len(reference.history)  # it did pause, midway
    if regime == "sampler":
        assert reference.history[evaluations]["lr"] < reference.history[evaluations - 1]["lr"]  # the drop came next
    assert again.history == reference.history
    assert (again.value, again.std_error, again.stopped) == (reference.value, reference.std_error, reference.stopped)


@pytest.mark.slow
def test_restarts_keep_the_start_with_the_best_validation_gap_at_its_first_plateau():
    sx, sy, w1 = translation_samplers((8,), shift_norm=1.0, seed=0)
    res = wdist.estimate_w1(sx, sy, critic="mlp", eval_every=20, batch_size=64, test_size=3000, restarts=3,
                            progress=False, seed=2)
    gaps = res.settings["start_gaps"]["mlp"]
    assert res.settings["restarts"] == 3 and len(gaps) == 3
    assert len(set(gaps)) == 3  # three different starts
    # The kept critic is the best start: its validation gap before its first drop is the best of the three.
    first_rate = res.history[0]["lr"]
    before_drop = max(h["val_gap"] for h in res.history if h["lr"] == first_rate)
    assert before_drop == max(gaps)
    assert res.history[-1]["lr"] < first_rate  # and only it went on through the drops
    assert res.lower <= w1 <= res.upper + 0.05


def test_a_restart_is_a_different_initialisation_of_the_same_critic(monkeypatch):
    """Start r is seeded ``seed + fold + r * RESTART_SEED_STRIDE``: start 0 is the run without restarts."""
    built = []
    original = CriticTrainer.__init__

    def init(self, critic, *args, **kwargs):
        built.append([p.detach().clone() for p in critic.parameters()])
        original(self, critic, *args, **kwargs)

    monkeypatch.setattr(CriticTrainer, "__init__", init)
    x, y = _shifted_gaussians(200, 4)
    wdist.estimate_w1(x, y, critic="mlp", steps=1, progress=False, seed=4, input_noise=0.0)
    wdist.estimate_w1(x, y, critic="mlp", steps=1, progress=False, seed=4, input_noise=0.0, restarts=2)
    wdist.estimate_w1(x, y, critic="mlp", steps=1, progress=False, seed=4 + RESTART_SEED_STRIDE, input_noise=0.0)
    single, (start0, start1), shifted = built[0], built[1:3], built[3]
    assert all(torch.equal(a, b) for a, b in zip(single, start0))
    assert all(torch.equal(a, b) for a, b in zip(shifted, start1))
    assert not all(torch.equal(a, b) for a, b in zip(start0, start1))


def test_critics_whose_start_is_fixed_by_the_data_train_once():
    x, y = _shifted_gaussians(300, 4)
    for critic in ("anchors", "linear"):
        res = wdist.estimate_w1(x, y, critic=critic, steps=20, eval_every=10, restarts=3, progress=False)
        assert res.settings["start_gaps"] == {} and res.settings["restarts"] == 3


def test_one_start_by_default_on_finite_samples_two_with_two_samplers():
    """Fresh draws leave a run to where its start takes it (``DEFAULT_RESTARTS_FRESH``); a
    finite split limits the critic whatever its start, and a sampler on one side only
    leaves the other side's split doing so."""
    from wdist.estimator import DEFAULT_RESTARTS_FRESH

    x, y = _shifted_gaussians(200, 4)
    res = wdist.estimate_w1(x, y, critic="mlp", steps=5, progress=False)
    assert res.settings["restarts"] == 1 and res.settings["start_gaps"] == {}
    draw = lambda n: torch.randn(n, 4)  # noqa: E731
    mixed = wdist.estimate_w1(draw, y, critic="mlp", steps=5, progress=False)
    assert mixed.settings["restarts"] == 1 and mixed.settings["start_gaps"] == {}
    fresh = wdist.estimate_w1(draw, draw, critic="mlp", steps=5, batch_size=64, test_size=200, progress=False)
    assert DEFAULT_RESTARTS_FRESH == 2 and fresh.settings["restarts"] == 2
    assert len(fresh.settings["start_gaps"]["mlp"]) == 2
    one = wdist.estimate_w1(draw, draw, critic="mlp", steps=5, batch_size=64, test_size=200, restarts=1,
                            progress=False)
    assert one.settings["restarts"] == 1 and one.settings["start_gaps"] == {}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_restarts_must_be_a_positive_int(bad):
    x, y = _shifted_gaussians(50, 2)
    with pytest.raises(ValueError, match=r"^restarts: must be a positive int"):
        wdist.estimate_w1(x, y, critic="mlp", steps=2, restarts=bad, progress=False)


def _crash_in_second_start(trainer, order):
    return order.index(id(trainer)) == 1 and len(trainer.state.history) == 2


def _crash_after_the_pause(trainer, order):
    s = trainer.state
    return s.paused_at is not None and s.stopped != "paused"  # the chosen start, going on


@pytest.mark.slow  # 17 s and more: out of test-fast's 3 minutes
@pytest.mark.parametrize("crash", [_crash_in_second_start, _crash_after_the_pause])
def test_an_interrupted_run_with_restarts_resumes_to_the_same_result(tmp_path, monkeypatch, crash):
    """Each start checkpoints in its own folder; a run killed in the second start or in the
    chosen start's continuation ends as the uninterrupted one."""
    x, y = _shifted_gaussians(600, 4, shift=0.7)
    # Given steps: past its plateau the chosen start trains on to 200, and can be killed there.
    kw = dict(critic="mlp", steps=200, eval_every=10, progress=False, seed=1, input_noise=0.0, restarts=2)
    reference = wdist.estimate_w1(x, y, **kw)
    original, order = CriticTrainer._evaluate, []

    def crashing(self, train_gap):
        stop = original(self, train_gap)
        if id(self) not in order:
            order.append(id(self))
        if crash(self, order):
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(CriticTrainer, "_evaluate", crashing)
    with pytest.raises(KeyboardInterrupt):
        wdist.estimate_w1(x, y, checkpoint=tmp_path, **kw)
    monkeypatch.setattr(CriticTrainer, "_evaluate", original)
    assert (tmp_path / "mlp").is_dir() and (tmp_path / "mlp.start1").is_dir()
    resumed = wdist.estimate_w1(x, y, checkpoint=tmp_path, resume=True, **kw)
    assert resumed.history == reference.history and resumed.value == reference.value
    assert resumed.settings["start_gaps"] == reference.settings["start_gaps"]


def test_the_command_line_passes_restarts_and_refuses_a_bad_count(folders, tmp_path):
    out = tmp_path / "r.json"
    result = invoke("estimate", *folders, "--critic", "mlp", "--input-noise", "0", "--steps", "30",
                    "--eval-every", "10", "--restarts", "2", "--json", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["settings"]["start_gaps"]["mlp"]) == 2
    assert_bad_input(invoke("estimate", *folders, "--restarts", "0"), "--restarts")
