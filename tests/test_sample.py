"""sample.py: chunked inference equals the whole-video pass, seams, the chain end to end, refusals."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import models
import sample
import train
from data import StageExamples, SyntheticVideos, to_float, view
from evaluate import seam_frames
from models import Gup, stage_config, upsample, upscale_chunk
from sample import upscale_chunked, with_context

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gup():
    """An untrained Gup with a random residual and noise: at init its residual is zero and Gup
    is the interpolation upsample(c), whose 1-frame reach would make every chunk test trivial."""
    torch.manual_seed(0)
    return as_if_trained(Gup(stage_config("tiny", 2, num_classes=3)).eval())


def as_if_trained(G: Gup) -> Gup:
    """Give the parts that start at zero (the residual's last conv, the noise gain) values."""
    torch.nn.init.normal_(G.out.weight, std=0.05)
    torch.nn.init.normal_(G.noise_gain)
    return G


def video_inputs(G, Tc, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(B, 3, Tc, 4, 4, generator=g) * 2 - 1
    z = torch.randn(B, G.z_dim, Tc, 4, 4, generator=g)
    return c, z, torch.tensor([0, 2])[:B]


def reflected(v: torch.Tensor, context: int) -> torch.Tensor:
    """v (B, C, T, H, W) extended by `context` frames each side, reflecting at both ends until
    inside (... 1 0 | 0 1 ... T-1 | T-1 ...): written out, unlike data.mirrored's arithmetic."""
    def inside(t, T):
        while not 0 <= t < T:
            t = -t - 1 if t < 0 else 2 * T - 1 - t
        return t
    T = v.shape[2]
    return torch.stack([v[:, :, inside(t, T)] for t in range(-context, T + context)], dim=2)


@pytest.mark.parametrize("Tc", [5, 13, 20])
@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize("extra", [0, 2])
@torch.no_grad()
def test_chunked_equals_whole_video(gup, Tc, chunk, extra):
    """overlap >= R: any length (also not a multiple of the chunk, also < R), any chunk (also
    < R). The whole-video pass is Gup on the video mirrored R frames past each end."""
    c, z, y = video_inputs(gup, Tc)
    R = gup.receptive_radius
    whole = upscale_chunked(gup, c, z, y, chunk=Tc, overlap=R, device=CPU)
    torch.testing.assert_close(whole, gup(reflected(c, R), reflected(z, R), y)[:, :, 2 * R:2 * (R + Tc)])
    chunked = upscale_chunked(gup, c, z, y, chunk=chunk, overlap=R + extra, device=CPU)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "demo"])
@torch.no_grad()
def test_grounded_chunks_equal_the_whole_video(preset):
    """models.ground looks one conditioning frame ahead, and Gup's R counts it: with
    grounded=True chunking stays exact at overlap R, and is not at R - 1 (R is tight); on the
    demo's stage 3 too (trained on patches, sampled on whole frames)."""
    torch.manual_seed(0)
    G = as_if_trained(Gup(stage_config(preset, 3, num_classes=3, grounded=True)).eval())
    c, z, y = video_inputs(G, 13)
    R = G.receptive_radius
    whole = upscale_chunked(G, c, z, y, chunk=13, overlap=R, device=CPU)
    torch.testing.assert_close(upscale_chunked(G, c, z, y, chunk=3, overlap=R, device=CPU), whole,
                               rtol=1e-5, atol=1e-5)
    assert (upscale_chunked(G, c, z, y, chunk=3, overlap=R - 1, device=CPU) - whole).abs().max() > 1e-4
    torch.testing.assert_close(view(whole, 2, 2), c)


