"""Tests for prepare.py: videos -> shards (frame rate by timestamp, resize and centre crop,
labels and splits, bad videos, resuming after a kill), info, the shards read back by
videos.ShardVideos as the same clips as frame folders, and the synthetic preview.
Run: python -m pytest tests/test_prepare.py -q"""
import tarfile

import numpy as np
import pytest

import prepare
import videos
from data import open_clips
from test_videos import class_sorted_folder, make_frames
from videos import FrameFolderVideos, ShardVideos, held_out, read_prepared, read_video, write_gif, write_mp4


def prepared(tmp_path, src, **flags):
    dst = tmp_path / "prepared"
    counts = prepare.prepare(src, dst, **{"size": 16, "fps": 25, "workers": 0, "min_frames": 2, **flags})
    return dst, counts


def entries(dst):
    return {v["key"]: v for _, v in read_prepared(dst)[1]}


needs_av = pytest.mark.skipif(prepare.av is None, reason="PyAV not installed")


@pytest.mark.parametrize("fmt,fps,n", [("gif", 50, 30), ("gif", 10, 6),
                                       pytest.param("mp4", 50, 30, marks=needs_av),
                                       pytest.param("mp4", 12, 12, marks=needs_av)])
def test_prepare_resamples_to_fps_by_timestamp(tmp_path, fmt, fps, n):
    """Source frame t is grey level 8 t; prepared at 25 fps, output frame k shows the source
    frame at or before k / 25 s: every other one of 50 fps, repeats of 10 or 12 fps."""
    (tmp_path / "src").mkdir()
    frames = np.repeat((8 * np.arange(n, dtype=np.uint8))[:, None, None, None], 3, 3)
    frames = np.broadcast_to(frames, (n, 30, 40, 3)).copy()
    (write_gif if fmt == "gif" else write_mp4)(tmp_path / "src" / f"v.{fmt}", frames, fps=fps)
    dst, counts = prepared(tmp_path, tmp_path / "src", labels="none")
    assert counts["done"] == 1
    clips = ShardVideos(dst, frames=1, size=16)
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
    clips = ShardVideos(dst, frames=3, size=16)
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
    assert read_prepared(dst)[0]["classes"] == ["run", "walk"]
    assert {k: v["y"] for k, v in found.items()} == {"run/c.gif": 0, "run/deep/er/b.gif": 0, "walk/a.gif": 1}
    assert counts["failed"] == 2 and "not in a class folder" in (dst / "failed.txt").read_text()
    assert all(v["split"] == ("val" if held_out(k) else "train") for k, v in found.items())

    (tmp_path / "k600.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                       "jumping,abc,10,20,train\nswimming,x,1,11,validate\nswimming,zz,0,10,val\n")
    dst, counts = prepared(tmp_path / "csv", src, labels=str(tmp_path / "k600.csv"))
    found = entries(dst)
    assert read_prepared(dst)[0]["classes"] == ["jumping", "swimming"]
    assert {k: (v["y"], v["split"]) for k, v in found.items()} == {
        "abc_000010_000020.gif": (0, "train"), "x_000001_000011.gif": (1, "val")}
    assert counts["failed"] == 3  # the three videos the CSV does not name

    dst, _ = prepared(tmp_path / "none", src, labels="none", val_fraction=1.0)
    assert read_prepared(dst)[0]["classes"] == []
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
    calls, real = [], prepare._prepare_one

    def killed_at_the_fourth(job):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill between two videos
        return real(job)
    monkeypatch.setattr(prepare, "_prepare_one", killed_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepared(tmp_path, src, labels="none", shard_mb=1e-9)  # one video per shard
    dst = tmp_path / "prepared"
    assert sorted(entries(dst)) == ["v0.gif", "v1.gif", "v2.gif"]
    # As if killed inside a shard: v2's index never written, and a temp file left behind.
    (dst / "shard-00002.json").unlink()
    (dst / "shard-00003.tar.tmp").write_bytes(b"half a shard")
    monkeypatch.setattr(prepare, "_prepare_one", real)
    _, counts = prepared(tmp_path, src, labels="none", shard_mb=1e-9)
    assert counts["skipped"] == 2 and counts["done"] == 3
    assert sorted(entries(dst)) == [f"v{k}.gif" for k in range(5)]
    assert not list(dst.glob("*.tmp")) and len(list(dst.glob("shard-*.tar"))) == 5
    clips = ShardVideos(dst, frames=4, size=16, flip=False)
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
    prepare.main(["info", str(dst)])
    out = capsys.readouterr().out
    assert "3 videos in 1 shards, 16x16 at 25 fps" in out
    assert "frames per video: min 8, median 40, max 40" in out
    assert "run | 1" in out and "walk | 2" in out
    assert "tiny stages 1, 2, 3 (clips of 32 frames): 1 too short: walk/b.gif" in out
    assert "ssw-128 stages 1, 2, 3 (clips of 100 frames): 3 too short" in out
    with pytest.raises(ValueError, match=r"src: no prepared.json; make it with python prepare.py"):
        prepare.info(src)


def test_shards_load_the_same_clips_as_their_frames_in_folders(tmp_path, monkeypatch):
    src = class_sorted_folder(tmp_path / "src", classes=3, per_class=2, frames=6)
    dst, _ = prepared(tmp_path, src, size=8)
    folders = tmp_path / "folders"
    for tar in dst.glob("shard-*.tar"):
        with tarfile.open(tar) as t:
            t.extractall(folders, filter="data")  # <class>/<video>.gif/<frame>.jpg
    monkeypatch.setattr(videos, "av", None)  # training from shards never needs PyAV
    for split in (None, "train", "val"):
        shards = ShardVideos(dst, frames=3, size=8, stride=2, seed=4, split=split)
        frames = FrameFolderVideos(folders, frames=3, size=8, stride=2, seed=4, split=split)
        assert shards.classes == frames.classes and len(shards) == len(frames)
        for i in range(2 * len(shards)):
            (a, ya), (b, yb) = shards[i], frames[i]
            assert ya == yb and np.array_equal(a, b)
    assert isinstance(open_clips(str(dst), 3, 8, seed=0), ShardVideos)


def test_prepare_without_pyav_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"")
    monkeypatch.setattr(prepare, "av", None)
    with pytest.raises(ImportError, match="pip install av"):
        prepare.prepare(tmp_path, tmp_path / "out")


def test_the_command_line_prepares_and_needs_src_and_dst(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    write_gif(tmp_path / "src" / "v.gif", make_frames(4), fps=25)
    counts = prepare.main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"), "--size", "16",
                           "--labels", "none", "--workers", "0", "--min-frames", "2"])
    assert counts["done"] == 1 and read_prepared(tmp_path / "dst")[0]["size"] == 16
    with pytest.raises(SystemExit):
        prepare.main(["--src", str(tmp_path / "src")])
    assert "needs --src and --dst" in capsys.readouterr().err


def test_preview_command(tmp_path, capsys):
    prepare.main(["preview", "--frames", "3", "--size", "16", "--n", "2", "--out", str(tmp_path / "g.gif")])
    assert "clips/s" in capsys.readouterr().out
    assert read_video(tmp_path / "g.gif").shape == (3, 18, 35, 3)

