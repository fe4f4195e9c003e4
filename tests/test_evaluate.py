"""evaluate.py: frame statistics and seams by hand; the FVD ladder end to end (every rung, the
cache, chains that start later); each rung's start is the untrained stage; the table's ratios to
the floor and to the start, and its headroom closed; headroom by hand and on real videos;
recognizability by hand, on real and on noise videos; the recognizer's cache; a stage's scores;
the detail measure by hand and on real, blurred, smoothed and noisy videos, its cache, and a
stage's quick scores; training minutes by hand and the curve image."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageColor

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


def test_ladder_prints_every_rung(checkpoints, tmp_path, capsys, monkeypatch, brief_heldout):
    """The ladder on tiny checkpoints: every rung, a number, a recognizability and detail ratios
    each; a chain that starts at stage 3 has its own rungs; real statistics, the real detail and
    the recognizer are cached. What it claims does not hang on the network, so I3D is stood in
    for by pooled pixels, and the recognizer's held-out real accuracy is measured on 16 videos."""
    model = PooledPixels()
    monkeypatch.setattr(fvd, "load_i3d", lambda: model)
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
    assert "| detail / real: space / time |" in table
    for name, value, recognizable, detail_s, detail_t, change0, sharp0, pairs in scores:
        assert np.isfinite([value, change0, sharp0, pairs]).all() and value > 0 and name in table
        assert 0 <= recognizable <= 1  # the tiny chain draws the synthetic data's classes
        assert (detail_s == 0) == name.startswith("nearest") and detail_t > 0  # nearest fills 2x2 blocks
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.npz")) == ["detail", "real"]  # real videos only
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
        (x, _), = evaluate.real_views("synthetic", stages[-1][0], n, batch, down=len(stages), seed=evaluate.VIEWS_SEED)
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
    for (_, G), (_, fresh) in zip(evaluate.untrained([cfg for cfg, _ in chain], CPU), start):  # G alone, same init
        assert all(torch.equal(G.state_dict()[k], v) for k, v in fresh.state_dict().items())
    direct = evaluate.score(evaluate.from_noise(start, n, batch, CPU), model, n, frames, real)[0]
    assert scores["full chain untrained from noise"] == pytest.approx(direct)
    assert scores["full chain from noise"] != pytest.approx(direct)


def test_ladder_table_sets_each_rung_against_its_own_floor():
    """A rung made from real views of one size is divided by trilinear of those views; the
    chain from noise by trilinear of the lowest views; floors themselves get no ratio."""
    scores = [("real vs real (another draw)", 100.0, None, 1, 1, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, None, 1, 1, 1, 1, 1),
              ("stage 3 on real 16@16 views", 300.0, None, 1, 1, 1, 1, 1),
              ("trilinear x4 of real 8@8 views", 1000.0, None, 1, 1, 1, 1, 1),
              ("stages 2-3 on real 8@8 views", 1500.0, None, 1, 1, 1, 1, 1),
              ("full chain from noise", 500.0, None, 1, 1, 1, 1, 1)]
    ratios = [line.split("|")[3].strip() for line in
              evaluate.ladder_table(scores, stage_config("tiny", 3)).splitlines()[2:]]
    assert ratios == ["", "", "0.75", "", "1.50", "0.50"]


def test_ladder_table_sets_each_upscaler_against_its_start():
    """A trained upscaling rung is also divided by the same stages untrained on the same views
    (its start, 1.00 itself), and given the headroom it closed from there towards real vs real
    (0.00 itself); floors, and the chain from noise without its start, get neither."""
    scores = [("real vs real (another draw)", 100.0, None, 1, 1, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, None, 1, 1, 1, 1, 1),
              ("stage 3 untrained on real 16@16 views", 320.0, None, 1, 1, 1, 1, 1),
              ("stage 3 on real 16@16 views", 240.0, None, 1, 1, 1, 1, 1),
              ("trilinear x4 of real 8@8 views", 1000.0, None, 1, 1, 1, 1, 1),
              ("stages 2-3 untrained on real 8@8 views", 800.0, None, 1, 1, 1, 1, 1),
              ("stages 2-3 on real 8@8 views", 600.0, None, 1, 1, 1, 1, 1),
              ("full chain from noise", 500.0, None, 1, 1, 1, 1, 1)]
    rows = [line.split("|") for line in evaluate.ladder_table(scores, stage_config("tiny", 3)).splitlines()[2:]]
    assert [r[3].strip() for r in rows] == ["", "", "0.80", "0.60", "", "0.80", "0.60", "0.50"]
    assert [r[4].strip() for r in rows] == ["", "", "1.00", "0.75", "", "1.00", "0.75", ""]
    # (320 - 240) / (320 - 100) and (800 - 600) / (800 - 100)
    assert [r[5].strip() for r in rows] == ["", "", "0.00", "0.36", "", "0.00", "0.29", ""]


