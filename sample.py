"""Chain trained stages into full-length, full-resolution videos (DESIGN.md section 5).

Stage 1 makes the whole video small; each upscaling stage then slides over it in chunks of
--chunk conditioning frames, each fed with --overlap extra frames on both sides (mirrored past
the video's ends, as in training), keeping only the chunk's centre. With overlap >= the stage's
receptive radius R the result equals running the stage on the whole video at once; memory
depends on the chunk, not on the video's length.

    python sample.py --ckpt out/stage1/ckpt.pt out/stage2/ckpt.pt out/stage3/ckpt.pt \\
        --n 8 --class 3 --out samples/          # 8 videos, 100 frames at 128x128 (ssw-128)
    python sample.py --ckpt ... --frames 1000   # longer than training: G1 unrolls further

Writes video_000.gif ..., grid.gif, videos.npy (uint8 (N, T, H, W, 3)) and, with PyAV, .mp4.
Also the sample grids train.py writes during training (write_samples). Scoring a chain (the
FVD ladder) is evaluate.py's.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch

from data import StageExamples, mirrored, open_clips, to_uint8, view
from models import G1, Gup, StageConfig, fake_batch, upsample, upscale_chunk
from runfolder import load_checkpoint, load_weights, slim_checkpoint
from videos import video_grid, write_gif, write_mp4, write_strip


# The demo preset's three stages as trained by the README's quick start, slimmed (--slim).
DEMO_CHAIN = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", f"demo-stage{k}.pt")
              for k in (1, 2, 3)]


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Sample videos from a chain of SSW-GAN stage checkpoints.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=DEMO_CHAIN,
                   help="stage checkpoints, stage 1 first (default: the demo's trained chain, checkpoints/)")
    p.add_argument("--slim", action="store_true",
                   help="write the --ckpt checkpoints slimmed to what sampling reads (G_ema and its config) "
                        "into --out as PRESET-stageN.pt, and exit")
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
    p.add_argument("--strip", action="store_true",
                   help="also write strip.png: for each class made, a held-out real video of it (--real) "
                        "above the first video made of it, every 4th frame (the README's picture)")
    p.add_argument("--real", default="synthetic", help="the data --strip's real rows come from")
    return p.parse_args(argv)


# -----------------------------------------------------------------------------
# Loading a chain of stages

def load_chain(paths: list[str], device: torch.device) -> list[tuple[StageConfig, torch.nn.Module]]:
    """[(cfg, G_ema in eval mode)] for consecutive stages (1, 2, ... to sample; evaluate.py's
    ladder also scores chains that start later); refuses a broken chain before any compute."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"no checkpoint at {', '.join(missing)}: train it with "
                                f"python train.py --stage N, or fix the path")
    chain = []
    for k, path in enumerate(paths):
        ckpt, cfg = load_checkpoint(path, for_sampling=True)
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


# -----------------------------------------------------------------------------
# Sampling: stage 1 makes the whole video small, each upscaler doubles it chunk by chunk

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


# -----------------------------------------------------------------------------
# The command line: check the request, sample, write the videos

def check_request(args: argparse.Namespace, chain: list[tuple[StageConfig, torch.nn.Module]]) -> None:
    """Bad requests fail here, with the fix, before any compute."""
    cfg = chain[-1][0]
    n_cls = cfg.classes
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


def write_videos(out: str, videos: np.ndarray, fps: int) -> None:
    """videos uint8 (N, T, H, W, 3) -> out/videos.npy, out/grid.gif (4 a row), out/video_*.gif
    and, with PyAV, out/video_*.mp4."""
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "videos.npy"), videos)
    write_gif(os.path.join(out, "grid.gif"), video_grid(videos, nrow=min(len(videos), 4)), fps=fps)
    for i, video in enumerate(videos):
        write_gif(os.path.join(out, f"video_{i:03d}.gif"), video, fps=fps)
    try:
        for i, video in enumerate(videos):
            write_mp4(os.path.join(out, f"video_{i:03d}.mp4"), video, fps=fps)
    except ImportError as e:
        print(f"no MP4 written: {e}")
    print(f"wrote {out}/: videos.npy, grid.gif, video_*.gif")


GRID_MAX = 32  # videos in a stage-1 sample grid at most, as StyleGAN2-ADA caps its grids


# -----------------------------------------------------------------------------
# Training's sample grids (train.py writes one every --sample-every steps)

def grounding_error(x_fake: torch.Tensor, c: torch.Tensor) -> float:
    """mean |view(x_fake, 2, 2) - c|: how far an upscaled window strays from its view (0 = exact).
    x_fake (B, 3, T, H, W), c (B, 3, T/2, H/2, W/2), both in [-1, 1]."""
    return (view(x_fake, 2, 2) - c).abs().mean().item()


