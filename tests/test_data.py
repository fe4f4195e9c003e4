"""Tests for data.py: view algebra by hand, the uint8 <-> float conversions, the synthetic
dataset, stage examples (windows and conditioning), reading videos from disk and each kind
of bad input. Run: python -m pytest tests/test_data.py -q"""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import data
from data import (mirrored, FrameFolderVideos, StageExamples, SyntheticVideos, read_video, to_float,
                  to_uint8, video_grid, view, write_gif, write_mp4)


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


# ----------------------------------------------------------------------------------------------
# Videos on disk

def make_frames(T, h=30, w=40):
    """uint8 (T, h, w, 3): red = 10 t tells the frame, green rises left to right (tells a flip)."""
    frames = np.zeros((T, h, w, 3), np.uint8)
    frames[..., 0] = (10 * np.arange(T))[:, None, None]
    frames[..., 1] = np.linspace(0, 250, w).astype(np.uint8)
    return frames


def write_folder(folder, frames):
    folder.mkdir(parents=True)
    for t, f in enumerate(frames):  # unpadded names: 10.png must come after 9.png
        Image.fromarray(f).save(folder / f"{t}.png")


def test_frame_folder_class_layout(tmp_path):
    write_folder(tmp_path / "walk" / "v1", make_frames(12))
    write_gif(tmp_path / "walk" / "v2.gif", make_frames(12))
    write_folder(tmp_path / "run" / "v3", make_frames(12, h=40, w=30))
    (tmp_path / "run" / "notes.txt").write_text("not a video")
    videos = FrameFolderVideos(tmp_path, frames=4, size=16, stride=2)
    assert videos.classes == ["run", "walk"] and videos.num_classes == 2 and len(videos) == 3
    assert [videos[i][1] for i in range(3)] == [0, 1, 1]  # video i % 3, sorted by path
    flips = set()
    for i in range(12):
        clip, _ = videos[i]
        assert clip.shape == (4, 16, 16, 3) and clip.dtype == np.uint8
        assert np.array_equal(videos[i][0], clip)
        red = clip[:, 8, 8, 0].astype(int)
        assert (np.diff(red) == 20).all(), red  # stride 2 over frames in numeric name order
        flips.add(bool(clip[0, 8, 0, 1] > clip[0, 8, -1, 1]))
        part, y, skipped = videos.load(i, range(1, 4, 2))  # frames 1 and 3 alone: same pixels
        assert np.array_equal(part, clip[1:4:2]) and skipped == 0
    assert flips == {True, False}
    assert len(FrameFolderVideos(tmp_path, frames=4, size=16, length=50)) == 50


def test_frame_folder_flat_layout(tmp_path):
    write_folder(tmp_path / "a", make_frames(6))
    write_gif(tmp_path / "b.gif", make_frames(6))
    np.save(tmp_path / "c.npy", make_frames(6))
    videos = FrameFolderVideos(tmp_path, frames=6, size=8)
    assert videos.classes == [] and videos.num_classes == 0 and len(videos) == 3
    assert all(videos[i][1] == 0 and videos[i][0].shape == (6, 8, 8, 3) for i in range(3))


def test_frame_folder_missing_or_empty_root(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.*expected root/<class>"):
        FrameFolderVideos(tmp_path / "nowhere", frames=4, size=16)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"no videos found.*expected root/<class>"):
        FrameFolderVideos(tmp_path, frames=4, size=16)
    write_gif(tmp_path / "stray.gif", make_frames(4))
    with pytest.raises(ValueError, match=r"both videos \(stray.gif\) and class folders"):
        FrameFolderVideos(tmp_path, frames=4, size=16)


def test_frame_folder_too_short_videos(tmp_path):
    write_folder(tmp_path / "c" / "short", make_frames(3))
    write_folder(tmp_path / "c" / "long", make_frames(8))
    with pytest.warns(UserWarning, match=r"short: skipped, it has 3 frames.*lower --frames"):
        videos = FrameFolderVideos(tmp_path, frames=4, size=16, stride=2)  # needs 7 frames
    assert len(videos) == 1 and videos.videos[0][0].name == "long"
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 2 videos"):
        FrameFolderVideos(tmp_path, frames=5, size=16, stride=2)  # needs 9 frames


