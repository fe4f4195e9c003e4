"""Video files and datasets on disk: reading and writing videos (frame folders, .gif, .npy,
.mp4), tiling them into grids, the clip datasets that train from disk (FrameFolderVideos: a
folder of videos; ShardVideos: a folder that prepare.py wrote), their held-out split, and the
table of the project's random streams (STREAMS) with Clips, the base of every clip dataset.

data.py's open_clips() picks a dataset from --data; prepare.py turns raw videos into shards.
This file imports nothing of the project. uint8 (T, H, W, 3) is the only layout here.
"""
import io
import itertools
import json
import math
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageSequence
from torch.utils.data import Dataset

try:
    import av  # PyAV: optional, only .mp4 (and other container) I/O needs it
except ImportError:
    av = None

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
AV_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")  # anything PyAV decodes; UCF-101 ships .avi
VIDEO_EXTS = (".gif", ".npy") + AV_EXTS
LAYOUT = ("root/<class>/<video>/<frame>.jpg|png or root/<class>/<video>.gif|.npy|.mp4 "
          "(class-conditional), or root/<video>/... and root/<video>.gif|... (unconditional)")


# ----------------------------------------------------------------------------------------------
# Clip datasets: the random streams every item draws from, and the base class

# Every random stream of the project, by name. Stream `name` of example (or epoch) `index` is
# np.random.SeedSequence([seed, index, STREAMS[name]]): a pure function of (seed, index), which
# is what makes resume exact. numpy's SeedSequence ignores trailing zeros ([seed, i] and
# [seed, i, 0] are one stream), so every tag is distinct, nonzero and last. The table lives
# here, the lowest file that draws from it: data.py and training import it from here.
STREAMS = {
    "clip": 1,      # a clip item: the synthetic scene; a disk video's start frame and flip
    "shuffle": 2,   # the order of the videos in one epoch of a disk dataset (index: the epoch)
    "fallback": 3,  # the videos a disk item tries when its video turns out corrupt
    "window": 4,    # where StageExamples cuts an item's training window
    "d_noise": 5,   # a D step's z and D_s frames for an example (index: its id), in training
    "g_noise": 6,   # the G step's z and D_s frames for the same example
}


def random_stream(seed: int, index: int, name: str) -> np.random.Generator:
    """The generator of stream `name` (STREAMS) for example (or epoch) `index` under `seed`."""
    return np.random.default_rng([seed, index, STREAMS[name]])


def clip_span(frames: int, stride: int) -> int:
    """Source frames a clip of `frames` frames taken every `stride` frames spans."""
    return (frames - 1) * stride + 1


class Clips(Dataset):
    """The base of every clip dataset (data.SyntheticVideos; FrameFolderVideos and ShardVideos
    here): `length` items of `frames`-frame clips. Item i -> (uint8 (frames, size, size, 3), y),
    a pure function of (seed, i); load(i, frames) reads just the clip frames listed in `frames`
    and also counts the corrupt videos skipped for the item."""
    frames: int
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        clip, y, _ = self.load(i)
        return clip, y

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Reading and writing videos

def _require_av(path: Path):
    if av is None:
        raise ImportError(f"{path}: {path.suffix} video I/O needs PyAV: pip install av")


def _natural_key(path: Path) -> list:
    # Frames named 1.png ... 10.png must not sort as 1, 10, 2: compare digit runs as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in frame order (numbers in names compare as numbers)."""
    # Hidden files (macOS's ._0001.png) are metadata, not frames.
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=_natural_key)


def _decode(path: Path, index: slice) -> np.ndarray:
    if path.is_dir():
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in frame_files(path)[index]]
    elif path.suffix.lower() == ".npy":
        video = np.load(path, mmap_mode="r")  # mmap: only the requested frames are read
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"want uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
        frames = list(video[index])
    elif path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB"))
                      for f in itertools.islice(ImageSequence.Iterator(im),
                                                index.start, index.stop, index.step)]
    else:
        # Decoding from the start (no seeking) is slower for late starts but never off by a frame.
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24")
                      for f in itertools.islice(container.decode(video=0),
                                                index.start, index.stop, index.step)]
    if not frames:
        raise ValueError(f"no frames in {index}")
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"frames mix sizes {sorted({f.shape[:2] for f in frames})}")
    return np.stack(frames)  # (T, H, W, 3)