@torch.no_grad()
def test_small_overlap_differs_at_seams_only(gup):
    """overlap < R: frames at least R conditioning frames from both ends of their chunk's input
    are still exact; frames next to a seam are not."""
    R, Tc, chunk, overlap = gup.receptive_radius, 48, 16, 1
    c, z, y = video_inputs(gup, Tc)
    whole = upscale_chunked(gup, c, z, y, chunk=Tc, overlap=R, device=CPU)
    chunked = upscale_chunked(gup, c, z, y, chunk=chunk, overlap=overlap, device=CPU)
    err = (chunked - whole).abs().amax(dim=(0, 1, 3, 4))     # (2Tc,)
    exact = 0
    for t in range(2 * Tc):
        i = t // 2                                            # conditioning frame of output t
        start = i // chunk * chunk
        lo, hi = start - overlap, min(Tc, start + chunk) + overlap
        if i - lo >= R and hi - 1 - i >= R:
            assert err[t] < 1e-5, t
            exact += 1
    assert exact == 2 * (Tc // chunk) * (chunk + 2 * overlap - 2 * R)
    for seam in seam_frames(Tc, chunk):
        assert err[seam - 1] > 1e-3 and err[seam] > 1e-3
    assert err[0] > 1e-3 and err[-1] > 1e-3                   # 1 mirrored frame, not R


@torch.no_grad()
def test_noise_is_sliced_by_position(gup):
    """The same frame gets the same noise whatever the chunking: chunked runs at two different
    chunk sizes agree with each other (and both with the whole pass)."""
    c, z, y = video_inputs(gup, 12)
    R = gup.receptive_radius
    a = upscale_chunked(gup, c, z, y, chunk=2, overlap=R, device=CPU)
    b = upscale_chunked(gup, c, z, y, chunk=5, overlap=R, device=CPU)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    z_moved = z.clone()
    z_moved[:, :, 6:] = z[:, :, :6]  # noise not tied to position changes the output
    assert not torch.allclose(upscale_chunked(gup, c, z_moved, y, chunk=2, overlap=R, device=CPU), a)


def test_end_to_end_files(checkpoints, tmp_path):
    out = tmp_path / "samples"
    videos = sample.main(["--ckpt", *checkpoints, "--n", "3", "--class", "2", "--out", str(out),
                          "--chunk", "3", "--seed", "5"])
    assert videos.shape == (3, 32, 32, 32, 3) and videos.dtype == np.uint8
    saved = np.load(out / "videos.npy")
    np.testing.assert_array_equal(saved, videos)
    gif = Image.open(out / "video_000.gif")
    assert gif.size == (32, 32) and gif.n_frames > 1
    assert Image.open(out / "grid.gif").size == (3 * 33 + 1, 33 + 1)
    assert not (out / "strip.png").exists()
    # Same seed, whole-video pass (chunk >= video): the same videos up to uint8 rounding.
    again = sample.main(["--ckpt", *checkpoints, "--n", "3", "--class", "2", "--out", str(out),
                         "--chunk", "1000", "--seed", "5"])
    assert np.abs(again.astype(int) - videos.astype(int)).max() <= 1


def test_longer_videos_and_early_stop(checkpoints, tmp_path):
    longer = sample.main(["--ckpt", *checkpoints, "--n", "1", "--frames", "70", "--out", str(tmp_path)])
    assert longer.shape == (1, 70, 32, 32, 3)
    two = sample.main(["--ckpt", *checkpoints, "--stages", "2", "--n", "2", "--out", str(tmp_path)])
    assert two.shape == (2, 16, 16, 16, 3)


def test_refusals(checkpoints, tmp_path):
    s1, s2, s3 = checkpoints
    out = ["--out", str(tmp_path)]
    with pytest.raises(ValueError, match="stage-2 checkpoint: sampling starts from stage 1"):
        sample.main(["--ckpt", s2, s3, *out])
    with pytest.raises(ValueError, match="stage-3 checkpoint but follows stage 1"):
        sample.main(["--ckpt", s1, s3, *out])
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nope.pt"):
        sample.main(["--ckpt", s1, str(tmp_path / "nope.pt"), *out])
    with pytest.raises(ValueError, match="--class 5 is out of range.*0..4"):
        sample.main(["--ckpt", s1, s2, "--class", "5", *out])
    with pytest.raises(ValueError, match="--chunk 0"):
        sample.main(["--ckpt", s1, s2, "--chunk", "0", *out])
    with pytest.raises(ValueError, match="--overlap -1"):
        sample.main(["--ckpt", s1, s2, "--overlap", "-1", *out])
    old = torch.load(s2, weights_only=True)  # a Gup from before the interpolation skip
    old["G_ema"]["out.parametrizations.weight.original"] = old["G_ema"].pop("out.weight")
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt: its G_ema does not fit this code's architecture"):
        sample.main(["--ckpt", s1, str(tmp_path / "old.pt"), *out])
    other = torch.load(s2, weights_only=True)
    other["config"] = {**other["config"], "preset": "ssw-64"}
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="same preset"):
        sample.main(["--ckpt", s1, str(tmp_path / "other.pt"), *out])