def test_ladder_table_sets_the_chain_from_noise_against_its_start_and_shows_recognizability():
    """The chain from noise is divided by the chain untrained from noise, its start, and given
    the headroom it closed; with the recognizer's held-out real accuracy the table has a column of
    recognizability that names it (a rung without classes leaves it empty); without, none. Every
    rung's detail ratios share the next column, spatial / temporal."""
    scores = [("real vs real (another draw)", 100.0, 0.91, 1.02, 0.97, 1, 1, 1),
              ("trilinear x2 of real 16@16 views", 400.0, 0.55, 0.25, 0.5, 1, 1, 1),
              ("full chain untrained from noise", 2000.0, 0.2, 3.0, 0.0, 1, 1, 1),
              ("full chain from noise", 500.0, 0.625, 1.2, 0.8, 1, 1, 1),
              ("stage 2 on real 16@16 views", 300.0, None, 0.9, 1.1, 1, 1, 1)]
    lines = evaluate.ladder_table(scores, stage_config("tiny", 2), heldout=0.93).splitlines()
    assert "| recognizability (held-out real 0.93, chance 0.20) | detail / real: space / time |" in lines[0]
    rows = [line.split("|") for line in lines[2:]]
    assert [r[4].strip() for r in rows] == ["", "", "1.00", "0.25", ""]
    assert [r[5].strip() for r in rows] == ["", "", "0.00", "0.79", ""]  # 1500 / 1900
    assert [r[6].strip() for r in rows] == ["0.91", "0.55", "0.20", "0.62", ""]
    assert [r[7].strip() for r in rows] == ["1.02 / 0.97", "0.25 / 0.50", "3.00 / 0.00", "1.20 / 0.80", "0.90 / 1.10"]
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
    classifier, accuracy = evaluate.recognizer("synthetic", cfg, str(cache), CPU, n_train=384, steps=120, n_heldout=200)
    return cfg, cache, classifier, accuracy


def test_recognizability_of_real_videos_is_the_real_accuracy_and_of_noise_chance(small_recognizer):
    """Another draw of held-out real videos is recognized about as often as the held-out ones
    (within 0.1: about 2 standard errors of the difference of two draws of 200); noise videos of
    classes in turn at chance, 1/5 (within 0.08, about 3 standard errors), well below both. The
    brief training (120 steps) lands near 0.6 (0.58, the other draw 0.635, measured); that it
    learned at all is checked first."""
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
    loaded, loaded_accuracy = evaluate.recognizer("synthetic", cfg, str(cache), CPU, n_train=384, steps=120,
                                                  n_heldout=200)
    assert loaded_accuracy == accuracy and not loaded.training
    for name, value in classifier.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert [p.name for p in cache.iterdir()] == ["recognizer-synthetic-tiny-stage1-n384-s120.pt"]  # no tmp left
    monkeypatch.setattr(evaluate, "RECOGNIZER_VERSION", evaluate.RECOGNIZER_VERSION + 1)
    with pytest.raises(AssertionError, match="trained again"):
        evaluate.recognizer("synthetic", cfg, str(cache), CPU, n_train=384, steps=120, n_heldout=200)


def test_recognizer_needs_the_synthetic_classes():
    cfg = stage_config("tiny", 1, num_classes=5)
    assert evaluate.has_classes("synthetic", cfg)
    assert not evaluate.has_classes("synthetic", stage_config("tiny", 1))  # unconditional: y says nothing
    assert not evaluate.has_classes("data/videos", cfg)
    with pytest.raises(ValueError, match="synthetic"):
        evaluate.recognizer("data/videos", cfg, "unused", CPU)


