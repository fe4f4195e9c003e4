"""Tests for data.py: view algebra by hand, the uint8 <-> float conversions, the synthetic
dataset and its held-out split, stage examples (windows and conditioning). Video files and
disk datasets: test_videos.py. Run: python -m pytest tests/test_data.py -q"""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import data
from data import mirrored, StageExamples, SyntheticVideos, to_float, to_uint8, view


# ----------------------------------------------------------------------------------------------
# view and the conversions

def test_view_against_hand_computation():
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(1, 1, 3, 4, 4)  # (B, C, T, H, W)
    # Frame f holds 16 f + 4 row + col; keep frames 0 and 2 (T=3 is not a multiple of t=2),
    # each 2 x 2 block's mean is its top-left value + 2.5.
    expected = torch.tensor([[[2.5, 4.5], [10.5, 12.5]], [[34.5, 36.5], [42.5, 44.5]]])
    assert torch.equal(view(x, 2, 2), expected.reshape(1, 1, 2, 2, 2))
    assert torch.equal(view(x[0], 2, 2), expected.reshape(1, 2, 2, 2))  # unbatched
    assert torch.equal(view(x, 1, 1), x)
    assert torch.equal(view(x, 4, 1)[0, 0, :, 0, 0], torch.tensor([7.5, 23.5, 39.5]))


def test_view_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible"):
        view(torch.zeros(2, 3, 4, 6, 8), 4, 1)


