"""Chain trained stages into full-length, full-resolution videos (DESIGN.md section 5).

Stage 1 makes the whole video small; each upscaling stage then slides over it in chunks of
--chunk conditioning frames, each fed with --overlap extra frames on both sides (mirrored past
the video's ends, as in training), keeping only the chunk's centre. With overlap >= the stage's receptive radius R
the result equals running the stage on the whole video at once; memory depends on the chunk,
not on the video's length.

    python sample.py --ckpt out/stage1/ckpt.pt out/stage2/ckpt.pt out/stage3/ckpt.pt \\
        --n 8 --class 3 --out samples/          # 8 videos, 100 frames at 128x128 (ssw-128)
    python sample.py --ckpt ... --frames 1000   # longer than training: G1 unrolls further

Writes video_000.gif ..., grid.gif, videos.npy (uint8 (N, T, H, W, 3)) and, with PyAV, .mp4.

    python sample.py --ckpt ... --ladder --n 256   # the FVD ladder (DESIGN.md section 7)

The ladder scores the chain's last stage against the floors it must beat: real vs real,
interpolations of lower stages' real views, the stages on real views, the chain from noise.
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

import fvd
from data import StageExamples, mirrored, open_clips, to_uint8, video_grid, write_gif, write_mp4
from models import G1, Gup, StageConfig, load_checkpoint, load_weights, upscale_chunk, upsample


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Sample videos from a chain of SSW-GAN stage checkpoints.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", required=True, help="stage checkpoints, stage 1 first")
    p.add_argument("--stages", type=int, default=None, help="run only the first N stages given")
    p.add_argument("--n", type=int, default=8, help="videos to make")
    p.add_argument("--class", dest="cls", type=int, default=None,
                   help="class of every video (default: classes in turn)")
    p.add_argument("--frames", type=int, default=None,
                   help="output frames (default: the training length); stage 1 unrolls to make more")
    p.add_argument("--chunk", type=int, default=None,
                   help="conditioning frames per chunk (default: each stage's training window)")
    p.add_argument("--overlap", type=int, default=None,
                   help="extra conditioning frames on each side of a chunk (default: each stage's R)")
    p.add_argument("--batch", type=int, default=8, help="videos generated at once")
    p.add_argument("--seed", type=int, default=0, help="seeds all noise: same seed, same videos")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fps", type=int, default=25, help="frame rate of the written GIF/MP4")
    p.add_argument("--out", default="samples", help="output folder")
    p.add_argument("--ladder", action="store_true",
                   help="instead of writing videos, print the FVD ladder of the chain's last stage "
                        "(DESIGN.md section 7); --n videos per set (256 or more for real numbers)")
    p.add_argument("--real", default="synthetic",
                   help="--ladder: the real data, 'synthetic' (built-in) or a folder data.py reads")
    p.add_argument("--fvd-frames", type=int, default=16, help="--ladder: the first frames of each video scored")
    p.add_argument("--fvd-cache", default=os.path.join("out", "fvd-stats"),
                   help="--ladder: folder of cached real statistics")
    return p.parse_args(argv)


# -----------------------------------------------------------------------------
# The chunk loop

def upscale_chunked(G: Gup, c: torch.Tensor, z: torch.Tensor, y: torch.Tensor, chunk: int,
                    overlap: int, device: torch.device, progress: str = "") -> torch.Tensor:
    """Run Gup over the whole conditioning video c in temporal chunks.

    c (B, 3, Tc, Hc, Wc) and z (B, zc, Tc, Hc, Wc) live on the CPU, whole; each chunk of `chunk`
    frames goes to `device` with `overlap` more frames each side (mirrored past the video's
    ends, as in training) through upscale_chunk, the forward training uses too, and only its
    centre is written into the preallocated CPU output (B, 3, 2Tc, 2Hc, 2Wc). The noise map is
    drawn once for the whole video, so a frame gets the same noise whatever the chunking. One
    chunk of the whole video (chunk >= Tc) with overlap R, i.e. Gup on the whole c mirrored R
    frames past each end, is the reference the chunks must equal for overlap >= R.
    """
    B, _, Tc, Hc, Wc = c.shape
    out = torch.empty(B, 3, 2 * Tc, 2 * Hc, 2 * Wc)
    starts = range(0, Tc, chunk)
    for i, start in enumerate(starts):
        end = min(start + chunk, Tc)
        c_chunk = with_context(c, start, end, overlap)  # (B, 3, end - start + 2 overlap, Hc, Wc)
        z_chunk = with_context(z, start, end, overlap)
        x = upscale_chunk(G, c_chunk.to(device), z_chunk.to(device), y, overlap)
        out[:, :, 2 * start:2 * end] = x.float().cpu()          # (B, 3, 2(end - start), 2Hc, 2Wc)
        if progress:
            print(f"\r{progress}: chunk {i + 1}/{len(starts)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


def with_context(v: torch.Tensor, start: int, end: int, context: int) -> torch.Tensor:
    """Frames start - context .. end + context of a whole video v (B, C, T, H, W), mirrored past
    its ends (data.mirrored) -> (B, C, end - start + 2 context, H, W)."""
    return v[:, :, torch.from_numpy(mirrored(np.arange(start - context, end + context), v.shape[2]))]


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


# -----------------------------------------------------------------------------
# Loading a chain of stages

def load_chain(paths: list[str], device: torch.device) -> list[tuple[StageConfig, torch.nn.Module]]:
    """[(cfg, G_ema in eval mode)] for consecutive stages (1, 2, ... to sample; the ladder also
    scores chains that start later); refuses a broken chain before any compute."""
    chain = []
    for k, path in enumerate(paths):
        ckpt, cfg = load_checkpoint(path)
        if chain and cfg.stage != chain[0][0].stage + k:
            raise ValueError(f"{path} is a stage-{cfg.stage} checkpoint but follows stage "
                             f"{chain[-1][0].stage} in --ckpt: list the checkpoints in stage order")
        if chain:
            prev = chain[-1][0]
            if (cfg.preset, cfg.num_classes) != (prev.preset, prev.num_classes):
                raise ValueError(f"{path} is from preset {cfg.preset!r} with {cfg.num_classes} classes, "
                                 f"{paths[0]} from {prev.preset!r} with {prev.num_classes}: "
                                 f"every stage of a chain must come from the same preset and data")
        G = (G1 if cfg.stage == 1 else Gup)(cfg)
        load_weights(G, ckpt["G_ema"], path, "G_ema")
        chain.append((cfg, G.to(device).eval().requires_grad_(False)))
    return chain


@torch.no_grad()
def generate(chain: list[tuple[StageConfig, torch.nn.Module]], y: torch.Tensor, frames: int,
             chunk: int | None, overlap: int | None, device: torch.device,
             generator: torch.Generator, progress: bool = False) -> torch.Tensor:
    """Videos (B, 3, frames, H, W) in [-1, 1] on the CPU, for labels y (B,).

    Stage 1 makes ceil(frames / 2^(stages-1)) frames whole; every further stage doubles T, H and
    W chunk by chunk; the result is cut to `frames`. All noise comes from `generator` (CPU)."""
    cfg1, G = chain[0]
    B = y.shape[0]
    T1 = math.ceil(frames / 2 ** (len(chain) - 1))
    z = torch.randn(B, T1, cfg1.z_dim, generator=generator)
    x = G(z.to(device), y.to(device)).float().cpu()                    # (B, 3, T1, H1, W1)
    return upscale(chain[1:], x, y, chunk, overlap, device, generator, progress)[:, :, :frames]


@torch.no_grad()
def upscale(stages: list[tuple[StageConfig, torch.nn.Module]], x: torch.Tensor, y: torch.Tensor,
            chunk: int | None, overlap: int | None, device: torch.device,
            generator: torch.Generator, progress: bool = False) -> torch.Tensor:
    """Run upscaling stages one after another over whole videos x (B, 3, T, H, W) on the CPU:
    each doubles T, H and W chunk by chunk (default chunk: the stage's training window's
    conditioning; default overlap: its R) with a whole-video noise map from `generator`."""
    for cfg, G in stages:
        z = torch.randn(x.shape[0], cfg.z_dim, *x.shape[2:], generator=generator)  # (B, zc, T, H, W)
        x = upscale_chunked(G, x, z, y.to(device), chunk or cfg.cond_frames,
                            G.receptive_radius if overlap is None else overlap, device,
                            progress=f"stage {cfg.stage}" if progress else "")
    return x


# -----------------------------------------------------------------------------
# The FVD ladder (DESIGN.md section 7): every score next to the floors it must beat

FVD_SEED = 2024  # the real clips and the noise scored: a fixed draw, apart from training's seeds


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


def from_noise(chain: list[tuple[StageConfig, torch.nn.Module]], n: int, batch: int,
               device: torch.device) -> Iterator[torch.Tensor]:
    """The chain's videos, classes in turn, at its full training length."""
    g = torch.Generator().manual_seed(FVD_SEED)
    cfg = chain[-1][0]
    for y in (torch.arange(n) % max(cfg.num_classes, 1)).split(batch):
        yield generate(chain, y, cfg.video_frames, None, None, device, g)