def read_video(path: str | Path, index: slice = slice(None)) -> np.ndarray:
    """Decode a video to uint8 (T, H, W, 3). path: a frame folder of .jpg/.png, a .gif, a .npy
    holding uint8 (T, H, W, 3), or .mp4 (and other containers PyAV reads). index: a slice with
    non-negative bounds picking the frames to decode, e.g. slice(start, stop, stride).
    Raises ValueError naming the file for corrupt or empty input."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video")
    if not path.is_dir() and path.suffix.lower() not in VIDEO_EXTS:
        raise ValueError(f"{path}: unknown video format; want a frame folder or {VIDEO_EXTS}")
    if path.suffix.lower() in AV_EXTS:
        _require_av(path)
    try:
        return _decode(path, index)
    except Exception as e:  # decoders raise many types for bad bytes; callers need one
        raise ValueError(f"{path}: cannot read video ({type(e).__name__}: {e})") from e


def count_frames(path: str | Path) -> int:
    """Number of frames in a video, read from headers where the format allows (cheap), for
    listing a dataset. A frame folder's frames must share one size: ValueError naming it if not."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        sizes = {}
        for f in files:
            with Image.open(f) as im:  # lazy: reads the header, not the pixels
                sizes.setdefault(im.size, f.name)
        if len(sizes) > 1:
            found = ", ".join(f"{name} is {w}x{h}" for (w, h), name in sizes.items())
            raise ValueError(f"{path}: frames mix sizes ({found}); resize them to one size "
                             f"or remove the folder")
        return len(files)
    if path.suffix.lower() == ".npy":
        return np.load(path, mmap_mode="r").shape[0]
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            return im.n_frames
    _require_av(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # Some containers (webm, mkv) leave the frame count out of the header; count packets.
        return stream.frames or sum(1 for p in container.demux(stream) if p.size)


def write_gif(path: str | Path, frames: np.ndarray | torch.Tensor, fps: int = 8):
    """Write uint8 (T, H, W, 3) as a looping GIF. GIF has 256 colours per frame, and Pillow
    stores a run of identical frames as one longer frame: playback timing is right, but
    read_video then returns fewer frames. Use .npy when frames must survive exactly."""
    frames = np.asarray(frames)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)


