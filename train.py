"""Train ONE stage of SSW-GAN: `python train.py --stage N` (DESIGN.md section 4).

Stage 1 (G1) makes whole videos at the stage's view of the clips; stages >= 2 (Gup) learn to
upscale windows of w frames, conditioned on the real view c = view(x, 2, 2) of the same
window, so every stage trains on real data alone: in any order, even at the same time.

    python train.py --stage 1                     # preset ssw-128 (demo on a CPU), built-in data
    python train.py --stage 2 --preset tiny       # an upscaling stage at toy size
    python train.py --stage 1 --data PREPARED     # videos prepare.py made (or a folder of videos)
    torchrun --nproc_per_node=K train.py --stage N   # data-parallel (gloo on CPU, nccl on GPU)

This file holds the flags, a stage's run (Run), the loop and its bookkeeping; the objective is
losses.py's; a batch split over processes trains as one (distributed.py). Outputs in --out
(runfolder.py): ckpt.pt (rerunning the same command resumes), config.json, log.jsonl, samples/.
SIGINT, SIGTERM or SIGUSR1 end a run at the next step with a checkpoint. Flags: docs/training.md.
"""
import argparse
import contextlib
import copy
import datetime
import json
import os
import time
from dataclasses import asdict, dataclass, fields

import torch

import distributed
from data import StageExamples, open_clips
from distributed import StepSampler, WithNoise, compiled_step, cross_replica_bn, micro_batch, to_device, with_noise
from evaluate import quick_scores, stage_scores
from losses import LAMBDA_M, LAMBDA_REC, adv_weight, d_forward, g_forward
from models import PRESETS, Gup, StageConfig, build_stage, ema_update, stage_config
from runfolder import (CheckpointWriteError, Every, FolderInUse, Status, Stop, TrainingDiverged, atomic_file,
                       init_generator, lock_folder, quiet_worker, restore_state, save_checkpoint, stop_on_signals,
                       train_state)
from sample import fixed_inputs, write_samples
from videos import Clips


@dataclass(frozen=True)
class Recipe:
    """How a stage trains by default, what the optimiser and loss flags fall back to: DVD-GAN's (BigGAN's
    Adam, 2 D steps, EMA 0.999) for batches of 512 over 100k+ steps; a CPU preset's row: docs/demo.md."""
    batch_size: int | None = None         # None: 32 on a GPU, 2 on a CPU
    max_iters: int = 200_000
    lr_g: float = 1e-4
    lr_d: float = 5e-4
    beta1: float = 0.0                    # Adam's beta1, G and D; beta2 is 0.999
    d_steps: int = 2
    ema: float = 0.999
    lambda_rec: float = LAMBDA_REC        # upscalers' L1 term
    r1: float = 0.0                       # R1's gamma on the Ds (0: none, as DVD-GAN)
    augment: bool = False                 # DiffAugment's translation of what D_s and D_t see
    aux_class: float = 0.0                # weight of the Ds' auxiliary class head (0: none, as DVD-GAN)
    adversarial: bool = True              # upscalers: False trains G on the L1 term alone, no D built
    adv_fade: int = 0                     # upscalers: G's adversarial terms faded in over N steps
    l1_steps: int = 0                     # upscalers: ESRGAN's first phase, N steps of L1 alone in --out/l1
    l1_lr_g: float = 2e-4                 # G's Adam learning rate in that phase


# A preset without a row trains every stage with Recipe(); the demo's rows made checkpoints/ (docs/demo.md).
RECIPES: dict[str, list[Recipe]] = {
    "demo": [Recipe(batch_size=16, max_iters=11000, lr_g=5e-4, lr_d=5e-4, d_steps=2),
             Recipe(batch_size=16, max_iters=225, lr_g=1e-4, d_steps=1, adv_fade=100, l1_steps=3000, l1_lr_g=5e-4),
             Recipe(batch_size=16, max_iters=1050, lr_g=5e-4, lr_d=5e-4, d_steps=1, adversarial=False)],
}
CPU_PRESET = "demo"  # what `python train.py --stage N` trains on a machine without a GPU