def ladder_rungs(chain: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, batch: int,
                 device: torch.device) -> list[tuple[str, Callable[[], Iterator[torch.Tensor]]]]:
    """The rungs of the ladder at the chain's last stage K, each (name, batches of videos at
    stage K's size): real vs real; for each lower stage j, nearest and trilinear upsampling of
    its real views, and stages j+1..K applied to them (j = K-1 is LongVideoGAN's protocol for a
    super-resolution network); the whole chain from noise. A chain that starts above stage 1
    has the rungs its stages can make."""
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
            rungs.append((f"stage {K} on real {size(d)} views" if d == 1 else
                          f"stages {K - d + 1}-{K} on real {size(d)} views",
                          lambda d=d: upscaled(chain[-d:], source, n, batch, device)))
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
                "weights": model.weights_id}
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
    trilinear of the lowest views (the stage-1 size) as the issue's aim."""
    floors = {name.split(" of real ")[1]: v for name, v, *_ in scores if name.startswith("trilinear x")}
    lowest = list(floors.values())[-1] if floors else None
    lines = [f"| stage {cfg.stage} of {cfg.preset} | FVD | / its trilinear floor | frame 0 change | "
             f"frame 0 sharpness | change within / across frame pairs |", "|---|---|---|---|---|---|"]
    for name, v, change0, sharp0, pairs in scores:
        views = name.split(" real ")[-1] if " real " in name else None
        floor = floors.get(views, lowest if name.startswith("full chain") else None)
        ratio = f"{v / floor:.2f}" if floor and not name.startswith(("trilinear", "real vs real")) else ""
        lines.append(f"| {name} | {v:.1f} | {ratio} | {change0:.2f} | {sharp0:.2f} | {pairs:.2f} |")
    return "\n".join(lines)


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