def write_strip(path: str | Path, rows: list[tuple[str, np.ndarray]], frames: list[int], scale: int) -> None:
    """A PNG of labelled rows, each a uint8 video (T, H, W, 3) shown as its `frames` side by side,
    every pixel scale x scale: how the README shows videos on a page."""
    H, W = rows[0][1].shape[1:3]
    label, cell_w, cell_h = 90, W * scale + 2, H * scale + 2
    img = Image.new("RGB", (label + cell_w * len(frames), cell_h * len(rows) + 16), "white")
    draw = ImageDraw.Draw(img)
    for k, t in enumerate(frames):
        draw.text((label + k * cell_w + 2, 2), f"t={t}", fill="black")
    for r, (name, video) in enumerate(rows):
        top = 16 + r * cell_h
        draw.text((2, top + cell_h // 2 - 6), name, fill="black")
        for k, t in enumerate(frames):
            frame = Image.fromarray(np.asarray(video[t])).resize((W * scale, H * scale), Image.NEAREST)
            img.paste(frame, (label + k * cell_w + 1, top + 1))
    img.save(path)


def write_mp4(path: str | Path, frames: np.ndarray | torch.Tensor, fps: int = 8):
    """Write uint8 (T, H, W, 3) as H.264 mp4 (PyAV). yuv420p needs even sizes, so an odd
    height or width gets one replicated row or column."""
    path = Path(path)
    _require_av(path)
    frames = np.asarray(frames)
    T, H, W, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}  # visually lossless: samples are for looking at
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's buffered frames


def video_grid(videos: np.ndarray | torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """Tile uint8 (N, T, H, W, 3) videos in rows of nrow, with pad black pixels between and
    around them -> uint8 (T, rows*(H+pad)+pad, nrow*(W+pad)+pad, 3)."""
    videos = np.asarray(videos)
    N, T, H, W, _ = videos.shape
    rows = math.ceil(N / nrow)
    grid = np.zeros((T, rows * (H + pad) + pad, nrow * (W + pad) + pad, 3), np.uint8)
    for k in range(N):
        top, left = pad + (k // nrow) * (H + pad), pad + (k % nrow) * (W + pad)
        grid[:, top:top + H, left:left + W] = videos[k]
    return grid


# ----------------------------------------------------------------------------------------------
# Videos from disk

VAL_FRACTION = 0.05  # share of a dataset's videos held out (by a hash of their names) by default


def held_out(key: str, fraction: float = VAL_FRACTION) -> bool:
    """Whether the video named `key` (its path under the dataset root) is in the held-out split:
    decided by a hash of the name alone, so it never changes as videos are added, removed or
    prepared in another order (a resumed `prepare.py` agrees with the first run)."""
    return zlib.crc32(key.encode()) < fraction * 2**32


class DiskVideos(Clips):
    """What FrameFolderVideos and ShardVideos share: a list of videos (ref, y, frames, split),
    one split of them chosen, the shuffle, and clip loading. Item i -> (uint8 (frames, size,
    size, 3), y): a video drawn through a shuffle of the videos, a random start, frames taken
    every stride, the shorter side resized to size (antialiased bilinear), centre-cropped,
    randomly flipped left-right (unless flip=False, as for evaluation); all a pure function of
    (seed, i).

    The shuffle: item i takes position i % N of epoch i // N's permutation of the N videos,
    drawn from (seed, epoch). So a batch mixes classes and videos whatever order the files
    sort in, every video comes once per epoch, and item i is still a pure function of (seed,
    i), which keeps resume exact. split: None (every video), "train" or "val" (held out).

    A video found corrupt while reading an item is skipped with a warning for another one,
    chosen from (seed, i): load(i) reports how many were skipped, so the count survives
    DataLoader worker processes."""

    max_tries = 20  # consecutive unreadable videos before an item gives up: the data is broken

    def _choose(self, listed: list[tuple], split: str | None, length: int | None) -> None:
        """Keep the (ref, y, frames, split) of `listed` in `split` as self.videos [(ref, y, frames)].
        A split left empty (a few videos, all on one side of the hash) gets one video by name
        hash, the rest the other; with one video, the held-out split is the training video
        (with a warning)."""
        if split not in (None, "train", "val"):
            raise ValueError(f"split={split!r}: want None, 'train' or 'val'")
        if split is not None and len(listed) > 1 and len({s for *_, s in listed}) == 1:
            first = min(range(len(listed)), key=lambda k: zlib.crc32(self.name(listed[k][0]).encode()))
            listed = [(*v[:3], "val" if k == first else "train") for k, v in enumerate(listed)]
        if split == "val" and len(listed) == 1:
            warnings.warn(f"{self.root}: one video only, so the held-out split is the training video")
            split = None
        self.videos = [(ref, y, n) for ref, y, n, s in listed if split is None or s == split]
        if not self.videos:
            raise ValueError(f"{self.root}: no usable video in split {split!r}")
        self.length = len(self.videos) if length is None else length
        self._epoch, self._order = None, None

    def video_of(self, i: int) -> int:
        """Index into self.videos of item i: position i % N of epoch i // N's shuffle."""
        N = len(self.videos)
        epoch = i // N
        if epoch != self._epoch:  # one permutation per epoch, kept: consecutive items share it
            self._order = random_stream(self.seed, epoch, "shuffle").permutation(N)
            self._epoch = epoch
        return int(self._order[i % N])

    def _read(self, ref, index: slice) -> np.ndarray:
        raise NotImplementedError

    def name(self, ref) -> str:
        """A video's path under the dataset root: what its held-out hash is of."""
        raise NotImplementedError

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        """Item i as (uint8 (len(frames), size, size, 3), y, number of corrupt videos skipped):
        only the clip frames listed in `frames` (default all) are decoded and resized."""
        frames = range(self.frames) if frames is None else frames
        rng = random_stream(self.seed, i, "clip")
        first_video = self.video_of(i)
        candidates = itertools.chain([first_video], self._fallbacks(i, first_video))
        for skipped, k in enumerate(itertools.islice(candidates, self.max_tries)):
            ref, y, n = self.videos[k]
            start = int(rng.integers(0, n - self.span + 1))
            flip = rng.random() < 0.5
            try:
                # Clip frame f is source frame start + f * stride.
                first, last = start + frames[0] * self.stride, start + frames[-1] * self.stride
                clip = self._read(ref, slice(first, last + 1, frames.step * self.stride))
                if len(clip) != len(frames):
                    raise ValueError(f"{ref}: got {len(clip)} of {len(frames)} frames from "
                                     f"{first}; its header promised {n}")
            except (ValueError, OSError) as e:
                warnings.warn(f"{e}; skipping {ref} for another video")
                continue
            clip = self._resize_crop(clip)
            if flip and self.flip:
                clip = np.ascontiguousarray(clip[:, :, ::-1])  # torch refuses negative strides
            return clip, y, skipped
        raise RuntimeError(f"{self.root}: {self.max_tries} videos in a row could not be read "
                           f"for item {i}; see the warnings")

    def _fallbacks(self, i: int, first: int):
        """Other videos to try, in an order drawn from (seed, i): a bad video changes only the
        items that meet it. Lazy, on a stream of its own, so that items that meet no bad video
        never pay for the permutation."""
        for k in random_stream(self.seed, i, "fallback").permutation(len(self.videos)):
            if k != first:
                yield int(k)

    def _resize_crop(self, clip: np.ndarray) -> np.ndarray:
        """uint8 (T, h, w, 3) -> (T, size, size, 3): shorter side to size, centre crop."""
        T, h, w, _ = clip.shape
        if h == w == self.size:
            return clip
        return np.stack([np.asarray(resize_crop(Image.fromarray(f), self.size)) for f in clip])


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to size (antialiased bilinear), centre-cropped to size x size."""
    w, h = image.size
    side = min(h, w)
    # Resizing just the centred square box crops and resizes in one antialiased pass.
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)


class FrameFolderVideos(DiskVideos):
    """Videos on disk, in the layout LAYOUT describes (classes sorted by folder name -> index;
    a flat root is unconditional: num_classes == 0, y == 0), as DiskVideos clips. The held-out
    split is the videos whose path under root hashes into VAL_FRACTION (held_out).

    Videos too short for a clip (clip_span), unreadable ones and frame folders mixing sizes are left out at listing with a warning."""

    def __init__(self, root: str | Path, frames: int, size: int, stride: int = 1, seed: int = 0,
                 length: int | None = None, flip: bool = True, split: str | None = None):
        self.root, self.seed, self.flip = Path(root), seed, flip
        self.frames, self.size, self.stride = frames, size, stride
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: no such directory; expected {LAYOUT}")
        entries = self._entries(self.root)
        class_dirs = [p for p in entries if p.is_dir() and not self._is_video(p)]
        flat_videos = [p for p in entries if self._is_video(p)]
        if flat_videos and class_dirs:
            raise ValueError(f"{self.root}: holds both videos ({flat_videos[0].name}) and class "
                             f"folders ({class_dirs[0].name}); expected {LAYOUT}")
        if flat_videos:
            self.classes, listed = [], [(p, 0) for p in flat_videos]
        else:
            self.classes = [d.name for d in class_dirs]
            listed = [(p, y) for y, d in enumerate(class_dirs)
                      for p in self._entries(d) if self._is_video(p)]
        if not listed:
            raise ValueError(f"{self.root}: no videos found; expected {LAYOUT}")
        self.num_classes = len(self.classes)
        self.span = clip_span(frames, stride)  # source frames one clip spans
        usable = [(p, y, n) for p, y in listed if (n := self._usable_frames(p))]
        if not usable:
            raise ValueError(f"{self.root}: none of the {len(listed)} videos is usable (see the "
                             f"warnings above); each needs >= {self.span} readable frames")
        self._choose([(p, y, n, "val" if held_out(self.name(p)) else "train") for p, y, n in usable],
                     split, length)

    @staticmethod
    def _entries(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))

    @staticmethod
    def _is_video(p: Path) -> bool:
        if p.is_dir():
            return bool(frame_files(p))
        return p.suffix.lower() in VIDEO_EXTS

    def _usable_frames(self, path: Path) -> int:
        """Frame count of path, or 0 (with a warning saying why) if it cannot make a clip."""
        if path.suffix.lower() in AV_EXTS and av is None:
            warnings.warn(f"{path}: skipped, reading {path.suffix} needs PyAV: pip install av")
            return 0
        try:
            n = count_frames(path)
        except Exception as e:  # any header the decoders reject: leave the video out
            warnings.warn(f"{path}: skipped, cannot read it ({e})")
            return 0
        if n < self.span:
            warnings.warn(f"{path}: skipped, it has {n} frames but a clip of --frames "
                          f"{self.frames} with --stride {self.stride} needs {self.span}; "
                          f"lower --frames/--stride or remove it")
            return 0
        return n

    def _read(self, ref: Path, index: slice) -> np.ndarray:
        return read_video(ref, index)

    def name(self, ref: Path) -> str:
        return ref.relative_to(self.root).as_posix()


# ----------------------------------------------------------------------------------------------
# Prepared shards: `python prepare.py` writes them, ShardVideos reads them
#
# A prepared folder (400k videos make a few thousand files, not 100 million frames):
#   prepared.json     {"format", "size", "fps", "labels", "classes", "val_fraction"}: what
#                     every shard holds
#   shard-00000.tar   uncompressed tar of JPEG frames <key>/<frame:05d>.jpg, about --shard-mb
#                     each; `tar xf` turns it back into frame folders
#   shard-00000.npy   int64 (frames, 2): byte offset and length of each JPEG in the tar, so a
#                     clip reads just its frames (one pread each) and never a tar header
#   shard-00000.json  {"videos": [{"key", "y", "split", "frames", "first"}, ...]}, written
#                     last: a shard exists once its .json does, so a killed run leaves nothing
#                     half-written that is ever read, and a rerun redoes only the lost shard
#   failed.txt        videos that failed or were too short in the last run, with the reason

PREPARED = "prepared.json"


class ShardRef(NamedTuple):
    shard: Path   # the .tar
    first: int    # row of the video's first frame in the shard's .npy
    key: str      # its path under the source folder

    def __str__(self) -> str:
        return f"{self.shard}:{self.key}"


def read_prepared(root: Path) -> tuple[dict, list[tuple[Path, dict]]]:
    """A prepared folder's settings and [(shard .tar, video entry)] of its finished shards."""
    meta = json.loads((root / PREPARED).read_text())
    videos = [(index.with_suffix(".tar"), v) for index in sorted(root.glob("shard-*.json"))
              for v in json.loads(index.read_text())["videos"]]
    return meta, videos


class ShardVideos(DiskVideos):
    """A folder that prepare.py wrote, as DiskVideos clips: frames are JPEGs read at
    their byte offsets in the shards (no PyAV), at the prepared size and fps; `stride` takes
    every stride-th prepared frame. The split is the one prepare recorded (the labels CSV's
    split column, or the name hash of --val-fraction); "test" videos are in neither split.
    Videos too short for a clip are left out with one warning (`prepare.py info` lists them)."""

    def __init__(self, root: str | Path, frames: int, size: int, stride: int = 1, seed: int = 0,
                 length: int | None = None, flip: bool = True, split: str | None = None):
        self.root, self.seed, self.flip = Path(root), seed, flip
        self.frames, self.size, self.stride = frames, size, stride
        meta, videos = read_prepared(self.root)
        self.classes = meta["classes"]
        self.num_classes = len(self.classes)
        self.span = clip_span(frames, stride)
        listed = [(ShardRef(tar, v["first"], v["key"]), v["y"], v["frames"], v["split"])
                  for tar, v in videos if v["frames"] >= self.span and v["split"] != "test"]
        if len(listed) < len(videos):
            warnings.warn(f"{self.root}: {len(videos) - len(listed)} of {len(videos)} videos left "
                          f"out (test split, or shorter than the {self.span} frames a clip of "
                          f"{frames} with stride {stride} spans); `python prepare.py info {root}`")
        if not listed:
            raise ValueError(f"{self.root}: no finished shard holds a usable video; run "
                             f"`python prepare.py` (again) or lower --frames/--frame-stride")
        self._choose(listed, split, length)

    def name(self, ref: ShardRef) -> str:
        return ref.key

    def _read(self, ref: ShardRef, index: slice) -> np.ndarray:
        spans = np.load(ref.shard.with_suffix(".npy"), mmap_mode="r")
        spans = spans[ref.first + index.start:ref.first + index.stop:index.step]  # (n, 2)
        with open(ref.shard, "rb") as f:
            return np.stack([np.asarray(Image.open(io.BytesIO(os.pread(f.fileno(), int(n), int(at))))
                                        .convert("RGB")) for at, n in spans])  # (n, H, W, 3)