@pytest.mark.parametrize("stage", [1, 2])
def test_stage_scores_of_the_untrained_stage(stage, tmp_path, monkeypatch, brief_heldout):
    """A stage scored at its start: its FVD is the start's, so the headroom closed is 0; the
    floor is real vs real (another draw); recognizability is a share; the detail ratios are
    against the real videos'. The start, the floor, the real detail and the recognizer are cached:
    a second call computes none of them, stage_fvd is "fvd", and quick_scores, which renders no
    real video, gives the same recognizability and detail."""
    cfg, n, cache = stage_config("tiny", stage, num_classes=5), 4, str(tmp_path)
    model = PooledPixels()
    monkeypatch.setattr(fvd, "load_i3d", lambda: model)
    (_, G), = evaluate.untrained([cfg], CPU)
    scores = evaluate.stage_scores(cfg, G, "synthetic", n, CPU, cache, frames=10, n_train=32, steps=2)
    assert set(scores) == {"fvd", "start", "real", "headroom", "recognizability", "detail_s", "detail_t"}
    assert scores["fvd"] == pytest.approx(scores["start"])
    assert scores["headroom"] == pytest.approx(headroom_closed(scores["start"], scores["fvd"], scores["real"]),
                                               nan_ok=True)
    if stage == 1:  # G1 untrained is far from real videos; an untrained Gup on the very clips scored
        assert scores["headroom"] == 0.0  # can be nearer to them than another draw (NaN: no way to cover)
    real = evaluate.real_stats(model, "synthetic", cfg, n, 10, evaluate.STAGE_BATCH, cache)
    another = evaluate.real_stats(model, "synthetic", cfg, n, 10, evaluate.STAGE_BATCH, cache, seed=FVD_SEED + 1)
    assert scores["real"] == pytest.approx(fvd.frechet_distance(*real, *another)) and scores["real"] > 0
    assert 0 <= scores["recognizability"] <= 1
    (x, _), = evaluate.stage_videos([(cfg, G)], "synthetic", n, evaluate.STAGE_BATCH, CPU)
    (x_real, _), = evaluate.real_views("synthetic", cfg, n, n)
    assert (scores["detail_s"], scores["detail_t"]) == pytest.approx(
        evaluate.detail_ratios(evaluate.detail_energy(x), evaluate.detail_energy(x_real)))
    assert len(list(tmp_path.glob("*.npz"))) == 4 and len(list(tmp_path.glob("recognizer-*.pt"))) == 1
    computed = []
    monkeypatch.setattr(fvd, "video_features", lambda batches, *args, **kw: computed.append(1) or
                        fvd_video_features(batches, *args, **kw))
    monkeypatch.setattr(evaluate, "fit_classifier", None)
    again = evaluate.stage_scores(cfg, G, "synthetic", n, CPU, cache, frames=10, n_train=32, steps=2)
    assert again == pytest.approx(scores, nan_ok=True)
    assert len(computed) == 1  # the stage's own videos, the one set not cached
    assert evaluate.stage_fvd(cfg, G, "synthetic", n, CPU, cache, frames=10) == pytest.approx(scores["fvd"])
    monkeypatch.setattr(evaluate, "RECOGNIZER_CLIPS", 32)  # the recognizer stage_scores trained
    monkeypatch.setattr(evaluate, "RECOGNIZER_STEPS", 2)
    real_views = evaluate.real_views

    def input_views_only(*args, down=0, **kw):  # an upscaler's input, yes; the real videos are cached
        assert down, "real videos rendered again"
        return real_views(*args, down=down, **kw)
    monkeypatch.setattr(evaluate, "real_views", input_views_only)
    quick = evaluate.quick_scores(cfg, G, "synthetic", n, CPU, cache)
    assert quick == pytest.approx({k: scores[k] for k in ("recognizability", "detail_s", "detail_t")})



# -----------------------------------------------------------------------------
# Fine detail

