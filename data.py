"""Video data: decoding to uint8 clips, the one uint8 <-> [-1, 1] conversion each way, view(),
stage examples (windows and their conditioning views), a built-in synthetic dataset, and the
prepared format (tar shards of JPEG frames) that real datasets train from.

DESIGN.md section 2 ("Views") defines the vocabulary: float video tensors are (B, C, T, H, W) in
[-1, 1]; uint8 (T, H, W, 3) exists only here, at I/O. Every item is a pure function of (seed, i),
drawn through a per-epoch shuffle of the videos, so batches mix classes and train.py can rebuild
the batch of any step from item indices when it resumes (DESIGN.md section 4). A held-out split,
by video, feeds sample grids, the grounding error and FVD's real statistics.

    python data.py --frames 100 --size 128 --n 16 --out out/synthetic.gif   # preview, time
    python data.py prepare --src RAW --dst PREPARED --size 128 --fps 25      # videos -> shards
    python data.py info PREPARED                                              # what it holds
"""
import argparse
import collections
import csv
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import sys
import tarfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageSequence
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
# The conversions and view()

def to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1]; batched (N, T, H, W, 3) ->
    (N, 3, T, H, W). The only uint8 -> float conversion in the project."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.dim() not in (4, 5) or frames.shape[-1] != 3:
        raise ValueError(f"to_float wants uint8 (T, H, W, 3) or (N, T, H, W, 3), "
                         f"got {frames.dtype} {tuple(frames.shape)}")
    channels_first = (3, 0, 1, 2) if frames.dim() == 4 else (0, 4, 1, 2, 3)
    # Permute while still 1 byte per value, so the copy that makes it contiguous is cheap.
    x = frames.permute(channels_first).contiguous()  # (3, T, H, W) or (N, 3, T, H, W)
    return x.float() / 127.5 - 1  # 255 / 127.5 is exactly 2, so 0 -> -1 and 255 -> 1 exactly


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) or (N, 3, T, H, W), nominally in [-1, 1] -> uint8 (T, H, W, 3) or
    (N, T, H, W, 3), clamped and rounded. The only float -> uint8 conversion; inverts to_float
    exactly on its outputs."""
    if x.dim() not in (4, 5) or x.shape[-4] != 3:
        raise ValueError(f"to_uint8 wants (3, T, H, W) or (N, 3, T, H, W), got {tuple(x.shape)}")
    u = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    channels_last = (1, 2, 3, 0) if x.dim() == 4 else (0, 2, 3, 4, 1)
    return u.permute(channels_last).contiguous()  # (T, H, W, 3) or (N, T, H, W, 3)


def view(x: torch.Tensor, s: int, t: int) -> torch.Tensor:
    """The (s, t) view of a video: spatial average pooling by s (the mean of each s x s block),
    then temporal subsampling keeping frames 0, t, 2t, ... < T.
    (B, C, T, H, W) -> (B, C, ceil(T/t), H/s, W/s); unbatched (C, T, H, W) works the same."""
    if x.dim() not in (4, 5):
        raise ValueError(f"view wants (B, C, T, H, W) or (C, T, H, W), got {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % s or W % s:
        raise ValueError(f"view: H x W = {H} x {W} is not divisible by the spatial factor s={s}")
    # Pooling acts on each frame alone, so subsampling first gives the same result for less work.
    x = x[..., ::t, :, :]  # (..., C, T', H, W)
    if s == 1:  # nothing to pool: skip the copy
        return x
    x = x.reshape(*x.shape[:-2], H // s, s, W // s, s)  # (..., C, T', H/s, s, W/s, s)
    return x.mean(dim=(-3, -1))  # (..., C, T', H/s, W/s)


def mirrored(t: np.ndarray, T: int) -> np.ndarray:
    """Frame indices t (any integers) of a video of T frames extended by mirroring at both ends,
    ... 1 0 | 0 1 ... T-1 | T-1 T-2 ..., as indices 0 .. T-1 into the video. The upscalers see
    this extension past a video's ends, in training and in sampling (DESIGN.md section 4)."""
    t = np.asarray(t) % (2 * T)
    return np.where(t < T, t, 2 * T - 1 - t)


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
# Synthetic videos: shapes of one kind (the class) bouncing over a drifting textured background

def _box(a: np.ndarray, b: np.ndarray, half_a: float | np.ndarray,
         half_b: float | np.ndarray) -> np.ndarray:
    # Signed distance to an axis-aligned box centred at the origin (negative inside).
    qa, qb = np.abs(a) - half_a, np.abs(b) - half_b
    return np.hypot(np.maximum(qa, 0), np.maximum(qb, 0)) + np.minimum(np.maximum(qa, qb), 0)


