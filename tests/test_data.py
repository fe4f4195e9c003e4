"""Tests for data.py: view algebra by hand, the uint8 <-> float conversions, the synthetic
dataset, stage examples (windows and conditioning), reading videos from disk and each kind
of bad input. Run: python -m pytest tests/test_data.py -q"""
import tarfile
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
    assert sorted(videos[i][1] for i in range(3)) == [0, 1, 1]  # one epoch: every video once
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
    bad = [videos.videos[videos.video_of(i)][0].name == "bad" for i in range(2)].index(True)
    with pytest.warns(UserWarning, match=r"bad.*cannot read video.*skipping"):
        item = examples[bad]
    assert item["skipped"] == 1 and item["x"].shape == (3, 4, 16, 16)
    assert to_uint8(item["x"])[-1, 8, 8, 0] == 15  # good's frame 3 (red 30 // 2)
    with pytest.warns(UserWarning):
        assert torch.equal(examples[bad]["x"], item["x"])
    assert examples[1 - bad]["skipped"] == 0


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


# ----------------------------------------------------------------------------------------------
# Shuffling and the held-out split

def class_sorted_folder(root, classes=4, per_class=3, frames=4):
    """root/<class k>/v<j>.gif, tiny GIFs whose red level says (class, video)."""
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for j in range(per_class):
            level = 40 * k + 8 * j + 2 * np.arange(frames, dtype=np.uint8)  # frames differ: GIF keeps them
            write_gif(root / f"c{k}" / f"v{j}.gif", np.broadcast_to(level[:, None, None, None], (frames, 8, 8, 3)))
    return root


def test_shuffled_items_mix_classes_and_stay_pure_functions_of_seed_and_i(tmp_path):
    videos = FrameFolderVideos(class_sorted_folder(tmp_path), frames=2, size=8, length=48)
    N = len(videos.videos)
    order = [videos.video_of(i) for i in range(48)]
    for epoch in range(4):  # every video exactly once per epoch, in another order each epoch
        assert sorted(order[epoch * N:(epoch + 1) * N]) == list(range(N))
    assert order[:N] != order[N:2 * N] != list(range(N))
    labels = [videos[i][1] for i in range(48)]
    mixed = [len(set(labels[b:b + 3])) for b in range(0, 48, 3)]  # batches of 3: sorted order gives 1
    assert np.mean(mixed) >= 2, mixed
    fresh = FrameFolderVideos(tmp_path, frames=2, size=8, length=48)
    assert np.array_equal(fresh[37][0], videos[37][0]) and fresh[37][1] == labels[37]  # any call order
    assert [videos.video_of(i) for i in range(48)] == order


def test_held_out_split_shares_no_video_with_training(tmp_path):
    class_sorted_folder(tmp_path, classes=5, per_class=12)  # 2 of the 60 names hash into 5 %
    whole = FrameFolderVideos(tmp_path, frames=2, size=8)
    train = FrameFolderVideos(tmp_path, frames=2, size=8, split="train")
    val = FrameFolderVideos(tmp_path, frames=2, size=8, split="val")
    names = {split: {p for p, _, _ in v.videos} for split, v in [("train", train), ("val", val)]}
    assert names["val"] and not names["train"] & names["val"]
    assert names["train"] | names["val"] == {p for p, _, _ in whole.videos}
    assert names["val"] == {p for p, _, _ in whole.videos if data.held_out(p.relative_to(tmp_path).as_posix())}
    # Too few videos for the hash to hold one out: one is lent, by name hash, the rest train.
    few = tmp_path / "few"
    class_sorted_folder(few, classes=1, per_class=3)
    assert len(FrameFolderVideos(few, 2, 8, split="val").videos) == 1
    assert len(FrameFolderVideos(few, 2, 8, split="train").videos) == 2
    # The built-in data holds out items 2**40 on: other scenes than items 0 on.
    train_s, val_s = SyntheticVideos(4, 16, split="train"), SyntheticVideos(4, 16, split="val")
    assert np.array_equal(train_s[3][0], SyntheticVideos(4, 16)[3][0])
    assert not any(np.array_equal(val_s[i][0], train_s[j][0]) for i in range(5) for j in range(5))


# ----------------------------------------------------------------------------------------------
# data.py prepare, info and the shards

def prepared(tmp_path, src, **flags):
    dst = tmp_path / "prepared"
    counts = data.prepare(src, dst, **{"size": 16, "fps": 25, "workers": 0, "min_frames": 2, **flags})
    return dst, counts


def entries(dst):
    return {v["key"]: v for _, v in data.read_prepared(dst)[1]}


