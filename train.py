"""Train ONE stage of SSW-GAN: `python train.py --stage N` (DESIGN.md section 4).

Stage 1 (G1) makes whole videos at the stage's view of the clips; stages >= 2 (Gup) learn to
upscale windows of w frames, conditioned on the real view c = view(x, 2, 2) of the same
window, so every stage trains on real data alone: in any order, even at the same time.

    python train.py --stage 1                     # default preset ssw-128, built-in data
    python train.py --stage 2 --preset tiny       # an upscaling stage at toy size
    python train.py --stage 1 --data PREPARED     # videos data.py prepare made (or a folder of videos)
    torchrun --nproc_per_node=K train.py --stage N   # data-parallel (gloo on CPU, nccl on GPU)

Under torchrun, K processes x --batch-size videos x --grad-accum micro-batches make one batch:
example ids, noise and D_s's frames are per example, so any split of a batch trains what one
process at the whole batch trains (with --sync-bn for G's batch norm; see README, Scaling out).

Outputs in --out (default out/stageN): ckpt.pt (everything needed to continue: rerunning the
same command resumes), config.json, log.jsonl (one JSON line per status line), samples/*.gif,
and `lock`, held by the live run. SIGINT, SIGTERM or SIGUSR1 end a run at the next step with a
checkpoint (exit code 0).
"""
import argparse
import contextlib
import copy
import datetime
import fcntl
import itertools
import json
import math
import os
import resource
import signal
import socket
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol  # all_reduce with autograd
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils.parametrizations import _SpectralNorm

from data import Clips, StageExamples, open_clips, to_uint8, video_grid, view, write_gif
from losses import d_hinge, d_hinge_negative, g_hinge
from models import PRESETS, Gup, StageConfig, build_stage, load_checkpoint, load_weights, stage_config, upscale_chunk, upsample
from sample import stage_fvd

STATUS_SECONDS = 30      # a status line at least this often, whatever --log-every says
SAMPLE_SECONDS = 240     # a sample grid at least this often (and after the first step)
CKPT_SECONDS = 600       # a checkpoint at least this often


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stage", type=int, default=1, help="which stage to train (1-based)")
    p.add_argument("--preset", default="ssw-128", choices=sorted(PRESETS), help="row of the preset table")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (built-in bouncing shapes), a folder data.py prepare wrote, or a folder of videos")
    p.add_argument("--out", default=None, help="output folder (default out/stageN)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="videos per D and per G step, per process and micro-batch (default: 32 on GPU, "
                        "2 on CPU, where training is a demo of the pipeline, not a real run)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per D and per G step: the batch is processes x batch-size x this")
    p.add_argument("--sync-bn", action="store_true",
                   help="under DDP, G's batch norm normalises over the whole batch of all processes "
                        "(cross-replica BN, as DVD-GAN and BigGAN); else over each process's micro-batch")
    p.add_argument("--ddp-timeout", type=float, default=1800,
                   help="under DDP, seconds a collective waits for the other ranks before the job "
                        "exits with an error (a dead or hung rank); rank 0 alone runs samples, FVD and "
                        "checkpoints meanwhile, so keep it above their time")
    p.add_argument("--max-iters", type=int, default=200_000, help="G steps to train for")
    p.add_argument("--window", type=int, default=None, help="stages >= 2: output frames per window (even)")
    p.add_argument("--frame-stride", type=int, default=None,
                   help="source frames between two clip frames (default: the preset's, 1); with data "
                        "prepared at 25 fps, 2 makes a 100-frame clip span 8 s; recorded in the checkpoint")
    p.add_argument("--lr-g", type=float, default=1e-4, help="Adam learning rate of G")
    p.add_argument("--lr-d", type=float, default=5e-4, help="Adam learning rate of the Ds")
    p.add_argument("--d-steps", type=int, default=2, help="D steps per G step")
    p.add_argument("--ema", type=float, default=0.999, help="decay of G_ema (warmed up over the first steps)")
    p.add_argument("--context", type=int, default=None,
                   help="stages >= 2: conditioning frames of context each side of a training window, "
                        "as the sampler's overlap gives (default: the stage's receptive radius R; "
                        "0 trains on the window's conditioning alone)")
    p.add_argument("--grounded", action=argparse.BooleanOptionalAction, default=True,
                   help="stages >= 2: project Gup's output onto the videos whose view(x, 2, 2) is its "
                        "conditioning (models.ground), so it is grounded by construction; "
                        "--no-grounded leaves that to D_m alone, as the paper does")
    p.add_argument("--d-ch", type=int, default=None,
                   help="base channel width of D_s, D_t and D_m (default: the preset's, G's width); "
                        "recorded in the checkpoint")
    p.add_argument("--lambda-m", type=float, default=1.0,
                   help="weight of the matching discriminator D_m (stages >= 2); 0 removes D_m")
    p.add_argument("--lambda-rec", type=float, default=100.0,
                   help="stages >= 2: weight of the L1 distance between G's window and the real one in "
                        "the G step (pix2pix's reconstruction term, at pix2pix's weight); 0: the "
                        "paper's adversarial G alone")
    p.add_argument("--mismatch-negatives", action="store_true",
                   help="D_m also sees real windows paired with another video's view, as fakes")
    p.add_argument("--seed", type=int, default=0, help="seeds init, noise and data order")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 runs forward passes under autocast; weights stay float32")
    p.add_argument("--compile", action="store_true", help="torch.compile the D and G steps")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: load in-process)")
    p.add_argument("--log-every", type=int, default=50, help="status line every N steps (and every 30 s)")
    p.add_argument("--fvd-every", type=int, default=0,
                   help="FVD of G_ema every N steps, appended to log.jsonl (0: never; on a CPU each costs "
                        "minutes): stage 1's samples, or an upscaler's output on real views of its input, "
                        "against real views at the stage's size (sample.py --ladder's rung for the stage)")
    p.add_argument("--fvd-n", type=int, default=64, help="videos per set for --fvd-every")
    p.add_argument("--sample-every", type=int, default=1000, help="sample grid every N steps (and every 4 min)")
    p.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (and every 10 min)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    if args.frame_stride is not None and args.frame_stride < 1:
        p.error(f"--frame-stride {args.frame_stride}: must be >= 1 (1 keeps every frame)")
    if args.out is None:
        args.out = os.path.join("out", f"stage{args.stage}")
    if args.batch_size is None:
        args.batch_size = 32 if args.device.startswith("cuda") else 2
    return args


