"""evaluate.py: frame statistics and seams by hand; the FVD ladder end to end (every rung, the
cache, chains that start later); each rung's start is the untrained stage; the table's ratios to
the floor and to the start, and its headroom closed; headroom by hand and on real videos;
recognizability by hand, on real and on noise videos; the recognizer's cache; a stage's scores."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
import fvd
from evaluate import FVD_SEED, frame_stats, headroom_closed, pair_cadence, seam_error, seam_frames
from models import build_stage, ground, stage_config, upsample
from sample import load_chain
from test_study import PooledPixels  # the I3D stand-in, for speed alone

CPU = torch.device("cpu")
fvd_video_features = fvd.video_features


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
    """The ladder on tiny checkpoints: every rung, a number and a recognizability each; a chain
    that starts at stage 3 has its own rungs; real statistics and the recognizer are cached."""
    argv = ["--n", "4", "--batch", "4", "--fvd-frames", "10", "--fvd-cache", str(tmp_path),
            "--recognizer-clips", "32", "--recognizer-steps", "2"]
    scores = evaluate.main(["--ckpt", *checkpoints, *argv])
    names = [name for name, *_ in scores]
    assert names == ["real vs real (another draw)",
                     "nearest x2 of real 16@16 views", "trilinear x2 of real 16@16 views",
                     "stage 3 untrained on real 16@16 views", "stage 3 on real 16@16 views",
                     "nearest x4 of real 8@8 views", "trilinear x4 of real 8@8 views",
                     "stages 2-3 untrained on real 8@8 views", "stages 2-3 on real 8@8 views",
                     "full chain untrained from noise", "full chain from noise"]
    table = capsys.readouterr().out
    assert "| / its trilinear floor | / its start | headroom closed | recognizability (held-out real " in table
    for name, value, recognizable, change0, sharp0, pairs in scores:
        assert np.isfinite([value, change0, sharp0, pairs]).all() and value > 0 and name in table
        assert 0 <= recognizable <= 1  # the tiny chain draws the synthetic data's classes
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert len(list(tmp_path.glob("recognizer-*.pt"))) == 1
    only3 = evaluate.main(["--ckpt", checkpoints[2], *argv])
    assert [name for name, *_ in only3] == names[:-4]
    for rung in ("stage 3 on real 16@16 views", "stage 3 untrained on real 16@16 views"):
        # the same videos, against the cached real statistics, by the cached recognizer
        alone, chained = (next(row for row in rows if row[0] == rung) for rows in (only3, scores))
        assert alone[1] == pytest.approx(chained[1]) and alone[2] == chained[2]


@torch.no_grad()
def test_the_start_rung_is_the_untrained_stage(checkpoints, tmp_path):
    """Each upscaling rung's start scores what the same stages untrained make, computed here
    directly: fresh Gups of the checkpoints' configs (build_stage) on the same real views. Their
    residual is zero, so their videos are the grounded interpolation of those views (the tiny
    checkpoints are grounded, train.py's default), which no trained stage makes exactly. The
    chain's start from noise is each stage built under FVD_SEED, the trained chain's is not."""
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
        torch.testing.assert_close(next(evaluate.upscaled(fresh, "synthetic", n, batch, CPU))[0], x,
                                   rtol=1e-5, atol=1e-5)
    start = []
    with torch.random.fork_rng(devices=[]):
        for cfg, _ in chain:
            torch.manual_seed(FVD_SEED)
            start.append((cfg, build_stage(cfg)[0].eval()))
    direct = evaluate.score(evaluate.from_noise(start, n, batch, CPU), model, n, frames, real)[0]
    assert scores["full chain untrained from noise"] == pytest.approx(direct)
    assert scores["full chain from noise"] != pytest.approx(direct)


def test_ladder_table_sets_each_rung_against_its_own_floor():
    """A rung made from real views of one size is divided by trilinear of those views; the
    chain from noise by trilinear of the lowest views; floors themselves get no ratio."""
    scores = [("real vs real (another draw)", 100.0, None, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, None, 1, 1, 1),
              ("stage 3 on real 16@16 views", 300.0, None, 1, 1, 1),
              ("trilinear x4 of real 8@8 views", 1000.0, None, 1, 1, 1),
              ("stages 2-3 on real 8@8 views", 1500.0, None, 1, 1, 1), ("full chain from noise", 500.0, None, 1, 1, 1)]
    ratios = [line.split("|")[3].strip() for line in
              evaluate.ladder_table(scores, stage_config("tiny", 3)).splitlines()[2:]]
    assert ratios == ["", "", "0.75", "", "1.50", "0.50"]


def test_ladder_table_sets_each_upscaler_against_its_start():
    """A trained upscaling rung is also divided by the same stages untrained on the same views
    (its start, 1.00 itself), and given the headroom it closed from there towards real vs real
    (0.00 itself); floors, and the chain from noise without its start, get neither."""
    scores = [("real vs real (another draw)", 100.0, None, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, None, 1, 1, 1),
              ("stage 3 untrained on real 16@16 views", 320.0, None, 1, 1, 1),
              ("stage 3 on real 16@16 views", 240.0, None, 1, 1, 1),
              ("trilinear x4 of real 8@8 views", 1000.0, None, 1, 1, 1),
              ("stages 2-3 untrained on real 8@8 views", 800.0, None, 1, 1, 1),
              ("stages 2-3 on real 8@8 views", 600.0, None, 1, 1, 1), ("full chain from noise", 500.0, None, 1, 1, 1)]
    rows = [line.split("|") for line in evaluate.ladder_table(scores, stage_config("tiny", 3)).splitlines()[2:]]
    assert [r[3].strip() for r in rows] == ["", "", "0.80", "0.60", "", "0.80", "0.60", "0.50"]
    assert [r[4].strip() for r in rows] == ["", "", "1.00", "0.75", "", "1.00", "0.75", ""]
    # (320 - 240) / (320 - 100) and (800 - 600) / (800 - 100)
    assert [r[5].strip() for r in rows] == ["", "", "0.00", "0.36", "", "0.00", "0.29", ""]


def test_ladder_table_sets_the_chain_from_noise_against_its_start_and_shows_recognizability():
    """The chain from noise is divided by the chain untrained from noise, its start, and given
    the headroom it closed; with the recognizer's held-out real accuracy the table has a column of
    recognizability that names it (a rung without classes leaves it empty); without, none."""
    scores = [("real vs real (another draw)", 100.0, 0.91, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, 0.55, 1, 1, 1),
              ("full chain untrained from noise", 2000.0, 0.2, 1, 1, 1),
              ("full chain from noise", 500.0, 0.625, 1, 1, 1), ("stage 2 on real 16@16 views", 300.0, None, 1, 1, 1)]
    lines = evaluate.ladder_table(scores, stage_config("tiny", 2), heldout=0.93).splitlines()
    assert "| recognizability (held-out real 0.93, chance 0.20) |" in lines[0]
    rows = [line.split("|") for line in lines[2:]]
    assert [r[4].strip() for r in rows] == ["", "", "1.00", "0.25", ""]
    assert [r[5].strip() for r in rows] == ["", "", "0.00", "0.79", ""]  # 1500 / 1900
    assert [r[6].strip() for r in rows] == ["0.91", "0.55", "0.20", "0.62", ""]
    assert all(len(r) == len(lines[0].split("|")) for r in rows)
    assert "recognizability" not in evaluate.ladder_table(scores, stage_config("tiny", 2))


# -----------------------------------------------------------------------------
# Headroom closed and recognizability

def test_headroom_closed_by_hand():
    """1 at the real floor, 0 at the start, negative when worse than the start, the share of the
    way in between; no way to cover (a start at or below the floor) is NaN."""
    assert headroom_closed(start=500.0, trained=100.0, real=100.0) == 1.0
    assert headroom_closed(start=500.0, trained=500.0, real=100.0) == 0.0
    assert headroom_closed(start=500.0, trained=700.0, real=100.0) == -0.5
    assert headroom_closed(start=500.0, trained=200.0, real=100.0) == 0.75
    assert math.isnan(headroom_closed(start=100.0, trained=50.0, real=100.0))


def test_real_videos_close_all_the_headroom():
    """Real videos scored as if a stage made them (a third draw) close about all the headroom
    between the start (tiny's stage 1 untrained, from noise) and the real floor (another draw):
    Frechet distances of pooled pixels, computed directly on 200 videos a set."""
    cfg, n = stage_config("tiny", 1, num_classes=5), 200

    def stats(batches):  # (mean, covariance) of (n, 3 * 2 * 4 * 4) pooled pixels
        return fvd.feature_stats(torch.cat([F.adaptive_avg_pool3d(x, (2, 4, 4)).flatten(1) for x, _ in batches])
                                 .double().numpy())
    real = stats(evaluate.real_views("synthetic", cfg, n, 50))
    floor = fvd.frechet_distance(*real, *stats(evaluate.real_views("synthetic", cfg, n, 50, seed=FVD_SEED + 1)))
    start = fvd.frechet_distance(*real, *stats(evaluate.from_noise(evaluate.untrained([cfg], CPU), n, 50, CPU)))
    made = fvd.frechet_distance(*real, *stats(evaluate.real_views("synthetic", cfg, n, 50, seed=FVD_SEED + 2)))
    assert start > 10 * floor  # so that the draws' own spread is a small part of the way
    assert headroom_closed(start, made, floor) == pytest.approx(1.0, abs=0.05)


class ByBrightness(torch.nn.Module):
    """A stand-in classifier for recognizability by hand: class 1 for a video brighter than 0 on
    average, else class 0."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # recognized() finds the device from it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x.mean(dim=(1, 2, 3, 4)) > 0).long()  # (B,)
        return F.one_hot(bright, 5).float()              # (B, 5)


def test_recognizability_by_hand():
    """Videos +1 and -1 labelled 1, 1, 0, 0 and 0, 1: four of six recognized as their class."""
    x = torch.tensor([1.0, 1, -1, -1, 1, -1]).view(6, 1, 1, 1, 1).expand(6, 3, 2, 4, 4)
    y = torch.tensor([1, 1, 0, 0, 0, 1])
    assert evaluate.recognizability(ByBrightness(), [(x[:4], y[:4]), (x[4:], y[4:])]) == pytest.approx(4 / 6)


@pytest.fixture(scope="module")
def small_recognizer(tmp_path_factory):
    """A recognizer of 8-frame videos at 16 px (demo stage 1's size; tiny's 32 px clips render
    faster than demo's 64 px ones), trained briefly: (cfg, its cache folder, the classifier, its
    held-out real accuracy on 200 videos)."""
    cfg, cache = stage_config("tiny", 1, view_s=2, num_classes=5), tmp_path_factory.mktemp("recognizer")
    classifier, accuracy = evaluate.recognizer("synthetic", cfg, str(cache), CPU, n_train=384, steps=240, n_heldout=200)
    return cfg, cache, classifier, accuracy


def test_recognizability_of_real_videos_is_the_real_accuracy_and_of_noise_chance(small_recognizer):
    """Another draw of held-out real videos is recognized about as often as the held-out ones
    (within 0.1: about 2 standard errors of the difference of two draws of 200); noise videos of
    classes in turn at chance, 1/5 (within 0.08, about 3 standard errors), well below both. The
    brief training lands near 0.5; that it learned at all is checked first."""
    cfg, _, classifier, accuracy = small_recognizer
    assert accuracy > 0.4
    real = evaluate.recognizability(classifier, evaluate.real_views("synthetic", cfg, 200, 100, seed=FVD_SEED + 1))
    assert real == pytest.approx(accuracy, abs=0.1)
    g = torch.Generator().manual_seed(0)
    noise = [(torch.rand(100, 3, cfg.video_frames, cfg.out_size, cfg.out_size, generator=g) * 2 - 1, y)
             for y in (torch.arange(200) % 5).split(100)]
    assert evaluate.recognizability(classifier, noise) == pytest.approx(1 / 5, abs=0.08)


def test_recognizer_cache_round_trip(small_recognizer, monkeypatch):
    """A second call with the same settings loads the cached classifier and accuracy, training
    nothing; a cache made by another version of the recognizer is trained again."""
    cfg, cache, classifier, accuracy = small_recognizer

    def no_training(*args):
        raise AssertionError("trained again")
    monkeypatch.setattr(evaluate, "fit_classifier", no_training)
    loaded, loaded_accuracy = evaluate.recognizer("synthetic", cfg, str(cache), CPU, n_train=384, steps=240,
                                                  n_heldout=200)
    assert loaded_accuracy == accuracy and not loaded.training
    for name, value in classifier.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert [p.name for p in cache.iterdir()] == ["recognizer-synthetic-tiny-stage1-n384-s240.pt"]  # no tmp left
    monkeypatch.setattr(evaluate, "RECOGNIZER_VERSION", evaluate.RECOGNIZER_VERSION + 1)
    with pytest.raises(AssertionError, match="trained again"):
        evaluate.recognizer("synthetic", cfg, str(cache), CPU, n_train=384, steps=240, n_heldout=200)


def test_recognizer_needs_the_synthetic_classes():
    cfg = stage_config("tiny", 1, num_classes=5)
    assert evaluate.has_classes("synthetic", cfg)
    assert not evaluate.has_classes("synthetic", stage_config("tiny", 1))  # unconditional: y says nothing
    assert not evaluate.has_classes("data/videos", cfg)
    with pytest.raises(ValueError, match="synthetic"):
        evaluate.recognizer("data/videos", cfg, "unused", CPU)


@pytest.mark.parametrize("stage", [1, 2])
def test_stage_scores_of_the_untrained_stage(stage, tmp_path, monkeypatch):
    """A stage scored at its start: its FVD is the start's, so the headroom closed is 0; the
    floor is real vs real (another draw); recognizability is a share. The start, the floor and
    the recognizer are cached: a second call computes none of them, and stage_fvd is "fvd"."""
    cfg, n, cache = stage_config("tiny", stage, num_classes=5), 4, str(tmp_path)
    model = PooledPixels()
    monkeypatch.setattr(fvd, "load_i3d", lambda: model)
    (_, G), = evaluate.untrained([cfg], CPU)
    scores = evaluate.stage_scores(cfg, G, "synthetic", n, CPU, cache, frames=10, n_train=32, steps=2)
    assert set(scores) == {"fvd", "start", "real", "headroom", "recognizability"}
    assert scores["fvd"] == pytest.approx(scores["start"])
    assert scores["headroom"] == pytest.approx(headroom_closed(scores["start"], scores["fvd"], scores["real"]),
                                               nan_ok=True)
    if stage == 1:  # G1 untrained is far from real videos; an untrained Gup on the very clips scored
        assert scores["headroom"] == 0.0  # can be nearer to them than another draw (NaN: no way to cover)
    real = evaluate.real_stats(model, "synthetic", cfg, n, 10, evaluate.STAGE_BATCH, cache)
    another = evaluate.real_stats(model, "synthetic", cfg, n, 10, evaluate.STAGE_BATCH, cache, seed=FVD_SEED + 1)
    assert scores["real"] == pytest.approx(fvd.frechet_distance(*real, *another)) and scores["real"] > 0
    assert 0 <= scores["recognizability"] <= 1
    assert len(list(tmp_path.glob("*.npz"))) == 3 and len(list(tmp_path.glob("recognizer-*.pt"))) == 1
    computed = []
    monkeypatch.setattr(fvd, "video_features", lambda batches, *args, **kw: computed.append(1) or
                        fvd_video_features(batches, *args, **kw))
    monkeypatch.setattr(evaluate, "fit_classifier", None)
    again = evaluate.stage_scores(cfg, G, "synthetic", n, CPU, cache, frames=10, n_train=32, steps=2)
    assert again == pytest.approx(scores, nan_ok=True)
    assert len(computed) == 1  # the stage's own videos, the one set not cached
    assert evaluate.stage_fvd(cfg, G, "synthetic", n, CPU, cache, frames=10) == pytest.approx(scores["fvd"])

