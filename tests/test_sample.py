"""sample.py: chunked inference equals the whole-video pass, seams, the chain end to end, refusals."""

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from models import Gup, stage_config
from sample import seam_error, seam_frames, upscale_chunked

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gup():
    torch.manual_seed(0)
    return Gup(stage_config("tiny", 2, num_classes=3)).eval()


def video_inputs(G, Tc, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(B, 3, Tc, 4, 4, generator=g) * 2 - 1
    z = torch.randn(B, G.z_dim, Tc, 4, 4, generator=g)
    return c, z, torch.tensor([0, 2])[:B]


@pytest.mark.parametrize("Tc", [5, 13, 20])
@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize("extra", [0, 2])
@torch.no_grad()
def test_chunked_equals_whole_video(gup, Tc, chunk, extra):
    """overlap >= R: any length (also not a multiple of the chunk), any chunk (also < R)."""
    c, z, y = video_inputs(gup, Tc)
    whole = upscale_chunked(gup, c, z, y, chunk=Tc, overlap=0, device=CPU)
    torch.testing.assert_close(whole, gup(c, z, y))
    chunked = upscale_chunked(gup, c, z, y, chunk=chunk, overlap=gup.receptive_radius + extra, device=CPU)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_small_overlap_differs_at_seams_only(gup):
    """overlap < R: frames at least R - overlap conditioning frames inside a chunk are still
    exact; frames next to a seam are not."""
    R, Tc, chunk, overlap = gup.receptive_radius, 24, 8, 1
    c, z, y = video_inputs(gup, Tc)
    whole = upscale_chunked(gup, c, z, y, chunk=Tc, overlap=0, device=CPU)
    chunked = upscale_chunked(gup, c, z, y, chunk=chunk, overlap=overlap, device=CPU)
    err = (chunked - whole).abs().amax(dim=(0, 1, 3, 4))     # (2Tc,)
    for t in range(2 * Tc):
        i = t // 2                                            # conditioning frame of output t
        start = i // chunk * chunk
        lo, hi = max(0, start - overlap), min(Tc, start + chunk + overlap)
        exact = (i - lo >= R or lo == 0) and (hi - 1 - i >= R or hi == Tc)
        if exact:
            assert err[t] < 1e-5, t
    for seam in seam_frames(Tc, chunk):
        assert err[seam - 1] > 1e-3 and err[seam] > 1e-3


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


def test_seam_error_by_hand():
    """Frames 0,1,2 | 3,4,5 (a jump of 4 at the seam, steps of 1 inside): ratio 4."""
    x = torch.tensor([0.0, 1, 2, 6, 7, 8]).view(1, 1, 6, 1, 1)
    assert seam_frames(Tc=3, chunk=2) == [4]  # chunks of 2 cond frames -> seams at output 4
    assert seam_error(x, [3]) == pytest.approx(4.0)
    smooth = torch.arange(6.0).view(1, 1, 6, 1, 1)
    assert seam_error(smooth, [3]) == pytest.approx(1.0)


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
    with pytest.raises(ValueError, match="stage-2 checkpoint but is position 1"):
        sample.main(["--ckpt", s2, s3, *out])
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nope.pt"):
        sample.main(["--ckpt", s1, str(tmp_path / "nope.pt"), *out])
    with pytest.raises(ValueError, match="--class 5 is out of range.*0..4"):
        sample.main(["--ckpt", s1, s2, "--class", "5", *out])
    with pytest.raises(ValueError, match="--chunk 0"):
        sample.main(["--ckpt", s1, s2, "--chunk", "0", *out])
    with pytest.raises(ValueError, match="--overlap -1"):
        sample.main(["--ckpt", s1, s2, "--overlap", "-1", *out])
    other = torch.load(s2, weights_only=True)
    other["config"] = {**other["config"], "preset": "ssw-64"}
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="same preset"):
        sample.main(["--ckpt", s1, str(tmp_path / "other.pt"), *out])