def _triangle(a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Signed distance to an equilateral triangle with circumradius r pointing up (image y is
    # down, hence -b); Inigo Quilez's sdEquilateralTriangle with half side r*sqrt(3)/2.
    k, half = math.sqrt(3), r * math.sqrt(3) / 2
    px, py = np.abs(a) - half, -b + half / k
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2 * half, 0)
    return -np.hypot(px, py) * np.sign(py)


def _shape_distance(kind: int, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (normalized units) to shape `kind` of radius r at local coords (a, b)."""
    if kind == 0:  # circle
        return np.hypot(a, b) - r
    if kind == 1:  # square
        return _box(a, b, 0.8 * r, 0.8 * r)
    if kind == 2:  # triangle
        return _triangle(a, b, r)
    if kind == 3:  # ring
        return np.abs(np.hypot(a, b) - 0.7 * r) - 0.3 * r
    return np.minimum(_box(a, b, r, 0.3 * r), _box(a, b, 0.3 * r, r))  # cross


def _bounce(p0: float, v: float, lo: float, hi: float, tau: np.ndarray) -> np.ndarray:
    """Position at times tau of a point starting at p0 with velocity v (units per clip),
    reflected off walls at lo and hi: a triangle wave, so no time stepping is needed."""
    span = hi - lo
    m = np.mod(p0 - lo + v * tau, 2 * span)
    return lo + span - np.abs(m - span)


_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                     [250, 250, 250], [20, 20, 20]], np.float32) / 255  # far from the background


class Clips(Dataset):
    """What SyntheticVideos and FrameFolderVideos share: `length` items of `frames`-frame clips.
    Item i -> (uint8 (frames, size, size, 3), y); load(i, frames) reads a subset of the frames
    and also counts skipped bad videos."""
    frames: int
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        clip, y, _ = self.load(i)
        return clip, y

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        raise NotImplementedError


class SyntheticVideos(Clips):
    """Built-in dataset: 1-3 shapes of one kind (the class y) in distinct colours and sizes,
    bouncing off the borders, slowly rotating and pulsing, over smooth colour stripes that
    drift. Item i -> (uint8 (frames, size, size, 3), y), a pure function of (seed, i).

    All geometry is in normalized units: space in [0, 1], time tau = t / frames in [0, 1) over
    the clip. So the scene does not depend on size or frames: the same item at 128 and at 32
    is the same scene, and frame 4k of a 100-frame clip is frame k of the 25-frame clip.
    split "val" is the held-out items 2**40 on: scenes never trained on."""

    classes = ["circle", "square", "triangle", "ring", "cross"]
    num_classes = len(classes)
    max_shapes = 3
    waves = 4  # background plane waves

    heldout = 2**40  # split "val" is items heldout, heldout + 1, ...: never trained on

    def __init__(self, frames: int, size: int, seed: int = 0, length: int = 100_000,
                 split: str | None = None):
        self.frames, self.size, self.seed, self.length = frames, size, seed, length
        self.offset = self.heldout if split == "val" else 0

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        """Item i as (uint8 (len(frames), size, size, 3), y, 0): only the clip frames listed in
        `frames` (default all) are rendered, each exactly as in the whole clip. The 0 is the
        count of skipped bad videos, to match FrameFolderVideos.load."""
        rng = np.random.default_rng([self.seed, self.offset + i])
        # Draw every parameter for max_shapes before using any, in a fixed order, so that the
        # scene depends only on (seed, i), never on size or frames.
        y = int(rng.integers(self.num_classes))
        n = int(rng.integers(1, self.max_shapes + 1))
        base = rng.uniform(0.3, 0.6, 3)
        wave_freq = rng.normal(0, 1.5, (self.waves, 2))  # cycles per frame width
        wave_drift = rng.normal(0, 0.15, (self.waves, 2))  # frame widths per clip: slow
        wave_phase = rng.uniform(0, 2 * np.pi, self.waves)
        wave_colour = rng.uniform(-0.12, 0.12, (self.waves, 3))
        radius = rng.uniform(0.07, 0.16, self.max_shapes)
        pulse_freq = rng.uniform(0.5, 2, self.max_shapes)  # pulses per clip
        pulse_phase = rng.uniform(0, 2 * np.pi, self.max_shapes)
        angle = rng.uniform(0, 2 * np.pi, self.max_shapes)
        spin = rng.uniform(-np.pi / 2, np.pi / 2, self.max_shapes)  # radians per clip
        start = rng.uniform(0, 1, (self.max_shapes, 2))
        speed = rng.uniform(0.8, 2.0, self.max_shapes)  # frame widths per clip: crosses it
        heading = rng.uniform(0, 2 * np.pi, self.max_shapes)
        colour = _PALETTE[rng.permutation(len(_PALETTE))[:self.max_shapes]]
        colour = np.clip(colour + rng.uniform(-0.08, 0.08, colour.shape), 0, 1).astype(np.float32)

        frames = range(self.frames) if frames is None else frames
        T, S = len(frames), self.size  # T: frames rendered
        tau = np.asarray(frames) / self.frames  # (T,) clip time of each rendered frame
        pixel = (np.arange(S, dtype=np.float32) + 0.5) / S  # (S,) pixel centres

        # Background: base colour plus drifting plane waves, each tinting with its own colour.
        # sin(a + b) = sin(a) cos(b) + cos(a) sin(b) splits a wave into a spatial phase a and a
        # temporal one b, so the whole (T, S, S, 3) background is one small-rank matmul.
        a = 2 * np.pi * (wave_freq[:, 0, None, None] * pixel[None, None, :]
                         + wave_freq[:, 1, None, None] * pixel[None, :, None]) \
            + wave_phase[:, None, None]  # (K, S, S)
        b = -2 * np.pi * (wave_freq * wave_drift).sum(1)[None, :] * tau[:, None]  # (T, K)
        # A constant temporal factor 1 with spatial factor `base` adds the base colour for free.
        spatial = np.concatenate([np.sin(a)[..., None] * wave_colour[:, None, None, :],
                                  np.cos(a)[..., None] * wave_colour[:, None, None, :],
                                  np.broadcast_to(base, (1, S, S, 3))])  # (2K+1, S, S, 3)
        temporal = np.concatenate([np.cos(b), np.sin(b), np.ones((T, 1))], axis=1)  # (T, 2K+1)
        video = temporal.astype(np.float32) @ spatial.astype(np.float32).reshape(len(spatial), -1)
        video = video.reshape(T, S, S, 3)

        frame = np.arange(T)
        for k in range(n):
            r_max = radius[k] * 1.15  # pulsing peaks at +15%
            r = radius[k] * (1 + 0.15 * np.sin(2 * np.pi * pulse_freq[k] * tau + pulse_phase[k]))
            cx, cy = (_bounce(start[k, j] * (1 - 2 * r_max) + r_max,
                              speed[k] * (np.cos(heading[k]), np.sin(heading[k]))[j],
                              r_max, 1 - r_max, tau) for j in range(2))  # (T,) each
            theta = angle[k] + spin[k] * tau  # (T,)
            # Shade only a 2h x 2h window per frame around the shape (none reaches past
            # 1.14 r_max from its centre): most of the frame is untouched, and this is the cost.
            half = min(math.ceil(1.2 * r_max * S) + 1, S // 2)
            top = np.clip(np.round(cy * S).astype(int) - half, 0, S - 2 * half)  # (T,)
            left = np.clip(np.round(cx * S).astype(int) - half, 0, S - 2 * half)
            rows = pixel[top[:, None] + np.arange(2 * half)][:, None, :, None]  # (T, 1, 2h, 1)
            cols = pixel[left[:, None] + np.arange(2 * half)][:, None, None, :]  # (T, 1, 1, 2h)
            dx = cols - cx[:, None, None, None].astype(np.float32)  # (T, 1, 1, 2h)
            dy = rows - cy[:, None, None, None].astype(np.float32)  # (T, 1, 2h, 1)
            cos, sin = (f(theta)[:, None, None, None].astype(np.float32) for f in (np.cos, np.sin))
            dist = _shape_distance(y, cos * dx + sin * dy, cos * dy - sin * dx,
                                   r[:, None, None, None].astype(np.float32))  # (T, 1, 2h, 2h)
            # Coverage ramps over one pixel at the edge, at any size: soft edges, no aliasing.
            alpha = np.clip(0.5 - dist * S, 0, 1)  # (T, 1, 2h, 2h)
            # Every 2h x 2h window of every frame, as a view: (T, S-2h+1, S-2h+1, 3, 2h, 2h).
            # Picking one per frame is a cheap block copy; writing back is safe: none overlap.
            windows = sliding_window_view(video, (2 * half, 2 * half), axis=(1, 2), writeable=True)
            patch = windows[frame, top, left]  # (T, 3, 2h, 2h)
            windows[frame, top, left] = patch + alpha * (colour[k, :, None, None] - patch)

        # In place: at 100 frames of 128 x 128 each fresh float copy costs as much as a shape.
        video *= 255
        video += 0.5
        return np.clip(video, 0, 255, out=video).astype(np.uint8), y, 0


# ----------------------------------------------------------------------------------------------
# Videos from disk

VAL_FRACTION = 0.05  # share of a dataset's videos held out (by a hash of their names) by default


def held_out(key: str, fraction: float = VAL_FRACTION) -> bool:
    """Whether the video named `key` (its path under the dataset root) is in the held-out split:
    decided by a hash of the name alone, so it never changes as videos are added, removed or
    prepared in another order (a resumed `data.py prepare` agrees with the first run)."""
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
            # The trailing 3 keeps this stream apart from the items' own ones (seed, i[, 1, 2]).
            self._order = np.random.default_rng([self.seed, epoch, 3]).permutation(N)
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
        rng = np.random.default_rng([self.seed, i])
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
        items that meet it. Lazy, on a stream of its own (the trailing 2), so that items that
        meet no bad video never pay for the permutation."""
        for k in np.random.default_rng([self.seed, i, 2]).permutation(len(self.videos)):
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

    Videos too short for (frames - 1) * stride + 1 frames, unreadable ones and frame folders
    mixing sizes are left out at listing with a warning."""

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
        self.span = (frames - 1) * stride + 1  # source frames one clip spans
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
# Prepared shards: `python data.py prepare` writes them, ShardVideos reads them
#
# A prepared folder (400k videos make a few thousand files, not 100 million frames):
#   prepared.json     {"format", "size", "fps", "labels", "classes"}: what every shard holds
#   shard-00000.tar   uncompressed tar of JPEG frames <key>/<frame:05d>.jpg, about --shard-mb
#                     each; `tar xf` turns it back into frame folders
#   shard-00000.npy   int64 (frames, 2): byte offset and length of each JPEG in the tar, so a
#                     clip reads just its frames (one pread each) and never a tar header
#   shard-00000.json  {"videos": [{"key", "y", "split", "frames", "first"}, ...]}, written
#                     last: a shard exists once its .json does, so a killed run leaves nothing
#                     half-written that is ever read, and a rerun redoes only the lost shard
#   failed.txt        videos that failed or were too short in the last run, with the reason

PREPARED = "prepared.json"
SOURCE_EXTS = (".gif",) + AV_EXTS
SPLITS = {"train": "train", "val": "val", "valid": "val", "validate": "val", "test": "test"}


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
    """A folder that `data.py prepare` wrote, as DiskVideos clips: frames are JPEGs read at
    their byte offsets in the shards (no PyAV), at the prepared size and fps; `stride` takes
    every stride-th prepared frame. The split is the one prepare recorded (the labels CSV's
    split column, or the name hash of --val-fraction); "test" videos are in neither split.
    Videos too short for a clip are left out with one warning (`data.py info` lists them)."""

    def __init__(self, root: str | Path, frames: int, size: int, stride: int = 1, seed: int = 0,
                 length: int | None = None, flip: bool = True, split: str | None = None):
        self.root, self.seed, self.flip = Path(root), seed, flip
        self.frames, self.size, self.stride = frames, size, stride
        meta, videos = read_prepared(self.root)
        self.classes, self.fps = meta["classes"], meta["fps"]
        self.num_classes = len(self.classes)
        self.span = (frames - 1) * stride + 1
        listed = [(ShardRef(tar, v["first"], v["key"]), v["y"], v["frames"], v["split"])
                  for tar, v in videos if v["frames"] >= self.span and v["split"] != "test"]
        if len(listed) < len(videos):
            warnings.warn(f"{self.root}: {len(videos) - len(listed)} of {len(videos)} videos left "
                          f"out (test split, or shorter than the {self.span} frames a clip of "
                          f"{frames} with stride {stride} spans); `python data.py info {root}`")
        if not listed:
            raise ValueError(f"{self.root}: no finished shard holds a usable video; run "
                             f"`python data.py prepare` (again) or lower --frames/--frame-stride")
        self._choose(listed, split, length)

    def name(self, ref: ShardRef) -> str:
        return ref.key

    def _read(self, ref: ShardRef, index: slice) -> np.ndarray:
        spans = np.load(ref.shard.with_suffix(".npy"), mmap_mode="r")
        spans = spans[ref.first + index.start:ref.first + index.stop:index.step]  # (n, 2)
        with open(ref.shard, "rb") as f:
            return np.stack([np.asarray(Image.open(io.BytesIO(os.pread(f.fileno(), int(n), int(at))))
                                        .convert("RGB")) for at, n in spans])  # (n, H, W, 3)


def _timed_frames(path: Path) -> Iterator[tuple[float, object]]:
    """(time in seconds, frame) of each frame of a video, then (end of the last frame, None). A
    frame is a PIL image or a PyAV frame, converted only if used (_image)."""
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            t = 0.0
            for f in ImageSequence.Iterator(im):
                yield t, f.convert("RGB")
                t += f.info.get("duration", 100) / 1000  # ms; Pillow updates it per frame
            yield t, None
        return
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding
        step = 1 / float(stream.average_rate or 25)
        t = None
        for k, f in enumerate(container.decode(stream)):
            t = float(f.time) if f.time is not None else k * step
            yield t, f
        if t is None:
            raise ValueError("no frames")
        yield t + step, None


def _image(frame, size: int) -> Image.Image:
    """A decoded frame as a PIL image. A PyAV frame with a short side above 2 size is first
    shrunk to 2 size in FFmpeg's scaler (area averaging), for the final antialiased resize to
    finish: converting a whole 720p frame to RGB costs more than decoding it (2.3x faster)."""
    if isinstance(frame, Image.Image):
        return frame
    k = min(frame.width, frame.height) / (2 * size)
    if k <= 1:
        return frame.to_image()
    return frame.reformat(width=round(frame.width / k), height=round(frame.height / k), format="rgb24",
                          interpolation="AREA").to_image()


def resample(timed: Iterable[tuple[float, object]], fps: float) -> Iterator[object]:
    """The frames showing at t = 0, 1/fps, 2/fps, ... (before the end), t measured from the
    first frame: each output time takes the latest frame at or before it, so frames are
    dropped (faster source) or repeated (slower source) by timestamp, never blended."""
    k, shown, t0 = 0, None, None
    for t, frame in timed:
        t0 = t if t0 is None else t0
        while shown is not None and k / fps < t - t0 - 1e-6:  # output times before this frame
            yield shown
            k += 1
        shown = frame


def _prepare_one(job: tuple[Path, int, float, int, int]) -> tuple[str, list[bytes] | str]:
    """One source video -> ("ok", JPEG bytes of its resampled, resized and cropped frames), or
    ("failed" | "short", the reason). Runs in a worker process: returns, never raises."""
    path, size, fps, min_frames, quality = job
    try:
        jpegs, last, last_jpeg = [], None, None
        for frame in resample(_timed_frames(path), fps):
            if frame is not last:  # a repeated frame is encoded once
                out = io.BytesIO()
                resize_crop(_image(frame, size), size).save(out, "JPEG", quality=quality)
                last, last_jpeg = frame, out.getvalue()
            jpegs.append(last_jpeg)
    except Exception as e:  # decoders raise many types for bad bytes: one reason string
        return "failed", f"cannot read it ({type(e).__name__}: {e})"
    if len(jpegs) < min_frames:
        return "short", f"too short: {len(jpegs)} frames at {fps:g} fps, --min-frames {min_frames}"
    return "ok", jpegs


class _ShardWriter:
    """The shard being written: tar, spans and index under .tmp names, renamed when closed."""

    def __init__(self, dst: Path, number: int):
        self.name = dst / f"shard-{number:05d}"
        self.tar = tarfile.open(self.name.with_suffix(".tar.tmp"), "w")
        self.spans, self.videos = [], []

    def add(self, key: str, jpegs: list[bytes], entry: dict) -> None:
        self.videos.append({"key": key, **entry, "frames": len(jpegs), "first": len(self.spans)})
        for k, jpeg in enumerate(jpegs):
            info = tarfile.TarInfo(f"{key}/{k:05d}.jpg")
            info.size = len(jpeg)
            self.tar.addfile(info, io.BytesIO(jpeg))
            padded = -(-len(jpeg) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            self.spans.append((self.tar.offset - padded, len(jpeg)))  # the data follows its header

    def close(self) -> int:
        """Finish the shard (index last); returns its bytes on disk."""
        self.tar.close()
        with open(self.name.with_suffix(".npy.tmp"), "wb") as f:
            np.save(f, np.array(self.spans, np.int64).reshape(-1, 2))
        for suffix in (".tar", ".npy"):
            with open(self.name.with_suffix(suffix + ".tmp"), "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.name.with_suffix(suffix + ".tmp"), self.name.with_suffix(suffix))
        _write_atomic(self.name.with_suffix(".json"), json.dumps({"videos": self.videos}))
        return sum(self.name.with_suffix(s).stat().st_size for s in (".tar", ".npy", ".json"))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _labels(src: Path, files: list[Path], labels: str, val_fraction: float):
    """(classes, {file: (y, split) or a reason it has none}) from the labels source: 'folders'
    (the first folder under src is the class, as UCF-101 ships), 'none' (unconditional), or a
    Kinetics-style CSV (label,youtube_id,time_start,time_end[,split]; clips named
    <youtube_id>_<start:06d>_<end:06d>.<ext>). Without a split column, held_out(val_fraction)."""
    def split_of(key):
        return "val" if held_out(key, val_fraction) else "train"
    keys = {f: f.relative_to(src).as_posix() for f in files}
    if labels == "none":
        return [], {f: (0, split_of(keys[f])) for f in files}
    if labels == "folders":
        classes = sorted({f.relative_to(src).parts[0] for f in files if len(f.relative_to(src).parts) > 1})
        if not classes:
            raise ValueError(f"{src}: no video lies in a class folder (src/<class>/.../<video>); "
                             f"pass --labels none for unconditional data, or --labels CSV")
        y = {c: k for k, c in enumerate(classes)}
        return classes, {f: (y[f.relative_to(src).parts[0]], split_of(keys[f]))
                         if len(f.relative_to(src).parts) > 1 else "not in a class folder" for f in files}
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{labels}: want a CSV with columns {sorted(need)} (and optionally split), "
                         f"as Kinetics ships; got {sorted(rows[0]) if rows else 'no rows'}")
    classes = sorted({r["label"] for r in rows if r["label"]})
    y, by_name = {c: k for k, c in enumerate(classes)}, {}
    for r in rows:
        if r["label"]:
            name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            by_name[name] = (y[r["label"]], r.get("split"))
    found = {}
    for file in files:
        if file.stem not in by_name:
            found[file] = f"not in {labels}"
            continue
        label, split = by_name[file.stem]
        found[file] = (label, SPLITS.get((split or "").lower()) or split_of(keys[file]))
    return classes, found


def prepare(src: str | Path, dst: str | Path, size: int = 128, fps: float = 25, labels: str = "folders",
            workers: int = 0, val_fraction: float = VAL_FRACTION, min_frames: int = 32,
            shard_mb: float = 512, quality: int = 90) -> dict:
    """Turn every video under src (SOURCE_EXTS, any nesting) into shards in dst: frames resampled
    to fps, the shorter side resized to size and centre-cropped, JPEG-encoded. Rerunning
    continues: videos in finished shards are skipped, a shard cut short by a kill is redone.
    A video that fails or is too short is logged (dst/failed.txt) and the run goes on.
    Returns the summary counts."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise ValueError(f"--src {src}: no such directory")
    files = sorted((p for p in src.rglob("*") if p.suffix.lower() in SOURCE_EXTS and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(src).parts)),
                   key=lambda p: p.relative_to(src).as_posix())
    if not files:
        raise ValueError(f"{src}: no videos ({', '.join(SOURCE_EXTS)}) under it")
    needs_av = [p for p in files if p.suffix.lower() in AV_EXTS]
    if needs_av and av is None:
        raise ImportError(f"{needs_av[0]} and {len(needs_av) - 1} more need PyAV to decode: "
                          f"pip install av (GIFs alone do not)")
    classes, found = _labels(src, files, labels, val_fraction)
    meta = {"format": 1, "size": size, "fps": fps, "labels": labels if labels in ("folders", "none")
            else os.path.abspath(labels), "classes": classes, "val_fraction": val_fraction}
    dst.mkdir(parents=True, exist_ok=True)
    if (dst / PREPARED).exists():
        old = json.loads((dst / PREPARED).read_text())
        if old != meta:
            diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
            raise ValueError(f"{dst} was prepared with other settings (then vs now: {diff}); rerun "
                             f"with the same flags to continue it, or pass another --dst")
    else:
        _write_atomic(dst / PREPARED, json.dumps(meta, indent=1))

    # Resume: finished shards count; a .tmp or a shard without its index is from a killed run.
    for p in dst.glob("shard-*"):
        if p.name.endswith(".tmp") or not p.with_suffix(".json").exists():
            p.unlink()
    _, done = read_prepared(dst)
    done_keys = {v["key"] for _, v in done}
    numbers = [int(p.stem.split("-")[1]) for p in dst.glob("shard-*.json")]
    todo = [f for f in files if f.relative_to(src).as_posix() not in done_keys]
    counts = {"done": 0, "skipped": len(files) - len(todo), "failed": 0, "too short": 0, "bytes": 0}
    failed_log = open(dst / "failed.txt", "w")
    jobs = [(f, size, fps, min_frames, quality) for f in todo if isinstance(found[f], tuple)]
    for f in todo:
        if not isinstance(found[f], tuple):
            counts["failed"] += 1
            print(f"{f}: {found[f]}", file=failed_log, flush=True)
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    writer, number, t0, shown = None, max(numbers, default=-1) + 1, time.time(), 0.0
    try:
        results = pool.imap(_prepare_one, jobs) if pool else map(_prepare_one, jobs)
        for k, ((path, *_), (status, out)) in enumerate(zip(jobs, results)):
            if status != "ok":
                counts["failed" if status == "failed" else "too short"] += 1
                print(f"{path}: {out}", file=failed_log, flush=True)
            else:
                writer = writer or _ShardWriter(dst, number)
                y, split = found[path]
                writer.add(path.relative_to(src).as_posix(), out, {"src": str(path), "y": y, "split": split})
                counts["done"] += 1
                if writer.tar.offset >= shard_mb * 2**20:
                    counts["bytes"] += writer.close()
                    writer, number = None, number + 1
            if time.time() - shown > 1 or k == len(jobs) - 1:
                shown, rate = time.time(), (k + 1) / (time.time() - t0)
                print(f"\r{k + 1}/{len(jobs)} videos | {rate:.2f} videos/s | failed {counts['failed']} "
                      f"| too short {counts['too short']} | {_size(counts['bytes'])} in finished shards",
                      end="", file=sys.stderr, flush=True)
        if writer:
            counts["bytes"] += writer.close()
    finally:
        failed_log.close()
        if pool:
            pool.terminate()
    print(file=sys.stderr)
    _, videos = read_prepared(dst)
    on_disk = sum(p.stat().st_size for p in dst.glob("shard-*"))
    counts["estimate"] = on_disk / max(len(videos), 1) * (len(videos) + counts["failed"] + counts["too short"])
    print(f"{dst}: {counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} "
          f"failed, {counts['too short']} too short (reasons in {dst / 'failed.txt'}) | "
          f"{_size(counts['bytes'])} written | {_size(on_disk / max(len(videos), 1))} per video: "
          f"about {_size(counts['estimate'])} for all {len(files)} videos of {src}")
    return counts


def _size(n: float) -> str:
    return next(f"{n / 2**e:.1f} {unit}" for e, unit in ((30, "GB"), (20, "MB"), (10, "kB"), (0, "B"))
                if n >= 2**e or e == 0)


def info(root: str | Path) -> str:
    """What a prepared folder holds: videos per class and split, frames per video, fps, size,
    bytes on disk, and the videos too short for each stage of each preset (models.PRESETS)."""
    from models import PRESETS  # the one import of the project: the presets' clip lengths
    root = Path(root)
    if not (root / PREPARED).is_file():
        raise ValueError(f"{root}: no {PREPARED}; make it with python data.py prepare --dst {root}")
    meta, videos = read_prepared(root)
    frames = np.array([v["frames"] for _, v in videos] or [0])
    on_disk = sum(p.stat().st_size for p in root.glob("shard-*"))
    splits = sorted({v["split"] for _, v in videos})
    lines = [f"{root}: {len(videos)} videos in {len(list(root.glob('shard-*.json')))} shards, "
             f"{meta['size']}x{meta['size']} at {meta['fps']:g} fps, {_size(on_disk)} on disk "
             f"({_size(on_disk / max(len(videos), 1) * 1000)} per 1,000 videos)",
             f"frames per video: min {frames.min()}, median {np.median(frames):g}, max {frames.max()}",
             "class | " + " | ".join(splits)]
    count = collections.Counter((v["y"], v["split"]) for _, v in videos)
    for y, name in enumerate(meta["classes"] or ["(unconditional)"]):
        lines.append(f"{name} | " + " | ".join(str(count[y, s]) for s in splits))
    for preset, rows in PRESETS.items():  # a preset's stages share its clips, so its lengths
        for span in sorted({(cfg.clip_frames - 1) * cfg.frame_stride + 1 for cfg in rows}):
            stages = ", ".join(str(cfg.stage) for cfg in rows if (cfg.clip_frames - 1) * cfg.frame_stride + 1 == span)
            short = [v["key"] for _, v in videos if v["frames"] < span]
            lines.append(f"{preset} stage{'s' * (',' in stages)} {stages} (clips of {span} frames): "
                         f"{len(short)} too short" + (": " + ", ".join(short[:5]) + (" ..." if len(short) > 5 else "")
                                                      if short else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# What a stage trains on

def open_clips(source: str, frames: int, size: int, seed: int, stride: int = 1, flip: bool = True,
               split: str | None = None) -> Clips:
    """The clip dataset named by --data / --real: 'synthetic' (the built-in data), a folder that
    `data.py prepare` wrote, or a folder of videos, as uint8 clips of `frames` frames at size x
    size taken every `stride` frames. split: None (all), "train" or "val" (held out)."""
    if source == "synthetic":
        if stride != 1:
            raise ValueError(f"--frame-stride {stride}: the built-in data has no frame rate (each "
                             f"clip spans the same motion at any length); use it with --data PATH")
        return SyntheticVideos(frames, size, seed=seed, split=split)
    if (Path(source) / PREPARED).is_file():
        return ShardVideos(source, frames, size, stride=stride, seed=seed, flip=flip, split=split)
    return FrameFolderVideos(source, frames, size, stride=stride, seed=seed, flip=flip, split=split)


class StageExamples(Dataset):
    """A stage's training examples from a clip dataset (SyntheticVideos or FrameFolderVideos:
    anything with `frames` and `load(i, frames) -> (uint8 (T, H, W, 3), y, skipped)`).

    Item i -> {"x": view(to_float(clip), view_s, view_t): (3, T', H', W') in [-1, 1], cut to a
    random window of `window` frames if window is given; "y": class; "skipped": corrupt videos
    skipped for it}. With a window, also the window's conditioning "c" = view(x, 2, 2)
    (3, window / 2, H' / 2, W' / 2), and the same conditioning with `context` conditioning frames
    of the video on each side, mirrored past its ends (mirrored()), "c_context"
    (3, window / 2 + 2 context, H' / 2, W' / 2): exactly the chunk the sampler feeds Gup at that
    position (DESIGN.md section 4). The window start is uniform over 0 .. T' - window, a pure
    function of (seed, i)."""

    def __init__(self, clips: Clips, view_s: int, view_t: int, window: int | None,
                 context: int = 0, seed: int = 0):
        if window is not None and (window < 2 or window % 2):
            raise ValueError(f"window={window}: must be even, so that its view(x, 2, 2) has "
                             f"window / 2 frames for the stage to double back")
        if context < 0:
            raise ValueError(f"context={context}: must be >= 0 conditioning frames")
        self.clips, self.window, self.context, self.seed = clips, window, context, seed
        self.view_s, self.view_t = view_s, view_t

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        # Choose the clip frames the (windowed) view keeps, then load only those: the view is
        # per frame, so this equals viewing the whole clip and cutting, at a fraction of the
        # decoding or rendering (a 16-frame window of 100 frames loads 16).
        T = math.ceil(self.clips.frames / self.view_t)  # frames of the whole view
        if self.window is None:
            start, n = 0, T
        elif T < self.window:
            raise ValueError(f"window={self.window} frames is longer than the view: clips of "
                             f"{self.clips.frames} frames viewed at t={self.view_t} have {T}")
        else:
            # The trailing 1 keeps this stream apart from the clip dataset's (same seed).
            start = int(np.random.default_rng([self.seed, i, 1]).integers(0, T - self.window + 1))
            n = self.window
        # The window's conditioning frames are view frames start, start + 2, ...: on the grid
        # p0 + 2j (j < Tc) of this parity, they are j = s .. s + n/2 - 1. The context adds
        # `context` grid frames each side, mirrored into the video. Load the view frames lo .. hi
        # that span the window and those.
        k, p0, s = self.context, start % 2, start // 2
        grid = mirrored(np.arange(s - k, s + n // 2 + k), math.ceil((T - p0) / 2)) if self.window else None
        lo = start if grid is None else min(start, p0 + 2 * int(grid.min()))
        hi = start + n if grid is None else max(start + n, p0 + 2 * int(grid.max()) + 1)
        clip, y, skipped = self.clips.load(i, range(lo * self.view_t, hi * self.view_t, self.view_t))
        x = view(to_float(clip), self.view_s, 1)                      # (3, hi - lo, H', W')
        item = {"x": x[:, start - lo:start - lo + n], "y": y, "skipped": skipped}
        if grid is not None:
            c_context = view(x[:, torch.from_numpy(p0 + 2 * grid - lo)], 2, 1)  # (3, n/2 + 2k, H'/2, W'/2)
            item.update(c=c_context[:, k:k + n // 2], c_context=c_context)
        return item


# ----------------------------------------------------------------------------------------------
# The command line: preview the synthetic data; prepare a dataset; describe a prepared one

def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Write a grid of synthetic videos and time rendering "
                                "(no command); prepare a folder of videos; describe a prepared one.")
    p.add_argument("--frames", type=int, default=100, help="frames per clip")
    p.add_argument("--size", type=int, default=128, help="height and width of a clip")
    p.add_argument("--n", type=int, default=16, help="number of clips to render and show")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--out", default="out/synthetic.gif", help="grid GIF to write")
    sub = p.add_subparsers(dest="command")
    prep = sub.add_parser("prepare", help="videos (any nesting) -> shards that train.py --data reads")
    prep.add_argument("--src", required=True, help=f"folder of videos ({' '.join(SOURCE_EXTS)}), any nesting")
    prep.add_argument("--dst", required=True, help="output folder; rerunning continues it")
    prep.add_argument("--size", type=int, default=128, help="shorter side resized to this, then centre-cropped")
    prep.add_argument("--fps", type=float, default=25, help="frames per second kept (dropped or repeated by timestamp)")
    prep.add_argument("--labels", default="folders",
                      help="'folders' (the first folder under --src is the class, as UCF-101), 'none' "
                           "(unconditional, as BDD100K) or a Kinetics CSV (label,youtube_id,time_start,time_end,split)")
    prep.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                      help="decoding processes (0 or 1: in this process)")
    prep.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                      help="share of videos held out (by a hash of the name) where no CSV split column says")
    prep.add_argument("--min-frames", type=int, default=32, help="videos with fewer frames are left out as too short")
    prep.add_argument("--shard-mb", type=float, default=512, help="a shard is closed once it holds this many MB")
    prep.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored frames")
    show = sub.add_parser("info", help="videos per class and split, frame counts, size, too-short videos")
    show.add_argument("root", help="a folder data.py prepare wrote")
    return p.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    if args.command == "prepare":
        return prepare(args.src, args.dst, args.size, args.fps, args.labels, args.workers,
                       args.val_fraction, args.min_frames, args.shard_mb, args.quality)
    if args.command == "info":
        print(info(args.root))
        return None
    videos = SyntheticVideos(args.frames, args.size, seed=args.seed)
    t0 = time.perf_counter()
    clips = np.stack([videos[i][0] for i in range(args.n)])  # (n, T, S, S, 3)
    seconds = time.perf_counter() - t0
    print(f"rendered {args.n} clips of {args.frames}@{args.size}x{args.size} in {seconds:.2f} s: "
          f"{args.n / seconds:.1f} clips/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_gif(args.out, video_grid(clips, nrow=math.ceil(math.sqrt(args.n))))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
