"""SSW-GAN networks: the blocks (each defined once), the generators G1 and Gup, the
discriminators D_s, D_t and D_m, the StageConfig dataclass and the preset table.

DESIGN.md section 2 (views, presets) and section 3 (networks). Read top to bottom:
presets -> StageConfig -> layer helpers -> blocks -> generators -> discriminators.

    from models import stage_config, build_stage
    cfg = stage_config("tiny", 2)            # a row of the preset table
    G, D_s, D_t, D_m = build_stage(cfg)      # D_m is None for stage 1

Every conv and linear carries spectral norm (torch.nn.utils.parametrizations.spectral_norm)
over an orthogonal init, as in BigGAN / DVD-GAN.
"""
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from fractions import Fraction

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


# -----------------------------------------------------------------------------
# Stage configuration and the preset table

@dataclass(frozen=True)
class StageConfig:
    """Everything needed to rebuild one stage's networks; saved inside its checkpoint."""
    preset: str
    stage: int                    # 1-based, like --stage
    clip_frames: int              # the preset's full-resolution clips: T ...
    clip_size: int                # ... and H = W
    view_s: int                   # this stage's training data is view(clip, view_s, view_t)
    view_t: int
    window: int | None            # stages >= 2: output frames per training window; None: whole video
    ch: int                       # base channel width; blocks use multiples of it
    g_mults: tuple[int, ...]      # G channel multipliers (G1: base then one per GBlock; Gup: 3 GBlocks)
    d_mults: tuple[int, ...]      # D_s channel multipliers, one per DBlock (D_t and D_m drop the first;
                                  # on patches, crop, the Ds take as many as reach 4x4)
    z_dim: int                    # G1: latent size per frame; Gup: channels of the noise map
    num_classes: int = 0          # 0 = unconditional (one implicit class)
    d_frames: int = 8             # k, the frames D_s scores per video
    frame_stride: int = 1         # frames of the source video between two clip frames
    context: int = 0              # stages >= 2: conditioning frames of context each side of a window
    grounded: bool = False        # stages >= 2: Gup's output projected onto view(x, 2, 2) == c (ground)
    d_ch: int | None = None       # the Ds' base width (d_mults multiply it); None: ch, as G's
    d_pool: str = "mean"          # how the Ds' heads pool features over pixels and frames: "mean", "sum" or "max"
    d_down: str = "mean"          # how the Ds' blocks halve H and W: "mean" (BigGAN's average pool) or "max"
    crop: int | None = None       # stages >= 2: train on crop x crop patches of the window; None: whole frames
    g1_margin: int | None = None  # stage 1: frames G1 makes and drops each side; None: its convs' radius (G1.margin)
    d_classify: bool = False      # D_s and D_t also classify what they see (AC-GAN's auxiliary head, --aux-class)
    g1_class_input: bool = False  # stage 1: embed(y) joins the GRU's state in G1's first affine (DVD-GAN's [z; e(y)])

    @property
    def out_frames(self) -> int:
        """Frames this stage makes per training example (the whole view, or a window)."""
        return self.window if self.window is not None else math.ceil(self.clip_frames / self.view_t)

    @property
    def d_width(self) -> int:
        return self.d_ch or self.ch

    @property
    def out_size(self) -> int:
        return self.clip_size // self.view_s

    @property
    def d_size(self) -> int:
        """Pixels across what the Ds see: the training patch (crop), else the whole frame."""
        return self.crop or self.out_size

    @property
    def cond_frames(self) -> int:
        """Frames of the conditioning view c = view(x, 2, 2); 0 for stage 1."""
        return 0 if self.stage == 1 else self.out_frames // 2

    @property
    def cond_size(self) -> int:
        return 0 if self.stage == 1 else self.out_size // 2

    @property
    def classes(self) -> int:
        """Classes the networks' embeddings tell apart: num_classes, or the one implicit class."""
        return max(self.num_classes, 1)

    @property
    def video_frames(self) -> int:
        """Frames of the whole video at this stage's resolution (what sampling makes)."""
        return math.ceil(self.clip_frames / self.view_t)


