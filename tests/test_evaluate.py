"""evaluate.py: frame statistics and seams by hand; the FVD ladder end to end (every rung, the
cache, chains that start later); each upscaling rung's start is the untrained stage; the table's
ratios to the floor and to the start."""

import numpy as np
import pytest
import torch

import evaluate
from evaluate import frame_stats, pair_cadence, seam_error, seam_frames
from models import build_stage, ground, stage_config, upsample
from sample import load_chain
from test_study import PooledPixels  # the I3D stand-in, for speed alone

CPU = torch.device("cpu")


def test_seam_error_by_hand():
    """Frames 0,1,2 | 3,4,5 (a jump of 4 at the seam, steps of 1 inside): ratio 4."""
    x = torch.tensor([0.0, 1, 2, 6, 7, 8]).view(1, 1, 6, 1, 1)
    assert seam_frames(Tc=3, chunk=2) == [4]  # chunks of 2 cond frames -> seams at output 4
    assert seam_error(x, [3]) == pytest.approx(4.0)
    smooth = torch.arange(6.0).view(1, 1, 6, 1, 1)
    assert seam_error(smooth, [3]) == pytest.approx(1.0)


def test_frame_stats_by_hand():
    """Two videos of 3 frames 2x2, grey levels: frame values 0, 10, 40 and a ramp in x."""
    g = torch.tensor([0.0, 10, 40]).view(1, 1, 3, 1, 1).repeat(2, 3, 1, 2, 2)
    g[..., 1] += 8                                             # |d/dx| = 8, |d/dy| = 0
    change, sharpness = frame_stats(g / 127.5)
    torch.testing.assert_close(change, torch.tensor([10.0, 30.0]))
    torch.testing.assert_close(sharpness, torch.tensor([4.0, 4.0, 4.0]))


def test_pair_cadence_by_hand():
    """Changes 10, 30, 10, 30, 10 between frames: within pairs (0->1, 2->3, 4->5) 10, across 30."""
    assert pair_cadence(torch.tensor([10.0, 30, 10, 30, 10])) == pytest.approx(1 / 3)
    assert pair_cadence(torch.tensor([5.0, 5, 5])) == pytest.approx(1.0)


def test_ladder_prints_every_rung(checkpoints, tmp_path, capsys):
    """The ladder on tiny checkpoints: every rung, a number each; a chain that starts at stage 3
    has its own rungs; real statistics are cached."""
    argv = ["--n", "4", "--batch", "4", "--fvd-frames", "10", "--fvd-cache", str(tmp_path)]
    scores = evaluate.main(["--ckpt", *checkpoints, *argv])
    names = [name for name, *_ in scores]
    assert names == ["real vs real (another draw)",
                     "nearest x2 of real 16@16 views", "trilinear x2 of real 16@16 views",
                     "stage 3 untrained on real 16@16 views", "stage 3 on real 16@16 views",
                     "nearest x4 of real 8@8 views", "trilinear x4 of real 8@8 views",
                     "stages 2-3 untrained on real 8@8 views", "stages 2-3 on real 8@8 views",
                     "full chain from noise"]
    table = capsys.readouterr().out
    assert "| / its trilinear floor | / its start |" in table
    for name, value, change0, sharp0, pairs in scores:
        assert np.isfinite([value, change0, sharp0, pairs]).all() and value > 0 and name in table
    assert len(list(tmp_path.glob("*.npz"))) == 1
    only3 = evaluate.main(["--ckpt", checkpoints[2], *argv])
    assert [name for name, *_ in only3] == names[:-3]
    for rung in ("stage 3 on real 16@16 views", "stage 3 untrained on real 16@16 views"):
        # the same videos, against the cached real statistics
        alone, chained = ([v for name, v, *_ in rows if name == rung] for rows in (only3, scores))
        assert alone == pytest.approx(chained)


@torch.no_grad()
def test_the_start_rung_is_the_untrained_stage(checkpoints, tmp_path):
    """Each upscaling rung's start scores what the same stages untrained make, computed here
    directly: fresh Gups of the checkpoints' configs (build_stage) on the same real views. Their
    residual is zero, so their videos are the grounded interpolation of those views (the tiny
    checkpoints are grounded, train.py's default), which no trained stage makes exactly."""
    model, n, frames, batch, cache = PooledPixels(), 4, 10, 4, str(tmp_path)
    chain = load_chain(checkpoints, CPU)
    rng = torch.get_rng_state()
    scores = {name: v for name, v, *_ in evaluate.ladder(chain, "synthetic", n, frames, batch, CPU, cache, model)}
    assert torch.equal(torch.get_rng_state(), rng)  # building the starts moved no caller's stream
    real = evaluate.real_stats(model, "synthetic", chain[-1][0], n, frames, batch, cache)
    for stages, views in ((chain[-1:], "16@16"), (chain[-2:], "8@8")):
        which = "stage 3" if len(stages) == 1 else "stages 2-3"
        fresh = [(cfg, build_stage(cfg)[0].eval()) for cfg, _ in stages]
        direct = evaluate.score(evaluate.upscaled(fresh, "synthetic", n, batch, CPU), model, n, frames, real)[0]
        assert scores[f"{which} untrained on real {views} views"] == pytest.approx(direct)
        assert scores[f"{which} on real {views} views"] != pytest.approx(direct)
        (x, _), = evaluate.real_views("synthetic", stages[-1][0], n, batch, down=len(stages))
        for cfg, _ in stages:
            assert cfg.grounded
            x = ground(upsample(x), x)
        torch.testing.assert_close(next(evaluate.upscaled(fresh, "synthetic", n, batch, CPU)), x,
                                   rtol=1e-5, atol=1e-5)


def test_ladder_table_sets_each_rung_against_its_own_floor():
    """A rung made from real views of one size is divided by trilinear of those views; the
    chain from noise by trilinear of the lowest views; floors themselves get no ratio."""
    scores = [("real vs real (another draw)", 100.0, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, 1, 1, 1), ("stage 3 on real 16@16 views", 300.0, 1, 1, 1),
              ("trilinear x4 of real 8@8 views", 1000.0, 1, 1, 1), ("stages 2-3 on real 8@8 views", 1500.0, 1, 1, 1),
              ("full chain from noise", 500.0, 1, 1, 1)]
    ratios = [line.split("|")[3].strip() for line in
              evaluate.ladder_table(scores, stage_config("tiny", 3)).splitlines()[2:]]
    assert ratios == ["", "", "0.75", "", "1.50", "0.50"]


def test_ladder_table_sets_each_upscaler_against_its_start():
    """A trained upscaling rung is also divided by the same stages untrained on the same views
    (its start, 1.00 itself); floors and the chain from noise get no such ratio."""
    scores = [("real vs real (another draw)", 100.0, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, 1, 1, 1),
              ("stage 3 untrained on real 16@16 views", 320.0, 1, 1, 1),
              ("stage 3 on real 16@16 views", 240.0, 1, 1, 1),
              ("trilinear x4 of real 8@8 views", 1000.0, 1, 1, 1),
              ("stages 2-3 untrained on real 8@8 views", 800.0, 1, 1, 1),
              ("stages 2-3 on real 8@8 views", 600.0, 1, 1, 1), ("full chain from noise", 500.0, 1, 1, 1)]
    rows = [line.split("|") for line in evaluate.ladder_table(scores, stage_config("tiny", 3)).splitlines()[2:]]
    assert [r[3].strip() for r in rows] == ["", "", "0.80", "0.60", "", "0.80", "0.60", "0.50"]
    assert [r[4].strip() for r in rows] == ["", "", "1.00", "0.75", "", "1.00", "0.75", ""]