@pytest.mark.parametrize("context", [0, 2, None])
@torch.no_grad()
def test_training_forward_is_a_sampling_chunk(context):
    """A training example's fake window (models.fake_batch on StageExamples' item) equals what the
    sampler makes at that position from the whole video's view and noise: at the video's start,
    inside and at its end; with context 0, 2 and R (then also the whole-video pass). Windows
    that start on an even frame sit on the sampler's grid of conditioning frames."""
    torch.manual_seed(0)
    cfg = stage_config("tiny", 3, num_classes=5)
    G = as_if_trained(Gup(cfg).eval())
    R = G.receptive_radius
    ctx = R if context is None else context
    cfg = stage_config("tiny", 3, num_classes=5, context=ctx)
    clips = SyntheticVideos(cfg.clip_frames, cfg.clip_size, seed=3)
    examples = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window, ctx, seed=3)
    w, n = cfg.window, cfg.window // 2
    starts = set()
    for i in range(60):
        item = examples[i]
        video = view(to_float(clips[i][0]), cfg.view_s, cfg.view_t)[None]   # (1, 3, 32, 32, 32)
        start = next(s for s in range(video.shape[2] - w + 1)
                     if torch.equal(video[:, :, s:s + w], item["x"][None]))
        if start % 2:  # its view keeps the odd frames: a chunk of another video's sampling
            continue
        c_video = view(video, 2, 2)                                          # (1, 3, 16, 16, 16)
        z_video = torch.randn(1, cfg.z_dim, *c_video.shape[2:])
        s = start // 2
        z_chunk = with_context(z_video, s, s + n, ctx)
        batch = {k: (v[None] if torch.is_tensor(v) else torch.tensor([v])) for k, v in item.items()}
        x_train = models.fake_batch(G, cfg, {**batch, "z": z_chunk})
        c_chunk = with_context(c_video, s, s + n, ctx)
        # The example's conditioning is the sampler's chunk at its position, mirrored past the
        # video's ends alike (rendering a few frames may round one pixel to the next grey
        # level: 2/255 apart in [-1, 1]).
        torch.testing.assert_close(batch["c_context"], c_chunk, rtol=0, atol=2 / 255 + 1e-6)
        c_chunk = batch["c_context"]
        inside = [t for t in range(s - ctx, s + n + ctx) if 0 <= t < c_video.shape[2]]
        c_video[:, :, inside] = c_chunk[:, :, [t - (s - ctx) for t in inside]]  # the same numbers
        x_sample = upscale_chunk(G, c_chunk, z_chunk, batch["y"], ctx)
        torch.testing.assert_close(x_train, x_sample)
        if ctx >= R:  # exact: the whole-video pass, cut to the window
            whole = upscale_chunked(G, c_video, z_video, batch["y"], c_video.shape[2], R, CPU)
            torch.testing.assert_close(x_train, whole[:, :, start:start + w], rtol=1e-5, atol=1e-5)
        starts.add("start" if s < ctx else "end" if s + n + ctx > c_video.shape[2] else "inside")
        if len(starts) == 3 or (ctx == 0 and starts == {"inside"}):
            break
    assert starts == ({"inside"} if ctx == 0 else {"start", "inside", "end"})


