"""Train ONE stage of SSW-GAN: `python train.py --stage N` (DESIGN.md section 4).

Stage 1 (G1) makes whole videos at the stage's view of the clips; stages >= 2 (Gup) learn to
upscale windows of w frames, conditioned on the real view c = view(x, 2, 2) of the same
window, so every stage trains on real data alone: in any order, even at the same time.

    python train.py --stage 1                     # default preset ssw-128, built-in data
    python train.py --stage 2 --preset tiny       # an upscaling stage at toy size
    python train.py --stage 1 --data PREPARED     # videos prepare.py made (or a folder of videos)
    torchrun --nproc_per_node=K train.py --stage N   # data-parallel (gloo on CPU, nccl on GPU)

This file holds the flags, building a stage and the loop; the objective is losses.py's. Under
torchrun, K processes x --batch-size x --grad-accum micro-batches make one batch, and any split
of it trains what one process at the whole batch trains (distributed.py, docs/scaling.md).
Outputs in --out (default out/stageN; runfolder.py): ckpt.pt (rerunning the same command
resumes), config.json, log.jsonl, samples/*.gif. SIGINT, SIGTERM or SIGUSR1 end a run at the
next step with a checkpoint (exit code 0).
"""
import argparse
import contextlib
import copy
import datetime
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

import torch

import distributed
from data import StageExamples, open_clips
from distributed import StepSampler, WithNoise, cross_replica_bn, micro_batch, with_noise
from evaluate import stage_scores
from losses import LAMBDA_M, LAMBDA_REC, d_loss, g_loss
from models import PRESETS, Gup, StageConfig, build_stage, fake_batch, stage_config
from runfolder import (CheckpointWriteError, Every, FolderInUse, Status, TrainingDiverged, atomic_file, init_generator,
                       lock_folder, quiet_worker, restore_state, save_checkpoint, stop_on_signals, train_state)
from sample import fixed_inputs, write_samples
from videos import Clips


@dataclass(frozen=True)
class Recipe:
    """How a stage trains by default: what the optimiser and loss flags fall back to. The
    defaults are DVD-GAN's (BigGAN's Adam, 2 D steps, EMA 0.999), made for batches of 512 over
    100k+ steps; a preset for a CPU has its own row in RECIPES, found by measurement
    (docs/demo.md)."""
    batch_size: int | None = None         # None: 32 on a GPU, 2 on a CPU
    max_iters: int = 200_000
    lr_g: float = 1e-4
    lr_d: float = 5e-4
    beta1: float = 0.0                    # Adam's beta1, G and D; beta2 is 0.999
    d_steps: int = 2
    ema: float = 0.999
    lambda_rec: float = LAMBDA_REC        # upscalers' L1 term


# A preset without a row trains every stage with Recipe(). The demo's steps are those of its
# chain in checkpoints/: what 12, 10 and 10 minutes gave on a 2-core CPU (docs/demo.md).
RECIPES: dict[str, list[Recipe]] = {
    "demo": [Recipe(batch_size=16, max_iters=962, lr_g=5e-4, lr_d=5e-4, d_steps=1),
             Recipe(batch_size=16, max_iters=421, lr_g=5e-4, lr_d=5e-4, d_steps=1),
             Recipe(batch_size=16, max_iters=144, lr_g=5e-4, lr_d=5e-4, d_steps=1)],
}
CPU_PRESET = "demo"  # what `python train.py --stage N` trains on a machine without a GPU