def test_detail_energy_by_hand():
    """A checkerboard of +-0.5 (all of it lost by a 2x2 area view) on frames of a uniform 0, 0.3,
    0 (whose middle frame is 0.3 off the midway of its neighbours, its ends not interior):
    spatial 0.25, temporal 0.3^2 / 1 interior frame; a linear ramp in time has no temporal band,
    blocks constant within 2x2 no spatial one."""
    board = torch.tensor([[0.5, -0.5], [-0.5, 0.5]]).repeat(2, 2)                       # (4, 4)
    x = board + torch.tensor([0.0, 0.3, 0.0]).view(1, 1, 3, 1, 1).expand(2, 3, 3, 4, 4)  # (2, 3, 3, 4, 4)
    torch.testing.assert_close(evaluate.detail_energy(x), torch.tensor([[0.25, 0.09], [0.25, 0.09]]))
    blocks = torch.arange(4.0).view(2, 2).repeat_interleave(2, 0).repeat_interleave(2, 1) / 4  # (4, 4)
    ramp = blocks + torch.linspace(-0.5, 0.5, 5).view(1, 1, 5, 1, 1)                    # (1, 1, 5, 4, 4)
    torch.testing.assert_close(evaluate.detail_energy(ramp), torch.zeros(1, 2))
    assert evaluate.detail_ratios(torch.tensor([[1.0, 4.0], [3.0, 2.0]]), torch.tensor([[4.0, 6.0]])) == (0.5, 0.5)


@pytest.fixture(scope="module")
def real_16():
    """Two independent draws of 32 held-out real videos of tiny's stage 2 (16 frames at 16 px)."""
    cfg = stage_config("tiny", 2)
    return [torch.cat([x for x, _ in evaluate.real_views("synthetic", cfg, 32, 32, seed=seed)])
            for seed in (FVD_SEED, FVD_SEED + 1)]


def test_detail_ratios_of_real_blurred_smoothed_and_noisy_videos(real_16):
    """Another draw of real videos has about their detail (within 0.8-1.25 at 32 videos: 1.05 and
    0.92 measured); a 3x3 box blur of each frame loses most of the spatial band (0.32), a [1, 2, 1]
    / 4 filter in time most of the temporal one (0.13); white noise of 0.1 adds to both (1.42 and
    1.45: 3/4 of its energy 0.01 lands in the spatial band, 3/2 in the temporal one, against the
    real videos' 0.021 and 0.028)."""
    real, another = real_16
    B, C, T, H, W = another.shape
    frames = another.transpose(1, 2).reshape(B * T, C, H, W)                     # (B*T, C, H, W)
    blurred = F.avg_pool2d(frames, 3, 1, 1, count_include_pad=False).reshape(B, T, C, H, W).transpose(1, 2)
    ends = torch.cat([another[:, :, :1], another, another[:, :, -1:]], dim=2)     # (B, C, T + 2, H, W)
    smoothed = (ends[:, :, :-2] + 2 * ends[:, :, 1:-1] + ends[:, :, 2:]) / 4
    noisy = another + 0.1 * torch.randn(another.shape, generator=torch.Generator().manual_seed(0))
    energy = evaluate.detail_energy(real)

    def ratios(x):
        return evaluate.detail_ratios(evaluate.detail_energy(x), energy)
    assert all(0.8 < r < 1.25 for r in ratios(another))
    assert ratios(blurred)[0] < 0.5
    assert ratios(smoothed)[1] < 0.3
    assert all(r > 1.3 for r in ratios(noisy))


def test_real_detail_is_cached_under_the_measure(tmp_path, monkeypatch, real_16):
    """The real side's mean energies: those of real_views, cached (a second call renders none);
    another measure (here twice the energy) is another key, computed again."""
    cfg, cache = stage_config("tiny", 2), str(tmp_path)
    real = evaluate.real_detail("synthetic", cfg, 32, 16, cache)
    torch.testing.assert_close(real, evaluate.detail_energy(real_16[0]).mean(0, keepdim=True))
    measure = evaluate.detail_energy
    monkeypatch.setattr(evaluate, "real_views", None)
    assert torch.equal(evaluate.real_detail("synthetic", cfg, 32, 16, cache), real)
    monkeypatch.undo()
    monkeypatch.setattr(evaluate, "detail_energy", lambda x: 2 * measure(x))
    torch.testing.assert_close(evaluate.real_detail("synthetic", cfg, 32, 16, cache), 2 * real)
    assert [p.name for p in tmp_path.iterdir()] == ["detail-real-seed2024-synthetic-tiny-stage2-n32.npz"]