def test_to_float_and_to_uint8():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 4, 64, 1).repeat(3, axis=3)  # (T,H,W,3)
    x = to_float(frames)
    assert x.shape == (3, 1, 4, 64) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1 and x[0, 0, 0, 0] == -1 and x[0, 0, -1, -1] == 1
    assert torch.equal(to_uint8(x), torch.from_numpy(frames))  # exact round trip
    batched = torch.from_numpy(np.stack([frames, 255 - frames]))  # (N, T, H, W, 3)
    assert to_float(batched).shape == (2, 3, 1, 4, 64)
    assert torch.equal(to_uint8(to_float(batched)), batched)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0]).reshape(1, 1, 1, 2).repeat(3, 1, 1, 1)),
                       torch.tensor([[[[0, 0, 0], [255, 255, 255]]]], dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_float(frames.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Synthetic videos

def test_synthetic_contract_and_determinism():
    videos = SyntheticVideos(frames=8, size=32, seed=0)
    clip, y = videos[3]
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(SyntheticVideos(8, 32, seed=0)[3][0], clip)
    assert not np.array_equal(videos[4][0], clip)
    assert not np.array_equal(SyntheticVideos(8, 32, seed=1)[3][0], clip)
    labels = {videos[i][1] for i in range(50)}
    assert labels == set(range(SyntheticVideos.num_classes)) and SyntheticVideos.num_classes == 5


def test_synthetic_moves():
    clip = to_float(SyntheticVideos(frames=8, size=32)[0][0])  # (3, T, H, W)
    step = (clip[:, 1:] - clip[:, :-1]).abs().mean(dim=(0, 2, 3))  # change per frame, (T-1,)
    assert (step > 0.005).all()
    assert (clip[:, -1] - clip[:, 0]).abs().mean() > 0.05


def test_bounce_reflects_off_both_walls():
    tau = np.array([0, 0.4, 0.6, 1.2, 1.6])
    # Start mid-way, one wall-to-wall span (0.8) takes 0.8 of the clip at speed 1.
    expected = np.array([0.5, 0.9, 0.7, 0.1, 0.5])
    assert np.allclose(data._bounce(0.5, 1.0, 0.1, 0.9, tau), expected)
    assert np.allclose(data._bounce(0.5, -1.0, 0.1, 0.9, tau), 1 - expected)


def test_synthetic_is_the_same_scene_at_any_size_and_length():
    big = to_float(np.stack([SyntheticVideos(4, 128)[i][0] for i in range(4)]))
    small = to_float(np.stack([SyntheticVideos(4, 32)[i][0] for i in range(4)]))
    same = (view(big, 4, 1) - small).abs().mean()
    other = (view(big, 4, 1) - small.roll(1, dims=0)).abs().mean()  # scene i vs scene i-1
    assert same < 0.05 and same < other / 4, (same, other)
    # Time is normalized too: frame 4k of a 16-frame clip is frame k of the 4-frame clip.
    long, short = SyntheticVideos(16, 32)[0][0], SyntheticVideos(4, 32)[0][0]
    assert np.abs(long[::4].astype(int) - short).max() <= 1


def test_synthetic_held_out_split_is_other_scenes():
    # The built-in data holds out items 2**40 on: other scenes than items 0 on.
    train_s, val_s = SyntheticVideos(4, 16, split="train"), SyntheticVideos(4, 16, split="val")
    assert np.array_equal(train_s[3][0], SyntheticVideos(4, 16)[3][0])
    assert not any(np.array_equal(val_s[i][0], train_s[j][0]) for i in range(5) for j in range(5))


# ----------------------------------------------------------------------------------------------
# Stage examples

class CountingClips(torch.utils.data.Dataset):
    """Clip k: 16 frames of 8 x 8 where frame t is uniformly 8 t, so a window tells its start."""
    frames = 16

    def __len__(self):
        return 200

    def load(self, k, frames):
        clip = (8 * np.asarray(frames, dtype=np.uint8))[:, None, None, None].repeat(8, 1).repeat(8, 2)
        return clip.repeat(3, 3), k % 3, 0


def same_up_to_rounding_flips(a: torch.Tensor, b: torch.Tensor, s: int) -> bool:
    """a == b, but for a rare pixel that float32 rounding tipped to the neighbouring uint8 level.
    The synthetic renderer does float32 arithmetic (a BLAS matmul among it) whose rounding depends
    on how many frames it renders at once and on the CPU, and a value that lands within rounding
    of a .5 boundary then quantizes one level apart (2 of 76,800 views on an AMD EPYC). A flip
    moves its s x s block's mean by one level, 2/255, over s^2."""
    diff = (a - b).abs()
    return bool(diff.max() <= 2 / 255 / s**2 + 1e-6 and (diff > 1e-6).sum() <= 2 + diff.numel() // 1000)


@pytest.mark.parametrize("view_t,window", [(4, None), (2, None), (2, 6), (1, 4)])
def test_stage_examples_load_only_their_frames_yet_equal_the_whole_view(view_t, window):
    """StageExamples renders just the frames its (windowed) view keeps; that must be view() of
    the whole clip, cut to the same window (up to a rounding flip: rendered along two paths)."""
    clips = SyntheticVideos(frames=20, size=16, seed=3)
    examples = StageExamples(clips, view_s=2, view_t=view_t, window=window, seed=5)
    for i in range(3):
        item = examples[i]
        whole = view(to_float(clips[i][0]), 2, view_t)
        T = item["x"].shape[1]
        starts = [start for start in range(whole.shape[1] - T + 1)
                  if same_up_to_rounding_flips(whole[:, start:start + T], item["x"], s=2)]
        assert len(starts) == 1 and (window is not None or T == whole.shape[1])


def test_stage_examples_shapes():
    whole = StageExamples(SyntheticVideos(frames=16, size=32), view_s=4, view_t=4, window=None)
    item = whole[0]
    assert item["x"].shape == (3, 4, 8, 8) and "c" not in item and item["skipped"] == 0
    windows = StageExamples(SyntheticVideos(frames=16, size=32), view_s=2, view_t=2, window=4)
    item = windows[0]
    assert item["x"].shape == (3, 4, 16, 16) and item["c"].shape == (3, 2, 8, 8)
    assert torch.equal(item["c"], view(item["x"], 2, 2))
    batch = next(iter(DataLoader(windows, batch_size=3)))
    assert batch["x"].shape == (3, 3, 4, 16, 16) and batch["c"].shape == (3, 3, 2, 8, 8)
    assert batch["y"].shape == (3,) and batch["skipped"].tolist() == [0, 0, 0]


def test_stage_example_windows_cover_every_start_deterministically():
    examples = StageExamples(CountingClips(), view_s=2, view_t=2, window=4, seed=0)
    later = examples[7]["x"]
    starts = []
    for i in range(60):
        item = examples[i]
        first = to_uint8(item["x"])[0, 0, 0, 0].item()  # view frame k is clip frame 2k = 16 k
        starts.append(first // 16)
        expected = torch.arange(starts[-1], starts[-1] + 4) * 16.0 / 127.5 - 1  # its 4 frames
        assert torch.allclose(item["x"][0, :, 0, 0], expected)
    assert set(starts) == {0, 1, 2, 3, 4}  # view has 8 frames: starts 0 .. 8 - 4, both ends
    assert torch.equal(examples[7]["x"], later)  # independent of call order
    reseeded = StageExamples(CountingClips(), view_s=2, view_t=2, window=4, seed=1)
    assert any(not torch.equal(reseeded[i]["x"], examples[i]["x"]) for i in range(10))


def test_mirrored_by_hand():
    assert mirrored(np.arange(-3, 7), 3).tolist() == [2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    assert mirrored(np.arange(-2, 3), 1).tolist() == [0, 0, 0, 0, 0]


@pytest.mark.parametrize("context", [0, 1, 3])
def test_stage_examples_carry_their_context_as_the_sampler_does(context):
    """c_context = the conditioning frames start - 2 context .. of the view, mirrored past the
    video's ends on the conditioning grid of the window's parity; its centre is c. View (s=2,
    t=2) of 16 frames: 8 frames, frame k of the view is clip frame 2k, of value 16 k; the
    conditioning keeps every other one: 4 frames on either grid (even or odd view frames)."""
    examples = StageExamples(CountingClips(), view_s=2, view_t=2, window=4, context=context, seed=0)
    mirror = {-3: 2, -2: 1, -1: 0, 4: 3, 5: 2, 6: 1}                    # on a grid of 4 frames
    seen = set()
    for i in range(40):
        item = examples[i]
        start = round((item["x"][0, 0, 0, 0].item() + 1) * 127.5) // 16      # first view frame
        p0, grid = start % 2, [start // 2 + j for j in range(-context, 2 + context)]
        cond = [p0 + 2 * mirror.get(g, g) for g in grid]                     # its view frames
        assert item["c_context"].shape == (3, 2 + 2 * context, 2, 2)
        expected = torch.tensor([16.0 * k / 127.5 - 1 for k in cond])
        torch.testing.assert_close(item["c_context"][0, :, 0, 0], expected)
        assert torch.equal(item["c_context"][:, context:context + 2], item["c"])
        seen.add((grid[0] >= 0, grid[-1] < 4))
    both, left_out, right_out, neither = (True, True), (False, True), (True, False), (False, False)
    assert seen == {0: {both}, 1: {both, left_out, right_out}, 3: {neither}}[context]


def test_stage_examples_reject_bad_windows():
    with pytest.raises(ValueError, match="longer than the view"):
        StageExamples(CountingClips(), view_s=1, view_t=4, window=6)[0]  # 16 / 4 = 4 frames
    with pytest.raises(ValueError, match="even"):
        StageExamples(CountingClips(), view_s=1, view_t=1, window=3)



def test_texture_fades_before_the_nyquist_limit():
    """Each texture grating renders at full amplitude down to a 3-pixel period and not at all
    at 2 pixels or less, at any size: no size aliases it."""
    for size in (16, 32, 64, 128):
        freq, amp = SyntheticVideos.texture_octaves(10.0, size).T
        period = size / freq
        assert np.all(amp[period >= 3] == SyntheticVideos.texture) and np.all(amp[period <= 2] == 0)


def test_texture_is_detail_the_view_loses(monkeypatch):
    """The 2x spatial view of a 64-pixel clip loses its textures: bilinear upsampling of the view
    misses the clip's frames by twice as much or more than on the same scenes without textures
    (2.6x on this data when written)."""
    def lost(texture):
        monkeypatch.setattr(SyntheticVideos, "texture", texture)
        x = to_float(np.stack([SyntheticVideos(8, 64)[i][0] for i in range(6)]))  # (6, 3, 8, 64, 64)
        up = torch.nn.functional.interpolate(view(x, 2, 1), scale_factor=(1, 2, 2), mode="trilinear",
                                             align_corners=False)  # bilinear on each frame
        return (up - x).abs().mean().item()
    assert lost(SyntheticVideos.texture) > 2 * lost(0.0)


def test_stage_examples_crop_a_patch_and_its_view():
    """crop: x is a crop x crop patch of the whole window at an even offset, and c (and
    c_context) the matching patch of the view, so c == view(x, 2, 2) still holds."""
    clips = SyntheticVideos(frames=16, size=32, seed=2)
    whole = StageExamples(clips, view_s=1, view_t=1, window=4, context=1, seed=4)
    patches = StageExamples(clips, view_s=1, view_t=1, window=4, context=1, seed=4, crop=12)
    for i in range(4):
        a, b = patches[i], whole[i]
        assert a["x"].shape == (3, 4, 12, 12) and a["c_context"].shape == (3, 4, 6, 6)
        torch.testing.assert_close(view(a["x"], 2, 2), a["c"])
        offsets = [(t, l) for t in range(0, 21, 2) for l in range(0, 21, 2)
                   if torch.equal(b["x"][..., t:t + 12, l:l + 12], a["x"])]
        assert len(offsets) == 1
        t, l = offsets[0]
        assert torch.equal(b["c_context"][..., t // 2:t // 2 + 6, l // 2:l // 2 + 6], a["c_context"])
    with pytest.raises(ValueError, match="crop"):
        StageExamples(clips, view_s=1, view_t=1, window=None, crop=8)
