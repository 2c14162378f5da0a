"""Checkpoints: resuming gives the uninterrupted result; the preflight refuses what it must."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import wdist
from wdist.cli import checkpoint_steps
from wdist.training import CriticTrainer

from helpers import ENV, _shifted_gaussians, assert_bad_input, folders, invoke, one_thread, run_wdist, write_folder  # noqa: F401 (fixtures)


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
    wdist.estimate_w1(x, y, critic="mlp", steps=20, eval_every=10, progress=False,
                      checkpoint=tmp_path, device=device)
    state = torch.load(tmp_path / "mlp" / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["progress"]["step"] == 20


def test_resuming_a_converged_run_does_not_train_again(tmp_path):
    x, y = _shifted_gaussians(300, 2, shift=0.5)
    kwargs = dict(critic="mlp", eval_every=10, progress=False, checkpoint=tmp_path)
    first = wdist.estimate_w1(x, y, **kwargs)
    assert first.stopped == "converged"
    again = wdist.estimate_w1(x, y, resume=True, **kwargs)
    assert again.value == first.value and again.steps == first.steps


def test_a_checkpoint_from_a_run_without_the_parameter_average_is_refused_by_name(tmp_path):
    """Checkpoints written before the moving average (no "ema" in them) cannot continue
    a run that keeps one: a one-line ValueError naming the file, not a KeyError."""
    x, y = _shifted_gaussians(100, 2)
    kwargs = dict(critic="mlp", steps=20, eval_every=10, progress=False, checkpoint=tmp_path)
    wdist.estimate_w1(x, y, **kwargs)
    path = tmp_path / "mlp" / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old["signature"]["ema"], old["signature"]["lr_drops"], old["trainer"]["ema"]
    torch.save(old, path)
    with pytest.raises(ValueError, match=r"checkpoint: .*checkpoint\.pt was written with other settings"):
        wdist.estimate_w1(x, y, resume=True, **kwargs)


def test_resume_needs_checkpoint(folders):
    assert_bad_input(invoke("estimate", *folders, "--resume"), "--checkpoint")


def test_the_linear_critic_is_fitted_in_closed_form_and_writes_no_checkpoint(tmp_path):
    x, y = _shifted_gaussians(300, 2, shift=0.5)
    res = wdist.estimate_w1(x, y, critic="linear", progress=False, checkpoint=tmp_path)
    assert res.stopped == "closed_form" and res.steps == 0
    assert not (tmp_path / "linear").exists()  # recomputed in milliseconds, nothing to resume
    again = wdist.estimate_w1(x, y, critic="linear", progress=False, checkpoint=tmp_path, resume=True)
    assert again.value == res.value


def test_existing_checkpoint_needs_resume(folders, tmp_path):
    (tmp_path / "ck" / "bcop").mkdir(parents=True)
    torch.save({}, tmp_path / "ck" / "bcop" / "checkpoint.pt")
    assert_bad_input(invoke("estimate", *folders, "--checkpoint", tmp_path / "ck"), "--resume")


# --------------------------------------------------------- resume after kill
RESUME_ARGS = ("--critic", "bcop", "--steps", "300", "--eval-every", "20", "--seed", "5", "--batch-size", "16")


SENTINEL = 12345.0


def _mark_checkpoint(directory: Path) -> None:
    """Put a sentinel in the saved history: it reaches the result only if training resumed."""
    path = directory / "bcop" / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    payload["trainer"]["history"][0]["train_gap"] = SENTINEL
    torch.save(payload, path)


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    """Folders and the value of an uninterrupted run with a checkpoint folder."""
    tmp = tmp_path_factory.mktemp("resume")
    a, b = write_folder(tmp / "a", 48, seed=1), write_folder(tmp / "b", 48, shift=30, seed=2)
    proc = run_wdist("estimate", a, b, *RESUME_ARGS, "--checkpoint", tmp / "ck_ref", "--json", tmp / "ref.json",
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    return a, b, json.loads((tmp / "ref.json").read_text())


def _wait_for_checkpoint(proc: subprocess.Popen, directory: Path, timeout: float = 240) -> None:
    start = time.monotonic()
    while not list(directory.glob("*/checkpoint.pt")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() - start < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_resume_after_kill_matches_uninterrupted_run(resume_data, tmp_path, sig, code):
    a, b, reference = resume_data
    ck = tmp_path / "ck"
    args = [sys.executable, "-m", "wdist", "estimate", str(a), str(b), *RESUME_ARGS, "--checkpoint", str(ck),
            "--json", str(tmp_path / "r.json")]
    # SIGINT back to its default in the child: a shell that runs the suite in the background
    # starts it ignored, and Python then never turns it into KeyboardInterrupt.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_checkpoint(proc, ck)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and str(ck) in stderr and "--resume" in stderr
    saved = checkpoint_steps(ck)
    assert saved and all(0 < s < 300 for s in saved.values())  # killed mid-run
    assert not (tmp_path / "r.json").exists()
    _mark_checkpoint(ck)
    resumed = run_wdist(*args[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint" in resumed.stderr
    got = json.loads((tmp_path / "r.json").read_text())
    for key in ("value", "lower", "upper", "lipschitz"):
        assert got[key] == pytest.approx(reference[key], abs=1e-6), key
    assert got["history"][0]["train_gap"] == SENTINEL  # it continued from the checkpoint
    assert [h["step"] for h in got["history"]] == [h["step"] for h in reference["history"]]
    assert [h["val_gap"] for h in got["history"]] == pytest.approx([h["val_gap"] for h in reference["history"]])