# One row per preset; each stage of a preset is a StageConfig (DESIGN.md section 2).
# ssw-128: 25@32 -> 50@64 -> 100@128.  ssw-64: 24@32 -> 48@64.  tiny: 8@8 -> 16@16 -> 32@32,
# for CPU tests and demos.  dvd-128: the single-stage DVD-GAN baseline, G1/D_s/D_t at 100@128.
# dvd-tiny: the same baseline at tiny's final size, 32@32 in one stage (study.py's arm 1), as
# wide at each resolution as tiny's stage making it (G 32 channels at 4x4 ... 4 at 32x32; D_s
# and D_t those of tiny's stage 3).
PRESETS: dict[str, list[StageConfig]] = {
    "ssw-128": [
        StageConfig("ssw-128", 1, 100, 128, view_s=4, view_t=4, window=None, ch=32,
                    g_mults=(8, 8, 4, 2), d_mults=(2, 4, 8, 8), z_dim=120),
        StageConfig("ssw-128", 2, 100, 128, view_s=2, view_t=2, window=16, ch=32,
                    g_mults=(4, 4, 2), d_mults=(1, 2, 4, 8, 8), z_dim=8),
        StageConfig("ssw-128", 3, 100, 128, view_s=1, view_t=1, window=16, ch=16,
                    g_mults=(4, 4, 2), d_mults=(1, 2, 4, 8, 8, 8), z_dim=8),
    ],
    "ssw-64": [
        StageConfig("ssw-64", 1, 48, 64, view_s=2, view_t=2, window=None, ch=32,
                    g_mults=(8, 8, 4, 2), d_mults=(2, 4, 8, 8), z_dim=120),
        StageConfig("ssw-64", 2, 48, 64, view_s=1, view_t=1, window=16, ch=32,
                    g_mults=(4, 4, 2), d_mults=(1, 2, 4, 8, 8), z_dim=8),
    ],
    "tiny": [
        StageConfig("tiny", 1, 32, 32, view_s=4, view_t=4, window=None, ch=8,
                    g_mults=(4, 2), d_mults=(2, 4), z_dim=16, d_frames=4),
        StageConfig("tiny", 2, 32, 32, view_s=2, view_t=2, window=8, ch=8,
                    g_mults=(2, 2, 1), d_mults=(1, 2, 4), z_dim=4, d_frames=4),
        StageConfig("tiny", 3, 32, 32, view_s=1, view_t=1, window=8, ch=4,
                    g_mults=(2, 2, 1), d_mults=(1, 2, 4, 4), z_dim=4, d_frames=4),
    ],
    "demo": [
        StageConfig("demo", 1, 32, 64, view_s=4, view_t=4, window=None, ch=16,
                    g_mults=(4, 2, 1), d_mults=(1, 2, 4), z_dim=32, d_frames=4, g1_margin=1, d_pool="max",
                    d_down="max"),
        StageConfig("demo", 2, 32, 64, view_s=2, view_t=2, window=8, ch=16,
                    g_mults=(4, 2, 1), d_mults=(1, 2, 4), z_dim=4, d_frames=4, crop=16),
        StageConfig("demo", 3, 32, 64, view_s=1, view_t=1, window=8, ch=8,
                    g_mults=(4, 2, 1), d_mults=(1, 2, 4, 4), z_dim=4, d_frames=4, crop=32),
    ],
    "dvd-128": [
        StageConfig("dvd-128", 1, 100, 128, view_s=1, view_t=1, window=None, ch=16,
                    g_mults=(8, 8, 8, 4, 2, 1), d_mults=(1, 2, 4, 8, 8, 8), z_dim=120),
    ],
    "dvd-tiny": [
        StageConfig("dvd-tiny", 1, 32, 32, view_s=1, view_t=1, window=None, ch=4,
                    g_mults=(8, 4, 2, 1), d_mults=(1, 2, 4, 4), z_dim=24, d_frames=4),
    ],
}


def stage_config(preset: str, stage: int, **overrides) -> StageConfig:
    """The preset table's row for (preset, stage), with explicit field overrides applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    rows = PRESETS[preset]
    if not 1 <= stage <= len(rows):
        raise ValueError(f"preset {preset!r} has stages 1..{len(rows)}, not {stage}")
    cfg = replace(rows[stage - 1], **overrides)
    if cfg.window is not None and (cfg.window % 2 or cfg.window > cfg.video_frames):
        raise ValueError(f"--window must be even and at most {cfg.video_frames} "
                         f"(the stage's video length), got {cfg.window}")
    return cfg


# -----------------------------------------------------------------------------
# Layers: every conv and linear is spectrally normalised over an orthogonal init

def sn(layer: nn.Module) -> nn.Module:
    """Orthogonal init, zero bias, spectral norm: the one way this file makes a layer."""
    nn.init.orthogonal_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return spectral_norm(layer)


def conv(dims: int, c_in: int, c_out: int, k: int) -> nn.Module:
    """A 'same'-padded (zeros) 2D or 3D conv. Gup's chunks come mirror-extended past the video's
    ends (upscale_chunk), so no kept frame of an upscaler sees this padding in time."""
    Conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return sn(Conv(c_in, c_out, k, padding=k // 2))


def trim(h: torch.Tensor, drop: tuple[int, int]) -> torch.Tensor:
    """h (B, C, T, H, W) without its first drop[0] and its last drop[1] frames."""
    return h[:, :, drop[0]:h.shape[2] - drop[1]]


def halfway(v: torch.Tensor) -> torch.Tensor:
    """v (B, C, T, ...) at twice the frame rate -> (B, C, 2T, ...): frame 2k is v[k], frame 2k+1
    lies halfway to v[k+1], and the last frame holds."""
    v_next = torch.cat([v[:, :, 1:], v[:, :, -1:]], dim=2)       # (B, C, T, ...)
    return torch.stack([v, (v + v_next) / 2], dim=3).flatten(2, 3)  # (B, C, 2T, ...)


def upsample(c: torch.Tensor, mode: str = "trilinear") -> torch.Tensor:
    """The fixed interpolation of a conditioning view c (B, C, Tc, Hc, Wc) -> (B, C, 2Tc, 2Hc, 2Wc)
    that inverts c = view(x, 2, 2) on smooth videos: the floor an upscaler must beat.

    view() keeps frames 0, 2, 4, ... and averages 2x2 pixel blocks. So in time, output frame 2k is
    c[k] and frame 2k+1 lies halfway to c[k+1] ("trilinear"; the last frame holds), or repeats
    c[k] ("nearest"). In
    space the pixel centres sit between the outputs' (bilinear, align_corners=False), or each
    value fills its 2x2 block ("nearest"). F.interpolate's trilinear would put output frame 2k a
    quarter frame before c[k]."""
    if mode == "nearest":
        return F.interpolate(c, scale_factor=2, mode="nearest")
    return F.interpolate(halfway(c), scale_factor=(1, 2, 2), mode="trilinear", align_corners=False)


def ground(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Make x (B, C, 2Tc, 2Hc, 2Wc) grounded in c (B, C, Tc, Hc, Wc) exactly: add the error
    e = c - view(x, 2, 2) back, each value to its 2x2 block (nearest in space). A kept frame 2k
    takes e[k], so view(result, 2, 2) == c with the least change to the kept frames; the frame
    between, 2k+1, takes the mean of e[k] and e[k+1] (the last holds), so corrections move as
    smoothly in time as the interpolation does. (Giving 2k+1 the correction of 2k made a
    two-frame cadence: docs/measured.md.) Frame 2k+1 looks one conditioning frame ahead, which
    Gup's `keep` and receptive radius count: x may end on frame 2Tc - 2, a kept frame that only
    the frame before it needs."""
    error = c - F.avg_pool3d(x[:, :, ::2], (1, 2, 2))                         # (B, C, Tc, Hc, Wc)
    correction = F.interpolate(halfway(error), scale_factor=(1, 2, 2), mode="nearest")
    return x + correction[:, :, :x.shape[2]]                                  # (B, C, 2Tc, 2Hc, 2Wc)