STATUS_SECONDS = 30      # a status line at least this often, whatever --log-every says
SAMPLE_SECONDS = 240     # a sample grid at least this often (and after the first step)
CKPT_SECONDS = 600       # a checkpoint at least this often


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stage", type=int, default=1, help="which stage to train (1-based)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help=f"row of the preset table (default: ssw-128 on a GPU, {CPU_PRESET} on a CPU)")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (built-in bouncing shapes), a folder prepare.py wrote, or a folder of videos")
    p.add_argument("--out", default=None, help="output folder (default out/stageN)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="videos per D and per G step, per process and micro-batch (default: the preset's "
                        "recipe, else 32 on a GPU and 2 on a CPU)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per D and per G step: the batch is processes x batch-size x this")
    p.add_argument("--sync-bn", action="store_true",
                   help="under DDP, G's batch norm normalises over the whole batch of all processes "
                        "(cross-replica BN, as DVD-GAN and BigGAN); else over each process's micro-batch")
    p.add_argument("--ddp-timeout", type=float, default=1800,
                   help="under DDP, seconds a collective waits for the other ranks before the job "
                        "exits with an error (a dead or hung rank); rank 0 alone runs samples, FVD and "
                        "checkpoints meanwhile, so keep it above their time")
    p.add_argument("--max-iters", type=int, default=None,
                   help="G steps to train for (default: the preset's recipe, train.RECIPES; else 200,000)")
    p.add_argument("--window", type=int, default=None, help="stages >= 2: output frames per window (even)")
    p.add_argument("--frame-stride", type=int, default=None,
                   help="source frames between two clip frames (default: the preset's, 1); with data "
                        "prepared at 25 fps, 2 makes a 100-frame clip span 8 s; recorded in the checkpoint")
    recipe = "(default: the preset's recipe, train.RECIPES; DVD-GAN's: %s)"
    p.add_argument("--lr-g", type=float, default=None, help="Adam learning rate of G " + recipe % Recipe.lr_g)
    p.add_argument("--lr-d", type=float, default=None, help="Adam learning rate of the Ds " + recipe % Recipe.lr_d)
    p.add_argument("--beta1", type=float, default=None, help="Adam's beta1 for G and the Ds " + recipe % Recipe.beta1)
    p.add_argument("--d-steps", type=int, default=None, help="D steps per G step " + recipe % Recipe.d_steps)
    p.add_argument("--ema", type=float, default=None,
                   help="decay of G_ema, warmed up over the first steps " + recipe % Recipe.ema)
    p.add_argument("--adversarial", action=argparse.BooleanOptionalAction, default=True,
                   help="stages >= 2: --no-adversarial trains G on the L1 term alone, with no D built or "
                        "stepped: the baseline the adversarial game must beat, and ESRGAN's pre-training")
    p.add_argument("--init-g", default=None,
                   help="stages >= 2: a checkpoint of the same stage whose G and G_ema start this run "
                        "(ESRGAN's recipe: an L1-trained start, then the game); ignored when resuming")
    p.add_argument("--crop", type=int, default=None,
                   help="stages >= 2: train on crop x crop patches of each window (default: the preset's); "
                        "sampling still makes whole frames; recorded in the checkpoint")
    p.add_argument("--context", type=int, default=None,
                   help="stages >= 2: conditioning frames of context each side of a training window, "
                        "as the sampler's overlap gives (default: the stage's receptive radius R; "
                        "0 trains on the window's conditioning alone)")
    p.add_argument("--grounded", action=argparse.BooleanOptionalAction, default=True,
                   help="stages >= 2: project Gup's output onto the videos whose view(x, 2, 2) is its "
                        "conditioning (models.ground), so it is grounded by construction; "
                        "--no-grounded leaves that to D_m alone, as the paper does")
    p.add_argument("--d-ch", type=int, default=None, help="base channel width of D_s, D_t and D_m (default: the "
                                                          "preset's, G's width); recorded in the checkpoint")
    p.add_argument("--d-pool", default="mean", choices=["mean", "sum"],
                   help="how the Ds' heads pool over pixels and frames: mean, or sum as BigGAN/DVD-GAN "
                        "(under a sum, Ds trained against an upscaler's start stay at chance); recorded in the checkpoint")
    p.add_argument("--lambda-m", type=float, default=LAMBDA_M,
                   help="weight of the matching discriminator D_m (stages >= 2); 0 removes D_m")
    p.add_argument("--lambda-rec", type=float, default=None,
                   help="stages >= 2: weight of the L1 distance between G's window and the real one in "
                        "the G step (pix2pix's reconstruction term); 0: the paper's adversarial G alone "
                        + recipe % Recipe.lambda_rec)
    p.add_argument("--mismatch-negatives", action="store_true",
                   help="D_m also sees real windows paired with another video's view, as fakes")
    p.add_argument("--seed", type=int, default=0, help="seeds init, noise and data order")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 runs forward passes under autocast; weights stay float32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each step's forward whole (D step: G's fakes, the Ds, L_D; G step: G, the Ds, "
                        "L_G), its backward from the same graph; checkpoints hold the plain modules")
    p.add_argument("--channels-last", action="store_true",
                   help="the batch's videos in channels_last_3d memory (N, T, H, W, C in memory), which the convs "
                        "carry through: the layout cuDNN's fastest 3D-conv kernels take on GPUs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: load in-process)")
    p.add_argument("--log-every", type=int, default=50, help="status line every N steps (and every 30 s)")
    p.add_argument("--fvd-every", type=int, default=0,
                   help="FVD of G_ema every N steps, appended to log.jsonl (0: never; on a CPU each costs "
                        "minutes): stage 1's samples, or an upscaler's output on real views of its input, "
                        "against real views at the stage's size (the stage's rung of evaluate.py's ladder)")
    p.add_argument("--fvd-n", type=int, default=64, help="videos per set for --fvd-every")
    p.add_argument("--sample-every", type=int, default=1000, help="sample grid every N steps (and every 4 min)")
    p.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (and every 10 min)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    if args.frame_stride is not None and args.frame_stride < 1:
        p.error(f"--frame-stride {args.frame_stride}: must be >= 1 (1 keeps every frame)")
    if args.out is None:
        args.out = os.path.join("out", f"stage{args.stage}")
    gpu = args.device.startswith("cuda")
    args.cpu_default = args.preset is None and not gpu  # said in the run's first line
    if args.preset is None:
        args.preset = "ssw-128" if gpu else CPU_PRESET
    if not 1 <= args.stage <= len(PRESETS[args.preset]):
        p.error(f"--stage {args.stage}: preset {args.preset!r} has stages 1..{len(PRESETS[args.preset])}")
    recipe = RECIPES.get(args.preset, [Recipe()] * len(PRESETS[args.preset]))[args.stage - 1]
    for f in fields(Recipe):  # a flag left unset takes the recipe's value
        if getattr(args, f.name) is None:
            setattr(args, f.name, getattr(recipe, f.name))
    if args.batch_size is None:
        args.batch_size = 32 if gpu else 2
    if not args.adversarial:
        if args.stage == 1:
            p.error("--no-adversarial is for the upscalers (stages >= 2): stage 1 has no L1 term to train on")
        args.d_steps = 0  # no D to step
    return args


