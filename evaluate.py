"""Everything scored: the FVD ladder, a stage's own rung for training curves, per-frame
statistics and seams (DESIGN.md section 7).

    python evaluate.py --ckpt out/stage1/ckpt.pt out/stage2/ckpt.pt out/stage3/ckpt.pt --n 256
    python evaluate.py --ckpt out/stage3/ckpt.pt --n 256      # one upscaler on real views

The ladder scores the chain's last stage against the floors it must beat: real vs real;
interpolations of lower stages' real views; the upscaling stages on those views, each next to
the same stages untrained (their start: an untrained Gup's residual is zero, so it is the plain
or grounded interpolation); the chain from noise. A stage that does not beat its own start has
learned nothing, whatever it scores against trilinear.
"""
import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

import fvd
from data import StageExamples, open_clips, to_uint8
from models import StageConfig, build_stage, upsample
from sample import generate, load_chain, upscale
from videos import STREAMS

FVD_SEED = 2024  # the real clips and the noise scored: a fixed draw, apart from training's seeds


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Print the FVD ladder of a chain of SSW-GAN stage checkpoints.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", required=True,
                   help="stage checkpoints in stage order; the ladder is the last one's, and a chain "
                        "that starts above stage 1 has the rungs its stages can make")
    p.add_argument("--n", type=int, default=8, help="videos per set (256 or more for real numbers)")
    p.add_argument("--batch", type=int, default=8, help="videos generated at once")
    p.add_argument("--real", default="synthetic",
                   help="the real data, 'synthetic' (built-in) or a folder data.py reads")
    p.add_argument("--fvd-frames", type=int, default=16, help="the first frames of each video scored")
    p.add_argument("--fvd-cache", default=os.path.join("out", "fvd-stats"),
                   help="folder of cached real statistics")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


# -----------------------------------------------------------------------------
# The videos scored: real views, their interpolations, the stages on them, the chain from noise

def real_views(source: str, cfg: StageConfig, n: int, batch: int, down: int = 0,
               seed: int = FVD_SEED) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Whole real videos as stage `cfg` makes them, or `down` halvings below (down=1: the views
    the stage is conditioned on): batches of (x (b, 3, T, H, W) in [-1, 1], y (b,)), items
    0 .. n-1 of the held-out split's clips drawn with `seed` (not flipped): never trained on.
    `source`: 'synthetic', a prepared folder or a folder of videos."""
    clips = open_clips(source, cfg.clip_frames, cfg.clip_size, seed, cfg.frame_stride, flip=False,
                       split="val")
    views = StageExamples(clips, cfg.view_s * 2 ** down, cfg.view_t * 2 ** down, window=None)
    for k in range(0, n, batch):
        items = [views[i] for i in range(k, min(k + batch, n))]
        yield torch.stack([it["x"] for it in items]), torch.tensor([it["y"] for it in items])


def for_i3d(x: torch.Tensor, frames: int) -> np.ndarray:
    """float (b, 3, T, H, W) -> uint8 (b, F, H, W, 3): the first F = min(frames, T) frames. A
    video shorter than I3D's 10 frames (tiny's stage 1) shows each frame k times, real and fake
    alike, so that it can be scored at all."""
    x = x[:, :, :frames]
    if x.shape[2] < fvd.MIN_FRAMES:
        x = x.repeat_interleave(math.ceil(fvd.MIN_FRAMES / x.shape[2]), dim=2)
    return to_uint8(x).numpy()


def interpolated(source: str, cfg: StageConfig, n: int, batch: int, down: int,
                 mode: str) -> Iterator[torch.Tensor]:
    """The floors: real views `down` halvings below stage cfg, upsampled back to its size."""
    for x, _ in real_views(source, cfg, n, batch, down):
        for _ in range(down):
            x = upsample(x, mode)
        yield x


def upscaled(stages: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, batch: int,
             device: torch.device) -> Iterator[torch.Tensor]:
    """Upscaling stages applied to the real views of the first one's input, with their labels."""
    g = torch.Generator().manual_seed(FVD_SEED)
    for x, y in real_views(source, stages[-1][0], n, batch, down=len(stages)):
        yield upscale(stages, x, y, None, None, device, g)


def untrained(stages: list[tuple[StageConfig, torch.nn.Module]]) -> list[tuple[StageConfig, torch.nn.Module]]:
    """The same upscaling stages at their start: a fresh Gup from each one's StageConfig. Its
    residual's last conv is zero, so it is exactly the interpolation upsample(c), grounded if the
    stage is, whatever the rest of its init; built without moving the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        return [(cfg, build_stage(cfg)[0].to(next(G.parameters()).device).eval().requires_grad_(False))
                for cfg, G in stages]


def from_noise(chain: list[tuple[StageConfig, torch.nn.Module]], n: int, batch: int,
               device: torch.device) -> Iterator[torch.Tensor]:
    """The chain's videos, classes in turn, at its full training length."""
    g = torch.Generator().manual_seed(FVD_SEED)
    cfg = chain[-1][0]
    for y in (torch.arange(n) % cfg.classes).split(batch):
        yield generate(chain, y, cfg.video_frames, None, None, device, g)