class ConditionalBN(nn.Module):
    """BatchNorm3d whose gain and bias are linear functions of a per-video vector
    (BigGAN's conditional BN; the vector is [z_chunk, embed(y)] in G1, embed(y) in Gup)."""

    def __init__(self, ch: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm3d(ch, affine=False)
        self.gain = sn(nn.Linear(cond_dim, ch, bias=False))
        self.bias = sn(nn.Linear(cond_dim, ch, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        gain = 1 + self.gain(cond).view(B, -1, 1, 1, 1)  # (B, C, 1, 1, 1)
        bias = self.bias(cond).view(B, -1, 1, 1, 1)
        return self.bn(x) * gain + bias


# -----------------------------------------------------------------------------
# Blocks

class GBlock(nn.Module):
    """Residual 3D up-block: CBN-ReLU-upsample-conv-CBN-ReLU-conv, plus an upsampled 1x1 skip.
    `up` = (t, h, w) nearest-neighbour factors; (1, 2, 2) in G1, (2, 2, 2) or (1, 1, 1) in Gup."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, up: tuple[int, int, int]):
        super().__init__()
        self.up = up
        self.bn1 = ConditionalBN(c_in, cond_dim)
        self.conv1 = conv(3, c_in, c_out, 3)
        self.bn2 = ConditionalBN(c_out, cond_dim)
        self.conv2 = conv(3, c_out, c_out, 3)
        self.skip = conv(3, c_in, c_out, 1) if c_in != c_out else None

    @property
    def time_radius(self) -> int:
        """Temporal half-width of the main path, in this block's output frames (both 3x3x3
        convs run after the upsampling)."""
        return self.conv1.kernel_size[0] // 2 + self.conv2.kernel_size[0] // 2

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.up == (1, 1, 1) else F.interpolate(x, scale_factor=self.up, mode="nearest")

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                drops: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))) -> torch.Tensor:
        """drops: the frames to drop from the start and the end after conv1 and after conv2, when
        the caller keeps only part of the output (Gup's `keep`); the skip drops both."""
        h = trim(self.conv1(self._upsample(F.relu(self.bn1(x, cond)))), drops[0])
        h = trim(self.conv2(F.relu(self.bn2(h, cond))), drops[1])
        s = trim(self._upsample(x), (drops[0][0] + drops[1][0], drops[0][1] + drops[1][1]))
        return h + (self.skip(s) if self.skip is not None else s)


class DBlock(nn.Module):
    """Residual down-block (BigGAN D): [ReLU]-conv-ReLU-conv-pool, plus conv1x1-pool skip.
    `dims` 2 for D_s (frames), 3 for D_t and D_m; `down` the pooling factors (per dim). `pool`
    "mean" averages each block of positions (BigGAN's); "max" takes each 2x2 block's maximum
    in space (frames are still averaged), which keeps a shape's edge where the mean blurs it:
    D_s's trunk learns the demo's shapes faster under it (docs/demo.md, "What D_s can see").
    Both are 1-Lipschitz, so the spectral norm's bound holds either way."""

    def __init__(self, dims: int, c_in: int, c_out: int, down: tuple[int, ...], preact: bool = True,
                 pool: str = "mean"):
        super().__init__()
        self.dims, self.down, self.preact, self.pool = dims, down, preact, pool
        self.conv1 = conv(dims, c_in, c_out, 3)
        self.conv2 = conv(dims, c_out, c_out, 3)
        self.skip = conv(dims, c_in, c_out, 1) if c_in != c_out or any(d > 1 for d in down) else None

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if all(d == 1 for d in self.down):
            return x
        avg, mx = (F.avg_pool3d, F.max_pool3d) if self.dims == 3 else (F.avg_pool2d, F.max_pool2d)
        if self.pool == "max":  # each 2x2 block's maximum, then (D_t, D_m) the frames' mean
            x = mx(x, (1,) * (self.dims - 2) + tuple(self.down[-2:]))
            return avg(x, (self.down[0], 1, 1), ceil_mode=True) if self.dims == 3 and self.down[0] > 1 else x
        # ceil_mode: an odd frame count (25) keeps its last frame, averaged alone.
        return avg(x, self.down, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preact else x
        h = self._pool(self.conv2(F.relu(self.conv1(h))))
        s = x if self.skip is None else self._pool(self.skip(x))
        return h + s


# -----------------------------------------------------------------------------
# Generators

class GRUSteps(torch.autograd.Function):
    """The GRU's recurrence over T frames, forward and backward written out: 5 ops per frame
    forward and 3 backward, where autograd through the same loop records ~18 per frame (the
    loop is sequential in time, so its per-frame ops are what a G1 iteration's op count and a
    compiled graph's kernel count are made of). In torch's gate order r, z, n, with gh = W_hh h + b_hh:
        r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z),  n = tanh(gi_n + r * gh_n),
        h' = (1 - z) * n + z * h = lerp(n, h, z).
    gi (B, T, 3H): every frame's input projection W_ih x + b_ih; h starts at 0."""

    @staticmethod
    def forward(ctx, gi: torch.Tensor, W_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        B, T, H3 = gi.shape
        H = H3 // 3
        # a_t = W_hh h + [gi_r + b_hr, gi_z + b_hz, b_hn] = [pre_r, pre_z, gh_n]: one addmm a frame
        K = torch.cat([gi[..., :2 * H] + b_hh[:2 * H], b_hh[2 * H:].expand(B, T, H)], dim=2)  # (B, T, 3H)
        h, a, hs = gi.new_zeros(B, H), [], []
        for t in range(T):
            a_t = torch.addmm(K[:, t], h, W_hh.t())                      # (B, 3H)
            r, z = torch.sigmoid(a_t[:, :2 * H]).chunk(2, dim=1)         # (B, H) each
            n = torch.tanh(torch.addcmul(gi[:, t, 2 * H:], r, a_t[:, 2 * H:]))
            h = torch.lerp(n, h, z)                                      # (B, H)
            a.append(a_t)
            hs.append(h)
        a, hs = torch.stack(a, dim=1), torch.stack(hs, dim=1)            # (B, T, 3H), (B, T, H)
        ctx.save_for_backward(gi, W_hh, a, hs)
        return hs

    @staticmethod
    def backward(ctx, d_hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """With g = dL/dh_t: da_t = g * E_t for a multiplier E_t of what the forward made (below),
        and dL/dh_{t-1} = d_hs[t-1] + g * z_t + da_t W_hh. Only those 3 ops run frame by frame;
        the rest is over all frames at once."""
        gi, W_hh, a, hs = ctx.saved_tensors
        B, T, H = hs.shape
        r, z = torch.sigmoid(a[..., :2 * H]).chunk(2, dim=2)              # (B, T, H) each
        gh_n = a[..., 2 * H:]
        n = torch.tanh(torch.addcmul(gi[..., 2 * H:], r, gh_n))
        h_prev = torch.cat([hs.new_zeros(B, 1, H), hs[:, :-1]], dim=1)    # (B, T, H)
        dn_pre = (1 - z) * (1 - n * n)                                    # d tanh's input / dh
        E = torch.cat([dn_pre * gh_n * r * (1 - r),                       # d pre_r / dh
                       (h_prev - n) * z * (1 - z),                        # d pre_z / dh
                       dn_pre * r], dim=2).view(B, T, 3, H)               # d gh_n / dh
        g, da, gs = d_hs[:, T - 1], [], []
        for t in range(T - 1, -1, -1):
            da_t = (E[:, t] * g.unsqueeze(1)).view(B, 3 * H)               # (B, 3H)
            da.append(da_t)
            gs.append(g)
            if t > 0:
                g = torch.addmm(torch.addcmul(d_hs[:, t - 1], g, z[:, t]), da_t, W_hh)  # (B, H)
        da, g = torch.stack(da[::-1], dim=1), torch.stack(gs[::-1], dim=1)  # (B, T, 3H), (B, T, H)
        d_gi = torch.cat([da[..., :2 * H], g * dn_pre], dim=2)             # (B, T, 3H)
        d_W_hh = da.flatten(0, 1).t() @ h_prev.flatten(0, 1)               # (3H, H)
        return d_gi, d_W_hh, da.sum(dim=(0, 1))


class GRU(nn.Module):
    """nn.GRU (one layer, batch_first, h starting at 0) unrolled over the frames in plain torch
    ops (GRUSteps), under nn.GRU's parameter names, so a checkpoint of either loads into the
    other. torch.compile traces it, where nn.GRU broke every stage-1 graph; on a CPU (and in a
    compiled graph) its per-frame ops were two thirds of a ssw-128 stage-1 iteration's.
    x (B, T, size) -> h (B, T, size)."""

    def __init__(self, size: int):
        super().__init__()
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * size, size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * size, size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(3 * size))
        for p in self.parameters():  # nn.GRU's init (G1 then draws DVD-GAN's): a seed makes the G1 it made
            nn.init.uniform_(p, -size ** -0.5, size ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 under bf16 autocast too: a recurrence compounds its rounding frame by frame
        # (and GRUSteps' backward, which autocast does not reach, takes one dtype).
        device = x.device.type
        with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
            gi = F.linear(x.to(self.weight_ih_l0.dtype), self.weight_ih_l0, self.bias_ih_l0)  # (B, T, 3H): all frames
            return GRUSteps.apply(gi, self.weight_hh_l0, self.bias_hh_l0)          # (B, T, H)


class G1(nn.Module):
    """Stage-1 generator G1(z, y) -> (B, 3, T, H, W) in [-1, 1]: the whole video, small.

    z is a temporal latent sequence (B, T, z_dim), one vector per output frame. A GRU over it
    gives each frame a base tensor at 4x4 (DVD-GAN's recurrence, on latents only); 3D-conv
    GBlocks then double H and W up to the output size. Drawing a longer z makes a longer video,
    as DVD-GAN unrolls its generator for longer (the first frames do not change: the GRU is
    causal). z[:, 0] doubles as BigGAN's hierarchical latent: its chunks, with embed(y),
    drive each GBlock's conditional BN. With cfg.g1_class_input, embed(y) also enters the
    affine that makes each frame's 4x4 base, as DVD-GAN's [z; e(y)] does: the class can then
    place the object's layout, not only scale and shift the features BN normalises.

    No start-up transient: G1 makes `margin` more frames on each side of the video and drops
    them, their latents mirroring the sequence's first and last (frame -k takes z[:, k]). So the
    GRU has warmed up by frame 0, and no kept frame sees the convs' zero padding in time;
    without this, frame 0 came out blurred and jumped to frame 1 (DESIGN.md section 3).
    """

    def __init__(self, cfg: StageConfig):
        super().__init__()
        n_blocks = int(math.log2(cfg.out_size // 4))
        assert 4 * 2 ** n_blocks == cfg.out_size and len(cfg.g_mults) == n_blocks + 1, \
            f"G1 needs out_size = 4 * 2^k and k+1 g_mults, got {cfg.out_size}, {cfg.g_mults}"
        chs = [cfg.ch * m for m in cfg.g_mults]
        self.z_dim, self.base_ch, self.n_blocks, self.g1_margin = cfg.z_dim, chs[0], n_blocks, cfg.g1_margin
        self.class_input = cfg.g1_class_input
        self.embed = nn.Embedding(cfg.classes, cfg.z_dim)
        self.gru = GRU(cfg.z_dim)
        self.linear = sn(nn.Linear(cfg.z_dim * (2 if self.class_input else 1), chs[0] * 4 * 4))
        assert cfg.z_dim % n_blocks == 0, f"G1: z_dim {cfg.z_dim} must split into {n_blocks} chunks"
        z_chunk = cfg.z_dim // n_blocks
        self.blocks = nn.ModuleList(
            GBlock(chs[i], chs[i + 1], z_chunk + cfg.z_dim, up=(1, 2, 2)) for i in range(n_blocks))
        self.out_bn = nn.BatchNorm3d(chs[-1])
        self.out = conv(3, chs[-1], 3, 3)
        for name, w in self.gru.named_parameters():
            (nn.init.orthogonal_ if name.startswith("weight") else nn.init.zeros_)(w)

    @property
    def margin(self) -> int:
        """Frames made and dropped on each side: the temporal radius of the 3D convs, so that no
        kept frame sees their zero padding; or cfg.g1_margin, a measured trade (the demo keeps
        8 frames: a full margin of 5 makes 18, and the convs' cost grows with them)."""
        full = sum(block.time_radius for block in self.blocks) + self.out.kernel_size[0] // 2
        return full if self.g1_margin is None else self.g1_margin

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, T, _ = z.shape
        m = self.margin
        k = torch.arange(1, m + 1, device=z.device)
        mirror = torch.cat([k.flip(0).clamp(max=T - 1), torch.arange(T, device=z.device),
                            (T - 1 - k).clamp(min=0)])          # (T + 2m,) latent of each frame
        T2 = T + 2 * m
        e = self.embed(y)                                       # (B, z_dim)
        h = self.gru(z[:, mirror])                              # (B, T + 2m, z_dim)
        if self.class_input:
            h = torch.cat([h, e[:, None].expand(B, T2, -1)], dim=2)  # (B, T + 2m, 2 z_dim)
        x = self.linear(h).view(B, T2, self.base_ch, 4, 4)      # (B, T + 2m, C, 4, 4)
        x = x.permute(0, 2, 1, 3, 4)                            # (B, C, T + 2m, 4, 4)
        chunks = z[:, 0].chunk(self.n_blocks, dim=1)            # n_blocks x (B, z_dim / n_blocks)
        for block, z_chunk in zip(self.blocks, chunks):
            x = block(x, torch.cat([z_chunk, e], dim=1))
        x = torch.tanh(self.out(F.relu(self.out_bn(x))))        # (B, 3, T + 2m, H, W)
        return x[:, :, m:m + T]                                 # (B, 3, T, H, W)


class Gup(nn.Module):
    """Upscaling generator Gup(c, z, y) -> (B, 3, 2Tc, 2Hc, 2Wc), nominally in [-1, 1].

    c (B, 3, Tc, Hc, Wc) is the conditioning view, z (B, z_dim, Tc, Hc, Wc) a noise map at the
    same resolution. The output is upsample(c) plus a learned residual: encoder conv -> GBlock at
    Tc -> GBlock doubling T, H, W -> GBlock at 2Tc -> conv. The residual's last conv starts at
    zero, so at initialisation Gup *is* the interpolation and training can only add detail
    (DESIGN.md section 3). Fully convolutional in time with a finite receptive radius
    (`receptive_radius`, in conditioning frames), and no batch statistics in eval mode, so it
    can slide over a video in chunks (DESIGN.md section 5).
    """

    def __init__(self, cfg: StageConfig):
        super().__init__()
        assert len(cfg.g_mults) == 3, f"Gup takes 3 g_mults, got {cfg.g_mults}"
        c1, c2, c3 = (cfg.ch * m for m in cfg.g_mults)
        self.z_dim, self.grounded = cfg.z_dim, cfg.grounded
        self.embed = nn.Embedding(cfg.classes, cfg.z_dim)
        # The noise enters scaled per channel, from zero (StyleGAN2's noise strength): an untrained
        # Gup is deterministic, and noise comes in as fast as it helps to fool D_s and D_t.
        self.noise_gain = nn.Parameter(torch.zeros(cfg.z_dim))
        self.encode = conv(3, 3 + cfg.z_dim, c1, 3)
        self.blocks = nn.ModuleList([
            GBlock(c1, c1, cfg.z_dim, up=(1, 1, 1)),
            GBlock(c1, c2, cfg.z_dim, up=(2, 2, 2)),
            GBlock(c2, c3, cfg.z_dim, up=(1, 1, 1)),
        ])
        self.out_bn = nn.BatchNorm3d(c3)
        # The residual's output layer: zero-initialised, hence no spectral norm (the spectral
        # norm of a zero matrix is 0 and would divide by it). Gup starts as upsample(c).
        self.out = nn.Conv3d(c3, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, c: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
                keep: int | None = None) -> torch.Tensor:
        """keep: make only the centre `keep` conditioning frames' output (B, 3, 2 keep, 2Hc, 2Wc),
        computing no frame that only the dropped ones need (None: all, 2Tc frames). The method is
        the five numbered steps; `context`, `ahead` and the `drops` that trim each step to what the
        kept centre needs are the frame arithmetic below ("Frame arithmetic")."""
        B, _, Tc, Hc, Wc = c.shape
        assert z.shape == (B, self.z_dim, Tc, Hc, Wc), f"noise map {tuple(z.shape)} vs c {tuple(c.shape)}"
        context = self.context_of(Tc, keep)              # conditioning frames each side of the centre
        ahead = self.lookahead(context)                  # output frames made past it, for grounding
        drops = iter(self.drops(context))                # frames each conv drops from its output
        n = Tc - 2 * context                             # conditioning frames kept
        e = self.embed(y)                                                 # (B, z_dim)
        # 1. encode the conditioning view with the noise map (scaled per channel)
        z = z * self.noise_gain.view(1, -1, 1, 1, 1)                     # (B, z_dim, Tc, Hc, Wc)
        h = trim(self.encode(torch.cat([c, z], dim=1)), next(drops))    # (B, C, <=Tc, Hc, Wc)
        # 2. the blocks: at Tc, doubling T, H and W, at 2Tc
        for block in self.blocks:
            h = block(h, e, (next(drops), next(drops)))                  # (B, C, <=2Tc, 2Hc, 2Wc)
        # 3. out: the residual, zero at initialisation
        residual = trim(self.out(F.relu(self.out_bn(h))), next(drops))   # (B, 3, 2n + ahead, 2Hc, 2Wc)
        assert residual.shape[2] == 2 * n + ahead, f"{residual.shape[2]} residual frames, not {2 * n + ahead}"
        # 4. the interpolation plus the residual
        x = trim(upsample(c, "trilinear"), (2 * context, 2 * context - ahead)) + residual
        # 5. ground: view(x, 2, 2) == c exactly, then drop the frame made only for that
        if self.grounded:
            x = trim(ground(x, trim(c, (context, context - ahead))), (0, ahead))
        return x                                                          # (B, 3, 2n, 2Hc, 2Wc)

    # -------------------------------------------------------------------------
    # Frame arithmetic: the receptive radius R, and trimming every step to the kept centre

    def context_of(self, Tc: int, keep: int | None) -> int:
        """Conditioning frames on each side of the centre `keep` of Tc frames (keep None: 0)."""
        context = 0 if keep is None else (Tc - keep) // 2
        assert keep is None or Tc - keep == 2 * context, f"keep {keep} is not the centre of {Tc} frames"
        return context

    def lookahead(self, context: int) -> int:
        """Output frames made past the kept centre for grounding: ground gives frame 2k+1 the mean
        of the corrections of 2k and 2k+2, so the last kept frame needs the frame after it, made
        from the context. Without context (the whole video) ground holds the last correction
        instead, and an ungrounded Gup looks nowhere ahead."""
        return 1 if self.grounded and context > 0 else 0

    def temporal_convs(self) -> list[tuple[nn.Module, int, int]]:
        """Every conv that mixes frames, in the order they run: (conv, its frames per
        conditioning frame f, its temporal half-width in its own frames; a conv after the 2x
        temporal upsampling sees half as far in conditioning frames, k / f)."""
        convs, frames_per_cond = [(self.encode, 1)], 1
        for block in self.blocks:
            frames_per_cond *= block.up[0]
            convs += [(block.conv1, frames_per_cond), (block.conv2, frames_per_cond)]
        convs.append((self.out, frames_per_cond))
        return [(m, f, m.kernel_size[0] // 2) for m, f in convs]

    @property
    def receptive_radius(self) -> int:
        """R: an output frame depends on conditioning (and noise) frames at most R away from the
        one it upsamples. Output frame t sits at t/2 in conditioning frames and the convs reach
        S = the sum of their temporal half-widths, so frame 2k+1 reaches floor(S + 1/2) past k
        (at least the interpolation's 1 frame). Grounded, frame 2k+1 also takes frame 2k+2's
        correction, which reaches floor(S) + 1."""
        S = sum(Fraction(k, f) for _, f, k in self.temporal_convs())
        return max(math.floor(S + Fraction(1, 2)), 1, math.floor(S) + 1 if self.grounded else 0)

    def drops(self, context: int) -> list[tuple[int, int]]:
        """For conditioning with `context` frames each side of the centre to keep: the frames each
        conv of temporal_convs() drops from the start and the end of its output. It keeps the
        centre plus what the convs after it reach (at its frame rate), and grounding's one output
        frame ahead at the end. Dropping the rest changes nothing that is kept. Counted in
        integers, in 1/D of a conditioning frame (D = twice the highest frame rate: every
        half-width and grounding's half frame ahead is a whole number of them), which
        torch.compile traces as constants."""
        convs = self.temporal_convs()
        D = 2 * max(f for _, f, _ in convs)
        ahead = self.lookahead(context) * D // 2
        held, rate, reach, drops = (context, context), 1, sum(k * D // f for _, f, k in convs), []
        for _, f, k in convs:
            reach -= k * D // f
            held = (held[0] * f // rate, held[1] * f // rate)    # time upsampled before this conv
            wanted = (-(-reach * f // D), -(-(reach + ahead) * f // D))  # ceil, in its own frames
            drop = (max(held[0] - wanted[0], 0), max(held[1] - wanted[1], 0))
            held, rate = (held[0] - drop[0], held[1] - drop[1]), f
            drops.append(drop)
        return drops


def upscale_chunk(G: Gup, c: torch.Tensor, z: torch.Tensor, y: torch.Tensor, context: int) -> torch.Tensor:
    """Run Gup on a padded chunk and keep its centre: the one forward of an upscaling stage,
    shared by training (train.py) and sampling (sample.py), so a training forward *is* a
    sampling chunk (DESIGN.md sections 4 and 5).

    c (B, 3, context + n + context, Hc, Wc) holds n conditioning frames with `context` frames on
    each side, mirrored past the video's ends (data.mirrored); z the noise map of the same
    frames. -> (B, 3, 2n, 2Hc, 2Wc)."""
    return G(c, z, y, keep=c.shape[2] - 2 * context)  # (B, 3, 2n, 2Hc, 2Wc)


def fake_batch(G, cfg: StageConfig, batch: dict) -> torch.Tensor:
    """G's videos for a batch, (B, 3, T, H, W): G1(z, y) for stage 1; for the upscaling stages,
    Gup on each window's conditioning with its context, cropped to the window: a sampling chunk
    (upscale_chunk). The noise is batch["z"] where the batch brings it (the loader's WithNoise, the fixed
    sample grids), else fresh."""
    y, z = batch["y"], batch.get("z")
    if cfg.stage == 1:
        return G(torch.randn(len(y), cfg.out_frames, cfg.z_dim, device=y.device) if z is None else z, y)
    c = batch["c_context"]                                             # (B, 3, Tc + 2 context, Hc, Wc)
    if z is None:
        z = torch.randn(len(y), cfg.z_dim, *c.shape[2:], device=y.device)  # noise for every chunk frame
    return upscale_chunk(G, c, z, y, cfg.context)                      # (B, 3, T, H, W): the window


@torch.no_grad()
def ema_update(G_ema, G, decay: float, step: int) -> None:
    """G_ema, the generator that samples, <- lerp towards G (train.py, after each G step). The
    decay warms up as min(decay, (1 + step) / (10 + step)), as in tf.train.ExponentialMovingAverage,
    so early samples are not stuck at the init. Buffers (BN running stats, spectral-norm vectors)
    are copied: G_ema samples in eval mode with them."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - d)
    torch._foreach_copy_(list(G_ema.buffers()), list(G.buffers()))


# -----------------------------------------------------------------------------
# Discriminators: ResNets with a projection head on y (Miyato & Koyama 2018)

class ProjectionHead(nn.Module):
    """score = linear(h) + <embed(y), h> for pooled features h (N, C). With classify, also an
    auxiliary classifier of the same features, classify(h) -> (N, classes) logits (AC-GAN,
    Odena et al. 2017; beside the projection as in ReACGAN), which --aux-class trains."""

    def __init__(self, ch: int, classes: int, classify: bool = False):
        super().__init__()
        self.linear = sn(nn.Linear(ch, 1))
        self.embed = sn(nn.Embedding(classes, ch))
        # Without spectral norm: on the mean-pooled features of a spectrally normed trunk a
        # normed head's logits stay within a fraction of 1, and its cross-entropy at ln(classes).
        self.classify = nn.Linear(ch, classes) if classify else None

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)  # (N,)


def head_pool(h: torch.Tensor, dims: tuple[int, ...], how: str) -> torch.Tensor:
    """A discriminator head's pooling over pixels (and frames): "mean" (the default), "sum"
    (BigGAN's, DVD-GAN's) or "max". A sum makes a logit's scale grow with the number of positions,
    and with it the logit's spread across videos from their content; the real-vs-fake signal a D
    must find in an upscaler's start is small (a few grey levels), and under the sum a D trained
    against that start stays at chance (DESIGN.md section 3; docs/measured.md). A max asks whether
    a feature shows anywhere, as a shape does in a scene: D_s's trunk learns the demo's shapes
    faster under it than under the mean (docs/demo.md, "What D_s can see")."""
    if how == "max":
        return h.amax(dim=dims)
    return h.mean(dim=dims) if how == "mean" else h.sum(dim=dims)


class SpatialD(nn.Module):
    """D_s: scores k randomly chosen frames at full resolution with a 2D ResNet; the video's
    score pools its k frames' scores (cfg.d_pool). x (B, 3, T, H, W) -> (B,)."""

    def __init__(self, cfg: StageConfig):
        super().__init__()
        n = int(math.log2(cfg.d_size // 4)) + 1  # DBlocks: all but the last halve, down to 4x4
        assert 4 * 2 ** (n - 1) == cfg.d_size and len(cfg.d_mults) >= n, \
            f"D_s: {cfg.d_size} px needs {n} d_mults (4 * 2^k px), got {cfg.d_mults}"
        chs = [cfg.d_width * m for m in cfg.d_mults[:n]]  # a patch (crop) takes the first n
        self.k, self.pool = cfg.d_frames, cfg.d_pool
        self.blocks = nn.ModuleList(
            DBlock(2, 3 if i == 0 else chs[i - 1], chs[i], (2, 2) if i < n - 1 else (1, 1), i > 0, cfg.d_down)
            for i in range(n))
        self.head = ProjectionHead(chs[-1], cfg.classes, cfg.d_classify)

    def forward(self, x: torch.Tensor, y: torch.Tensor, frames: torch.Tensor | None = None,
                classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """frames (B, k'): which frames of each video to score (train.py draws k per example);
        None: k distinct frames drawn here. classes: also the class logits (B, classes), the
        mean of the k frames' (cfg.d_classify)."""
        B, C, T, H, W = x.shape
        k = min(self.k, T) if frames is None else frames.shape[1]
        idx = torch.rand(B, T, device=x.device).argsort(dim=1)[:, :k] if frames is None else frames  # (B, k)
        frames = x.gather(2, idx.view(B, 1, k, 1, 1).expand(B, C, k, H, W))  # (B, C, k, H, W)
        h = frames.transpose(1, 2).reshape(B * k, C, H, W)                   # (B*k, C, H, W)
        for block in self.blocks:
            h = block(h)
        h = head_pool(F.relu(h), (2, 3), self.pool)                               # (B*k, C')
        frames_pool = "mean" if self.pool == "max" else self.pool  # a video's score: all k frames'
        score = head_pool(self.head(h, y.repeat_interleave(k)).view(B, k), (1,), frames_pool)  # (B,)
        return (score, self.head.classify(h).view(B, k, -1).mean(1)) if classes else score


class TemporalD(nn.Module):
    """D_t: the whole clip/window, 2x average-pooled in space, through a 3D ResNet (the first two
    DBlocks also halve time, as in DVD-GAN). x (B, in_ch, T, H, W) -> (B,); with classes, also the
    class logits (B, classes) (cfg.d_classify)."""

    def __init__(self, cfg: StageConfig, in_ch: int = 3):
        super().__init__()
        n, self.pool = int(math.log2(cfg.d_size // 8)) + 1, cfg.d_pool  # from d_size / 2 to 4x4
        assert 8 * 2 ** (n - 1) == cfg.d_size and len(cfg.d_mults) > n, \
            f"D_t: {cfg.d_size} px needs {n + 1} d_mults (8 * 2^k px), got {cfg.d_mults}"
        chs = [cfg.d_width * m for m in cfg.d_mults[1:n + 1]]
        self.blocks = nn.ModuleList(
            DBlock(3, in_ch if i == 0 else chs[i - 1], chs[i],
                   (2 if i < 2 else 1, *((2, 2) if i < n - 1 else (1, 1))), i > 0, cfg.d_down)
            for i in range(n))
        self.head = ProjectionHead(chs[-1], cfg.classes, cfg.d_classify)

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.score(F.avg_pool3d(x, (1, 2, 2)), y, classes)  # x pooled: (B, C, T, H/2, W/2)

    def score(self, h: torch.Tensor, y: torch.Tensor,
              classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The 3D ResNet and head on an input at half the clip's size, (B, in_ch, T, H/2, W/2)."""
        for block in self.blocks:
            h = block(h)
        h = head_pool(F.relu(h), (2, 3, 4), self.pool)          # (B, C')
        return (self.head(h, y), self.head.classify(h)) if classes else self.head(h, y)  # (B,), (B, classes)


class MatchingD(TemporalD):
    """D_m: is window x grounded in conditioning view c? Scores the pair with D_t's architecture,
    at the conditioning's size: x's pixels folded into channels, 2x2 blocks to 12 channels
    (space-to-depth, lossless), stacked with c (each frame of c beside the two frames it makes):
    15 channels at (T, H/2, W/2). Real pairs are (x, view(x, 2, 2)); fake pairs (Gup(c, z, y), c).
    D_m sees every output pixel, so it can judge the detail a stage adds against c; pooled by 2,
    as D_t is, it would see only view(x, 2, 2), which grounding makes equal to c on every kept
    frame (DESIGN.md section 3). As cheap as D_t but for its first conv's input channels."""

    def __init__(self, cfg: StageConfig):
        super().__init__(replace(cfg, d_classify=False), in_ch=15)  # its question is the match, not the class

    def forward(self, x: torch.Tensor, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        folded = F.pixel_unshuffle(x.transpose(1, 2).reshape(B * T, C, H, W), 2)   # (B*T, 4C, H/2, W/2)
        folded = folded.view(B, T, 4 * C, H // 2, W // 2).transpose(1, 2)        # (B, 4C, T, H/2, W/2)
        c_t = F.interpolate(c, size=(T, H // 2, W // 2), mode="nearest")         # (B, 3, T, H/2, W/2)
        return self.score(torch.cat([folded, c_t], dim=1), y)                    # (B,)


def build_stage(cfg: StageConfig) -> tuple[nn.Module, SpatialD, TemporalD, MatchingD | None]:
    """(G, D_s, D_t, D_m) for one stage; D_m is None for stage 1."""
    if cfg.stage == 1:
        return G1(cfg), SpatialD(cfg), TemporalD(cfg), None
    return Gup(cfg), SpatialD(cfg), TemporalD(cfg), MatchingD(cfg)

