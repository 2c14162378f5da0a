"""The wdist command line on folders of images written by the tests.

End-to-end tests run the installed program in a subprocess
(``python -m wdist``, the same entry point as the console script); bad-input
tests run the click command in-process (seconds cheaper, same code path) and a
few of them again as a real process to check the one-line error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import wdist

from helpers import (ENV, W1_LINE, assert_bad_input, demo_quick_output, folders, invoke, load_png_folder, one_thread,  # noqa: F401
                     run_wdist, write_folder)


# --------------------------------------------------------------- end to end
E2E_ARGS = ("--steps", "30", "--seed", "3")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One real run of the installed program with every output requested."""
    tmp = tmp_path_factory.mktemp("e2e")
    a, b = write_folder(tmp / "a", 24, seed=1), write_folder(tmp / "b", 24, shift=40, seed=2)
    out = tmp / "out"
    proc = run_wdist("estimate", a, b, *E2E_ARGS, "--json", out / "r.json", "--plot", out / "curve.png",
                     "--witness", out / "witness.png", "--save-critic", out / "critic.safetensors",
                     "--report", out / "report")
    assert proc.returncode == 0, proc.stderr
    return {"a": a, "b": b, "out": out, "proc": proc, "json": json.loads((out / "r.json").read_text())}


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "wdist"
    assert script.exists() and os.access(script, os.X_OK)
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0
    for command in ("estimate", "exact", "crosscheck", "demo"):
        assert command in proc.stdout


def test_prints_the_parseable_line(e2e):
    match = W1_LINE.search(e2e["proc"].stdout)
    assert match, e2e["proc"].stdout
    assert e2e["proc"].stdout.splitlines()[0] == match.group(0)
    assert float(match.group("value")) == pytest.approx(e2e["json"]["value"], rel=1e-5)
    assert float(match.group("lo")) <= float(match.group("value")) <= float(match.group("hi"))


def test_json_matches_the_library_on_the_same_tensors(e2e):
    x, y = load_png_folder(e2e["a"]), load_png_folder(e2e["b"])
    res = wdist.estimate_w1(x, y, steps=30, seed=3, progress=False, device="cpu")
    got = e2e["json"]
    for key in ("value", "lower", "upper", "lipschitz", "train_value", "std_error"):
        assert got[key] == pytest.approx(getattr(res, key), abs=1e-6), key
    assert got["steps"] == res.steps and got["best_step"] == res.best_step
    assert got["n_test"] == list(res.n_test) and got["settings"]["critic"] == res.settings["critic"]
    cmd = got["command"]
    assert (cmd["n_a"], cmd["n_b"], cmd["image_shape"], cmd["mode"]) == (24, 24, [3, 8, 8], "RGB")
    assert cmd["dir_a"] == str(e2e["a"]) and cmd["seed"] == 3 and cmd["steps"] == 30


def test_plot_is_a_real_png_of_the_documented_size(e2e):
    with Image.open(e2e["out"] / "curve.png") as img:
        assert img.format == "PNG" and img.size == (800, 450)
        arr = np.asarray(img.convert("L"))
    assert arr.std() > 5  # not a blank canvas


def test_witness_grid_and_report(e2e):
    with Image.open(e2e["out"] / "witness.png") as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 300
    report = (e2e["out"] / "report" / "report.md").read_text()
    assert W1_LINE.search(report)
    assert "![training curve](curve.png)" in report and "![witness images](witness.png)" in report
    for name in ("curve.png", "witness.png", "result.json"):
        assert (e2e["out"] / "report" / name).stat().st_size > 0


