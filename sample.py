"""Chain trained stages into full-length, full-resolution videos (DESIGN.md section 5).

Stage 1 makes the whole video small; each upscaling stage then slides over it in chunks of
--chunk conditioning frames, each fed with --overlap extra frames on both sides (clamped at the
video ends), keeping only the chunk's centre. With overlap >= the stage's receptive radius R
the result equals running the stage on the whole video at once; memory depends on the chunk,
not on the video's length.

    python sample.py --ckpt out/stage1/ckpt.pt out/stage2/ckpt.pt out/stage3/ckpt.pt \\
        --n 8 --class 3 --out samples/          # 8 videos, 100 frames at 128x128 (ssw-128)
    python sample.py --ckpt ... --frames 1000   # longer than training: G1 unrolls further

Writes video_000.gif ..., grid.gif, videos.npy (uint8 (N, T, H, W, 3)) and, with PyAV, .mp4.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch

from data import to_uint8, video_grid, write_gif, write_mp4
from models import G1, Gup, StageConfig, load_checkpoint


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
    return p.parse_args(argv)


# -----------------------------------------------------------------------------
# The chunk loop

def upscale_chunked(G: Gup, c: torch.Tensor, z: torch.Tensor, y: torch.Tensor, chunk: int,
                    overlap: int, device: torch.device, progress: str = "") -> torch.Tensor:
    """Run Gup over the whole conditioning video c in temporal chunks.

    c (B, 3, Tc, Hc, Wc) and z (B, zc, Tc, Hc, Wc) live on the CPU, whole; each chunk of `chunk`
    frames goes to `device` with `overlap` more frames each side (fewer at the video ends) and
    only its centre is written into the preallocated CPU output (B, 3, 2Tc, 2Hc, 2Wc). The
    noise map is drawn once for the whole video, so a frame gets the same noise whatever the
    chunking. A chunk >= Tc is the whole-video pass, the reference the chunks must equal.
    """
    B, _, Tc, Hc, Wc = c.shape
    out = torch.empty(B, 3, 2 * Tc, 2 * Hc, 2 * Wc)
    starts = range(0, Tc, chunk)
    for i, start in enumerate(starts):
        end = min(start + chunk, Tc)
        lo, hi = max(0, start - overlap), min(Tc, end + overlap)
        x = G(c[:, :, lo:hi].to(device), z[:, :, lo:hi].to(device), y)  # (B, 3, 2(hi-lo), 2Hc, 2Wc)
        out[:, :, 2 * start:2 * end] = x[:, :, 2 * (start - lo):2 * (end - lo)].float().cpu()
        if progress:
            print(f"\r{progress}: chunk {i + 1}/{len(starts)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


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
    """[(cfg, G_ema in eval mode)] for stage 1, 2, ...; refuses a broken chain before any compute."""
    chain = []
    for k, path in enumerate(paths, start=1):
        ckpt, cfg = load_checkpoint(path)
        if cfg.stage != k:
            raise ValueError(f"{path} is a stage-{cfg.stage} checkpoint but is position {k} in --ckpt: "
                             f"list the checkpoints in stage order, stage 1 first")
        if chain:
            prev = chain[-1][0]
            if (cfg.preset, cfg.num_classes) != (prev.preset, prev.num_classes):
                raise ValueError(f"{path} is from preset {cfg.preset!r} with {cfg.num_classes} classes, "
                                 f"{paths[0]} from {prev.preset!r} with {prev.num_classes}: "
                                 f"every stage of a chain must come from the same preset and data")
        G = (G1 if cfg.stage == 1 else Gup)(cfg)
        G.load_state_dict(ckpt["G_ema"])
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
    for cfg, G in chain[1:]:
        z = torch.randn(B, cfg.z_dim, *x.shape[2:], generator=generator)  # whole-video noise map
        x = upscale_chunked(G, x, z, y.to(device), chunk or cfg.cond_frames,
                            G.receptive_radius if overlap is None else overlap, device,
                            progress=f"stage {cfg.stage}" if progress else "")
    return x[:, :, :frames]


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