needs_av = pytest.mark.skipif(data.av is None, reason="PyAV not installed")


@pytest.mark.parametrize("fmt,fps,n", [("gif", 50, 30), ("gif", 10, 6),
                                       pytest.param("mp4", 50, 30, marks=needs_av),
                                       pytest.param("mp4", 12, 12, marks=needs_av)])
def test_prepare_resamples_to_fps_by_timestamp(tmp_path, fmt, fps, n):
    """Source frame t is grey level 8 t; prepared at 25 fps, output frame k shows the source
    frame at or before k / 25 s: every other one of 50 fps, repeats of 10 or 12 fps."""
    (tmp_path / "src").mkdir()
    frames = np.repeat((8 * np.arange(n, dtype=np.uint8))[:, None, None, None], 3, 3)
    frames = np.broadcast_to(frames, (n, 30, 40, 3)).copy()
    (data.write_gif if fmt == "gif" else data.write_mp4)(tmp_path / "src" / f"v.{fmt}", frames, fps=fps)
    dst, counts = prepared(tmp_path, tmp_path / "src", labels="none")
    assert counts["done"] == 1
    clips = data.ShardVideos(dst, frames=1, size=16)
    (ref, _, T), = clips.videos
    expected = [int(k * fps / 25 + 1e-9) for k in range(int(n * 25 / fps + 0.5))]
    assert T == len(expected)
    clip = clips._read(ref, slice(0, T))
    assert clip.shape == (T, 16, 16, 3)
    assert np.round(clip[:, 8, 8, 0] / 8).astype(int).tolist() == expected


def test_prepare_resizes_the_short_side_and_crops_the_centre(tmp_path):
    frames = np.zeros((3, 30, 40, 3), np.uint8)  # 40 wide: the centre 30 columns are 5..34
    frames[:, :, :20, 0] = 255  # left half red, right half green: the border is at column 20,
    frames[:, :, 20:, 1] = 255  # which is column 8 of 16 after a centre crop (10.7 after a left one)
    (tmp_path / "src").mkdir()
    write_gif(tmp_path / "src" / "v.gif", frames)
    dst, _ = prepared(tmp_path, tmp_path / "src", labels="none")
    clips = data.ShardVideos(dst, frames=3, size=16)
    clip = clips._read(clips.videos[0][0], slice(0, 3)).astype(int)
    assert clip.shape == (3, 16, 16, 3)
    assert (clip[:, :, 7, 0] > clip[:, :, 7, 1]).all() and (clip[:, :, 8, 1] > clip[:, :, 8, 0]).all()