def test_saved_critic_is_safetensors(e2e):
    from safetensors import safe_open

    with safe_open(str(e2e["out"] / "critic.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["critic"] == e2e["json"]["settings"]["critic"]
    assert float(meta["lipschitz"]) == pytest.approx(e2e["json"]["lipschitz"])
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())


def test_exact_matches_the_library(folders, tmp_path):
    a, b = folders
    proc = run_wdist("exact", a, b, "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    expected = wdist.exact_w1(load_png_folder(a), load_png_folder(b))
    assert json.loads((tmp_path / "e.json").read_text())["exact"] == pytest.approx(expected, rel=1e-12)
    assert re.search(r"^exact W1: \S+", proc.stdout, re.M)


def test_crosscheck_table(folders, tmp_path):
    a, b = folders
    result = invoke("crosscheck", a, b, "--steps", "20", "--critic", "linear", "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    for row in ("exact W1 (POT)", "critic gap", "noise floor", "Lipschitz <=", "sound"):
        assert row in result.stdout
    cc = json.loads((tmp_path / "c.json").read_text())
    assert cc["exact"] == pytest.approx(wdist.exact_w1(load_png_folder(a), load_png_folder(b)), rel=1e-12)
    assert cc["sound"] and cc["critic"] <= cc["exact"] * (1 + 1e-5)


def test_quiet_prints_only_the_result_line(folders):
    result = invoke("estimate", *folders, "--steps", "5", "--critic", "linear", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and W1_LINE.match(result.stdout.strip())


def test_help_is_complete():
    for command, options in {
        "estimate": ("--size", "--center-crop", "--grayscale", "--recursive", "--steps", "--batch-size",
                     "--device", "--num-workers", "--seed", "--json", "--plot", "--save-critic", "--witness",
                     "--report", "--checkpoint", "--checkpoint-every", "--resume", "--quiet",
                     "--skip-bad-images", "--max-pixels", "LANCZOS"),
        "exact": ("--max-points", "--force", "--json"),
        "crosscheck": ("--max-points", "--steps", "noise floor"),
        "demo": ("--out", "--quick"),
    }.items():
        result = invoke(command, "--help")
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        for option in options:
            assert option in text, (command, option)


def test_same_folder_gives_about_zero(folders, tmp_path):
    a, _ = folders
    result = invoke("estimate", a, a, "--steps", "20", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "r.json").read_text())
    # The certified claim is lower <= W1 = 0.  The interval need not cover 0: x's and y's
    # splits of one folder share images (x's training images are y's test images), so the
    # two sides are not independent samples, and the warning says so.
    assert res["lower"] <= 0 and abs(res["value"]) < 0.5
    assert "same folder" in result.stderr


def test_library_value_error_becomes_one_line(folders, tmp_path):
    write_folder(tmp_path / "three", 3)
    assert_bad_input(invoke("estimate", tmp_path / "three", folders[1], "--steps", "2"), "DIR_A", "too few")


@pytest.mark.parametrize("size", ["0x5", "abc", "5x", "-3", "4x0x2"])
def test_impossible_size(folders, size):
    assert_bad_input(invoke("estimate", *folders, "--size", size), "--size")


def test_unknown_device(folders):
    assert_bad_input(invoke("estimate", *folders, "--device", "tpu"), "device", "tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(folders):
    assert_bad_input(invoke("estimate", *folders, "--device", "cuda"), "CUDA is not available")


def test_exact_refuses_large_problems_with_the_memory(folders):
    assert_bad_input(invoke("exact", *folders, "--max-points", "10"), "GB", "--force")


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_real_process_prints_one_error_line(folders, tmp_path, case):
    a, b = folders
    if case == "missing":
        a, needle = tmp_path / "missing", "missing"
    else:
        (b / "zzz.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
        needle = "zzz.png"
    proc = run_wdist("estimate", a, b, "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


# --------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_quick(tmp_path):
    proc = run_wdist("demo", "--quick", "--out", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    assert W1_LINE.search(proc.stdout)
    for name in ("report.md", "curve.png", "witness.png", "result.json", "critic.safetensors"):
        assert (tmp_path / "demo" / name).exists(), name
        assert str(tmp_path / "demo" / name) in proc.stdout
    assert len(list((tmp_path / "demo" / "china").glob("*.png"))) == 48
    assert json.loads((tmp_path / "demo" / "result.json").read_text())["lower"] > 0


def test_bracket_flag_adds_the_upper_side(folders, tmp_path):
    a, b = folders
    out = tmp_path / "r.json"
    result = invoke("estimate", a, b, "--steps", "20", "--critic", "linear", "--bracket", "--json", out)
    assert result.exit_code == 0, result.output
    assert re.search(r"W1 in \[[-0-9.e]+, [-0-9.e]+\] \(95% bracket", result.output)
    block = json.loads(out.read_text())["bracket"]
    assert block["consistent"] and block["lower"] <= block["upper"]
    assert block["m"] == 6 and block["repeats"] == 4  # 24 images per side: m = 24 // 4


# -------------------------------------------------------------------- score
SCORE_LINE = re.compile(r"score: mean (?P<mean>\S+)  std (?P<std>\S+)  n (?P<n>\d+)  Lipschitz <= (?P<lip>\S+)$")
GAP_LINE = re.compile(r"^gap: (?P<gap>\S+)  95% CI \[(?P<lo>\S+), (?P<hi>\S+)\]  Lipschitz <= (?P<lip>\S+)$")


@pytest.fixture
def saved_critic(folders, tmp_path):
    path = tmp_path / "critic.safetensors"
    result = invoke("estimate", *folders, "--steps", "10", "--critic", "bcop", "--save-critic", path, "--quiet")
    assert result.exit_code == 0, result.output
    return path


def _certified_scores(critic_path, folder):
    critic = wdist.load_critic(critic_path)
    with torch.no_grad():
        return critic(load_png_folder(folder)).reshape(-1).double() / max(1.0, critic.lipschitz), critic.lipschitz


def test_score_one_folder_prints_the_certified_scores(folders, saved_critic, tmp_path):
    a, _ = folders
    result = invoke("score", a, "--critic", saved_critic, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    match = SCORE_LINE.match(result.stdout.splitlines()[0])
    assert match, result.stdout
    expected, lipschitz = _certified_scores(saved_critic, a)
    assert float(match["mean"]) == pytest.approx(float(expected.mean()), rel=1e-5)
    assert float(match["std"]) == pytest.approx(float(expected.std()), rel=1e-5)  # unbiased, as printed
    assert int(match["n"]) == 24 and float(match["lip"]) == pytest.approx(lipschitz, rel=1e-5)
    payload = json.loads((tmp_path / "s.json").read_text())
    scores = payload["folders"][0]["scores"]
    assert list(scores) == [f"img_{i:03d}.png" for i in range(24)]
    assert list(scores.values()) == pytest.approx(expected.tolist(), abs=1e-9)
    assert payload["lipschitz"] == lipschitz and payload["command"]["name"] == "score"


def test_score_two_folders_gives_the_gap_with_an_interval(folders, saved_critic):
    a, b = folders
    result = invoke("score", a, b, "--critic", saved_critic)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    match = GAP_LINE.match(lines[0])
    assert match, result.stdout
    fa, fb = _certified_scores(saved_critic, a)[0], _certified_scores(saved_critic, b)[0]
    se = float((fa.var() / len(fa) + fb.var() / len(fb)).sqrt())
    assert float(match["gap"]) == pytest.approx(float(fa.mean() - fb.mean()), rel=1e-5)
    assert float(match["hi"]) - float(match["gap"]) == pytest.approx(1.959964 * se, rel=1e-4)
    assert sum(bool(SCORE_LINE.search(ln)) for ln in lines) == 2


@pytest.mark.parametrize("options,needle", [(("--size", "4x4"), "3x4x4"), (("--grayscale",), "1x8x8")])
def test_score_refuses_images_of_another_shape(folders, saved_critic, options, needle):
    result = invoke("score", folders[0], "--critic", saved_critic, *options)
    assert_bad_input(result, "critic.safetensors", "3x8x8", needle)


def test_score_names_an_unreadable_critic_file(folders, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert_bad_input(invoke("score", folders[0], "--critic", tmp_path / "junk.safetensors"), "junk.safetensors")


# The BCOP candidate's validation score comes out of 30 training steps through oneDNN
# convolutions, whose kernels depend on the CPU's instruction set, and training amplifies
# their rounding: 11.0912 on the machine that recorded the earlier pin, 11.0596 on an AMD
# EPYC with AVX-512 (CI's, 2026-12-02, which recorded this one), every other number equal to 1e-9.  The two MLP candidates
# (7.84 and 8.32, recorded on that EPYC) train through the same ISA-dependent matrix
# kernels, so they get the same 1%.  Each only has to lose to the chosen linear critic
# (13.14), which the printed lines check exactly.
TRAINED_CONV_PATHS = {f"result.settings.candidates.{name}": 1e-2
                      for name in ("bcop", "mlp (input_noise=0.7)", "mlp (input_noise=0)")}


def _same_up_to_rounding(got, want, path="result"):
    """Equal structure, strings and ints; floats within 1e-6 (another CPU may round
    differently), or the wider tolerance TRAINED_CONV_PATHS gives a trained convolution."""
    assert type(got) is type(want) or {type(got), type(want)} <= {int, float}, path
    if isinstance(want, dict):
        assert list(got) == list(want), path  # same keys in the same order
        for key in want:
            _same_up_to_rounding(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _same_up_to_rounding(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=TRAINED_CONV_PATHS.get(path, 1e-6), abs=1e-9), path
    else:
        assert got == want, path


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="pinned on CPU (the demo runs on cuda when it can)")
def test_demo_quick_prints_and_writes_what_it_did_when_pinned(tmp_path):
    """The seeded quick demo's printed result and JSON, timing aside, as pinned in
    tests/data/demo_quick.json: moving code must not move a number.  (First pinned before
    the layout change of issue 13; recorded again by tests/data/record_demo_quick.py when
    issue 14's changes meant to move it: 11.5895 -> 11.5251 -> 11.6678 -> 11.3865; the
    MLP candidates since left the value as it was; the default holdout 0.5 -> 0.3 moved it
    to 11.7249, its interval wider by the smaller test split.)"""
    golden = json.loads((Path(__file__).parent / "data" / "demo_quick.json").read_text())
    lines, result = demo_quick_output(tmp_path / "demo")
    assert lines == golden["stdout"]
    _same_up_to_rounding(result, golden["result"])
