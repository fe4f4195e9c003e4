"""Tests for videos.py: reading and writing videos, the disk datasets (frame folders, the
shuffle, the held-out split), each kind of bad input, and the table of random streams. The
prepared shards are tested with prepare.py in test_prepare.py.
Run: python -m pytest tests/test_videos.py -q"""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import videos
from data import StageExamples, to_uint8
from videos import (STREAMS, FrameFolderVideos, held_out, random_stream, read_video, video_grid,
                    write_gif, write_mp4)


# ----------------------------------------------------------------------------------------------
# The random streams

def test_streams_are_named_distinct_and_never_alias():
    tags = list(STREAMS.values())
    assert len(set(tags)) == len(tags) and all(tag > 0 for tag in tags)
    # The aliasing the nonzero tags avoid: SeedSequence drops trailing zeros.
    assert np.random.default_rng([7, 3]).random() == np.random.default_rng([7, 3, 0]).random()
    draws = {name: random_stream(7, 3, name).random() for name in STREAMS}
    assert len(set(draws.values())) == len(STREAMS)
    assert np.random.default_rng([7, 3]).random() not in draws.values()
    assert random_stream(7, 3, "clip").random() == draws["clip"]  # a pure function of its key


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


@pytest.mark.skipif(videos.av is None, reason="PyAV not installed")
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
    monkeypatch.setattr(videos, "av", None)
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
    assert names["val"] == {p for p, _, _ in whole.videos if held_out(p.relative_to(tmp_path).as_posix())}
    # Too few videos for the hash to hold one out: one is lent, by name hash, the rest train.
    few = tmp_path / "few"
    class_sorted_folder(few, classes=1, per_class=3)
    assert len(FrameFolderVideos(few, 2, 8, split="val").videos) == 1
    assert len(FrameFolderVideos(few, 2, 8, split="train").videos) == 2
