"""Train ONE stage of SSW-GAN: `python train.py --stage N` (DESIGN.md section 4).

Stage 1 (G1) makes whole videos at the stage's view of the clips; stages >= 2 (Gup) learn to
upscale windows of w frames, conditioned on the real view c = view(x, 2, 2) of the same
window, so every stage trains on real data alone: in any order, even at the same time.

    python train.py --stage 1                     # default preset ssw-128, built-in data
    python train.py --stage 2 --preset tiny       # an upscaling stage at toy size
    python train.py --stage 1 --data PATH         # your videos (see data.FrameFolderVideos)
    torchrun --nproc_per_node=K train.py --stage N   # data-parallel (gloo on CPU, nccl on GPU)

Outputs in --out (default out/stageN): ckpt.pt (everything needed to continue: rerunning the
same command resumes), config.json, log.jsonl (one JSON line per status line), samples/*.gif.
"""
import argparse
import copy
import itertools
import json
import os
import resource
import signal
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from data import Clips, FrameFolderVideos, StageExamples, SyntheticVideos, to_uint8, video_grid, view, write_gif
from losses import d_hinge, d_hinge_negative, g_hinge
from models import PRESETS, StageConfig, build_stage, load_checkpoint, stage_config

STATUS_SECONDS = 30      # a status line at least this often, whatever --log-every says
SAMPLE_SECONDS = 240     # a sample grid at least this often (and after the first step)
CKPT_SECONDS = 600       # a checkpoint at least this often


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stage", type=int, default=1, help="which stage to train (1-based)")
    p.add_argument("--preset", default="ssw-128", choices=sorted(PRESETS), help="row of the preset table")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (built-in bouncing shapes) or a folder of videos")
    p.add_argument("--out", default=None, help="output folder (default out/stageN)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="videos per D and per G step, per process (default: 32 on GPU, 2 on CPU, "
                        "where training is a demo of the pipeline, not a real run)")
    p.add_argument("--max-iters", type=int, default=200_000, help="G steps to train for")
    p.add_argument("--window", type=int, default=None, help="stages >= 2: output frames per window (even)")
    p.add_argument("--lr-g", type=float, default=1e-4, help="Adam learning rate of G")
    p.add_argument("--lr-d", type=float, default=5e-4, help="Adam learning rate of the Ds")
    p.add_argument("--d-steps", type=int, default=2, help="D steps per G step")
    p.add_argument("--ema", type=float, default=0.999, help="decay of G_ema (warmed up over the first steps)")
    p.add_argument("--lambda-m", type=float, default=1.0,
                   help="weight of the matching discriminator D_m (stages >= 2); 0 removes D_m")
    p.add_argument("--mismatch-negatives", action="store_true",
                   help="D_m also sees real windows paired with another video's view, as fakes")
    p.add_argument("--seed", type=int, default=0, help="seeds init, noise and data order")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 runs forward passes under autocast; weights stay float32")
    p.add_argument("--compile", action="store_true", help="torch.compile the D and G steps")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: load in-process)")
    p.add_argument("--log-every", type=int, default=50, help="status line every N steps (and every 30 s)")
    p.add_argument("--sample-every", type=int, default=1000, help="sample grid every N steps (and every 4 min)")
    p.add_argument("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (and every 10 min)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join("out", f"stage{args.stage}")
    if args.batch_size is None:
        args.batch_size = 32 if args.device.startswith("cuda") else 2
    return args


# -----------------------------------------------------------------------------
# Data: example i of the stream depends only on (seed, i), so batch b is the same batch
# whether the run started at 0 or resumed at b (DESIGN.md section 4, exact resume).

class StepSampler(torch.utils.data.Sampler):
    """Endless example indices: batch b of rank r holds examples [(b*world + r)*B, ... + B)."""

    def __init__(self, first_batch: int, batch_size: int, rank: int = 0, world: int = 1):
        self.first_batch, self.batch_size, self.rank, self.world = first_batch, batch_size, rank, world

    def __iter__(self):
        for b in itertools.count(self.first_batch):
            start = (b * self.world + self.rank) * self.batch_size
            yield from range(start, start + self.batch_size)


def make_clips(args: argparse.Namespace, cfg: StageConfig) -> Clips:
    """The preset's full-resolution clips: uint8 (T, H, W, 3) and a label per item."""
    if args.data == "synthetic":
        return SyntheticVideos(cfg.clip_frames, cfg.clip_size, seed=args.seed)
    return FrameFolderVideos(args.data, cfg.clip_frames, cfg.clip_size, stride=cfg.frame_stride, seed=args.seed)


HELDOUT = 2**40  # examples from this index on are never trained on: samples and grounding error


# -----------------------------------------------------------------------------
# The D and G steps (pure functions of modules and tensors: these are what --compile compiles)

def generate(G, cfg: StageConfig, c: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """A fake batch: G1(z, y) for stage 1, Gup(c, z, y) for the upscaling stages."""
    B = y.shape[0]
    if cfg.stage == 1:
        return G(torch.randn(B, cfg.out_frames, cfg.z_dim, device=y.device), y)
    return G(c, torch.randn(B, cfg.z_dim, *c.shape[2:], device=y.device), y)


def d_loss(G, D_s, D_t, D_m, cfg: StageConfig, batch: dict, lambda_m: float, mismatch: bool):
    """Hinge over D_s + D_t (+ lambda_m D_m) on real and fake; real and fake go through each D
    as one batch. Returns (loss, logits) with logits[name] = (real, fake) means."""
    x_real, c, y = batch["x"], batch.get("c"), batch["y"]
    B = x_real.shape[0]
    with torch.no_grad():
        x_fake = generate(G, cfg, c, y)
    assert x_fake.shape == x_real.shape, f"G made {tuple(x_fake.shape)}, data is {tuple(x_real.shape)}"
    x, yy = torch.cat([x_real, x_fake]), torch.cat([y, y])                 # (2B, 3, T, H, W)
    logits_s, logits_t = D_s(x, yy), D_t(x, yy)                             # (2B,)
    loss = d_hinge(logits_s[:B], logits_s[B:]) + d_hinge(logits_t[:B], logits_t[B:])
    logits = {"s": logits_s, "t": logits_t}
    if D_m is not None:
        pairs_x, pairs_c = [x_real, x_fake], [c, c]
        if mismatch:  # a real window with another video's view is a fake pair too
            pairs_x.append(x_real)
            pairs_c.append(c.roll(1, dims=0))
        logits_m = D_m(torch.cat(pairs_x), torch.cat(pairs_c), y.repeat(len(pairs_x)))
        loss_m = d_hinge(logits_m[:B], logits_m[B:2 * B])
        if mismatch:
            loss_m = loss_m + d_hinge_negative(logits_m[2 * B:])
        loss = loss + lambda_m * loss_m
        logits["m"] = logits_m[:2 * B]
    return loss, {k: (v[:B].mean().detach(), v[B:].mean().detach()) for k, v in logits.items()}


def g_loss(G, D_s, D_t, D_m, cfg: StageConfig, batch: dict, lambda_m: float):
    """Minus the mean scores of the same discriminators on a fresh fake batch."""
    c, y = batch.get("c"), batch["y"]
    x_fake = generate(G, cfg, c, y)
    loss = g_hinge(D_s(x_fake, y)) + g_hinge(D_t(x_fake, y))
    if D_m is not None:
        loss = loss + lambda_m * g_hinge(D_m(x_fake, c, y))
    return loss


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
    [view upsampled | G_ema(c) | real window] for fixed held-out windows; returns the
    grounding error on them (None for stage 1)."""
    if cfg.stage == 1:
        x = G_ema(fixed["z"], fixed["y"])                                   # (N, 3, T, H, W)
        write_gif(path, video_grid(to_uint8(x.float().cpu()), nrow=fixed["per_class"]))
        return None
    c, x_real, y = fixed["c"], fixed["x"], fixed["y"]
    x = G_ema(c, fixed["z"], y)
    c_up = F.interpolate(c, size=x.shape[2:], mode="nearest")
    rows = torch.stack([c_up, x, x_real], dim=1).flatten(0, 1)            # (3N, 3, T, H, W)
    write_gif(path, video_grid(to_uint8(rows.float().cpu()), nrow=3))
    return grounding_error(x, c)


def fixed_inputs(cfg: StageConfig, examples: StageExamples, device: torch.device, seed: int) -> dict:
    """What every sample grid of a run is made from: fixed noise (and fixed held-out windows)."""
    g = torch.Generator().manual_seed(seed)
    if cfg.stage == 1:
        per_class = 4
        n_cls = max(cfg.num_classes, 1)
        y = torch.arange(n_cls).repeat_interleave(per_class)
        z = torch.randn(len(y), cfg.out_frames, cfg.z_dim, generator=g)
        return {"z": z.to(device), "y": y.to(device), "per_class": per_class}
    batch = torch.utils.data.default_collate([examples[HELDOUT + i] for i in range(4)])
    z = torch.randn(4, cfg.z_dim, *batch["c"].shape[2:], generator=g)
    return {"z": z.to(device), "y": batch["y"].to(device), "c": batch["c"].to(device), "x": batch["x"].to(device)}


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Atomic: write a temp file, then rename over the old one (never a half-written ckpt.pt)."""
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB


class TrainingDiverged(RuntimeError):
    pass


def resolve_config(args: argparse.Namespace, num_classes: int) -> StageConfig:
    overrides = {"num_classes": num_classes}
    if args.window is not None:
        overrides["window"] = args.window
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
                         f"use the same --window/--data, or another --out to start fresh.")


# -----------------------------------------------------------------------------

def train(args: argparse.Namespace) -> dict:
    """Train one stage to --max-iters; returns the final checkpoint dict."""
    # --- setup: one process, or one of torchrun's
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = torch.device(args.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    torch.manual_seed(args.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    # --- data: the stage's view (windowed, with its conditioning c) of the preset's clips
    clips = make_clips(args, stage_config(args.preset, args.stage))
    cfg = resolve_config(args, clips.num_classes)
    examples = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window, seed=args.seed)
    if args.dry_run:
        print(json.dumps({"args": vars(args), "config": asdict(cfg)}, indent=2))
        return {}
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    if main:
        os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
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
    opt_G = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(0.0, 0.999))
    opt_D = torch.optim.Adam([p for D in Ds for p in D.parameters()], lr=args.lr_d, betas=(0.0, 0.999))

    # --- resume: the same command continues the same run
    step = 0
    if os.path.exists(ckpt_path):
        ckpt, ckpt_cfg = load_checkpoint(ckpt_path)
        check_resumable(ckpt_path, ckpt_cfg, cfg)
        G.load_state_dict(ckpt["G"])
        G_ema.load_state_dict(ckpt["G_ema"])
        D_s.load_state_dict(ckpt["D_s"])
        D_t.load_state_dict(ckpt["D_t"])
        if D_m is not None:
            if "D_m" not in ckpt:
                raise ValueError(f"{ckpt_path} was trained with --lambda-m 0 (no D_m): keep --lambda-m 0 "
                                 f"or use another --out")
            D_m.load_state_dict(ckpt["D_m"])
        opt_G.load_state_dict(ckpt["opt_G"])
        opt_D.load_state_dict(ckpt["opt_D"])
        step = ckpt["step"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        if main:
            print(f"resuming {ckpt_path} at step {step}")
    if world > 1:  # after resume, so every rank draws its own noise from the same point on
        torch.manual_seed(args.seed * 1000 + rank + step)
    # Data-parallel wrappers (torchrun): a D step syncs D grads, a G step G grads. The G step
    # calls the Ds unwrapped: it needs no D gradient, and DDP would wait for one.
    G_dp, D_s_dp, D_t_dp, D_m_dp = (DDP(m) if world > 1 and m is not None else m for m in (G, D_s, D_t, D_m))

    def checkpoint() -> dict:
        ckpt = {"G": G.state_dict(), "G_ema": G_ema.state_dict(),
                "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "step": step,
                "rng": {"torch": torch.get_rng_state(),
                        **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})},
                "args": vars(args), "config": asdict(cfg),
                # for a reader without models.py: what the stage maps, (T, H, W) -> (T, H, W)
                "shapes": {"cond": [cfg.cond_frames, cfg.cond_size, cfg.cond_size] if cfg.stage > 1 else None,
                           "out": [cfg.out_frames, cfg.out_size, cfg.out_size], "window": cfg.window}}
        for name, D in (("D_s", D_s), ("D_t", D_t), ("D_m", D_m)):
            if D is not None:
                ckpt[name] = D.state_dict()
        return ckpt

    # --- compile (optional): the two step functions, modules stay uncompiled for checkpoints
    d_step_fn = torch.compile(d_loss) if args.compile else d_loss
    g_step_fn = torch.compile(g_loss) if args.compile else g_loss

    loader = torch.utils.data.DataLoader(
        examples, batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda",
        sampler=StepSampler(step * args.d_steps, args.batch_size, rank, world),
        generator=torch.Generator(),  # keeps the global RNG untouched: resume stays exact
        persistent_workers=args.workers > 0)
    batches = iter(loader)
    fixed = fixed_inputs(cfg, examples, device, args.seed) if main else None

    # Ctrl-C (or a scheduler's SIGTERM) ends the run at the next step boundary with a
    # checkpoint, so it can resume exactly.
    stop = {"now": False}
    old_handlers = {sig: signal.signal(sig, lambda *_: stop.update(now=True))
                    for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}

    # --- the loop
    sums, n_sum, skipped, data_time = {}, 0, 0, 0.0
    t_log = t_sample = t_ckpt = time.time()
    step0, last_log_step = step, step
    ckpt = None
    try:
        while step < args.max_iters and not stop["now"]:
            G.train()
            for _ in range(args.d_steps):  # D steps, each on a fresh real batch
                t0 = time.time()
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                skipped += int(batch["skipped"].sum())
                data_time += time.time() - t0
                with autocast:
                    loss_D, logits = d_step_fn(G_dp, D_s_dp, D_t_dp, D_m_dp, cfg, batch,
                                               args.lambda_m, args.mismatch_negatives)
                opt_D.zero_grad(set_to_none=True)
                loss_D.backward()
                opt_D.step()

            for D in Ds:  # G step on the last batch's labels (and real views): D grads not needed
                D.requires_grad_(False)
            with autocast:
                loss_G = g_step_fn(G_dp, D_s, D_t, D_m, cfg, batch, args.lambda_m)
            opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            opt_G.step()
            for D in Ds:
                D.requires_grad_(True)
            ema_update(G_ema, G, args.ema, step)
            step += 1

            losses = torch.stack([loss_D.detach(), loss_G.detach()]).float()
            if not torch.isfinite(losses).all():
                raise TrainingDiverged(
                    f"non-finite loss at step {step} (D {losses[0].item()}, G {losses[1].item()}). "
                    f"The last good checkpoint {ckpt_path} is left as it was. Try lower --lr-d/--lr-g, "
                    f"or --dtype float32.")

            # --- status, samples, checkpoints (rank 0 only; none of it touches the training RNG)
            if not main:
                continue
            stats = {"loss_D": losses[0], "loss_G": losses[1]}
            for k, (real, fake) in logits.items():
                stats[f"D_{k}_real"], stats[f"D_{k}_fake"] = real, fake
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            n_sum += 1
            now = time.time()
            if step % args.log_every == 0 or now - t_log >= STATUS_SECONDS or step == args.max_iters:
                rec = {k: round(v.item() / n_sum, 4) for k, v in sums.items()}
                s_it = (now - t_log) / (step - last_log_step)
                rec.update(step=step, s_per_it=round(s_it, 4), it_per_s=round(1 / s_it, 3),
                           data_s_per_it=round(data_time / (step - last_log_step), 4),
                           mem_gb=round(memory_gb(device), 3), skipped_videos=skipped)
                print(f"step {step} | D {rec['loss_D']:.3f} G {rec['loss_G']:.3f} | logits real/fake "
                      + " ".join(f"{k} {rec[f'D_{k}_real']:+.2f}/{rec[f'D_{k}_fake']:+.2f}" for k in logits)
                      + f" | {s_it:.3f} s/it {1 / s_it:.2f} it/s | data {rec['data_s_per_it']:.3f} s/it"
                      + f" | mem {rec['mem_gb']:.2f} GB | skipped {skipped}", flush=True)
                with open(os.path.join(args.out, "log.jsonl"), "a") as f:
                    f.write(json.dumps(rec) + "\n")
                sums, n_sum, data_time, t_log, last_log_step = {}, 0, 0.0, now, step
            if step % args.sample_every == 0 or step == step0 + 1 or now - t_sample >= SAMPLE_SECONDS:
                path = os.path.join(args.out, "samples", f"step{step:07d}.gif")
                with autocast:
                    err = write_samples(path, G_ema, cfg, fixed)
                if err is not None:
                    with open(os.path.join(args.out, "log.jsonl"), "a") as f:
                        f.write(json.dumps({"step": step, "grounding_error": round(err, 5)}) + "\n")
                print(f"wrote {path}" + (f" | grounding error {err:.4f}" if err is not None else ""), flush=True)
                t_sample = time.time()
            if step % args.ckpt_every == 0 or now - t_ckpt >= CKPT_SECONDS:
                save_checkpoint(ckpt_path, checkpoint())
                t_ckpt = time.time()
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)

    # --- final checkpoint
    if main:
        ckpt = checkpoint()
        save_checkpoint(ckpt_path, ckpt)
        print(f"{'stopped' if stop['now'] else 'done'} at step {step}: {ckpt_path}")
    if world > 1:
        dist.destroy_process_group()
    return ckpt


if __name__ == "__main__":
    try:
        train(get_args())
    except (TrainingDiverged, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