@torch.no_grad()
def test_upscale_chunk_keeps_exactly_the_window(gup):
    c, z, y = video_inputs(gup, 10)
    x = upscale_chunk(gup, c, z, y, context=3)
    assert x.shape == (2, 3, 8, 8, 8)
    torch.testing.assert_close(x, gup(c, z, y)[:, :, 6:14])


@torch.no_grad()
def test_gup_starts_as_the_interpolation():
    """At initialisation Gup's output is upsample(c): its residual's last conv is zero."""
    torch.manual_seed(0)
    G = Gup(stage_config("tiny", 2, num_classes=3)).eval()
    c, z, y = video_inputs(G, 6)
    torch.testing.assert_close(G(c, z, y), upsample(c))
    G.train()  # batch statistics change nothing either: the residual is exactly zero
    torch.testing.assert_close(G(c, z, y), upsample(c))


def test_upsample_inverts_the_temporal_view():
    """Frames 2k are c[k], 2k+1 halfway to c[k+1], the last holds; nearest repeats. On frames uniform in space, space changes nothing."""
    c = torch.tensor([0.0, 2, 6]).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    frames = upsample(c)[0, 0, :, 0, 0]
    assert frames.tolist() == [0, 1, 2, 4, 6, 6]
    assert upsample(c, "nearest")[0, 0, :, 0, 0].tolist() == [0, 0, 2, 2, 6, 6]
    assert torch.equal(view(upsample(c), 2, 2), c)


def test_slimmed_checkpoints_sample_as_the_full_ones(checkpoints, tmp_path):
    """sample.py --slim keeps what sampling reads (G_ema, the config): a tenth of the bytes or
    less, the same videos; resuming training from a slimmed file is refused by name."""
    slim = tmp_path / "slim"
    sample.main(["--ckpt", *checkpoints, "--slim", "--out", str(slim)])
    paths = [str(slim / f"tiny-stage{k}.pt") for k in (1, 2, 3)]
    for full, small in zip(checkpoints, paths):
        assert os.path.getsize(small) < os.path.getsize(full) / 2
    same = ["--n", "2", "--seed", "3", "--out", str(tmp_path / "v")]
    np.testing.assert_array_equal(sample.main(["--ckpt", *paths, *same]), sample.main(["--ckpt", *checkpoints, *same]))
    out = tmp_path / "resume"
    out.mkdir()
    shutil.copy(paths[0], out / "ckpt.pt")
    with pytest.raises(ValueError, match="slimmed for sampling"):
        train.train(train.get_args(["--preset", "tiny", "--stage", "1", "--max-iters", "2", "--batch-size", "2",
                                    "--workers", "0", "--out", str(out)]))


@pytest.mark.skipif(not all(os.path.isfile(p) for p in sample.DEMO_CHAIN), reason="the demo chain is not in checkpoints/")
def test_the_shipped_demo_chain_loads_and_samples(tmp_path):
    """`python sample.py` with no flags samples the demo's trained chain from checkpoints/:
    32 frames at 64x64, every stage of the demo preset, each video the class it was asked for
    at stage 1 (the chain's classes in turn)."""
    chain = sample.load_chain(sample.DEMO_CHAIN, CPU)
    assert [(cfg.preset, cfg.stage) for cfg, _ in chain] == [("demo", 1), ("demo", 2), ("demo", 3)]
    videos = sample.main(["--n", "2", "--out", str(tmp_path)])
    assert videos.shape == (2, 32, 64, 64, 3) and videos.std() > 10  # not one flat colour


def test_strip_shows_a_real_video_above_each_class_made(checkpoints, tmp_path):
    """--strip: strip.png holds, for each class made, a held-out real video of it and the first
    video made of it (two rows per class), every 4th frame at 2x."""
    sample.main(["--ckpt", *checkpoints, "--n", "4", "--out", str(tmp_path), "--strip"])
    img = Image.open(tmp_path / "strip.png")
    frames, rows = len(range(0, 32, 4)), 2 * 4  # tiny: 32 frames at 32x32; classes 0-3 made
    assert img.size == (90 + frames * (2 * 32 + 2), rows * (2 * 32 + 2) + 16)