STATUS_SECONDS = 30      # a status line at least this often, whatever --log-every says
SAMPLE_SECONDS = 240     # a sample grid at least this often (and after the first step)
CKPT_SECONDS = 600       # a checkpoint at least this often


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Each flag's why: docs/training.md.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    recipe = "(default: the preset's recipe, train.RECIPES; else %s)"
    p.add_argument("--stage", type=int, default=1, help="which stage to train (1-based)")
    p.add_argument("--preset", choices=sorted(PRESETS), help=f"preset row (default: ssw-128; {CPU_PRESET} on a CPU)")
    p.add_argument("--data", default="synthetic", help="'synthetic', a folder prepare.py wrote or a folder of videos")
    p.add_argument("--out", help="output folder (default out/stageN)")
    p.add_argument("--batch-size", type=int, help="videos per process and micro-batch " + recipe % "32, or 2 on a CPU")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per D and per G step")
    p.add_argument("--sync-bn", action="store_true", help="under DDP, G's batch norm over all processes' batch")
    p.add_argument("--ddp-timeout", type=float, default=1800, help="under DDP, seconds to wait for a dead or hung rank")
    p.add_argument("--max-iters", type=int, help="G steps to train for " + recipe % Recipe.max_iters)
    p.add_argument("--window", type=int, help="stages >= 2: output frames per window (even)")
    p.add_argument("--frame-stride", type=int, help="source frames between two clip frames (default: the preset's, 1)")
    p.add_argument("--lr-g", type=float, help="Adam learning rate of G " + recipe % Recipe.lr_g)
    p.add_argument("--lr-d", type=float, help="Adam learning rate of the Ds " + recipe % Recipe.lr_d)
    p.add_argument("--beta1", type=float, help="Adam's beta1 for G and the Ds " + recipe % Recipe.beta1)
    p.add_argument("--d-steps", type=int, help="D steps per G step " + recipe % Recipe.d_steps)
    p.add_argument("--ema", type=float, help="decay of G_ema, warmed up over the first steps " + recipe % Recipe.ema)
    p.add_argument("--adversarial", action=argparse.BooleanOptionalAction,
                   help="stages >= 2: --no-adversarial trains G on the L1 term alone " + recipe % True)
    p.add_argument("--init-g", help="stages >= 2: a checkpoint of this stage to start G and G_ema from (not on resume)")
    p.add_argument("--crop", type=int, help="stages >= 2: train on crop x crop patches (default: the preset's)")
    p.add_argument("--context", type=int, help="stages >= 2: frames of c's context each side of a window (default: R)")
    p.add_argument("--grounded", action=argparse.BooleanOptionalAction, default=True,
                   help="stages >= 2: Gup's output grounded on c by construction (models.ground)")
    p.add_argument("--d-ch", type=int, help="base width of D_s, D_t and D_m (default: the preset's, G's)")
    p.add_argument("--d-pool", choices=["mean", "sum", "max"], help="how the Ds pool positions (default: the preset's)")
    p.add_argument("--d-down", choices=["mean", "max"], help="how the Ds' blocks halve H and W (default: the preset's)")
    p.add_argument("--lambda-m", type=float, default=LAMBDA_M, help="stages >= 2: weight of D_m (0 removes D_m)")
    p.add_argument("--lambda-rec", type=float, help="stages >= 2: weight of the L1 term " + recipe % Recipe.lambda_rec)
    p.add_argument("--r1", type=float, help="gamma of the R1 penalty on D_s and D_t " + recipe % Recipe.r1)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="D_s and D_t see translated videos (DiffAugment) " + recipe % Recipe.augment)
    p.add_argument("--aux-class", type=float, help="weight of the Ds' class head (AC-GAN) " + recipe % Recipe.aux_class)
    p.add_argument("--adv-fade", type=int, help="stages >= 2: the game's G terms faded in over N steps " + recipe % 0)
    p.add_argument("--l1-steps", type=int, help="stages >= 2: G on the L1 term alone first, for N steps " + recipe % 0)
    p.add_argument("--l1-lr-g", type=float, help="--l1-steps' Adam learning rate of G " + recipe % Recipe.l1_lr_g)
    p.add_argument("--g1-class-input", action=argparse.BooleanOptionalAction, help="stage 1: y enters G1's base too")
    p.add_argument("--g1-margin", type=int, help="stage 1: frames G1 makes and drops each side (default: the preset's)")
    p.add_argument("--mismatch-negatives", action="store_true", help="D_m also sees mismatched real pairs, as fakes")
    p.add_argument("--seed", type=int, default=0, help="seeds init, noise and data order")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast forwards")
    p.add_argument("--compile", action="store_true", help="torch.compile each step's forward whole, and its backward")
    p.add_argument("--channels-last", action="store_true", help="the batch's videos in channels_last_3d memory")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: load in-process)")
    p.add_argument("--log-every", type=int, default=50, help="status line every N steps (and every 30 s)")
    p.add_argument("--fvd-every", type=int, default=0, help="G_ema's FVD every N steps (0: never; minutes on a CPU)")
    p.add_argument("--fvd-n", type=int, default=64, help="videos per set for --fvd-every and --score-every")
    p.add_argument("--score-every", type=int, default=0, help="G_ema's scores without I3D every N steps (0: never)")
    p.add_argument("--sample-every", type=int, default=1000, help="sample grid every N steps (and every 4 min)")
    p.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (and every 10 min)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    if args.frame_stride is not None and args.frame_stride < 1:
        p.error(f"--frame-stride {args.frame_stride}: must be >= 1 (1 keeps every frame)")
    args.out = args.out or os.path.join("out", f"stage{args.stage}")
    gpu = args.device.startswith("cuda")
    args.cpu_default = args.preset is None and not gpu  # said in the run's first line
    args.preset = args.preset or ("ssw-128" if gpu else CPU_PRESET)
    if not 1 <= args.stage <= len(PRESETS[args.preset]):
        p.error(f"--stage {args.stage}: preset {args.preset!r} has stages 1..{len(PRESETS[args.preset])}")
    recipe = RECIPES.get(args.preset, [Recipe()] * len(PRESETS[args.preset]))[args.stage - 1]
    for f in fields(Recipe):  # a flag left unset takes the recipe's value
        if getattr(args, f.name) is None:
            setattr(args, f.name, getattr(recipe, f.name))
    args.batch_size = args.batch_size or (32 if gpu else 2)
    if args.r1 and args.compile:
        p.error("--r1 with --compile: the penalty differentiates D's gradient, which torch.compile does not; drop one")
    if args.stage == 1 and (not args.adversarial or args.l1_steps):
        p.error("--no-adversarial and --l1-steps are for the upscalers (stages >= 2): stage 1 has no L1 term")
    if not args.adversarial:
        args.d_steps, args.l1_steps = 0, 0  # no D to step; all of it is the L1 phase
    return args


