"""study.py: the verdict and the equal-FLOPs split against hand numbers; a tiny study end to end
(every table and picture in its report); a rerun of a half-finished study trains only what is
missing."""
import os
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fvd
import study

# Seconds per run: the budget is spent before training starts, so every run stops after its
# calibration steps; FVD on 2 videos a set, no FVD points on the curves.
ARGV = ["--budget-minutes", "0.05", "--batch-size", "1", "--fvd-n", "2", "--fvd-points", "0", "--device", "cpu"]


class PooledPixels(torch.nn.Module):
    """A stand-in for I3D, for speed alone (I3D takes seconds per video on this CPU): 400
    features of pooled pixels and pooled squared pixels (the second sees detail that the block
    means average away: an upscaler's start, the interpolated view, differs from the real videos
    there), scaled x100 so that FVDs land where I3D's do (an upscaler's start near 800, where the
    log's 2 decimals show two training steps). Everything around it, the study's FVD code
    included, is real."""
    weights_id = "test: pooled pixels"

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(2 * 3 * 2 * 16 * 16, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                # (B, 3, T, 224, 224)
        pooled = [F.adaptive_avg_pool3d(v, (2, 16, 16)).flatten(1) for v in (x, x * x)]
        return 100 * self.project(torch.cat(pooled, dim=1))            # (B, 400)


def test_verdict_by_hand():
    assert study.verdict(80, 100, 0.1) == "supported"
    assert study.verdict(95, 100, 0.1) == "inconclusive at this scale"
    assert study.verdict(109, 100, 0.1) == "inconclusive at this scale"
    assert study.verdict(120, 100, 0.1) == "not supported"
    assert study.verdict(1e-6, 1e-4, 0.0) == "supported"
    assert study.verdict(1e-3, 1e-4, 0.0) == "not supported"
    line = study.verdict_line("Claim.", 80, 100, "A", "B")
    assert line.startswith("**Verdict: supported.** Claim. (A = 80, B = 100; criterion: A < 0.90 x B")


def test_equal_flops_split_by_hand():
    """SSW stages at 1, 2, 3 s/step and FLOPs 1, 2, 3; the ablations at 1 s/step; the baseline
    at 4 s/step and 12 FLOPs. Equal FLOPs: n (1 + 2 + 3) = 12 n_d, so n_d = n / 2, and the time
    n (1 + 2 + 3 + 1 + 1) + 4 n / 2 = 10 n fits 1000 s with n = 100."""
    s_per_step = {"ssw-stage1": 1, "ssw-stage2": 2, "ssw-stage3": 3, "dvd": 4,
                  "stage2-no-dm": 1, "stage2-no-context": 1}
    tflop = {"ssw-stage1": 1, "ssw-stage2": 2, "ssw-stage3": 3, "dvd": 12}
    steps = study.plan_steps(1000, s_per_step, tflop)
    assert steps == {"ssw-stage1": 100, "ssw-stage2": 100, "ssw-stage3": 100, "dvd": 50,
                     "stage2-no-dm": 100, "stage2-no-context": 100}
    assert sum(steps[r] * tflop[r] for r in study.SSW) == steps["dvd"] * tflop["dvd"] == 600
    assert study.plan_steps(1009, s_per_step, tflop) == steps  # whole steps, within the time
    assert set(study.plan_steps(1, s_per_step, tflop).values()) == {study.CAL_STEPS}  # never fewer


def test_training_seconds_by_hand():
    """s/it times the steps since the last status line; an FVD record between them adds
    nothing, since s/it already leaves scoring out (train.Status)."""
    log = [{"step": 2, "s_per_it": 1.0}, {"step": 2, "fvd": 900.0, "fvd_n": 4, "fvd_s": 5.0},
           {"step": 6, "s_per_it": 0.5}, {"step": 6, "grounding_error": 0.01}]
    assert study.training_seconds(log) == 2 * 1.0 + 4 * 0.5


def test_plot_draws_every_panel(tmp_path):
    """Lines, single points (an FVD curve of one point) and an empty panel."""
    path = tmp_path / "curves.png"
    study.plot(str(path), "run", [("losses", {"loss_D": ([1, 2, 3], [1.0, 0.5, 0.2])}),
                                  ("FVD", {"fvd": ([5], [100.0])}), ("empty", {"x": ([], [])})])
    img = Image.open(path).convert("RGB")
    assert img.size == (3 * 300, 244)
    colours = {rgb for _, rgb in img.getcolors(1 << 16)}
    assert (0x1f, 0x77, 0xb4) in colours


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "study"
    torch.manual_seed(0)
    proxy = PooledPixels()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fvd, "load_i3d", lambda: proxy)
        return out, study.main([*ARGV, "--out", str(out)])


def test_report_has_every_table_and_picture(finished):
    out, path = finished
    text = open(path).read()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "- Machine: ", "- Seeds: ", "- Budget: "):
        assert heading in text
    for row in ("| SSW-GAN: tiny stages 1, 2, 3 |", "| DVD-GAN: dvd-tiny, one stage |",
                "| trilinear x2 (the floor) |", "| with D_m (--lambda-m 1) |", "| without D_m (--lambda-m 0) |",
                "| --context 6 |", "| --context 0 |", "| whole video |",
                *(f"| {overlap} | " for overlap in [*range(7), 12]), *(f"| {r} | " for r in study.RUNS)):
        assert row in text, row
    verdicts = re.findall(r"\*\*Verdict: ([a-z ]+)\.\*\*", text)
    assert len(verdicts) == 8
    assert set(verdicts) <= {"supported", "not supported", "inconclusive at this scale"}
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(pictures) == sorted(["arm1-samples.png", "stage2-samples.png",
                                       *(f"curves-{r}.png" for r in study.RUNS)])
    for picture in pictures:
        assert Image.open(out / picture).size[0] > 100
    assert not re.search(r"\bnan\b", text) and "Smoke run" not in text


train_train = study.train.train


def test_rerun_trains_only_what_is_missing(finished, monkeypatch):
    """A study whose last run is missing (it never ran) trains that run alone; the others'
    checkpoints stay as they were, and its scores come from results.json. A run stopped by a
    signal stops the study, to be rerun."""
    out, path = finished
    missing = list(study.RUNS)[-1]
    shutil.rmtree(out / missing)
    os.remove(path)
    kept = {r: os.path.getmtime(out / r / "ckpt.pt") for r in study.RUNS if r != missing}
    monkeypatch.setattr(fvd, "load_i3d", None)  # nothing is scored again
    monkeypatch.setattr(study.train, "train", lambda args: {"step": 1})  # as a Ctrl-C at step 1
    with pytest.raises(SystemExit, match=f"stopped during {missing} at step 1: rerun the same command"):
        study.main([*ARGV, "--out", str(out)])
    monkeypatch.setattr(study.train, "train", train_train)
    trained, real_train = [], study.train.train
    monkeypatch.setattr(study.train, "train",
                        lambda args: trained.append(os.path.basename(args.out)) or real_train(args))
    assert study.main([*ARGV, "--out", str(out)]) == path and os.path.exists(path)
    assert trained == [missing]
    assert {r: os.path.getmtime(out / r / "ckpt.pt") for r in kept} == kept
    with pytest.raises(ValueError, match="was planned with"):
        study.main([*ARGV, "--fvd-n", "3", "--out", str(out)])