def make_clips(args: argparse.Namespace, cfg: StageConfig, split: str = "train") -> Clips:
    """The preset's full-resolution clips of one split ("train", or "val": held out, for sample
    grids and the grounding error): uint8 (T, H, W, 3) and a label per item."""
    stride = cfg.frame_stride if args.frame_stride is None else args.frame_stride
    return open_clips(args.data, cfg.clip_frames, cfg.clip_size, args.seed, stride, split=split)


def resolve_config(args: argparse.Namespace, num_classes: int) -> StageConfig:
    """The preset's row for the stage, with the flags that change the networks applied."""
    overrides = {"num_classes": num_classes, "d_pool": args.d_pool}
    if args.frame_stride is not None:
        overrides["frame_stride"] = args.frame_stride
    if args.window is not None:
        overrides["window"] = args.window
    if args.crop is not None:
        overrides["crop"] = args.crop
    if args.d_ch is not None:
        overrides["d_ch"] = args.d_ch
    if args.stage > 1:  # the context defaults to R, read from the layers of a throwaway Gup
        overrides["context"] = (args.context if args.context is not None else
                                Gup(stage_config(args.preset, args.stage, grounded=args.grounded)).receptive_radius)
        overrides["grounded"] = args.grounded
    return stage_config(args.preset, args.stage, **overrides)


# -----------------------------------------------------------------------------
# The fake batch, and G_ema