# -----------------------------------------------------------------------------
# Data: example i of the stream depends only on (seed, i), so batch b is the same batch
# whether the run started at 0 or resumed at b (DESIGN.md section 4, exact resume).

class StepSampler(torch.utils.data.Sampler):
    """Endless example indices: batch b of rank r holds examples [(b*world + r)*B, ... + B).
    With B = batch-size x grad-accum, the loader cuts each into micro-batches: rank r's share
    of batch b is the same examples whatever the number of ranks and micro-batches."""

    def __init__(self, first_batch: int, batch_size: int, rank: int = 0, world: int = 1):
        self.first_batch, self.batch_size, self.rank, self.world = first_batch, batch_size, rank, world

    def __iter__(self):
        for b in itertools.count(self.first_batch):
            start = (b * self.world + self.rank) * self.batch_size
            yield from range(start, start + self.batch_size)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # Ctrl-C, schedulers, SLURM's --signal


def quiet_worker(worker_id: int) -> None:
    """DataLoader worker start-up. A scheduler signals every process of the job, and a worker
    that dies of it takes the main process down before it can checkpoint: so workers ignore the
    stop signals, and the main process owns shutdown (its workers end with it)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def make_clips(args: argparse.Namespace, cfg: StageConfig, split: str = "train") -> Clips:
    """The preset's full-resolution clips of one split ("train", or "val": held out, for sample
    grids and the grounding error): uint8 (T, H, W, 3) and a label per item."""
    stride = cfg.frame_stride if args.frame_stride is None else args.frame_stride
    return open_clips(args.data, cfg.clip_frames, cfg.clip_size, args.seed, stride, split=split)


GRID_MAX = 32  # videos in a stage-1 sample grid at most, as StyleGAN2-ADA caps its grids


class WithIds(torch.utils.data.Dataset):
    """The stage's examples, each carrying its index "id": a step's noise is drawn per example
    id (step_noise), from the ids the loader actually delivered."""

    def __init__(self, examples: StageExamples):
        self.examples = examples

    def __getitem__(self, i: int) -> dict:
        return {**self.examples[i], "id": i}


D_NOISE, G_NOISE = 0, 1  # a D step's and a G step's draws for the same examples differ


def step_noise(cfg: StageConfig, ids: torch.Tensor, batch: dict, seed: int, tag: int, device) -> dict:
    """The randomness of one D or G step on the examples `ids`: "z" for G ((B, T, z_dim) for
    stage 1, a (B, z_dim, T', H', W') map like c_context for upscalers) and "frames" (2, B, k),
    the frames D_s scores of the real and the fake videos. Row b is a pure function of (seed,
    ids[b], tag): one process at batch 4, two ranks at 2 and two micro-batches of 2 draw the
    same numbers for the same examples, and a resumed run draws what an uninterrupted one drew.
    (A CUDA generator gives other numbers than a CPU one: resume on the same kind of device.)"""
    z_shape = (cfg.out_frames, cfg.z_dim) if cfg.stage == 1 else (cfg.z_dim, *batch["c_context"].shape[2:])
    T, k = cfg.out_frames, min(cfg.d_frames, cfg.out_frames)
    z, frames = [], []
    for i in ids.tolist():
        g = torch.Generator(device).manual_seed(int(np.random.SeedSequence([seed, i, tag]).generate_state(1, np.uint64)[0]))
        z.append(torch.randn(z_shape, generator=g, device=device))
        frames.append(torch.rand(2, T, generator=g, device=device).argsort(dim=1)[:, :k])  # (2, k) distinct
    return {"z": torch.stack(z), "frames": torch.stack(frames, dim=1)}


# -----------------------------------------------------------------------------
# Data parallelism: N ranks x M micro-batches of B videos train as one batch of N*M*B

class CrossReplicaBN(torch.nn.BatchNorm3d):
    """BatchNorm3d whose training statistics are the whole batch's, over all ranks (--sync-bn).
    torch's SyncBatchNorm runs on GPUs only; this one runs on any backend (gloo included), so
    the CPU tests check the path the GPUs take. The moments are summed with an autograd-aware
    all_reduce, so the gradient flows through the shared statistics as in one big batch.
    Ranks hold equal batches. Eval mode (G_ema, sampling) is plain BatchNorm3d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        B, C, T, H, W = x.shape
        world = dist.get_world_size()
        xf = x.float()                                                     # moments in float32, even under bf16
        moments = torch.cat([xf.mean((0, 2, 3, 4)), xf.square().mean((0, 2, 3, 4))])  # (2C,)
        moments = funcol.all_reduce(moments, "sum", dist.group.WORLD) / world
        mean, var = moments[:C], (moments[C:] - moments[:C].square()).clamp(min=0)     # (C,), biased
        with torch.no_grad():
            n = B * T * H * W * world
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)  # unbiased, as BatchNorm
            self.num_batches_tracked.add_(1)
        shape = (1, C, 1, 1, 1)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def cross_replica_bn(net: torch.nn.Module) -> torch.nn.Module:
    """net with each BatchNorm3d replaced by a CrossReplicaBN holding the same state."""
    for parent in list(net.modules()):
        for name, bn in parent.named_children():
            if type(bn) is torch.nn.BatchNorm3d:
                new = CrossReplicaBN(bn.num_features, bn.eps, bn.momentum, bn.affine).to(bn.running_mean.device)
                new.load_state_dict(bn.state_dict())
                setattr(parent, name, new)
    return net


@contextlib.contextmanager
def power_iterations_paused(nets: list, paused: bool):
    """In training mode spectral norm runs a power iteration at every forward, so micro-batches
    after the first of a step would see other weights than the first. Paused, they reuse the
    first one's estimate: a step updates it once, as one big batch does."""
    layers = [m for net in nets if paused for m in net.modules() if isinstance(m, _SpectralNorm)]
    for m in layers:
        m.train(False)
    try:
        yield
    finally:
        for m in layers:
            m.train(True)


def accumulate(loss_of, micro: list[dict], wrapped: list, nets: list) -> tuple[torch.Tensor, dict]:
    """Backward of the mean of loss_of(batch) over the micro-batches: the gradient of the batch
    of them all. DDP modules in `wrapped` all-reduce once, on the last micro-batch. loss_of
    returns (loss, {name: (real, fake) logit means, or (value,)}); returns the means over
    micro-batches."""
    n, loss_sum, logits = len(micro), 0.0, {}
    for m, batch in enumerate(micro):
        with contextlib.ExitStack() as stack:
            if m < n - 1:
                for dp in wrapped:
                    stack.enter_context(dp.no_sync())
            stack.enter_context(power_iterations_paused(nets, paused=m > 0))
            loss, lg = loss_of(batch)
            (loss / n).backward()
        loss_sum = loss_sum + loss.detach() / n
        for k, values in lg.items():
            logits[k] = tuple(a + v / n for a, v in zip(logits.get(k, (0.0,) * len(values)), values))
    return loss_sum, logits


# -----------------------------------------------------------------------------
# The D and G steps (pure functions of modules and tensors: these are what --compile compiles)

def generate(G, cfg: StageConfig, batch: dict) -> torch.Tensor:
    """A fake batch: G1(z, y) for stage 1; for the upscaling stages, Gup on the window's
    conditioning with its context, cropped to the window: a sampling chunk (upscale_chunk).
    The noise is batch["z"] where the batch brings it (the fixed sample grids), else fresh."""
    y = batch["y"]
    B = y.shape[0]
    if cfg.stage == 1:
        z = batch.get("z", None)
        return G(torch.randn(B, cfg.out_frames, cfg.z_dim, device=y.device) if z is None else z, y)
    c = batch["c_context"]                                        # (B, 3, Tc + 2 context, Hc, Wc)
    z = batch.get("z", None)
    if z is None:
        z = torch.randn(B, cfg.z_dim, *c.shape[2:], device=y.device)  # noise for every chunk frame
    return upscale_chunk(G, c, z, y, cfg.context)                 # (B, 3, T, H, W): the window


def d_loss(G, D_s, D_t, D_m, cfg: StageConfig, batch: dict, lambda_m: float, mismatch: bool):
    """Hinge over D_s + D_t (+ lambda_m D_m) on real and fake; real and fake go through each D
    as one batch; D_s scores batch["frames"] where the batch brings them (step_noise). Logits
    and losses are float32, under bf16 autocast too. Returns (loss, logits) with
    logits[name] = (real, fake) means."""
    x_real, c, y, frames = batch["x"], batch.get("c"), batch["y"], batch.get("frames")
    B = x_real.shape[0]
    with torch.no_grad():
        x_fake = generate(G, cfg, batch)
    assert x_fake.shape == x_real.shape, f"G made {tuple(x_fake.shape)}, data is {tuple(x_real.shape)}"
    x, yy = torch.cat([x_real, x_fake]), torch.cat([y, y])                 # (2B, 3, T, H, W)
    frames = None if frames is None else frames.flatten(0, 1)               # (2B, k): real, fake
    logits_s, logits_t = D_s(x, yy, frames).float(), D_t(x, yy).float()     # (2B,)
    loss = d_hinge(logits_s[:B], logits_s[B:]) + d_hinge(logits_t[:B], logits_t[B:])
    logits = {"s": logits_s, "t": logits_t}
    if D_m is not None:
        pairs_x, pairs_c = [x_real, x_fake], [c, c]
        if mismatch:  # a real window with another video's view is a fake pair too
            pairs_x.append(x_real)
            pairs_c.append(c.roll(1, dims=0))
        logits_m = D_m(torch.cat(pairs_x), torch.cat(pairs_c), y.repeat(len(pairs_x))).float()
        loss_m = d_hinge(logits_m[:B], logits_m[B:2 * B])
        if mismatch:
            loss_m = loss_m + d_hinge_negative(logits_m[2 * B:])
        loss = loss + lambda_m * loss_m
        logits["m"] = logits_m[:2 * B]
    return loss, {k: (v[:B].mean().detach(), v[B:].mean().detach()) for k, v in logits.items()}


def g_loss(G, D_s, D_t, D_m, cfg: StageConfig, batch: dict, lambda_m: float, lambda_rec: float):
    """Minus the mean scores of the same discriminators on a fresh fake batch (float32); for the
    upscalers plus lambda_rec times rec, the mean |x_fake - x_real| over the window (pix2pix's L1
    term; it needs the real window, which the batch brings). Returns (loss, {"rec": (rec,)})."""
    c, y, frames = batch.get("c"), batch["y"], batch.get("frames")
    x_fake = generate(G, cfg, batch)
    loss = g_hinge(D_s(x_fake, y, None if frames is None else frames[1]).float()) + g_hinge(D_t(x_fake, y).float())
    if D_m is not None:
        loss = loss + lambda_m * g_hinge(D_m(x_fake, c, y).float())
    if cfg.stage == 1:
        return loss, {}
    fake = x_fake if lambda_rec else x_fake.detach()  # at 0, rec is only logged
    rec = (fake.float() - batch["x"].float()).abs().mean()
    return loss + lambda_rec * rec, {"rec": (rec.detach(),)}


@torch.no_grad()
def ema_update(G_ema, G, decay: float, step: int) -> None:
    """G_ema <- lerp towards G. The decay warms up as min(decay, (1 + step) / (10 + step)), as in
    tf.train.ExponentialMovingAverage, so early samples are not stuck at the init. Buffers (BN
    running stats, spectral-norm vectors) are copied: G_ema samples in eval mode with them."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - d)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def grounding_error(x_fake: torch.Tensor, c: torch.Tensor) -> float:
    """mean |view(x_fake, 2, 2) - c|: how far an upscaled window strays from its view (0 = exact).
    x_fake (B, 3, T, H, W), c (B, 3, T/2, H/2, W/2), both in [-1, 1]."""
    return (view(x_fake, 2, 2) - c).abs().mean().item()


# -----------------------------------------------------------------------------
# Samples, checkpoints, status

@torch.no_grad()
def write_samples(path: str, G_ema, cfg: StageConfig, fixed: dict) -> float | None:
    """Stage 1: a grid GIF, one row per class, from the fixed z. Stages >= 2: rows of
    [upsample(c), the interpolation floor | G_ema's window | real window] for fixed held-out
    windows; returns the grounding error on them (None for stage 1)."""
    if cfg.stage == 1:
        x = generate(G_ema, cfg, fixed)                                     # (N, 3, T, H, W)
        write_gif(path, video_grid(to_uint8(x.float().cpu()), nrow=fixed["nrow"]))
        return None
    x = generate(G_ema, cfg, fixed)                                        # (N, 3, T, H, W)
    c, x_real = fixed["c"], fixed["x"]
    rows = torch.stack([upsample(c), x, x_real], dim=1).flatten(0, 1)      # (3N, 3, T, H, W)
    write_gif(path, video_grid(to_uint8(rows.float().cpu()), nrow=3))
    return grounding_error(x, c)


def fixed_inputs(cfg: StageConfig, heldout: StageExamples | None, device: torch.device, seed: int) -> dict:
    """What every sample grid of a run is made from: fixed noise, and for stages >= 2 the first
    windows of `heldout`, examples of the held-out split. Stage 1 shows at most GRID_MAX videos:
    up to 4 per class (a row each), of classes spread evenly over all of them."""
    g = torch.Generator().manual_seed(seed)
    if cfg.stage == 1:
        n_cls = max(cfg.num_classes, 1)
        per_class = max(1, min(4, GRID_MAX // n_cls))
        shown = min(n_cls, GRID_MAX // per_class)
        y = torch.linspace(0, n_cls - 1, shown).round().long().repeat_interleave(per_class)
        z = torch.randn(len(y), cfg.out_frames, cfg.z_dim, generator=g)
        return {"z": z.to(device), "y": y.to(device), "nrow": per_class if per_class > 1 else 8}
    batch = torch.utils.data.default_collate([heldout[i] for i in range(4)])
    batch["z"] = torch.randn(4, cfg.z_dim, *batch["c_context"].shape[2:], generator=g)
    return {k: v.to(device) for k, v in batch.items()}


class CheckpointWriteError(RuntimeError):
    pass


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Atomic and durable: write a temp file, fsync it, rename it over the old one, so ckpt.pt
    is never half-written. If the write fails (disk full, I/O error) the temp file is removed
    and the previous checkpoint stays as it was; raises CheckpointWriteError."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:  # a file object: a failed write raises OSError, not RuntimeError
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        kept = "the previous checkpoint is intact" if os.path.exists(path) else "there is no earlier checkpoint"
        raise CheckpointWriteError(f"could not write {path} ({e}): the disk may be full. Training stopped and "
                                   f"{kept}; free space, then rerun the same command to resume.") from None


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB


class TrainingDiverged(RuntimeError):
    pass


def resolve_config(args: argparse.Namespace, num_classes: int) -> StageConfig:
    overrides = {"num_classes": num_classes}
    if args.frame_stride is not None:
        overrides["frame_stride"] = args.frame_stride
    if args.window is not None:
        overrides["window"] = args.window
    if args.d_ch is not None:
        overrides["d_ch"] = args.d_ch
    if args.stage > 1:  # the context defaults to R, read from the layers of a throwaway Gup
        overrides["context"] = (args.context if args.context is not None else
                                Gup(stage_config(args.preset, args.stage, grounded=args.grounded)).receptive_radius)
        overrides["grounded"] = args.grounded
    return stage_config(args.preset, args.stage, **overrides)


def check_resumable(path: str, ckpt_cfg: StageConfig, cfg: StageConfig) -> None:
    """Refuse a checkpoint of another stage/preset/architecture, naming both and the fix."""
    if (ckpt_cfg.preset, ckpt_cfg.stage) != (cfg.preset, cfg.stage):
        raise ValueError(f"{path} holds stage {ckpt_cfg.stage} of preset {ckpt_cfg.preset!r}, but this run "
                         f"trains stage {cfg.stage} of preset {cfg.preset!r}: pass another --out, or "
                         f"--stage {ckpt_cfg.stage} --preset {ckpt_cfg.preset} to continue that run.")
    if ckpt_cfg != cfg:
        diff = {k: (v, getattr(cfg, k)) for k, v in asdict(ckpt_cfg).items() if getattr(cfg, k) != v}
        raise ValueError(f"{path} was trained with a different config (checkpoint vs now: {diff}); "
                         f"use the same --window/--context/--data, or another --out to start fresh.")


def train_state(step: int, nets: dict, opts: dict, device: torch.device, args: argparse.Namespace,
                cfg: StageConfig) -> dict:
    """The checkpoint: everything needed to continue exactly. nets and opts map checkpoint keys
    (G, G_ema, D_s, D_t, D_m; opt_G, opt_D) to the plain modules (uncompiled, unwrapped) and
    optimizers; a None (D_m under --lambda-m 0) is left out."""
    ckpt = {name: m.state_dict() for name, m in (nets | opts).items() if m is not None}
    rng = {"torch": torch.get_rng_state(),
           **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}
    return {**ckpt, "step": step, "rng": rng, "args": vars(args), "config": asdict(cfg),
            # for a reader without models.py: what the stage maps, (T, H, W) -> (T, H, W)
            "shapes": {"cond": [cfg.cond_frames, cfg.cond_size, cfg.cond_size] if cfg.stage > 1 else None,
                       "out": [cfg.out_frames, cfg.out_size, cfg.out_size], "window": cfg.window}}


def restore_state(path: str, cfg: StageConfig, nets: dict, opts: dict, device: torch.device) -> int:
    """Load a train_state checkpoint into nets and opts (and the RNG); returns its step.
    Refuses one of another stage, preset or architecture, naming the fix."""
    ckpt, ckpt_cfg = load_checkpoint(path)
    check_resumable(path, ckpt_cfg, cfg)
    if nets["D_m"] is not None and "D_m" not in ckpt:
        raise ValueError(f"{path} was trained with --lambda-m 0 (no D_m): keep --lambda-m 0 or use another --out")
    for name, m in (nets | opts).items():
        if m is not None:
            load_weights(m, ckpt[name], path, name)
    torch.set_rng_state(ckpt["rng"]["torch"])
    if device.type == "cuda" and "cuda" in ckpt["rng"]:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
    return ckpt["step"]


# -----------------------------------------------------------------------------
# Bookkeeping: the status line and log, the lock on --out, the stop signals

class Status:
    """The status line and log.jsonl. A step only adds its losses and logit means on the device,
    so the loop never waits for it; a status line reads them (one host sync), checks that they
    are finite, prints their means and appends the same numbers to the log, as nanoGPT does."""

    def __init__(self, out: str, device: torch.device, step: int, main: bool, batch: int):
        self.log_path, self.ckpt_path = os.path.join(out, "log.jsonl"), os.path.join(out, "ckpt.pt")
        self.device, self.batch = device, batch  # batch: the global one, all ranks and micro-batches
        self.sums, self.n, self.data_time, self.skipped = {}, 0, 0.0, 0
        self.t, self.step = time.time(), step  # of the last status line
        self.aside = 0.0  # seconds since then spent on samples, FVD and checkpoints, not training
        if main:
            trim_log(self.log_path)

    def data(self, seconds: float, skipped: torch.Tensor) -> None:
        """A batch came, after `seconds`, with `skipped` bad videos left out of it."""
        self.data_time += seconds
        self.skipped = self.skipped + skipped.sum()  # stays on the device until a status line

    def set_aside(self, seconds: float) -> None:
        """Bookkeeping took `seconds`: the next status line's s/it leaves them out."""
        self.aside += seconds

    def add(self, loss_D: torch.Tensor, loss_G: torch.Tensor, logits: dict) -> None:
        """logits: {D name: (real, fake) means}, and {stat name: (value,)} (the upscalers' rec)."""
        stats = {"loss_D": loss_D, "loss_G": loss_G}
        for k, values in logits.items():
            if len(values) == 2:
                stats[f"D_{k}_real"], stats[f"D_{k}_fake"] = values
            else:
                stats[k], = values
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.n += 1

    def means(self) -> dict:
        values = torch.stack(list(self.sums.values())).tolist()  # the host sync
        return {k: v / self.n for k, v in zip(self.sums, values)}

    def check_finite(self, step: int, nets: dict | None = None) -> None:
        """Raise TrainingDiverged if a loss since the last status line, or a weight or buffer of
        nets, is NaN or inf. A NaN or inf anywhere in a mean makes the mean NaN or inf, so the
        check covers every step since the last status line."""
        means = self.means() if self.n else {}
        if not all(map(math.isfinite, means.values())):
            where = f"at step {step}" if self.n == 1 else f"in steps {self.step + 1}-{step}"
            what = f"non-finite loss {where} (mean D {means['loss_D']}, G {means['loss_G']})"
        else:
            bad = [name for name, m in (nets or {}).items() if m is not None and not torch.stack(
                [t.isfinite().all() for t in m.state_dict().values() if t.is_floating_point()]).all()]
            if not bad:
                return
            what = f"non-finite weights in {', '.join(bad)} at step {step}"
        raise TrainingDiverged(f"{what}. The last good checkpoint {self.ckpt_path} is left as it was. "
                               f"Try lower --lr-d/--lr-g, or --dtype float32.")

    def log(self, step: int) -> None:
        """The status line and its log record; raises TrainingDiverged on a NaN or inf loss."""
        self.check_finite(step)
        now, steps = time.time(), step - self.step
        rec = {k: round(v, 4) for k, v in self.means().items()}
        s_it = (now - self.t - self.aside) / steps  # training alone: no samples, FVD or checkpoints
        rec.update(step=step, batch=self.batch, s_per_it=round(s_it, 4), it_per_s=round(1 / s_it, 3),
                   data_s_per_it=round(self.data_time / steps, 4), mem_gb=round(memory_gb(self.device), 3),
                   skipped_videos=int(self.skipped))
        ds = [k[2:-5] for k in rec if k.startswith("D_") and k.endswith("_real")]  # s, t, m
        print(f"step {step} | batch {self.batch} | D {rec['loss_D']:.3f} G {rec['loss_G']:.3f} | logits real/fake "
              + " ".join(f"{k} {rec[f'D_{k}_real']:+.2f}/{rec[f'D_{k}_fake']:+.2f}" for k in ds)
              + (f" | rec {rec['rec']:.4f}" if "rec" in rec else "")
              + f" | {s_it:.3f} s/it {1 / s_it:.2f} it/s | data {rec['data_s_per_it']:.3f} s/it"
              + f" | {'GPU ' if self.device.type == 'cuda' else ''}mem {rec['mem_gb']:.2f} GB | skipped {rec['skipped_videos']}", flush=True)
        self.append(rec)
        self.sums, self.n, self.data_time, self.t, self.step, self.aside = {}, 0, 0.0, now, step, 0.0

    def samples(self, step: int, path: str, err: float | None) -> None:
        """Report the sample grid at path, and log an upscaling stage's grounding error on it."""
        if err is not None:
            self.append({"step": step, "grounding_error": round(err, 5)})
        print(f"wrote {path}" + (f" | grounding error {err:.4f}" if err is not None else ""), flush=True)

    def append(self, record: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def trim_log(path: str) -> None:
    """Drop a last line cut short (kill -9 mid-write), so that the next record starts a line."""
    if os.path.exists(path):
        with open(path, "rb+") as f:
            text = f.read()
            if text and not text.endswith(b"\n"):
                f.truncate(text.rfind(b"\n") + 1)


def read_log(path: str) -> list[dict]:
    """The records of a log.jsonl. A last line cut short (the run was killed mid-write) is
    skipped; a bad line anywhere else is an error."""
    with open(path) as f:
        lines = f.read().splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}, line {i + 1} is not a JSON record: {line[:80]!r}") from None
    return records


class Every:
    """Due every `steps` steps, or when `seconds` have passed since it was last due."""

    def __init__(self, steps: int, seconds: float):
        self.steps, self.seconds, self.last = steps, seconds, time.time()

    def __call__(self, step: int, also: bool = False) -> bool:
        now = time.time()
        if step % self.steps == 0 or also or now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class FolderInUse(RuntimeError):
    pass


# A forked child (a DataLoader worker) shares the lock's open file, and so the lock: after a
# kill -9 of the main process it would live on for the seconds the workers take to notice.
# So a forked child closes its copy at once. (Spawned children inherit no file descriptors.)
_held_locks = []


def _drop_locks_in_child() -> None:
    for fd in _held_locks:
        os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


@contextlib.contextmanager
def lock_folder(out: str):
    """Hold an exclusive lock on the run's folder while the run lives: two runs on one --out
    would write the same ckpt.pt. It is an OS lock (flock on out/lock, which says who holds it),
    so the OS drops it when the process dies, kill -9 included: a lock is never stale.
    Raises FolderInUse, naming the holder; where the filesystem has no locks, warns and goes
    on unlocked."""
    fd = os.open(os.path.join(out, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
            raise FolderInUse(f"{out} is in use by another run ({holder}): wait for it to end, stop it, "
                              f"or pass another --out") from None
        except OSError as e:  # a filesystem without locks (e.g. Lustre mounted without flock)
            warnings.warn(f"cannot lock {out} ({e}): nothing stops a second run from using it too")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        _held_locks.append(fd)
        yield
    finally:
        if fd in _held_locks:
            _held_locks.remove(fd)
        os.close(fd)  # releases the lock


class Stop:
    """The stop flag: the signal handler sets it, the loop asks requested() at step boundaries.
    Under DDP, requested() shares it with a collective (MAX over ranks, on a gloo group that
    never waits for a GPU), so every rank stops at the same step."""

    def __init__(self, group):
        self.group, self.signalled = group, False

    def __call__(self, signum, frame) -> None:
        self.signalled = True

    def requested(self) -> bool:
        if self.group is None:
            return self.signalled
        flag = torch.tensor([self.signalled], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag)


@contextlib.contextmanager
def stop_on_signals(distributed: bool, timeout: datetime.timedelta):
    """SIGINT (Ctrl-C), SIGTERM (schedulers) and SIGUSR1 (SLURM's --signal warning) end the run
    at the next step boundary, with a checkpoint, instead of killing it. Yields the Stop flag.
    Its collective runs every step, so a dead or hung rank stops the others within `timeout`."""
    stop = Stop(dist.new_group(backend="gloo", timeout=timeout) if distributed else None)
    old = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# -----------------------------------------------------------------------------

def train(args: argparse.Namespace) -> dict:
    """Train one stage to --max-iters; returns the final state (on every rank; rank 0 saved it)."""
    # --- setup: one process, or one of torchrun's
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = torch.device(args.device)
    timeout = datetime.timedelta(seconds=args.ddp_timeout)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (cuDNN's convs use TF32 by default)
        torch.backends.cudnn.benchmark = True        # a stage's shapes never change: pick conv kernels once
    main = rank == 0
    torch.manual_seed(args.seed)  # the init; the steps' noise comes from step_noise
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    # --- data: the stage's view (windowed, with its conditioning c) of the preset's clips
    clips = make_clips(args, stage_config(args.preset, args.stage))
    cfg = resolve_config(args, clips.num_classes)
    examples = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window, cfg.context, seed=args.seed)
    if args.dry_run:
        print(json.dumps({"args": vars(args), "config": asdict(cfg)}, indent=2))
        return {}
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    if main:
        os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
    # For the whole run: the lock on --out (rank 0's; the ranks share the folder), and the stop
    # signals, which end the loop at a step boundary.
    with (lock_folder(args.out) if main else contextlib.nullcontext(),
          stop_on_signals(world > 1, timeout) as stop):
        if main:
            with open(os.path.join(args.out, "config.json"), "w") as f:
                json.dump({"args": vars(args), "config": asdict(cfg)}, f, indent=2)

        # --- models, optimizers, EMA
        G, D_s, D_t, D_m = build_stage(cfg)
        if args.lambda_m == 0:
            D_m = None  # the ablation: D_m is not built, so nothing of it is in any graph
        Ds = [D for D in (D_s, D_t, D_m) if D is not None]
        for m in [G, *Ds]:
            m.to(device)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        if args.sync_bn and world > 1:  # same parameters and buffers, so checkpoints do not change
            G = cross_replica_bn(G)
        opt_G = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(0.0, 0.999))
        opt_D = torch.optim.Adam([p for D in Ds for p in D.parameters()], lr=args.lr_d, betas=(0.0, 0.999))
        nets = {"G": G, "G_ema": G_ema, "D_s": D_s, "D_t": D_t, "D_m": D_m}  # as the checkpoint names them
        opts = {"opt_G": opt_G, "opt_D": opt_D}
        for name, m in nets.items():  # one line per network (G_ema is a copy of G)
            if main and m is not None and name != "G_ema":
                print(f"{name:3} {sum(p.numel() for p in m.parameters()):>12,} parameters")

        # --- resume: the same command continues the same run, on every rank
        step = 0
        if os.path.exists(ckpt_path):
            step = restore_state(ckpt_path, cfg, nets, opts, device)
            if main:
                print(f"resuming {ckpt_path} at step {step}")
        # Data-parallel wrappers (torchrun): a D step syncs D grads, a G step G grads. The G step
        # calls the Ds unwrapped: it needs no D gradient, and DDP would wait for one.
        G_dp, D_s_dp, D_t_dp, D_m_dp = (DDP(m) if world > 1 and m is not None else m for m in (G, D_s, D_t, D_m))
        wrapped_G = [G_dp] if world > 1 else []
        wrapped_D = [D for D in (D_s_dp, D_t_dp, D_m_dp) if isinstance(D, DDP)]

        # --- compile (optional): the two step functions, modules stay uncompiled for checkpoints
        d_step_fn = torch.compile(d_loss) if args.compile else d_loss
        g_step_fn = torch.compile(g_loss) if args.compile else g_loss

        def d_of(batch: dict):
            with autocast:
                return d_step_fn(G_dp, D_s_dp, D_t_dp, D_m_dp, cfg, batch, args.lambda_m, args.mismatch_negatives)

        def g_of(batch: dict):  # on the last D batch's labels (and real views)
            with autocast:
                return g_step_fn(G_dp, D_s, D_t, D_m, cfg, batch, args.lambda_m, args.lambda_rec)

        loader = torch.utils.data.DataLoader(
            WithIds(examples), batch_size=args.batch_size, num_workers=args.workers,
            pin_memory=device.type == "cuda",
            sampler=StepSampler(step * args.d_steps, args.batch_size * args.grad_accum, rank, world),
            generator=torch.Generator(),  # keeps the global RNG untouched
            worker_init_fn=quiet_worker, persistent_workers=args.workers > 0)
        batches = iter(loader)
        heldout = (StageExamples(make_clips(args, cfg, split="val"), cfg.view_s, cfg.view_t, cfg.window,
                                 cfg.context, seed=args.seed) if main and cfg.stage > 1 else None)
        fixed = fixed_inputs(cfg, heldout, device, args.seed) if main else None

        def micro_batches(tag: int) -> list[dict]:
            """The next batch, as --grad-accum micro-batches on the device with their noise."""
            micro = []
            for _ in range(args.grad_accum):
                t0 = time.time()
                batch = next(batches)
                ids = batch.pop("id")
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                status.data(time.time() - t0, batch["skipped"])
                micro.append({**batch, "id": ids, **step_noise(cfg, ids, batch, args.seed, tag, device)})
            return micro

        # --- the loop: D steps, a G step, EMA, then the bookkeeping
        status = Status(args.out, device, step, main, args.batch_size * args.grad_accum * world)
        step0 = step
        log_due, sample_due = Every(args.log_every, STATUS_SECONDS), Every(args.sample_every, SAMPLE_SECONDS)
        ckpt_due = Every(args.ckpt_every, CKPT_SECONDS)
        while step < args.max_iters and not stop.requested():
            for _ in range(args.d_steps):  # D steps, each on a fresh real batch
                micro = micro_batches(D_NOISE)
                opt_D.zero_grad(set_to_none=True)
                loss_D, logits = accumulate(d_of, micro, wrapped_D, [G, *Ds])
                opt_D.step()

            for D in Ds:  # G step on the last D batch, with fresh noise: D grads not needed
                D.requires_grad_(False)
            micro = [{**b, **step_noise(cfg, b["id"], b, args.seed, G_NOISE, device)} for b in micro]
            opt_G.zero_grad(set_to_none=True)
            loss_G, rec = accumulate(g_of, micro, wrapped_G, [G, *Ds])
            opt_G.step()
            for D in Ds:
                D.requires_grad_(True)
            ema_update(G_ema, G, args.ema, step)
            step += 1
            status.add(loss_D, loss_G, {**logits, **rec})

            # --- bookkeeping: rank 0 only; none of it touches the training RNG
            if not main:
                continue
            if log_due(step, also=step == args.max_iters):
                status.log(step)
            t_aside = time.time()
            if sample_due(step, also=step == step0 + 1):
                path = os.path.join(args.out, "samples", f"step{step:07d}.gif")
                with autocast:
                    status.samples(step, path, write_samples(path, G_ema, cfg, fixed))
            if args.fvd_every and step % args.fvd_every == 0:  # the stage's rung of the ladder
                t_fvd = time.time()  # logged: what a score costs (s/it leaves it out)
                fvd_score = stage_fvd(cfg, G_ema, args.data, args.fvd_n, device, os.path.join(args.out, "fvd-stats"))
                status.append({"step": step, "fvd": round(fvd_score, 2), "fvd_n": args.fvd_n,
                               "fvd_s": round(time.time() - t_fvd, 2)})
                print(f"step {step} | FVD {fvd_score:.1f} ({args.fvd_n} videos)", flush=True)
            if ckpt_due(step):
                status.check_finite(step, nets)  # never a checkpoint of a diverged run
                save_checkpoint(ckpt_path, train_state(step, nets, opts, device, args, cfg))
            status.set_aside(time.time() - t_aside)

        # --- final checkpoint (rank 0), checked like every other
        ckpt = train_state(step, nets, opts, device, args, cfg)
        if main:
            status.check_finite(step, nets)
            save_checkpoint(ckpt_path, ckpt)
        how = f"{'done' if step >= args.max_iters else 'stopped'} at step {step}"
        line = f"{how}: {ckpt_path}" if main else f"rank {rank}: {how}"
        print(line + "\n", end="", flush=True)  # one write: under PYTHONUNBUFFERED, ranks' lines never interleave
    if world > 1:
        dist.destroy_process_group()
    return ckpt


def lost_rank(e: RuntimeError) -> bool:
    """Did a collective fail: another rank died (connection reset) or hung past --ddp-timeout?"""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1 and (
        isinstance(e, dist.DistError) or any(s in str(e) for s in ("gloo", "NCCL", "c10d")))


if __name__ == "__main__":
    args = get_args()
    try:
        train(args)
    except (TrainingDiverged, CheckpointWriteError, FolderInUse, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    except RuntimeError as e:
        if not lost_rank(e):
            raise
        raise SystemExit(f"error: rank {os.environ['RANK']}: another rank died, or hung for more than --ddp-timeout "
                         f"{args.ddp_timeout:g} s; see its log. Rerun the same command to resume from the last "
                         f"checkpoint. ({str(e).splitlines()[0]})") from None