def test_quick_scores_of_an_untrained_upscaler_and_of_real_videos(tmp_path, monkeypatch, brief_heldout):
    """An untrained upscaler is the grounded interpolation of its input: far less fine detail
    than real videos in space and time (0.17 and 0.10 measured at tiny's stage 2). Real videos in
    its place (another draw, through stage_videos, what quick_scores scores) have about the real
    detail (within 0.8-1.25 at 64 videos). Data without classes it knows: no recognizability."""
    cfg, cache = stage_config("tiny", 2, num_classes=5), str(tmp_path)
    monkeypatch.setattr(evaluate, "RECOGNIZER_CLIPS", 16)
    monkeypatch.setattr(evaluate, "RECOGNIZER_STEPS", 2)
    (_, G), = evaluate.untrained([cfg], CPU)
    start = evaluate.quick_scores(cfg, G, "synthetic", 64, CPU, cache)
    assert set(start) == {"recognizability", "detail_s", "detail_t"} and 0 <= start["recognizability"] <= 1
    assert start["detail_s"] < 0.4 and start["detail_t"] < 0.4
    monkeypatch.setattr(evaluate, "stage_videos", lambda stages, source, n, batch, device: evaluate.real_views(
        source, stages[0][0], n, batch, seed=FVD_SEED + 1))
    real = evaluate.quick_scores(cfg, G, "synthetic", 64, CPU, cache)
    assert 0.8 < real["detail_s"] < 1.25 and 0.8 < real["detail_t"] < 1.25
    unconditional = stage_config("tiny", 1)
    (_, G1), = evaluate.untrained([unconditional], CPU)
    assert evaluate.quick_scores(unconditional, G1, "synthetic", 16, CPU, cache)["recognizability"] is None


# -----------------------------------------------------------------------------
# Training curves

def test_training_minutes_by_hand():
    """Status records at steps 10 (6 s a step: 1 minute) and 30 (3 s: 2 minutes); a score between
    them at the later one's rate, one at step 0 at 0; a run resumed from step 10 whose first status
    record is at step 20 repeats counted steps (nothing added); a score after it at the next status
    record's 12 s a step, one after the last at the last's."""
    records = [{"step": 0, "recognizability": 0.2}, {"step": 10, "s_per_it": 6.0}, {"step": 20, "detail_s": 0.5},
               {"step": 30, "s_per_it": 3.0}, {"step": 30, "headroom": 0.1}, {"step": 20, "s_per_it": 3.0},
               {"step": 40, "headroom": 0.2}, {"step": 50, "s_per_it": 12.0}, {"step": 60, "detail_t": 0.9}]
    assert evaluate.training_minutes(records) == pytest.approx([0, 1, 1.5, 2, 2, 2, 4, 6, 8])
    assert evaluate.training_minutes([{"step": 0, "headroom": 0.0}]) == [None]


def test_ticks_by_hand():
    """Steps of 1, 2 or 5 times a power of ten, at most 5 of them, the ends at or beyond the range."""
    assert evaluate.ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert evaluate.ticks(0.93, 1.07) == [0.9, 0.95, 1.0, 1.05, 1.1]
    assert evaluate.ticks(-0.3, 1.0) == [-0.5, 0.0, 0.5, 1.0]
    assert evaluate.ticks(0.0, 37.0) == [0.0, 10.0, 20.0, 30.0, 40.0]