def test_prepare_labels_from_folders_csv_or_none_and_the_split(tmp_path):
    src = tmp_path / "src"
    for rel in ["walk/a.gif", "run/deep/er/b.gif", "run/c.gif", "abc_000010_000020.gif", "x_000001_000011.gif"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        write_gif(src / rel, make_frames(3))
    dst, counts = prepared(tmp_path, src, labels="folders")
    found = entries(dst)
    assert data.read_prepared(dst)[0]["classes"] == ["run", "walk"]
    assert {k: v["y"] for k, v in found.items()} == {"run/c.gif": 0, "run/deep/er/b.gif": 0, "walk/a.gif": 1}
    assert counts["failed"] == 2 and "not in a class folder" in (dst / "failed.txt").read_text()
    assert all(v["split"] == ("val" if data.held_out(k) else "train") for k, v in found.items())

    (tmp_path / "k600.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                       "jumping,abc,10,20,train\nswimming,x,1,11,validate\nswimming,zz,0,10,val\n")
    dst, counts = prepared(tmp_path / "csv", src, labels=str(tmp_path / "k600.csv"))
    found = entries(dst)
    assert data.read_prepared(dst)[0]["classes"] == ["jumping", "swimming"]
    assert {k: (v["y"], v["split"]) for k, v in found.items()} == {
        "abc_000010_000020.gif": (0, "train"), "x_000001_000011.gif": (1, "val")}
    assert counts["failed"] == 3  # the three videos the CSV does not name

    dst, _ = prepared(tmp_path / "none", src, labels="none", val_fraction=1.0)
    assert data.read_prepared(dst)[0]["classes"] == []
    assert len(entries(dst)) == 5 and {v["y"] for v in entries(dst).values()} == {0}
    assert {v["split"] for v in entries(dst).values()} == {"val"}


def test_prepare_logs_bad_videos_and_goes_on(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_gif(src / "good.gif", make_frames(4))
    write_gif(src / "short.gif", make_frames(1))
    (src / "broken.gif").write_bytes(b"GIF89a not really")
    dst, counts = prepared(tmp_path, src, labels="none", min_frames=4, workers=2)  # 1 frame at 8 fps: 3 at 25
    assert (counts["done"], counts["failed"], counts["too short"]) == (1, 1, 1)
    log = (dst / "failed.txt").read_text()
    assert "broken.gif: cannot read it" in log and "short.gif: too short: 3 frames" in log
    out = capsys.readouterr()
    assert "1 done, 0 skipped (done before), 1 failed, 1 too short" in out.out
    assert "videos/s" in out.err and "for all 3 videos" in out.out


def test_prepare_resumes_after_a_kill(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(5):
        write_gif(src / f"v{k}.gif", make_frames(4) // (k + 1), fps=25)
    calls, real = [], data._prepare_one

    def killed_at_the_fourth(job):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill between two videos
        return real(job)
    monkeypatch.setattr(data, "_prepare_one", killed_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepared(tmp_path, src, labels="none", shard_mb=1e-9)  # one video per shard
    dst = tmp_path / "prepared"
    assert sorted(entries(dst)) == ["v0.gif", "v1.gif", "v2.gif"]
    # As if killed inside a shard: v2's index never written, and a temp file left behind.
    (dst / "shard-00002.json").unlink()
    (dst / "shard-00003.tar.tmp").write_bytes(b"half a shard")
    monkeypatch.setattr(data, "_prepare_one", real)
    _, counts = prepared(tmp_path, src, labels="none", shard_mb=1e-9)
    assert counts["skipped"] == 2 and counts["done"] == 3
    assert sorted(entries(dst)) == [f"v{k}.gif" for k in range(5)]
    assert not list(dst.glob("*.tmp")) and len(list(dst.glob("shard-*.tar"))) == 5
    clips = data.ShardVideos(dst, frames=4, size=16, flip=False)
    for ref, _, n in clips.videos:
        k = int(ref.key[1])
        assert np.abs(clips._read(ref, slice(0, n))[:, 8, 8, 0].astype(int) - make_frames(4)[:, 0, 0, 0] // (k + 1)).max() <= 3
    with pytest.raises(ValueError, match="other settings.*--dst"):
        prepared(tmp_path, src, labels="none", size=8)


def test_info_describes_a_prepared_folder(tmp_path, capsys):
    src = tmp_path / "src"
    for name, T in [("walk/a.gif", 40), ("walk/b.gif", 8), ("run/c.gif", 40)]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        write_gif(src / name, make_frames(T) // 2, fps=25)
    dst, _ = prepared(tmp_path, src)
    data.main(["info", str(dst)])
    out = capsys.readouterr().out
    assert "3 videos in 1 shards, 16x16 at 25 fps" in out
    assert "frames per video: min 8, median 40, max 40" in out
    assert "run | 1" in out and "walk | 2" in out
    assert "tiny stages 1, 2, 3 (clips of 32 frames): 1 too short: walk/b.gif" in out
    assert "ssw-128 stages 1, 2, 3 (clips of 100 frames): 3 too short" in out
    with pytest.raises(ValueError, match=r"src: no prepared.json; make it with python data.py prepare"):
        data.info(src)


def test_shards_load_the_same_clips_as_their_frames_in_folders(tmp_path, monkeypatch):
    src = class_sorted_folder(tmp_path / "src", classes=3, per_class=2, frames=6)
    dst, _ = prepared(tmp_path, src, size=8)
    folders = tmp_path / "folders"
    for tar in dst.glob("shard-*.tar"):
        with tarfile.open(tar) as t:
            t.extractall(folders, filter="data")  # <class>/<video>.gif/<frame>.jpg
    monkeypatch.setattr(data, "av", None)  # training from shards never needs PyAV
    for split in (None, "train", "val"):
        shards = data.ShardVideos(dst, frames=3, size=8, stride=2, seed=4, split=split)
        frames = FrameFolderVideos(folders, frames=3, size=8, stride=2, seed=4, split=split)
        assert shards.classes == frames.classes and len(shards) == len(frames)
        for i in range(2 * len(shards)):
            (a, ya), (b, yb) = shards[i], frames[i]
            assert ya == yb and np.array_equal(a, b)
    assert isinstance(data.open_clips(str(dst), 3, 8, seed=0), data.ShardVideos)


def test_prepare_without_pyav_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"")
    monkeypatch.setattr(data, "av", None)
    with pytest.raises(ImportError, match="pip install av"):
        data.prepare(tmp_path, tmp_path / "out")