def check_request(args: argparse.Namespace, chain: list[tuple[StageConfig, torch.nn.Module]]) -> None:
    """Bad requests fail here, with the fix, before any compute."""
    cfg = chain[-1][0]
    n_cls = max(cfg.num_classes, 1)
    if args.cls is not None and not 0 <= args.cls < n_cls:
        raise ValueError(f"--class {args.cls} is out of range: these checkpoints know classes 0..{n_cls - 1}")
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk {args.chunk}: a chunk needs at least 1 conditioning frame")
    if args.overlap is not None and args.overlap < 0:
        raise ValueError(f"--overlap {args.overlap}: must be >= 0 (the default is each stage's R)")
    if args.frames is not None and args.frames < 1 or args.n < 1:
        raise ValueError("--frames and --n must be at least 1")
    for cfg, G in chain[1:]:
        if args.overlap is not None and args.overlap < G.receptive_radius:
            print(f"warning: --overlap {args.overlap} < R = {G.receptive_radius} of stage {cfg.stage}: "
                  f"chunks will not match the whole-video pass near their seams", file=sys.stderr)


def main(argv: list[str] | None = None) -> np.ndarray:
    args = get_args(argv)
    device = torch.device(args.device)
    if args.stages is not None and not 1 <= args.stages <= len(args.ckpt):
        raise ValueError(f"--stages {args.stages}: give 1..{len(args.ckpt)} (the checkpoints listed)")
    paths = args.ckpt[:args.stages]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"no checkpoint at {', '.join(missing)}: train it with "
                                f"python train.py --stage N, or fix the path")
    chain = load_chain(paths, device)
    check_request(args, chain)
    if not args.ladder and chain[0][0].stage != 1:
        raise ValueError(f"{paths[0]} is a stage-{chain[0][0].stage} checkpoint: sampling starts from "
                         f"stage 1, so list the checkpoints in stage order, stage 1 first "
                         f"(--ladder also scores chains that start later)")
    if args.ladder:
        scores = ladder(chain, args.real, args.n, args.fvd_frames, args.batch, device, args.fvd_cache,
                        fvd.load_i3d().to(device))
        print(ladder_table(scores, chain[-1][0]))
        return scores
    cfg = chain[-1][0]
    frames = args.frames or cfg.video_frames
    n_cls = max(cfg.num_classes, 1)
    labels = torch.full((args.n,), args.cls) if args.cls is not None else torch.arange(args.n) % n_cls

    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    videos = torch.cat([to_uint8(generate(chain, y, frames, args.chunk, args.overlap, device, generator,
                                          progress=True))
                        for y in labels.split(args.batch)]).numpy()  # (N, T, H, W, 3) uint8
    print(f"made {args.n} videos of {frames} frames at {videos.shape[2]}x{videos.shape[3]} "
          f"in {time.time() - t0:.1f} s on {device}")

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "videos.npy"), videos)
    write_gif(os.path.join(args.out, "grid.gif"), video_grid(videos, nrow=min(args.n, 4)), fps=args.fps)
    for i, video in enumerate(videos):
        write_gif(os.path.join(args.out, f"video_{i:03d}.gif"), video, fps=args.fps)
    try:
        for i, video in enumerate(videos):
            write_mp4(os.path.join(args.out, f"video_{i:03d}.mp4"), video, fps=args.fps)
    except ImportError as e:
        print(f"no MP4 written: {e}")
    print(f"wrote {args.out}/: videos.npy, grid.gif, video_*.gif")
    return videos


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