def test_curve_draws_every_run(tmp_path, monkeypatch):
    """`evaluate.py curve` draws the runs' log.jsonl into a PNG of the fixed size, each run's line
    in its colour, the reference lines in grey; runs are named by their folders, by the paths
    given where two folders have the same name."""
    def write_log(run, rate, values):
        run.mkdir(parents=True)
        lines = [{"step": 0, "headroom": 0.0, "recognizability": 0.2},
                 {"step": 0, "recognizability": None, "detail_s": 0.2, "detail_t": 0.1}]
        for k, v in enumerate(values, 1):
            lines += [{"step": 10 * k, "loss_G": 1.0, "s_per_it": rate},
                      {"step": 10 * k, "headroom": v, "recognizability": v, "fvd": 100.0},
                      {"step": 10 * k, "recognizability": v, "detail_s": v, "detail_t": v}]
        (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_log(tmp_path / "a" / "stage1", 6.0, [0.3, 0.5, None])
    write_log(tmp_path / "b", 3.0, [0.4, 0.9, 1.2, 0.8])
    out = tmp_path / "docs" / "curve.png"
    assert evaluate.main(["curve", str(tmp_path / "a" / "stage1"), str(tmp_path / "b"), "--out", str(out)]) == out
    image = Image.open(out).convert("RGB")
    assert image.size == (2 * evaluate.PANEL_W, 2 * evaluate.PANEL_H + evaluate.LEGEND_H)
    colours = {colour for _, colour in image.getcolors(image.width * image.height)}
    assert {ImageColor.getrgb(c) for c in evaluate.COLOURS[:2]} | {ImageColor.getrgb("grey")} <= colours
    drawn = []
    monkeypatch.setattr(evaluate, "curve_image", lambda runs: drawn.append([name for name, *_ in runs]) or image)
    write_log(tmp_path / "c" / "stage1", 6.0, [0.1])
    evaluate.main(["curve", str(tmp_path / "b"), str(tmp_path / "a" / "stage1"), "--out", str(out)])
    evaluate.main(["curve", str(tmp_path / "a" / "stage1"), str(tmp_path / "c" / "stage1"), "--out", str(out)])
    assert drawn == [["b", "stage1"], [str(tmp_path / "a" / "stage1"), str(tmp_path / "c" / "stage1")]]


def test_a_run_from_init_g_starts_where_its_init_stood(tmp_path):
    """start_minutes: a run that --init-g started from a checkpoint of another run's folder begins
    at that run's training minutes at the checkpoint's step (here 2 minutes of 6 s steps, then
    10 steps of 3 s: 2.5 at step 30); a run from scratch, or from a checkpoint without a log
    beside it, at 0."""
    l1, game, lone = tmp_path / "l1", tmp_path / "game", tmp_path / "lone"
    for run in (l1, game, lone):
        run.mkdir()
    records = [{"step": 20, "s_per_it": 6.0}, {"step": 40, "s_per_it": 3.0}, {"step": 60, "s_per_it": 3.0}]
    (l1 / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    torch.save({"step": 30}, l1 / "ckpt-30.pt")
    torch.save({"step": 30}, tmp_path / "ckpt-30.pt")
    for run, init in ((game, l1 / "ckpt-30.pt"), (lone, tmp_path / "ckpt-30.pt"), (l1, None)):
        (run / "config.json").write_text(json.dumps({"args": {"init_g": None if init is None else str(init)}}))
    assert evaluate.start_minutes(game) == pytest.approx(2.5)
    assert evaluate.start_minutes(lone) == evaluate.start_minutes(l1) == evaluate.start_minutes(tmp_path) == 0.0


def test_upscaling_rungs_upscale_another_draw_than_they_are_scored_against(monkeypatch):
    """Every upscaling rung (the interpolations, a stage on real views: the ladder's and
    stage_scores') takes the views of VIEWS_SEED's real videos, never of the FVD_SEED ones it is
    scored against: a made video is never compared with its own ground truth (an L1 upscaler so
    scored fell below the real floor, 252.9 against 345.7), and a perfect upscaler makes exactly
    the real floor's videos."""
    cfg = stage_config("tiny", 2, num_classes=5)
    floor = next(evaluate.real_views("synthetic", cfg, 4, 4, seed=evaluate.VIEWS_SEED))[0]
    reference = next(evaluate.real_views("synthetic", cfg, 4, 4))[0]
    perfect = next(evaluate.interpolated("synthetic", cfg, 4, 4, 0, "nearest"))[0]  # no halving: the videos
    assert torch.equal(perfect, floor) and not torch.equal(perfect, reference)
    seeds, real_views = [], evaluate.real_views
    monkeypatch.setattr(evaluate, "real_views", lambda *a, **k: seeds.append(k.get("seed")) or real_views(*a, **k))
    (_, G), = evaluate.untrained([cfg], CPU)
    next(evaluate.stage_videos([(cfg, G)], "synthetic", 4, 4, CPU))
    rungs = evaluate.ladder_rungs([(cfg, G)], "synthetic", 4, 4, CPU)
    for _, videos in rungs:
        next(videos())
    assert len(rungs) == 5 and seeds == [evaluate.VIEWS_SEED] * 6