def make_clips(args: argparse.Namespace, cfg: StageConfig, split: str = "train") -> Clips:
    """The preset's full-resolution clips of one split ("train", or "val": held out, for sample
    grids and the grounding error): uint8 (T, H, W, 3) and a label per item."""
    stride = cfg.frame_stride if args.frame_stride is None else args.frame_stride
    return open_clips(args.data, cfg.clip_frames, cfg.clip_size, args.seed, stride, split=split)


def resolve_config(args: argparse.Namespace, num_classes: int) -> StageConfig:
    """The preset's row for the stage, with the flags that change the networks applied (unset: the preset's)."""
    overrides = {"num_classes": num_classes, "d_classify": args.aux_class > 0}
    for name in ("frame_stride", "window", "crop", "g1_margin", "g1_class_input", "d_ch", "d_pool", "d_down"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.stage > 1:  # the context defaults to R, read from the layers of a throwaway Gup
        overrides["context"] = (args.context if args.context is not None else
                                Gup(stage_config(args.preset, args.stage, grounded=args.grounded)).receptive_radius)
        overrides["grounded"] = args.grounded
    return stage_config(args.preset, args.stage, **overrides)


def optimizers(G, Ds: list, args: argparse.Namespace) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(opt_G, opt_D): Adam with betas (--beta1, 0.999) (BigGAN's: 0), opt_D over all the Ds' parameters.
    foreach (torch's default on GPUs only): a dozen multi-tensor ops an update, however many tensors."""
    betas = (args.beta1, 0.999)
    opt_G = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=betas, foreach=True)
    opt_D = torch.optim.Adam([p for D in Ds for p in D.parameters()], lr=args.lr_d, betas=betas, foreach=True)
    return opt_G, opt_D


# -----------------------------------------------------------------------------
# A run: train() sets it up (Run) and calls the loop; rank 0 keeps the books (Bookkeeping)

def train(args: argparse.Namespace) -> dict:
    """Train one stage to --max-iters; returns the final state (on every rank; rank 0 saved it)."""
    # --- setup: one process, or one of torchrun's
    timeout = datetime.timedelta(seconds=args.ddp_timeout)
    rank, world, device = distributed.setup(args.device, timeout)
    main = rank == 0
    if main and args.cpu_default:
        print(f"no GPU: training the CPU demo preset {args.preset!r} (docs/demo.md); --preset ssw-128 trains the "
              f"paper's 128x128 videos", flush=True)
    torch.manual_seed(args.seed)  # the init; the steps' noise comes with their batches (WithNoise)

    # --- data: the stage's view (windowed, with its conditioning c) of the preset's clips
    clips = make_clips(args, stage_config(args.preset, args.stage))
    cfg = resolve_config(args, clips.num_classes)
    examples = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window, cfg.context, seed=args.seed, crop=cfg.crop)
    if args.dry_run:
        print(json.dumps({"args": vars(args), "config": asdict(cfg)}, indent=2))
        return {}
    # For the whole run: the lock on --out (rank 0's; the ranks share it); stop signals end a step.
    with (lock_folder(args.out) if main else contextlib.nullcontext(),
          stop_on_signals(world > 1, timeout) as stop):
        if main:
            os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
            with atomic_file(os.path.join(args.out, "config.json"), "w") as f:
                json.dump({"args": vars(args), "config": asdict(cfg)}, f, indent=2)
        run = Run(args, cfg, examples, rank, world, device)  # models, optimizers, EMA, resume, steps, loader
        step = loop(run, stop)
        # --- final checkpoint (rank 0), checked like every other
        ckpt = train_state(step, run.nets, run.opts, device, args, cfg)
        if main:
            run.status.check_finite(step, run.nets)
            save_checkpoint(run.ckpt_path, ckpt)
        how = f"{'done' if step >= args.max_iters else 'stopped'} at step {step}"  # in one write: no interleaving
        print((f"{how}: {run.ckpt_path}" if main else f"rank {rank}: {how}") + "\n", end="", flush=True)
    distributed.teardown()
    return ckpt


def train_schedule(args: argparse.Namespace) -> dict:
    """train(args) after ESRGAN's first phase, where --l1-steps asks for it (in --out/l1, G on the
    L1 term alone), G and G_ema started from its G. Rerunning the command resumes either phase."""
    if args.l1_steps and not args.init_g:
        first = argparse.Namespace(**{**vars(args), "out": os.path.join(args.out, "l1"), "adversarial": False,
                                      "d_steps": 0, "max_iters": args.l1_steps, "lr_g": args.l1_lr_g, "l1_steps": 0})
        if train(first).get("step", first.max_iters) < first.max_iters:  # stopped by a signal: no game yet
            return {}
        args.init_g = os.path.join(first.out, "ckpt.pt")
    return train(args)


class Run:
    """One rank's run of a stage, built in the order it is used: the plain networks (`nets`, as
    checkpoints name them), their optimizers (`opts`); the start `step` (the checkpoint's, or 0); the
    steps' forwards, wrapped for DDP or --compile; the batches; rank 0's status line and grid inputs."""

    def __init__(self, args: argparse.Namespace, cfg: StageConfig, examples: StageExamples, rank: int,
                 world: int, device: torch.device):
        self.args, self.cfg, self.device, self.main = args, cfg, device, rank == 0
        # --- models, optimizers, EMA
        G, D_s, D_t, D_m = (m if m is None else m.to(device) for m in build_stage(cfg))
        if args.lambda_m == 0:
            D_m = None  # the ablation: D_m is not built, so nothing of it is in any graph
        self.Ds = Ds = [D for D in (D_s, D_t, D_m) if D is not None]
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        if args.sync_bn and world > 1:  # same parameters and buffers, so checkpoints do not change
            G = cross_replica_bn(G)
        opt_G, opt_D = optimizers(G, Ds, args)
        self.nets = {"G": G, "G_ema": G_ema, "D_s": D_s, "D_t": D_t, "D_m": D_m}  # as the checkpoint names them
        self.opts = {"opt_G": opt_G, "opt_D": opt_D}
        for name, m in self.nets.items():  # one line per network (G_ema is a copy of G)
            if self.main and m is not None and name != "G_ema":
                print(f"{name:3} {sum(p.numel() for p in m.parameters()):>12,} parameters")

        # --- resume: the same command continues the same run, on every rank; or start G from --init-g
        self.step, self.ckpt_path = 0, os.path.join(args.out, "ckpt.pt")
        if os.path.exists(self.ckpt_path):
            self.step = restore_state(self.ckpt_path, cfg, self.nets, self.opts, device)
            if self.main:
                print(f"resuming {self.ckpt_path} at step {self.step}")
        elif args.init_g:
            init_generator(args.init_g, cfg, G, G_ema)
            if self.main:
                print(f"G and G_ema start from {args.init_g}")

        # --- the steps' forwards. Under torchrun, DDP wrappers: a D step syncs D grads, a G step G's
        # (it calls the Ds unwrapped: DDP would wait for a D grad). Under --compile each forward is one
        # graph of the plain nets (Dynamo cannot trace DDP's forward): the loop averages the gradients.
        ddp_world = 1 if args.compile else world
        G_ddp, D_s_ddp, D_t_ddp, D_m_ddp = (distributed.wrap(m, ddp_world) for m in (G, D_s, D_t, D_m))
        self.ddp_G = [G_ddp] if ddp_world > 1 else []  # what micro_batch keeps from syncing before the last
        self.ddp_D = [D for D in (D_s_ddp, D_t_ddp, D_m_ddp) if ddp_world > 1 and D is not None]
        self.average_grads = world > 1 and args.compile
        Ds_G = (D_s, D_t, D_m) if args.adversarial else (None, None, None)  # the Ds the G loss asks
        self.d_step = compiled_step(d_forward, args.compile, device, G_ddp, D_s_ddp, D_t_ddp, D_m_ddp, cfg,
                                    args.lambda_m, args.mismatch_negatives, args.r1, args.augment, args.aux_class)
        self.g_step = compiled_step(g_forward, args.compile, device, G_ddp, *Ds_G, cfg, args.lambda_m,
                                    args.lambda_rec, args.augment, args.aux_class)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

        # --- data: the loader, and the sample grids' fixed inputs
        share = args.batch_size * args.grad_accum  # this rank's share of a step's batch
        self.batches = iter(torch.utils.data.DataLoader(
            WithNoise(examples, cfg, args.seed, args.d_steps, share * world), batch_size=args.batch_size,
            sampler=StepSampler(self.step * max(args.d_steps, 1), share, rank, world), num_workers=args.workers,
            pin_memory=device.type == "cuda", worker_init_fn=quiet_worker, persistent_workers=args.workers > 0,
            generator=torch.Generator()))  # its own generator: the global RNG stays untouched
        heldout = (StageExamples(make_clips(args, cfg, split="val"), cfg.view_s, cfg.view_t, cfg.window,
                                 cfg.context, seed=args.seed) if self.main and cfg.stage > 1 else None)
        self.fixed = fixed_inputs(cfg, heldout, device, args.seed) if self.main else None
        self.status = Status(args.out, device, self.step, self.main, share * world)

    def next_batch(self) -> list[dict]:
        """The next batch, as --grad-accum micro-batches on the device, each with the noise of
        its D step and of its G step (with_noise picks one)."""
        micro = []
        for _ in range(self.args.grad_accum):
            t0 = time.time()
            batch = next(self.batches)
            self.status.data(time.time() - t0, batch.pop("skipped"))
            micro.append(to_device(batch, self.device, self.args.channels_last))
        return micro


def loop(run: Run, stop: Stop) -> int:
    """Train from run.step to --max-iters, or to a stop signal: D steps, a G step, EMA, then
    rank 0's bookkeeping. Returns the step it stopped at."""
    args, device, status, autocast, Ds = run.args, run.device, run.status, run.autocast, run.Ds
    G, G_ema, opt_G, opt_D = run.nets["G"], run.nets["G_ema"], run.opts["opt_G"], run.opts["opt_D"]
    books = Bookkeeping(run) if run.main else None  # which first scores the start (--fvd-every, --score-every)
    step = run.step
    while step < args.max_iters and not stop.requested():
        for _ in range(args.d_steps):  # D steps, each on a fresh real batch
            micro = run.next_batch()
            opt_D.zero_grad(set_to_none=True)
            for m, batch in enumerate(micro):  # --grad-accum; DDP syncs grads on the last (no_sync before)
                with micro_batch(m, len(micro), run.ddp_D, trained=Ds, others=[G]):
                    with autocast:
                        loss_D, stats = run.d_step(with_noise(batch, "d_noise"))
                    (loss_D / len(micro)).backward()
                status.add({"loss_D": loss_D, **stats}, weight=1 / (args.d_steps * len(micro)))
            if run.average_grads:
                distributed.average_gradients(Ds)
            opt_D.step()
        if not args.adversarial:  # the L1 baseline: no D steps, so the G step draws its batch
            micro = run.next_batch()

        for D in Ds:  # G step on the last D batch, with fresh noise: D grads not needed
            D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        for m, batch in enumerate(micro):
            with micro_batch(m, len(micro), run.ddp_G, trained=[G], others=Ds):
                with autocast:
                    loss_G, stats = run.g_step(with_noise(batch, "g_noise"), adv_weight(step, args.adv_fade, device))
                (loss_G / len(micro)).backward()
            status.add({"loss_G": loss_G, **stats}, weight=1 / len(micro))
        if run.average_grads:
            distributed.average_gradients([G])
        opt_G.step()
        for D in Ds:
            D.requires_grad_(True)
        ema_update(G_ema, G, args.ema, step)
        step += 1
        if books:  # rank 0 only; none of it touches the training RNG
            books.after(step)
    return step


class Bookkeeping:
    """Rank 0's work between steps, each when due (every N steps or so many seconds): the status
    line, a sample grid, a checkpoint, the scores; its time set aside: s/it counts training alone."""

    def __init__(self, run: Run):
        self.run, self.step0, args = run, run.step, run.args
        if run.step == 0:  # the curves start at the stage's own start
            self.score(0)
        self.log_due, self.sample_due = Every(args.log_every, STATUS_SECONDS), Every(args.sample_every, SAMPLE_SECONDS)
        self.ckpt_due = Every(args.ckpt_every, CKPT_SECONDS)

    def after(self, step: int) -> None:
        run, args, status = self.run, self.run.args, self.run.status
        if self.log_due(step, also=step == args.max_iters):
            status.log(step)
        t_aside = time.time()
        if self.sample_due(step, also=step == self.step0 + 1):
            path = os.path.join(args.out, "samples", f"step{step:07d}.gif")
            with run.autocast:
                status.samples(step, path, write_samples(path, run.nets["G_ema"], run.cfg, run.fixed))
        if self.ckpt_due(step):
            status.check_finite(step, run.nets)  # never a checkpoint of a diverged run
            save_checkpoint(run.ckpt_path, train_state(step, run.nets, run.opts, run.device, args, run.cfg))
        status.set_aside(time.time() - t_aside)
        self.score(step)

    def score(self, step: int) -> None:
        """G_ema's scores due at `step`, each logged with its cost (s/it leaves it out): --fvd-every's
        rung of evaluate.py's ladder (stage_scores) and --score-every's quick_scores."""
        run, args = self.run, self.run.args
        inputs = (run.cfg, run.nets["G_ema"], args.data, args.fvd_n, run.device, os.path.join(args.out, "fvd-stats"))
        for every, scores, log in ((args.fvd_every, stage_scores, run.status.fvd),
                                   (args.score_every, quick_scores, run.status.scores)):
            if every and step % every == 0:
                t0 = time.time()
                log(step, scores(*inputs), args.fvd_n, time.time() - t0)
                run.status.set_aside(time.time() - t0)


if __name__ == "__main__":
    args = get_args()
    try:
        train_schedule(args)
    except (TrainingDiverged, CheckpointWriteError, FolderInUse, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    except RuntimeError as e:
        if (lost := distributed.lost_rank_exit(e, args.ddp_timeout)) is None:
            raise
        raise lost from None