# -----------------------------------------------------------------------------
# The FVD ladder (DESIGN.md section 7): every score next to the floors it must beat

def ladder_rungs(chain: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, batch: int,
                 device: torch.device) -> list[tuple[str, Callable[[], Iterator[torch.Tensor]]]]:
    """The rungs of the ladder at the chain's last stage K, each (name, batches of videos at
    stage K's size): real vs real; for each lower stage j, nearest and trilinear upsampling of
    its real views, then stages j+1..K applied to them untrained (their start) and trained
    (j = K-1 is LongVideoGAN's protocol for a super-resolution network); the whole chain from
    noise. A chain that starts above stage 1 has the rungs its stages can make."""
    cfg, K, first = chain[-1][0], chain[-1][0].stage, chain[0][0].stage

    def size(down):  # "8@8": frames @ pixels of the real views `down` halvings below stage K
        return f"{math.ceil(cfg.video_frames / 2 ** down)}@{cfg.out_size // 2 ** down}"

    rungs = [("real vs real (another draw)",
              lambda: (x for x, _ in real_views(source, cfg, n, batch, seed=FVD_SEED + 1)))]
    for d in range(1, K):
        rungs += [(f"nearest x{2 ** d} of real {size(d)} views",
                   lambda d=d: interpolated(source, cfg, n, batch, d, "nearest")),
                  (f"trilinear x{2 ** d} of real {size(d)} views",
                   lambda d=d: interpolated(source, cfg, n, batch, d, "trilinear"))]
        if K - d + 1 >= first:  # the chain holds stages K-d+1 .. K
            stages = f"stage {K}" if d == 1 else f"stages {K - d + 1}-{K}"
            rungs += [(f"{stages} untrained on real {size(d)} views",
                       lambda d=d: upscaled(untrained(chain[-d:]), source, n, batch, device)),
                      (f"{stages} on real {size(d)} views",
                       lambda d=d: upscaled(chain[-d:], source, n, batch, device))]
    if first == 1:
        rungs.append(("full chain from noise" if K > 1 else "stage 1 from noise",
                      lambda: from_noise(chain, n, batch, device)))
    return rungs