@torch.no_grad()
def ema_update(G_ema, G, decay: float, step: int) -> None:
    """G_ema <- lerp towards G. The decay warms up as min(decay, (1 + step) / (10 + step)), as in
    tf.train.ExponentialMovingAverage, so early samples are not stuck at the init. Buffers (BN
    running stats, spectral-norm vectors) are copied: G_ema samples in eval mode with them."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - d)
    torch._foreach_copy_(list(G_ema.buffers()), list(G.buffers()))


def optimizers(G, Ds: list, args: argparse.Namespace) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(opt_G, opt_D): Adam with betas (--beta1, 0.999) (BigGAN's: 0), opt_D over all the Ds' parameters.
    foreach: each update is a dozen multi-tensor ops, whatever the number of tensors (torch's
    default on GPUs, but not on the CPU or the meta device bench.py profile counts on)."""
    betas = (args.beta1, 0.999)
    opt_G = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=betas, foreach=True)
    opt_D = torch.optim.Adam([p for D in Ds for p in D.parameters()], lr=args.lr_d, betas=betas, foreach=True)
    return opt_G, opt_D


# -----------------------------------------------------------------------------
# The forward of a D step and of a G step: what --compile compiles

def d_forward(G, D_s, D_t, D_m, cfg: StageConfig, lambda_m: float, mismatch: bool,
              batch: dict) -> tuple[torch.Tensor, dict]:
    """A D step's forward: G's videos for the batch (no grad), and the Ds on them and on the real
    ones: (L_D, the mean logits) (losses.d_loss)."""
    with torch.no_grad():
        x_fake = fake_batch(G, cfg, batch)
    return d_loss(D_s, D_t, D_m, batch, x_fake, lambda_m, mismatch)


def g_forward(G, D_s, D_t, D_m, cfg: StageConfig, lambda_m: float, lambda_rec: float,
              batch: dict) -> tuple[torch.Tensor, dict]:
    """A G step's forward: G's videos with their graph, and L_G (losses.g_loss; Ds None: the L1
    term alone)."""
    return g_loss(D_s, D_t, D_m, batch, fake_batch(G, cfg, batch), lambda_m, lambda_rec)


def compiled_step(forward, compile: bool, device: torch.device, *nets_and_settings):
    """forward (d_forward or g_forward) with its leading arguments bound, as the loop calls it:
    step(batch). Under --compile, forward is torch.compile'd whole (fullgraph: a graph break is
    an error, not a silent slow path; dynamic=False: a stage's shapes never change), its backward
    compiled from the same graph; the optimizer steps and EMA stay eager. Compiled before
    binding, so each step's forward has its own code and graph (a partial compiled as such
    would share one wrapper, and the G step would first try the D step's guards). Spectral norm's
    weights come in ready (distributed.spectral_norm_once)."""
    if compile:
        if device.type == "cuda" and torch.__version__ < "2.14":
            # Inductor's loop reordering failed on the D step on CUDA with torch 2.11 ("'7 - ((0))' is
            # not comparable"); kept off through 2.13, unverified on a GPU since
            torch._inductor.config.loop_ordering_after_fusion = False
        forward = torch.compile(forward, fullgraph=True, dynamic=False)
    return functools.partial(forward, *nets_and_settings)


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """A collated batch (nested dicts of tensors) on the device; channels_last: its 5D tensors
    (videos, views, noise maps) in channels_last_3d memory."""
    def move(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last_3d) if channels_last and t.dim() == 5 else t

    return {k: to_device(v, device, channels_last) if isinstance(v, dict) else move(v) for k, v in batch.items()}


# -----------------------------------------------------------------------------