@torch.no_grad()
def write_samples(path: str, G_ema, cfg: StageConfig, fixed: dict) -> float | None:
    """Stage 1: a grid GIF, one row per class, from the fixed z. Stages >= 2: rows of
    [upsample(c), the interpolation floor | G_ema's window | real window] for fixed held-out
    windows; returns the grounding error on them (None for stage 1)."""
    x = fake_batch(G_ema, cfg, fixed)                                  # (N, 3, T, H, W)
    if cfg.stage == 1:
        write_gif(path, video_grid(to_uint8(x.float().cpu()), nrow=fixed["nrow"]))
        return None
    c, x_real = fixed["c"], fixed["x"]
    rows = torch.stack([upsample(c), x, x_real], dim=1).flatten(0, 1)  # (3N, 3, T, H, W)
    write_gif(path, video_grid(to_uint8(rows.float().cpu()), nrow=3))
    return grounding_error(x, c)


def fixed_inputs(cfg: StageConfig, heldout: StageExamples | None, device: torch.device, seed: int) -> dict:
    """What every sample grid of a run is made from: fixed noise, and for stages >= 2 the first
    windows of `heldout`, examples of the held-out split. Stage 1 shows at most GRID_MAX videos:
    up to 4 per class (a row each), of classes spread evenly over all of them."""
    g = torch.Generator().manual_seed(seed)
    if cfg.stage == 1:
        per_class = max(1, min(4, GRID_MAX // cfg.classes))
        shown = min(cfg.classes, GRID_MAX // per_class)
        y = torch.linspace(0, cfg.classes - 1, shown).round().long().repeat_interleave(per_class)
        z = torch.randn(len(y), cfg.out_frames, cfg.z_dim, generator=g)
        return {"z": z.to(device), "y": y.to(device), "nrow": per_class if per_class > 1 else 8}
    batch = torch.utils.data.default_collate([heldout[i] for i in range(4)])
    batch["z"] = torch.randn(4, cfg.z_dim, *batch["c_context"].shape[2:], generator=g)
    return {k: v.to(device) for k, v in batch.items()}



def write_class_strip(path: str, videos: np.ndarray, labels: torch.Tensor, cfg: StageConfig, source: str) -> None:
    """A PNG (videos.write_strip): for each class in `labels`, the first held-out real video of
    that class at the chain's size above the first of `videos` (uint8 (N, T, H, W, 3)) made for
    it, every 4th frame, each pixel shown 2x2."""
    clips = open_clips(source, cfg.clip_frames, cfg.clip_size, seed=0, stride=cfg.frame_stride, flip=False,
                       split="val")
    real = StageExamples(clips, cfg.view_s, cfg.view_t, window=None)
    names = getattr(clips, "classes", None) or [f"class {y}" for y in range(cfg.classes)]
    rows = []
    for y in sorted(set(labels.tolist())):
        x = next(item["x"] for item in (real[i] for i in range(len(real))) if item["y"] == y)  # (3, T, H, W)
        rows += [(f"real {names[y]}", to_uint8(x).numpy()), (f"made {names[y]}", videos[labels.tolist().index(y)])]
    write_strip(path, rows, list(range(0, videos.shape[1], 4)), 2)


def main(argv: list[str] | None = None) -> np.ndarray:
    args = get_args(argv)
    device = torch.device(args.device)
    if args.slim:
        os.makedirs(args.out, exist_ok=True)
        for path in args.ckpt:
            out = slim_checkpoint(path, args.out)
            print(f"{path} -> {out}: {os.path.getsize(out) / 2**20:.2f} MiB")
        return np.zeros(0, np.uint8)
    if args.stages is not None and not 1 <= args.stages <= len(args.ckpt):
        raise ValueError(f"--stages {args.stages}: give 1..{len(args.ckpt)} (the checkpoints listed)")
    paths = args.ckpt[:args.stages]
    chain = load_chain(paths, device)
    check_request(args, chain)
    if chain[0][0].stage != 1:
        raise ValueError(f"{paths[0]} is a stage-{chain[0][0].stage} checkpoint: sampling starts from "
                         f"stage 1, so list the checkpoints in stage order, stage 1 first "
                         f"(evaluate.py also scores chains that start later)")
    cfg = chain[-1][0]
    frames = args.frames or cfg.video_frames
    n_cls = cfg.classes
    labels = torch.full((args.n,), args.cls) if args.cls is not None else torch.arange(args.n) % n_cls

    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    videos = torch.cat([to_uint8(generate(chain, y, frames, args.chunk, args.overlap, device, generator,
                                          progress=True))
                        for y in labels.split(args.batch)]).numpy()  # (N, T, H, W, 3) uint8
    print(f"made {args.n} videos of {frames} frames at {videos.shape[2]}x{videos.shape[3]} "
          f"in {time.time() - t0:.1f} s on {device}")

    write_videos(args.out, videos, args.fps)
    if args.strip:
        write_class_strip(os.path.join(args.out, "strip.png"), videos, labels, cfg, args.real)
    return videos


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