def real_stats(model: fvd.I3D, source: str, cfg: StageConfig, n: int, frames: int, batch: int,
               cache_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of I3D features of n real videos at stage cfg's size, cached in
    cache_dir under a name and settings that say what they are."""
    settings = {"real": source if source == "synthetic" else os.path.abspath(source), "n": n,
                "frames": frames, "clip": [cfg.clip_frames, cfg.clip_size, cfg.frame_stride],
                "view": [cfg.view_s, cfg.view_t], "seed": FVD_SEED, "split": "val",
                "weights": model.weights_id,
                "streams": STREAMS}  # the random streams that draw the clips: new tags, new clips
    name = f"real-{os.path.basename(os.path.abspath(source))}-{cfg.preset}-stage{cfg.stage}-n{n}-f{frames}.npz"
    mu, sigma, _ = fvd.cached_stats(Path(cache_dir) / name, settings, lambda: fvd.video_features(
        (for_i3d(x, frames) for x, _ in real_views(source, cfg, n, batch)), model, n, progress=True))
    return mu, sigma


def score(videos: Iterator[torch.Tensor], model: fvd.I3D, n: int, frames: int,
          real: tuple[np.ndarray, np.ndarray]) -> tuple[float, float, float, float]:
    """(FVD of the videos (batches (b, 3, T, H, W) in [-1, 1]) against real (mean, covariance),
    frame 0's change to frame 1 and its sharpness, each over the video's mean: 1.0 = no
    start-up transient, and pair_cadence: 1.0 = none)."""
    change, sharpness = [], []

    def scored(x):  # -> uint8 for I3D, with frame statistics on the way
        c, s = frame_stats(x)
        change.append(c), sharpness.append(s)
        return for_i3d(x, frames)
    feats = fvd.video_features((scored(x) for x in videos), model, n, progress=True)
    change, sharpness = torch.stack(change).mean(0), torch.stack(sharpness).mean(0)
    return (fvd.frechet_distance(*real, *fvd.feature_stats(feats)),
            (change[0] / change.mean()).item(), (sharpness[0] / sharpness.mean()).item(), pair_cadence(change))


def ladder(chain: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, frames: int,
           batch: int, device: torch.device, cache_dir: str,
           model: fvd.I3D) -> list[tuple[str, float, float, float, float]]:
    """[(rung, FVD against n real videos at the chain's last stage, frame-0 change ratio,
    frame-0 sharpness ratio, pair cadence)] for every rung of ladder_rungs, in order."""
    cfg = chain[-1][0]
    print(f"FVD ladder at stage {cfg.stage} of {cfg.preset} ({cfg.video_frames}@{cfg.out_size}), "
          f"{n} vs {n} videos, first {frames} frames", file=sys.stderr)
    real = real_stats(model, source, cfg, n, frames, batch, cache_dir)
    scores = []
    for name, videos in ladder_rungs(chain, source, n, batch, device):
        print(name, file=sys.stderr)
        scores.append((name, *score(videos(), model, n, frames, real)))
    return scores


def stage_fvd(cfg: StageConfig, G: torch.nn.Module, source: str, n: int, device: torch.device,
              cache_dir: str, frames: int = 16) -> float:
    """One stage's own rung, for training curves: stage 1's videos from noise, or an upscaling
    stage on real views of its input, against n real videos at the stage's size."""
    model = fvd.load_i3d().to(device)
    real = real_stats(model, source, cfg, n, frames, 16, cache_dir)
    videos = (from_noise([(cfg, G)], n, 16, device) if cfg.stage == 1 else
              upscaled([(cfg, G)], source, n, 16, device))
    return score(videos, model, n, frames, real)[0]


def ladder_table(scores: list[tuple[str, float, float, float, float]], cfg: StageConfig) -> str:
    """The ladder as a Markdown table. Each rung made from real views of some size is also given
    as a ratio to trilinear upsampling of the same views, its floor; the chain from noise to
    trilinear of the lowest views (the stage-1 size) as the issue's aim. Each upscaling rung is
    also given as a ratio to the same stages untrained on the same views, its start: below 1.00
    is what training earned."""
    def views(name):  # "16@16 views" of "... of real 16@16 views", "... on real 16@16 views"
        return name.split(" real ")[-1] if " real " in name else None
    floors = {views(name): v for name, v, *_ in scores if name.startswith("trilinear x")}
    starts = {views(name): v for name, v, *_ in scores if " untrained on real " in name}
    lowest = list(floors.values())[-1] if floors else None
    lines = [f"| stage {cfg.stage} of {cfg.preset} | FVD | / its trilinear floor | / its start | "
             f"frame 0 change | frame 0 sharpness | change within / across frame pairs |",
             "|---|---|---|---|---|---|---|"]
    for name, v, change0, sharp0, pairs in scores:
        floor = floors.get(views(name), lowest if name.startswith("full chain") else None)
        ratio = f"{v / floor:.2f}" if floor and not name.startswith(("trilinear", "real vs real")) else ""
        start = starts.get(views(name)) if name.startswith("stage") else None
        from_start = f"{v / start:.2f}" if start else ""
        lines.append(f"| {name} | {v:.1f} | {ratio} | {from_start} | {change0:.2f} | {sharp0:.2f} "
                     f"| {pairs:.2f} |")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# Frame statistics and seams

def frame_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame statistics that show a start-up transient, in grey levels (0-255), averaged over
    videos, channels and pixels. x (B, 3, T, H, W) in [-1, 1] -> (change (T-1,): mean |frame t+1 -
    frame t|; sharpness (T,): mean (|d/dx| + |d/dy|) / 2 of frame t, forward differences)."""
    g = x.float() * 127.5                                             # grey levels, up to an offset
    change = (g[:, :, 1:] - g[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))
    dx = (g[..., :, 1:] - g[..., :, :-1]).abs().mean(dim=(0, 1, 3, 4))
    dy = (g[..., 1:, :] - g[..., :-1, :]).abs().mean(dim=(0, 1, 3, 4))
    return change, (dx + dy) / 2


def pair_cadence(change: torch.Tensor) -> float:
    """An upscaler's judder: the mean change from frame 2k to 2k+1 (within a pair that shares a
    conditioning frame) over the mean change from 2k+1 to 2k+2 (across pairs), from
    frame_stats' change (T-1,). 1.0 on real videos."""
    return (change[0::2].mean() / change[1::2].mean()).item()


def seam_frames(Tc: int, chunk: int) -> list[int]:
    """Output frames t whose predecessor t-1 came from another chunk (chunks of `chunk` cond frames)."""
    return [2 * s for s in range(chunk, Tc, chunk)]


def seam_error(x: torch.Tensor, seams: list[int]) -> float:
    """Mean |frame t - frame t-1| at chunk seams divided by the same inside chunks: 1.0 means
    the seams are as smooth as the rest. x (B, 3, T, H, W); seams as from seam_frames."""
    diff = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))  # (T-1,): diff[t-1] is t vs t-1
    at_seam = torch.zeros_like(diff, dtype=torch.bool)
    at_seam[[t - 1 for t in seams]] = True
    if not at_seam.any() or at_seam.all():
        raise ValueError("seam_error needs at least one seam and one frame pair inside a chunk")
    return (diff[at_seam].mean() / diff[~at_seam].mean()).item()


def main(argv: list[str] | None = None) -> list[tuple[str, float, float, float, float]]:
    args = get_args(argv)
    if args.n < 1:
        raise ValueError("--n must be at least 1")
    device = torch.device(args.device)
    chain = load_chain(args.ckpt, device)
    scores = ladder(chain, args.real, args.n, args.fvd_frames, args.batch, device, args.fvd_cache,
                    fvd.load_i3d().to(device))
    print(ladder_table(scores, chain[-1][0]))
    return scores


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