def train(args: argparse.Namespace) -> dict:
    """Train one stage to --max-iters; returns the final state (on every rank; rank 0 saved it)."""
    # --- setup: one process, or one of torchrun's
    timeout = datetime.timedelta(seconds=args.ddp_timeout)
    rank, world, device = distributed.setup(args.device, timeout)
    main = rank == 0
    if main and args.cpu_default:
        print(f"no GPU: training the CPU demo preset {args.preset!r} (docs/demo.md); --preset ssw-128 trains the "
              f"paper's 128x128 videos", flush=True)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (cuDNN's convs use TF32 by default)
        torch.backends.cudnn.benchmark = True        # a stage's shapes never change: pick conv kernels once
    torch.manual_seed(args.seed)  # the init; the steps' noise comes with their batches (WithNoise)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    # --- data: the stage's view (windowed, with its conditioning c) of the preset's clips
    clips = make_clips(args, stage_config(args.preset, args.stage))
    cfg = resolve_config(args, clips.num_classes)
    examples = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window, cfg.context, seed=args.seed, crop=cfg.crop)
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
            with atomic_file(os.path.join(args.out, "config.json"), "w") as f:
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
        opt_G, opt_D = optimizers(G, Ds, args)
        nets = {"G": G, "G_ema": G_ema, "D_s": D_s, "D_t": D_t, "D_m": D_m}  # as the checkpoint names them
        opts = {"opt_G": opt_G, "opt_D": opt_D}
        for name, m in nets.items():  # one line per network (G_ema is a copy of G)
            if main and m is not None and name != "G_ema":
                print(f"{name:3} {sum(p.numel() for p in m.parameters()):>12,} parameters")

        # --- resume: the same command continues the same run, on every rank; or start G from --init-g
        step = 0
        if os.path.exists(ckpt_path):
            step = restore_state(ckpt_path, cfg, nets, opts, device)
            if main:
                print(f"resuming {ckpt_path} at step {step}")
        elif args.init_g:
            init_generator(args.init_g, cfg, G, G_ema)
            if main:
                print(f"G and G_ema start from {args.init_g}")

        # --- the steps' forwards. Under torchrun, DDP wrappers: a D step syncs D grads, a G step G
        # grads; the G step calls the Ds unwrapped (it needs no D grad, and DDP would wait for one).
        # Under --compile, each forward is one graph (compiled_step), calling the plain nets (Dynamo
        # cannot trace DDP's forward inside it): under torchrun the loop then averages the
        # gradients itself (average_grads). `nets` keeps the plain modules for checkpoints.
        ddp_world = 1 if args.compile else world
        G_ddp, D_s_ddp, D_t_ddp, D_m_ddp = (distributed.wrap(m, ddp_world) for m in (G, D_s, D_t, D_m))
        ddp_G = [G_ddp] if ddp_world > 1 else []  # what micro_batch keeps from syncing before the last
        ddp_D = [D for D in (D_s_ddp, D_t_ddp, D_m_ddp) if ddp_world > 1 and D is not None]
        average_grads = world > 1 and args.compile
        Ds_G = (D_s, D_t, D_m) if args.adversarial else (None, None, None)  # the Ds the G loss asks
        d_step = compiled_step(d_forward, args.compile, device, G_ddp, D_s_ddp, D_t_ddp, D_m_ddp, cfg,
                               args.lambda_m, args.mismatch_negatives)
        g_step = compiled_step(g_forward, args.compile, device, G_ddp, *Ds_G, cfg, args.lambda_m, args.lambda_rec)

        # --- data: the loader, and the sample grids' fixed inputs
        loader = torch.utils.data.DataLoader(
            WithNoise(examples, cfg, args.seed, args.d_steps, args.batch_size * args.grad_accum * world),
            batch_size=args.batch_size, num_workers=args.workers,
            pin_memory=device.type == "cuda",
            sampler=StepSampler(step * max(args.d_steps, 1), args.batch_size * args.grad_accum, rank, world),
            generator=torch.Generator(),  # keeps the global RNG untouched
            worker_init_fn=quiet_worker, persistent_workers=args.workers > 0)
        batches = iter(loader)
        heldout = (StageExamples(make_clips(args, cfg, split="val"), cfg.view_s, cfg.view_t, cfg.window,
                                 cfg.context, seed=args.seed) if main and cfg.stage > 1 else None)
        fixed = fixed_inputs(cfg, heldout, device, args.seed) if main else None

        def next_batch() -> list[dict]:
            """The next batch, as --grad-accum micro-batches on the device, each with the noise of
            its D step and of its G step (with_noise picks one)."""
            micro = []
            for _ in range(args.grad_accum):
                t0 = time.time()
                batch = next(batches)
                status.data(time.time() - t0, batch.pop("skipped"))
                micro.append(to_device(batch, device, args.channels_last))
            return micro

        # --- the loop: D steps, a G step, EMA, then the bookkeeping
        status = Status(args.out, device, step, main, args.batch_size * args.grad_accum * world)

        def score_fvd(step: int) -> None:
            """The stage's rung of the ladder, appended to log.jsonl: G_ema's FVD, its start's and the
            real floor's (cached after the first), the headroom closed, recognizability, the cost."""
            t_fvd = time.time()  # logged: what a score costs (s/it leaves it out)
            s = stage_scores(cfg, G_ema, args.data, args.fvd_n, device, os.path.join(args.out, "fvd-stats"))
            headroom = None if math.isnan(s["headroom"]) else round(s["headroom"], 3)
            recognized = None if s["recognizability"] is None else round(s["recognizability"], 3)
            status.append({"step": step, "fvd": round(s["fvd"], 2), "fvd_start": round(s["start"], 2),
                           "fvd_real": round(s["real"], 2), "headroom": headroom, "recognizability": recognized,
                           "fvd_n": args.fvd_n, "fvd_s": round(time.time() - t_fvd, 2)})
            print(f"step {step} | FVD {s['fvd']:.1f} (start {s['start']:.1f}, real {s['real']:.1f}: headroom closed "
                  f"{headroom}) | recognizability {recognized} ({args.fvd_n} videos)", flush=True)

        if main and args.fvd_every and step == 0:  # the curve starts at the stage's own start
            score_fvd(0)
        step0 = step
        log_due, sample_due = Every(args.log_every, STATUS_SECONDS), Every(args.sample_every, SAMPLE_SECONDS)
        ckpt_due = Every(args.ckpt_every, CKPT_SECONDS)
        while step < args.max_iters and not stop.requested():
            for _ in range(args.d_steps):  # D steps, each on a fresh real batch
                micro = next_batch()
                opt_D.zero_grad(set_to_none=True)
                for m, batch in enumerate(micro):  # --grad-accum; DDP syncs grads on the last (no_sync before)
                    with micro_batch(m, len(micro), ddp_D, trained=Ds, others=[G]):
                        with autocast:
                            loss_D, stats = d_step(with_noise(batch, "d_noise"))
                        (loss_D / len(micro)).backward()
                    status.add({"loss_D": loss_D, **stats}, weight=1 / (args.d_steps * len(micro)))
                if average_grads:
                    distributed.average_gradients(Ds)
                opt_D.step()
            if not args.adversarial:  # the L1 baseline: no D steps, so the G step draws its batch
                micro = next_batch()

            for D in Ds:  # G step on the last D batch, with fresh noise: D grads not needed
                D.requires_grad_(False)
            opt_G.zero_grad(set_to_none=True)
            for m, batch in enumerate(micro):
                with micro_batch(m, len(micro), ddp_G, trained=[G], others=Ds):
                    with autocast:
                        loss_G, stats = g_step(with_noise(batch, "g_noise"))
                    (loss_G / len(micro)).backward()
                status.add({"loss_G": loss_G, **stats}, weight=1 / len(micro))
            if average_grads:
                distributed.average_gradients([G])
            opt_G.step()
            for D in Ds:
                D.requires_grad_(True)
            ema_update(G_ema, G, args.ema, step)
            step += 1

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
            if args.fvd_every and step % args.fvd_every == 0:
                score_fvd(step)
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
    distributed.teardown()
    return ckpt


if __name__ == "__main__":
    args = get_args()
    try:
        train(args)
    except (TrainingDiverged, CheckpointWriteError, FolderInUse, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    except RuntimeError as e:
        if not distributed.lost_rank(e):
            raise
        raise SystemExit(f"error: rank {os.environ['RANK']}: another rank died, or hung for more than --ddp-timeout "
                         f"{args.ddp_timeout:g} s; see its log. Rerun the same command to resume from the last "
                         f"checkpoint. ({str(e).splitlines()[0]})") from None
