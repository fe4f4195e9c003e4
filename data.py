"""The data of the method (DESIGN.md section 2, "Views"): the one uint8 <-> [-1, 1] conversion
each way, view() (spatial and temporal downsampling), mirrored() (a video extended past its
ends), the built-in synthetic dataset, open_clips() (the dataset --data names) and
StageExamples (a stage's (c, x) training examples).

Float video tensors are (B, C, T, H, W) in [-1, 1]; uint8 (T, H, W, 3) exists only at I/O.
Every item is a pure function of (seed, i), drawn from the named streams of videos.STREAMS, so
train.py can rebuild the batch of any step from item indices when it resumes (DESIGN.md section
4). Video files and disk datasets live in videos.py; preparing a dataset, and a preview of the
synthetic data (`python prepare.py preview`), in prepare.py.
"""
import math
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset

from videos import PREPARED, Clips, FrameFolderVideos, ShardVideos, random_stream


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


class SyntheticVideos(Clips):
    """Built-in dataset: 1-2 shapes of one kind (the class y) in distinct colours and sizes,
    bouncing off the borders, slowly rotating and pulsing, over smooth colour stripes that
    drift. Shapes and background carry fine striped textures (texture_octaves) down to a few
    pixels' period: the detail every 2x view loses, which an upscaler must put back, as real
    footage's texture. Item i -> (uint8 (frames, size, size, 3), y), a pure function of (seed, i).

    All geometry is in normalized units: space in [0, 1], time tau = t / frames in [0, 1) over
    the clip. So the scene does not depend on size or frames: the same item at 128 and at 32
    is the same scene, and frame 4k of a 100-frame clip is frame k of the 25-frame clip.
    split "val" is the held-out items 2**40 on: scenes never trained on."""

    classes = ["circle", "square", "triangle", "ring", "cross"]
    num_classes = len(classes)
    max_shapes = 2  # with radius 0.22-0.30 of the frame: 7-10 pixels across at the demo's stage 1 (16 px)
    waves = 4  # background plane waves

    heldout = 2**40  # split "val" is items heldout, heldout + 1, ...: never trained on
    octaves = 4  # texture gratings per shape and background, each twice the last's frequency
    texture = 0.12  # a shape's texture amplitude per grating (colour in [0, 1]); the background's a
                    # quarter of it, whose aliasing in a 4x view would otherwise be stage 1's noise
    version = 3  # 2: textured; 3: 1-2 shapes of radius 0.22-0.30 (from 1-3 of 0.10-0.18), drawn at 16 px;
                 # caches of statistics of these videos record it

    @classmethod
    def texture_octaves(cls, freq: float, size: int) -> np.ndarray:
        """(octaves, 2): each texture grating's frequency (cycles per frame width: freq, 2 freq,
        4 freq, ...) and its amplitude when rendered at `size` pixels: full at a period of 3 pixels
        or more, fading to 0 at 2 (the Nyquist limit), so no size aliases it. At 64 px a base of
        10 cycles shows periods of 6.4 and 3.2 pixels; every 2x view loses the finest."""
        freqs = freq * 2.0 ** np.arange(cls.octaves)
        period = size / freqs  # pixels
        return np.stack([freqs, cls.texture * np.clip(period - 2, 0, 1)], axis=1)

    def __init__(self, frames: int, size: int, seed: int = 0, length: int = 100_000,
                 split: str | None = None):
        self.frames, self.size, self.seed, self.length = frames, size, seed, length
        self.offset = self.heldout if split == "val" else 0

    def load(self, i: int, frames: range | None = None) -> tuple[np.ndarray, int, int]:
        """Item i as (uint8 (len(frames), size, size, 3), y, 0): only the clip frames listed in
        `frames` (default all) are rendered, each exactly as in the whole clip. The 0 is the
        count of skipped bad videos, to match FrameFolderVideos.load."""
        rng = random_stream(self.seed, self.offset + i, "clip")
        # Draw every parameter for max_shapes before using any, in a fixed order, so that the
        # scene depends only on (seed, i), never on size or frames.
        y = int(rng.integers(self.num_classes))
        n = int(rng.integers(1, self.max_shapes + 1))
        base = rng.uniform(0.3, 0.6, 3)
        wave_freq = rng.normal(0, 1.5, (self.waves, 2))  # cycles per frame width
        wave_drift = rng.normal(0, 0.15, (self.waves, 2))  # frame widths per clip: slow
        wave_phase = rng.uniform(0, 2 * np.pi, self.waves)
        wave_colour = rng.uniform(-0.12, 0.12, (self.waves, 3))
        radius = rng.uniform(0.22, 0.30, self.max_shapes)
        pulse_freq = rng.uniform(0.5, 2, self.max_shapes)  # pulses per clip
        pulse_phase = rng.uniform(0, 2 * np.pi, self.max_shapes)
        angle = rng.uniform(0, 2 * np.pi, self.max_shapes)
        spin = rng.uniform(-np.pi / 2, np.pi / 2, self.max_shapes)  # radians per clip
        start = rng.uniform(0, 1, (self.max_shapes, 2))
        speed = rng.uniform(0.8, 2.0, self.max_shapes)  # frame widths per clip: crosses it
        heading = rng.uniform(0, 2 * np.pi, self.max_shapes)
        colour = _PALETTE[rng.permutation(len(_PALETTE))[:self.max_shapes]]
        colour = np.clip(colour + rng.uniform(-0.08, 0.08, colour.shape), 0, 1).astype(np.float32)
        # Texture: gratings an octave apart, drawn after every parameter above so that the rest of
        # the scene is what it was without them. Each shape's fill turns with the shape; the
        # background's drifts. (K,) arrays per grating set: base frequency, orientation, phases.
        tex_freq = rng.uniform(8, 12, self.max_shapes + 1)  # cycles per frame width, octave 0
        tex_angle = rng.uniform(0, np.pi, self.max_shapes + 1)
        tex_phase = rng.uniform(0, 2 * np.pi, (self.max_shapes + 1, self.octaves))
        tex_drift = rng.normal(0, 0.15, 2)  # the background texture's drift, frame widths per clip

        frames = range(self.frames) if frames is None else frames
        T, S = len(frames), self.size  # T: frames rendered
        tau = np.asarray(frames) / self.frames  # (T,) clip time of each rendered frame
        pixel = (np.arange(S, dtype=np.float32) + 0.5) / S  # (S,) pixel centres

        # Background: base colour plus drifting plane waves, each tinting with its own colour.
        # sin(a + b) = sin(a) cos(b) + cos(a) sin(b) splits a wave into a spatial phase a and a
        # temporal one b, so the whole background is one small-rank matmul, each wave's colour
        # going into its temporal factor: (T, 3, 2K) @ (2K, S * S).
        # The background's texture is more such waves, grey, an octave apart, drifting together.
        octave = self.texture_octaves(tex_freq[-1], S)  # (octaves, 2): frequency, amplitude
        direction = np.array([np.cos(tex_angle[-1]), np.sin(tex_angle[-1])])
        wave_freq = np.concatenate([wave_freq, octave[:, :1] * direction])
        wave_drift = np.concatenate([wave_drift, np.broadcast_to(tex_drift, (self.octaves, 2))])
        wave_phase = np.concatenate([wave_phase, tex_phase[-1]])
        wave_colour = np.concatenate([wave_colour, np.repeat(0.25 * octave[:, 1:], 3, axis=1)])  # (K, 3)
        a = (2 * np.pi * (wave_freq[:, 0, None, None] * pixel[None, None, :]
                          + wave_freq[:, 1, None, None] * pixel[None, :, None])
             + wave_phase[:, None, None]).astype(np.float32)  # (K, S, S)
        b = -2 * np.pi * (wave_freq * wave_drift).sum(1)[None, :] * tau[:, None]  # (T, K)
        spatial = np.concatenate([np.sin(a), np.cos(a)]).reshape(2 * len(a), S * S)  # (2K, S * S)
        temporal = np.concatenate([np.cos(b), np.sin(b)], axis=1)  # (T, 2K)
        coef = (temporal[:, None, :] * np.tile(wave_colour.T, 2)[None]).astype(np.float32)  # (T, 3, 2K)
        video = (coef @ spatial).reshape(T, 3, S, S)  # channels first until the uint8 at the end
        video += base.astype(np.float32)[:, None, None]

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
            # The fill's texture, in the shape's own turning coordinates: it moves with the shape.
            along = (np.cos(tex_angle[k]) * (cos * dx + sin * dy)
                     + np.sin(tex_angle[k]) * (cos * dy - sin * dx)).astype(np.float32)  # (T, 1, 2h, 2h)
            fill = colour[k, :, None, None] + sum(  # (T, 3, 2h, 2h), float32 throughout
                np.float32(amp) * np.sin(np.float32(2 * np.pi * f) * along + np.float32(tex_phase[k, o]))
                for o, (f, amp) in enumerate(self.texture_octaves(tex_freq[k], S)) if amp > 0)
            # Every 2h x 2h window of every frame, as a view: (T, 3, S-2h+1, S-2h+1, 2h, 2h).
            # Picking one per frame is a cheap block copy; writing back is safe: none overlap.
            windows = sliding_window_view(video, (2 * half, 2 * half), axis=(2, 3), writeable=True)
            patch = windows[frame, :, top, left]  # (T, 3, 2h, 2h)
            windows[frame, :, top, left] = patch + alpha * (fill - patch)

        # In place: at 100 frames of 128 x 128 each fresh float copy costs as much as a shape.
        video *= 255
        video += 0.5
        video = np.clip(video, 0, 255, out=video).astype(np.uint8)  # (T, 3, S, S)
        return np.ascontiguousarray(video.transpose(0, 2, 3, 1)), y, 0  # (T, S, S, 3)


