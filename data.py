"""Video data: decoding to uint8 clips, the one uint8 <-> [-1, 1] conversion each way, view(),
stage examples (windows and their conditioning views) and a built-in synthetic dataset.

DESIGN.md section 2 ("Views") defines the vocabulary: float video tensors are (B, C, T, H, W) in
[-1, 1]; uint8 (T, H, W, 3) exists only here, at I/O. Every item is a pure function of (seed, i),
so train.py can rebuild the batch of any step from item indices when it resumes.

Preview the synthetic dataset and time its rendering:
    python data.py --frames 100 --size 128 --n 16 --out out/synthetic.gif
"""
import argparse
import itertools
import math
import re
import time
import warnings
from pathlib import Path

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
    is the same scene, and frame 4k of a 100-frame clip is frame k of the 25-frame clip."""

    classes = ["circle", "square", "triangle", "ring", "cross"]
    num_classes = len(classes)
    max_shapes = 3
    waves = 4  # background plane waves

    def __init__(self, frames: int, size: int, seed: int = 0, length: int = 100_000):
        self.frames, self.size, self.seed, self.length = frames, size, seed, length

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        """Item i as (uint8 (len(frames), size, size, 3), y, 0): only the clip frames listed in
        `frames` (default all) are rendered, each exactly as in the whole clip. The 0 is the
        count of skipped bad videos, to match FrameFolderVideos.load."""
        rng = np.random.default_rng([self.seed, i])
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

class FrameFolderVideos(Clips):
    """Videos on disk, in the layout LAYOUT describes (classes sorted by folder name -> index;
    a flat root is unconditional: num_classes == 0, y == 0). Item i -> (uint8 (frames, size,
    size, 3), y): video i % number of videos, a random start, frames taken every stride, the
    shorter side resized to size (antialiased bilinear), centre-cropped, randomly flipped
    left-right (unless flip=False, as for evaluation); all a pure function of (seed, i).

    Videos too short for (frames - 1) * stride + 1 frames, unreadable ones and frame folders
    mixing sizes are left out at listing with a warning. A video found corrupt while reading
    an item is skipped with a warning for another one, chosen from (seed, i): load(i) reports
    how many were skipped, so the count survives DataLoader worker processes."""

    max_tries = 20  # consecutive unreadable videos before an item gives up: the data is broken

    def __init__(self, root: str | Path, frames: int, size: int, stride: int = 1, seed: int = 0,
                 length: int | None = None, flip: bool = True):
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
        self.videos = []  # (path, y, number of frames)
        for path, y in listed:
            n = self._usable_frames(path)
            if n:
                self.videos.append((path, y, n))
        if not self.videos:
            raise ValueError(f"{self.root}: none of the {len(listed)} videos is usable (see the "
                             f"warnings above); each needs >= {self.span} readable frames")
        self.length = len(self.videos) if length is None else length

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

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        """Item i as (uint8 (len(frames), size, size, 3), y, number of corrupt videos skipped):
        only the clip frames listed in `frames` (default all) are decoded and resized."""
        frames = range(self.frames) if frames is None else frames
        rng = np.random.default_rng([self.seed, i])
        candidates = itertools.chain([i % len(self.videos)], self._fallbacks(i))
        for skipped, k in enumerate(itertools.islice(candidates, self.max_tries)):
            path, y, n = self.videos[k]
            start = int(rng.integers(0, n - self.span + 1))
            flip = rng.random() < 0.5
            try:
                # Clip frame f is source frame start + f * stride.
                first, last = start + frames[0] * self.stride, start + frames[-1] * self.stride
                clip = read_video(path, slice(first, last + 1, frames.step * self.stride))
                if len(clip) != len(frames):
                    raise ValueError(f"{path}: got {len(clip)} of {len(frames)} frames from "
                                     f"{first}; its header promised {n}")
            except (ValueError, OSError) as e:
                warnings.warn(f"{e}; skipping {path} for another video")
                continue
            clip = self._resize_crop(clip)
            if flip and self.flip:
                clip = np.ascontiguousarray(clip[:, :, ::-1])  # torch refuses negative strides
            return clip, y, skipped
        raise RuntimeError(f"{self.root}: {self.max_tries} videos in a row could not be read "
                           f"for item {i}; see the warnings")

    def _fallbacks(self, i: int):
        """Other videos to try, in an order drawn from (seed, i): a bad video changes only the
        items that meet it. Lazy, on a stream of its own (the trailing 2), so that items that
        meet no bad video never pay for the permutation."""
        first = i % len(self.videos)
        for k in np.random.default_rng([self.seed, i, 2]).permutation(len(self.videos)):
            if k != first:
                yield int(k)

    def _resize_crop(self, clip: np.ndarray) -> np.ndarray:
        """uint8 (T, h, w, 3) -> (T, size, size, 3): shorter side to size, centre crop."""
        T, h, w, _ = clip.shape
        if h == w == self.size:
            return clip
        side = min(h, w)
        # Resizing just the centred square box crops and resizes in one antialiased pass.
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return np.stack([np.asarray(Image.fromarray(f).resize(
            (self.size, self.size), Image.Resampling.BILINEAR, box=box)) for f in clip])


# ----------------------------------------------------------------------------------------------
# What a stage trains on

def open_clips(source: str, frames: int, size: int, seed: int, stride: int = 1, flip: bool = True) -> Clips:
    """The clip dataset named by --data / --real: 'synthetic' (the built-in data) or a folder of
    videos, as uint8 clips of `frames` frames at size x size."""
    if source == "synthetic":
        return SyntheticVideos(frames, size, seed=seed)
    return FrameFolderVideos(source, frames, size, stride=stride, seed=seed, flip=flip)


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
# Preview and timing of the synthetic dataset

def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Write a grid of synthetic videos; time rendering.")
    p.add_argument("--frames", type=int, default=100, help="frames per clip")
    p.add_argument("--size", type=int, default=128, help="height and width of a clip")
    p.add_argument("--n", type=int, default=16, help="number of clips to render and show")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--out", default="out/synthetic.gif", help="grid GIF to write")
    return p.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
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
    main()