def test_frame_folder_mixed_sizes_excluded(tmp_path):
    write_folder(tmp_path / "c" / "good", make_frames(4))
    write_folder(tmp_path / "c" / "mixed", make_frames(4))
    Image.fromarray(make_frames(1, h=20)[0]).save(tmp_path / "c" / "mixed" / "2.png")
    with pytest.warns(UserWarning, match=r"mixed: frames mix sizes"):
        videos = FrameFolderVideos(tmp_path, frames=4, size=16)
    assert [p.name for p, _, _ in videos.videos] == ["good"]


def test_corrupt_frame_is_skipped_and_counted(tmp_path):
    write_folder(tmp_path / "c" / "bad", make_frames(4))
    write_folder(tmp_path / "c" / "good", make_frames(4) // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # headers are fine: listing must not warn
        videos = FrameFolderVideos(tmp_path, frames=4, size=16)
    for png in (tmp_path / "c" / "bad").iterdir():  # header intact, pixel data cut short
        png.write_bytes(png.read_bytes()[:60])
    examples = StageExamples(videos, view_s=1, view_t=1, window=None)
    with pytest.warns(UserWarning, match=r"bad.*cannot read video.*skipping"):
        item = examples[0]  # item 0 is video 0, "bad"
    assert item["skipped"] == 1 and item["x"].shape == (3, 4, 16, 16)
    assert to_uint8(item["x"])[-1, 8, 8, 0] == 15  # good's frame 3 (red 30 // 2)
    with pytest.warns(UserWarning):
        assert torch.equal(examples[0]["x"], item["x"])
    assert examples[1]["skipped"] == 0


def test_read_video_round_trips(tmp_path):
    frames = make_frames(5, h=6, w=4)
    write_gif(tmp_path / "v.gif", frames)
    assert np.array_equal(read_video(tmp_path / "v.gif"), frames)  # few colours: lossless
    assert np.array_equal(read_video(tmp_path / "v.gif", slice(1, 5, 2)), frames[1:5:2])
    np.save(tmp_path / "v.npy", frames)
    assert np.array_equal(read_video(tmp_path / "v.npy", slice(2, None)), frames[2:])
    write_folder(tmp_path / "v", frames)
    assert np.array_equal(read_video(tmp_path / "v"), frames)
    (tmp_path / "broken.gif").write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match="broken.gif"):
        read_video(tmp_path / "broken.gif")


@pytest.mark.skipif(data.av is None, reason="PyAV not installed")
def test_mp4_round_trip(tmp_path):
    frames = np.stack([np.full((9, 11, 3), 40 * t, np.uint8) for t in range(5)])
    write_mp4(tmp_path / "v.mp4", frames, fps=8)
    back = read_video(tmp_path / "v.mp4")
    assert back.shape == (5, 10, 12, 3)  # odd sizes padded to even for yuv420p
    assert np.abs(back[:, :9, :11].astype(int) - frames).mean() < 3
    videos = FrameFolderVideos(tmp_path, frames=3, size=8)
    assert len(videos) == 1 and videos[0][0].shape == (3, 8, 8, 3)


def test_missing_pyav_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"")
    monkeypatch.setattr(data, "av", None)
    with pytest.raises(ImportError, match="pip install av"):
        read_video(tmp_path / "v.mp4")
    with pytest.raises(ImportError, match="pip install av"):
        write_mp4(tmp_path / "w.mp4", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.warns(UserWarning, match="pip install av"), pytest.raises(ValueError):
        FrameFolderVideos(tmp_path, frames=2, size=4)


def test_video_grid():
    videos = np.random.default_rng(0).integers(1, 256, (5, 2, 4, 6, 3), dtype=np.uint8)
    grid = video_grid(videos, nrow=3, pad=1)
    assert grid.shape == (2, 2 * 5 + 1, 3 * 7 + 1, 3)
    assert np.array_equal(grid[:, 1:5, 1:7], videos[0])
    assert np.array_equal(grid[:, 6:10, 1:7], videos[3])  # second row, first column
    assert (grid[:, 0] == 0).all() and (grid[:, 6:10, 15:21] == 0).all()  # pad, empty 6th cell


def test_preview_command(tmp_path, capsys):
    data.main(["--frames", "3", "--size", "16", "--n", "2", "--out", str(tmp_path / "g.gif")])
    assert "clips/s" in capsys.readouterr().out
    assert read_video(tmp_path / "g.gif").shape == (3, 18, 35, 3)