# ----------------------------------------------------------------------------------------------
# What a stage trains on

def open_clips(source: str, frames: int, size: int, seed: int, stride: int = 1, flip: bool = True,
               split: str | None = None) -> Clips:
    """The clip dataset named by --data / --real: 'synthetic' (the built-in data), a folder that
    prepare.py wrote (ShardVideos), or a folder of videos (FrameFolderVideos), as uint8 clips of
    `frames` frames at size x size taken every `stride` frames. split: None (all), "train" or
    "val" (held out)."""
    if source == "synthetic":
        if stride != 1:
            raise ValueError(f"--frame-stride {stride}: the built-in data has no frame rate (each "
                             f"clip spans the same motion at any length); use it with --data PATH")
        return SyntheticVideos(frames, size, seed=seed, split=split)
    if (Path(source) / PREPARED).is_file():
        return ShardVideos(source, frames, size, stride=stride, seed=seed, flip=flip, split=split)
    return FrameFolderVideos(source, frames, size, stride=stride, seed=seed, flip=flip, split=split)


class StageExamples(Dataset):
    """A stage's training examples from a clip dataset (SyntheticVideos, FrameFolderVideos or
    ShardVideos: any Clips, with `frames` and `load(i, frames) -> (uint8 (T, H, W, 3), y,
    skipped)`).

    Item i -> {"x": view(to_float(clip), view_s, view_t): (3, T', H', W') in [-1, 1], cut to a
    random window of `window` frames if window is given; "y": class; "skipped": corrupt videos
    skipped for it}. With a window, also the window's conditioning "c" = view(x, 2, 2)
    (3, window / 2, H' / 2, W' / 2), and the same conditioning with `context` conditioning frames
    of the video on each side, mirrored past its ends (mirrored()), "c_context"
    (3, window / 2 + 2 context, H' / 2, W' / 2): exactly the chunk the sampler feeds Gup at that
    position (DESIGN.md section 4). The window start is uniform over 0 .. T' - window, a pure
    function of (seed, i) (stream "window").

    crop (windows only): a crop x crop patch of the window, at an even offset so that c and
    c_context are the matching crop / 2 patch of the view; the offset is drawn after the start,
    from the same stream. Upscalers are fully convolutional in space, so they can train on
    patches and sample whole frames, as super-resolution networks do (DESIGN.md section 4)."""

    def __init__(self, clips: Clips, view_s: int, view_t: int, window: int | None,
                 context: int = 0, seed: int = 0, crop: int | None = None):
        if window is not None and (window < 2 or window % 2):
            raise ValueError(f"window={window}: must be even, so that its view(x, 2, 2) has "
                             f"window / 2 frames for the stage to double back")
        if context < 0:
            raise ValueError(f"context={context}: must be >= 0 conditioning frames")
        if crop is not None and (window is None or crop % 2 or crop < 2):
            raise ValueError(f"crop={crop}: patches are for windows, and even (>= 2)")
        self.clips, self.window, self.context, self.seed = clips, window, context, seed
        self.view_s, self.view_t, self.crop = view_s, view_t, crop

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        # Choose the clip frames the (windowed) view keeps, then load only those: the view is
        # per frame, so this equals viewing the whole clip and cutting, at a fraction of the
        # decoding or rendering (a 16-frame window of 100 frames loads 16).
        T = math.ceil(self.clips.frames / self.view_t)  # frames of the whole view
        if self.window is None:
            start, n = 0, T
            load_from, load_to = 0, T
        elif T < self.window:
            raise ValueError(f"window={self.window} frames is longer than the view: clips of "
                             f"{self.clips.frames} frames viewed at t={self.view_t} have {T}")
        else:
            rng = random_stream(self.seed, i, "window")
            start = int(rng.integers(0, T - self.window + 1))
            n = self.window
            # The window's conditioning view(x, 2, 2) keeps view frames start, start + 2, ...:
            # they lie on the grid of view frames of start's parity (parity + 2j, j < grid_len),
            # as grid frames first_cond .. first_cond + n/2 - 1. The context adds `context` grid
            # frames each side, mirrored into the video. Load the view frames load_from ..
            # load_to - 1: the window's and all of those.
            # Example: T = 8 view frames (16 clip frames at view_t 2), window n = 4, context 1,
            # start 4: parity 0, the grid is view frames 0 2 4 6 (grid_len 4), first_cond 2;
            # grid frames 1 .. 4, with 4 mirrored to 3, are cond = view frames 2 4 6 6. Load
            # view frames 2 .. 7: x is loaded frames 2 .. 5 (view frames 4 .. 7), c_context
            # is loaded frames 0 2 4 4, and c its centre, view frames 4 6.
            parity, first_cond = start % 2, start // 2
            grid_len = math.ceil((T - parity) / 2)
            on_grid = mirrored(np.arange(first_cond - self.context, first_cond + n // 2 + self.context), grid_len)
            cond = parity + 2 * on_grid  # view frames of c_context, (n/2 + 2 context,)
            load_from, load_to = min(start, int(cond.min())), max(start + n, int(cond.max()) + 1)
        clip, y, skipped = self.clips.load(i, range(load_from * self.view_t, load_to * self.view_t, self.view_t))
        x = view(to_float(clip), self.view_s, 1)  # (3, load_to - load_from, H', W')
        item = {"x": x[:, start - load_from:start - load_from + n], "y": y, "skipped": skipped}
        if self.window is not None:
            c_context = view(x[:, torch.from_numpy(cond - load_from)], 2, 1)  # (3, n/2 + 2 context, H'/2, W'/2)
            if self.crop is not None:  # the patch: top, left even, so c's patch is at top/2, left/2
                if self.crop > x.shape[-1]:
                    raise ValueError(f"crop={self.crop} is larger than the view's {x.shape[-1]} pixels")
                top, left = (2 * rng.integers(0, (x.shape[-1] - self.crop) // 2 + 1, 2)).tolist()
                item["x"] = item["x"][..., top:top + self.crop, left:left + self.crop]
                c_context = c_context[..., top // 2:(top + self.crop) // 2, left // 2:(left + self.crop) // 2]
            item.update(c=c_context[:, self.context:self.context + n // 2], c_context=c_context)
        return item

