"""The small-scale reproduction: one command trains the arms that test the paper's claims at
tiny scale and writes out/study/report.md with its pictures (DESIGN.md section 7).

    python study.py                       # about 90 minutes on a 2-core CPU
    python study.py --budget-minutes 30   # scales every arm
    python study.py --quick               # under 10 minutes: a smoke run, its numbers mean nothing

The arms, all at the tiny preset's final size (32 frames at 32x32):
1. SSW-GAN (tiny's three stages) against a single-stage DVD-GAN (dvd-tiny: 32@32 in one
   stage) at equal training FLOPs (bench.step_cost): FVD, activation memory, wall time.
2. The matching discriminator: stage 2 with --lambda-m 1 against 0, equal steps: its ladder
   rung (FVD on real views of its input) and grounding error.
3. Training as sampled: stage 2 with --context R against 0, equal steps: rung and seam error.
4. Seams of the trained chain against the overlap, and exactness of overlap >= R.
5. Curves (losses, D logits, FVD, grounding error) of every run, as PNG plots.

The study tests the paper's claims, so its upscalers are the paper's: not --grounded (which
makes the grounding error 0 by construction and would leave arm 2 nothing to measure).

Every training run is an ordinary resumable train.py run in out/study/<run>/. The first
CAL_STEPS steps of each run measure its s/step; plan.json then fixes every run's --max-iters
from the budget, once. Rerunning continues: finished runs are not touched, measurements are
cached in results.json under the steps they were made at.

Arms 2 and 3 ablate tiny's stage 2 (8@8 -> 16@16), not stage 3 (which makes the final size):
a step costs about half (docs/measured.md), so the ablations get twice the steps, and stage 2
is the one that beat its interpolation floor in the measured ladders, so there is something
for an ablation to take away.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import torch
from PIL import Image, ImageDraw

import bench
import evaluate
import fvd
import sample
import train
from data import to_uint8
from models import stage_config, upsample
from runfolder import read_log
from videos import write_strip

SOURCE = "synthetic"   # the built-in data
CAL_STEPS = 2          # each run's first steps; step 2 gives its s/step (step 1 warms up)
FVD_FRAMES = 16        # frames scored per video, as train.py's --fvd-every scores them
EVAL_BATCH = 16        # evaluate.stage_fvd's batch: the same noise draws, so the same numbers
MARGIN = 0.10          # a verdict needs a 10% difference; less is inconclusive at this scale
EXACT_TOL = 1e-4       # max |chunked - whole| that counts as exact (float32 tolerance)
PAPER = ["--no-grounded", "--lambda-rec", "0"]  # the upscalers as the paper has them: grounded by D_m, adversarial alone
RUNS = {  # run name -> train.py flags
    "ssw-stage1": ["--preset", "tiny", "--stage", "1"],
    "ssw-stage2": ["--preset", "tiny", "--stage", "2", *PAPER],
    "ssw-stage3": ["--preset", "tiny", "--stage", "3", *PAPER],
    "dvd": ["--preset", "dvd-tiny", "--stage", "1"],
    "stage2-no-dm": ["--preset", "tiny", "--stage", "2", "--lambda-m", "0", *PAPER],
    "stage2-no-context": ["--preset", "tiny", "--stage", "2", "--context", "0", *PAPER],
}
SSW = ["ssw-stage1", "ssw-stage2", "ssw-stage3"]


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join("out", "study"), help="folder of the runs and the report")
    p.add_argument("--budget-minutes", type=float, default=90,
                   help="the whole study's time: training gets what calibration and scoring leave")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run under 10 minutes (--budget-minutes 7 --fvd-n 4 --fvd-points 1)")
    p.add_argument("--seed", type=int, default=0, help="every run's --seed")
    p.add_argument("--batch-size", type=int, default=8, help="every run's --batch-size")
    p.add_argument("--fvd-n", type=int, default=32, help="videos per set for every FVD")
    p.add_argument("--fvd-points", type=int, default=2, help="FVD points per training curve (0: none)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.quick:
        args.budget_minutes, args.fvd_n, args.fvd_points = 7, 4, 1
    return args


# -----------------------------------------------------------------------------
# The runs: ordinary train.py runs, to a --max-iters the plan fixes

def run_dir(args: argparse.Namespace, name: str) -> str:
    return os.path.join(args.out, name)


def ckpt_step(out: str) -> int:
    path = os.path.join(out, "ckpt.pt")
    return torch.load(path, map_location="cpu", weights_only=True)["step"] if os.path.exists(path) else 0


def train_run(args: argparse.Namespace, name: str, max_iters: int, fvd_every: int, log_every: int) -> None:
    """Train run `name` to max_iters (resuming it); a finished run is not touched. A run stopped
    by a signal (Ctrl-C) has written its checkpoint: the study stops too, to be rerun."""
    out = run_dir(args, name)
    if ckpt_step(out) >= max_iters:
        return
    os.makedirs(out, exist_ok=True)
    stats = os.path.join(out, "fvd-stats")  # one cache of real statistics for the whole study
    if not os.path.lexists(stats):
        os.symlink(os.path.abspath(os.path.join(args.out, "fvd-stats")), stats)
    argv = [*RUNS[name], "--out", out, "--max-iters", str(max_iters), "--seed", str(args.seed),
            "--batch-size", str(args.batch_size), "--workers", "0", "--fvd-every", str(fvd_every),
            "--fvd-n", str(args.fvd_n), "--log-every", str(log_every), "--device", args.device]
    state = train.train(train.get_args(argv))
    if state["step"] < max_iters:
        raise SystemExit(f"study stopped during {name} at step {state['step']}: rerun the same "
                         f"command to continue")


def log_of(args: argparse.Namespace, name: str) -> list[dict]:
    return read_log(os.path.join(run_dir(args, name), "log.jsonl"))


def training_seconds(log: list[dict]) -> float:
    """Wall time of a run's steps from its status lines: s/it (training alone, no samples, FVD
    or checkpoints) times the steps since the last line."""
    seconds, prev = 0.0, 0
    for r in log:
        if "s_per_it" in r:
            seconds += r["s_per_it"] * max(r["step"] - prev, 0)
            prev = r["step"]
    return seconds


# -----------------------------------------------------------------------------
# The plan: s/step measured, then every run's steps from the budget (written once)

def plan_steps(train_seconds: float, s_per_step: dict[str, float], tflop: dict[str, float]) -> dict[str, int]:
    """Steps of every run. The SSW stages and the ablation runs take n steps each; the
    single-stage baseline n_d = n * sum_s f_s / f_d, so that both sides of arm 1 train on the
    same FLOPs (f: FLOPs per step). n is the largest that fits train_seconds at the measured
    s/step t:  n * (sum of t over the n-step runs + t_d * sum_s f_s / f_d) <= train_seconds."""
    ratio = sum(tflop[r] for r in SSW) / tflop["dvd"]
    per_n = sum(t for r, t in s_per_step.items() if r != "dvd") + s_per_step["dvd"] * ratio
    n = max(CAL_STEPS, math.floor(train_seconds / per_n))
    return {r: max(CAL_STEPS, round(n * ratio)) if r == "dvd" else n for r in RUNS}


def calibrate(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per step of every run, from its own first CAL_STEPS steps: they stay the run's
    first steps (resume is exact), so nothing is thrown away."""
    rates = {}
    for i, name in enumerate(RUNS, 1):
        print(f"[study] calibrating {i}/{len(RUNS)}: {name}, {CAL_STEPS} steps", flush=True)
        train_run(args, name, CAL_STEPS, fvd_every=0, log_every=1)
        last = {r["step"]: r["s_per_it"] for r in log_of(args, name) if "s_per_it" in r}
        rates[name] = sum(last[s] for s in range(2, CAL_STEPS + 1)) / (CAL_STEPS - 1)
    return rates


def scored_videos(args: argparse.Namespace) -> int:
    """Videos I3D scores in the whole study: every curve's points, the real statistics (tiny's
    stages 1-3 and dvd-tiny), the SSW chain, the trilinear floor and the final rungs."""
    return args.fvd_n * (args.fvd_points * len(RUNS) + 4 + 2 + 4)


def make_plan(args: argparse.Namespace) -> dict:
    """plan.json: made once (calibration, FLOPs, steps), then read by every rerun."""
    settings = {k: getattr(args, k)
                for k in ("budget_minutes", "seed", "batch_size", "fvd_n", "fvd_points", "device")}
    path = os.path.join(args.out, "plan.json")
    if os.path.exists(path):
        with open(path) as f:
            plan = json.load(f)
        if plan["settings"] != settings:
            raise ValueError(f"{path} was planned with {plan['settings']}, not {settings}: rerun with "
                             f"those flags to continue, or pass another --out")
        return plan
    t0 = time.time()
    s_per_step = calibrate(args)
    print("[study] timing I3D on the real statistics of tiny's stage 3", flush=True)
    t_fvd = time.time()
    real_stats(args, stage_config("tiny", 3))
    s_per_video = (time.time() - t_fvd) / args.fvd_n
    cost = {}
    for r in [*SSW, "dvd"]:  # RUNS[r] = ["--preset", P, "--stage", N]
        preset, stage = RUNS[r][1], int(RUNS[r][3])
        cost[r] = bench.step_cost(preset, stage, stage_config(preset, stage).clip_frames, args.batch_size)
    tflop = {r: c["TFLOP_per_iter"] for r, c in cost.items()}
    eval_s = s_per_video * scored_videos(args)
    train_s = args.budget_minutes * 60 - (time.time() - t0) - eval_s
    steps = plan_steps(train_s, s_per_step, tflop)
    plan = {"settings": settings, "s_per_step": s_per_step, "tflop_per_step": tflop,
            "saved_gb": {r: max(c["saved_D_GB"], c["saved_G_GB"]) for r, c in cost.items()},
            "s_per_video": s_per_video, "steps": steps,
            "fvd_every": {r: max(1, n // args.fvd_points) if args.fvd_points else 0 for r, n in steps.items()},
            "log_every": {r: max(1, n // 100) for r, n in steps.items()}}
    with open(path, "w") as f:
        json.dump(plan, f, indent=2)
    return plan


def minutes_left(args: argparse.Namespace, plan: dict, done: dict[str, int]) -> float:
    """The study's time left, roughly: the runs' steps not done (done: run -> steps) at their
    s/step, and all the scoring."""
    train_s = sum((plan["steps"][r] - min(done[r], plan["steps"][r])) * plan["s_per_step"][r] for r in RUNS)
    return (train_s + plan["s_per_video"] * scored_videos(args)) / 60


# -----------------------------------------------------------------------------
# Measurements, cached in results.json under the steps of the runs they depend on

class Results:
    """results.json: {key: a measurement}, each key naming what was measured at which steps."""

    def __init__(self, path: str):
        self.path, self.values = path, {}
        if os.path.exists(path):
            with open(path) as f:
                self.values = json.load(f)

    def get(self, key: str, compute):
        """The cached value of key, or compute() now, saved at once (an interrupt keeps it)."""
        if key not in self.values:
            self.values[key] = compute()
            self.save()
        return self.values[key]

    def save(self) -> None:
        with open(self.path, "w") as f:
            json.dump(self.values, f, indent=2)


def real_stats(args: argparse.Namespace, cfg):
    model = fvd.load_i3d().to(args.device)
    return evaluate.real_stats(model, SOURCE, cfg, args.fvd_n, FVD_FRAMES, EVAL_BATCH,
                               os.path.join(args.out, "fvd-stats"))


def fvd_of(args: argparse.Namespace, videos, cfg) -> float:
    """FVD of batches of videos (b, 3, T, H, W) against the real videos at stage cfg's size."""
    model = fvd.load_i3d().to(args.device)
    return evaluate.score(videos, model, args.fvd_n, FVD_FRAMES, real_stats(args, cfg))[0]


def load(args: argparse.Namespace, *names: str) -> list:
    """[(cfg, G_ema)] of the runs, as sample.py loads a chain."""
    return sample.load_chain([os.path.join(run_dir(args, n), "ckpt.pt") for n in names], torch.device(args.device))


def rung_fvd(args: argparse.Namespace, name: str, steps: int) -> float:
    """An upscaling run's ladder rung at its last step: the --fvd-every point there, else scored
    now the same way (evaluate.stage_fvd)."""
    at_end = [r["fvd"] for r in log_of(args, name) if r.get("step") == steps and "fvd" in r]
    if at_end:
        return at_end[-1]
    (cfg, G), = load(args, name)
    return evaluate.stage_fvd(cfg, G, SOURCE, args.fvd_n, torch.device(args.device),
                              os.path.join(args.out, "fvd-stats"), FVD_FRAMES)


@torch.no_grad()
def on_real_views(args: argparse.Namespace, name: str, overlap: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, c): run `name` (an upscaler) chunked with `overlap` (None: R) over fvd_n real views
    c (n, 3, Tc, Hc, Wc) of its input -> x (n, 3, 2Tc, 2Hc, 2Wc)."""
    (cfg, G), = load(args, name)
    c, y = (torch.cat(t) for t in zip(*evaluate.real_views(SOURCE, cfg, args.fvd_n, EVAL_BATCH, down=1)))
    g = torch.Generator().manual_seed(evaluate.FVD_SEED)
    return sample.upscale([(cfg, G)], c, y, None, overlap, torch.device(args.device), g), c


def seams_of(x: torch.Tensor, cfg) -> float:
    """Seam error of an upscaler's output x (B, 3, T, H, W) at the seams of its sampling chunks."""
    return evaluate.seam_error(x, evaluate.seam_frames(x.shape[2] // 2, cfg.cond_frames))


def chain_seam_frames(chain: list) -> list[int]:
    """Frames of the chain's final video whose predecessor came from another chunk of some
    upscaling stage: each stage's seams, doubled by every later stage."""
    seams = set()
    for k, (cfg, _) in enumerate(chain[1:], start=1):
        scale = 2 ** (len(chain) - 1 - k)
        seams |= {t * scale for t in evaluate.seam_frames(cfg.video_frames // 2, cfg.cond_frames)}
    return sorted(seams)


@torch.no_grad()
def chain_seams(args: argparse.Namespace, chain: list) -> list[list]:
    """[[overlap, seam error, max |chunked - whole|]] of the chain from noise, every upscaling
    stage chunked with that overlap (0, 1, ..., R, 2R), against the whole-video pass (chunk past
    the video, overlap R: the upscalers see the video mirrored past its ends)."""
    cfg, R = chain[-1][0], max(G.receptive_radius for _, G in chain[1:])
    y = torch.arange(args.fvd_n) % cfg.classes

    def make(chunk, overlap):  # the same noise every time
        g = torch.Generator().manual_seed(evaluate.FVD_SEED)
        return sample.generate(chain, y, cfg.video_frames, chunk, overlap, torch.device(args.device), g)
    whole, seams = make(10 ** 6, None), chain_seam_frames(chain)
    rows = [["whole video", evaluate.seam_error(whole, seams), 0.0]]
    for overlap in [*range(R + 1), 2 * R]:
        x = make(None, overlap)
        rows.append([overlap, evaluate.seam_error(x, seams), (x - whole).abs().max().item()])
    return rows


# -----------------------------------------------------------------------------
# Verdicts: computed from the numbers, the criterion written next to each

def verdict(value: float, baseline: float, margin: float = MARGIN) -> str:
    """Lower is better: 'supported' if value < (1 - margin) * baseline, 'not supported' if
    value > (1 + margin) * baseline, else 'inconclusive at this scale'."""
    if value < (1 - margin) * baseline:
        return "supported"
    if value > (1 + margin) * baseline:
        return "not supported"
    return "inconclusive at this scale"


def verdict_line(claim: str, value: float, baseline: float, what: str, than: str, margin: float = MARGIN) -> str:
    criterion = (f"{what} < {1 - margin:.2f} x {than} supports it, > {1 + margin:.2f} x refutes it"
                 if margin else f"{what} < {than}")
    return (f"**Verdict: {verdict(value, baseline, margin)}.** {claim} "
            f"({what} = {value:.4g}, {than} = {baseline:.4g}; criterion: {criterion}).")


# -----------------------------------------------------------------------------
# Pictures, drawn with Pillow

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def plot(path: str, title: str, panels: list[tuple[str, dict[str, tuple[list, list]]]]) -> None:
    """A PNG of line charts side by side, one per panel (name, {series: (steps, values)}), each
    with its axis ranges written at the ends and a legend in its series' colours."""
    pw, ph, left, bottom = 300, 220, 48, 30
    img = Image.new("RGB", (pw * len(panels), ph + 24), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), title, fill="black")
    for i, (name, series) in enumerate(panels):
        x0, y0, x1, y1 = i * pw + left, 40, (i + 1) * pw - 10, ph - bottom + 24
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, y0 - 14), name, fill="black")
        points = [(s, v) for xs, ys in series.values() for s, v in zip(xs, ys)]
        if not points:
            draw.text((x0 + 8, (y0 + y1) // 2), "no points", fill="grey")
            continue
        (smin, smax), (vmin, vmax) = ((min(a), max(a)) for a in zip(*points))
        sx, sy = (x1 - x0) / ((smax - smin) or 1), (y1 - y0) / ((vmax - vmin) or 1)
        draw.text((x0 - 44, y0), f"{vmax:.3g}", fill="black")
        draw.text((x0 - 44, y1 - 10), f"{vmin:.3g}", fill="black")
        draw.text((x0, y1 + 4), f"{smin:g}", fill="black")
        draw.text((x1 - 40, y1 + 4), f"step {smax:g}", fill="black")
        for k, (label, (xs, ys)) in enumerate(series.items()):
            colour = COLOURS[k % len(COLOURS)]
            xy = [(x0 + (s - smin) * sx, y1 - (v - vmin) * sy) for s, v in zip(xs, ys)]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for px, py in xy if len(xy) <= 20 else []:  # few points (FVD): each one marked
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
            draw.text((x0 + 4, y0 + 4 + 11 * k), label, fill=colour)
    img.save(path)


def curves(args: argparse.Namespace, name: str, path: str) -> None:
    """The run's curves from its log.jsonl: losses, D logits on real and fake, FVD, and for an
    upscaler its grounding error."""
    log = log_of(args, name)

    def series(*keys):
        return {k: ([r["step"] for r in log if k in r], [r[k] for r in log if k in r]) for k in keys}
    logits = sorted({k for r in log for k in r if k.startswith("D_") and k.endswith(("_real", "_fake"))})
    panels = [("losses", series("loss_D", "loss_G")), ("D logits", series(*logits)),
              (f"FVD ({args.fvd_n} videos)", series("fvd"))]
    if any("grounding_error" in r for r in log):
        panels.append(("grounding error", series("grounding_error")))
    plot(path, f"{name}: {' '.join(RUNS[name])}", panels)


def strip(path: str, rows: list[tuple[str, torch.Tensor]], frames: list[int], scale: int) -> None:
    """videos.write_strip of float videos (3, T, H, W) in [-1, 1]."""
    write_strip(path, [(name, to_uint8(x.float()).numpy()) for name, x in rows], frames, scale)


# -----------------------------------------------------------------------------
# The arms: each returns its report section (tables, pictures, verdicts)

def arm_compute(args: argparse.Namespace, plan: dict, results: Results) -> list[str]:
    """Arm 1: SSW-GAN's chain against the single stage, at equal training FLOPs."""
    steps, device = plan["steps"], torch.device(args.device)
    chain, dvd = load(args, *SSW), load(args, "dvd")
    cfg = chain[-1][0]
    print("[study] arm 1: FVD of the SSW chain and of the single stage", flush=True)
    fvd_ssw = results.get(f"fvd ssw chain @{[steps[r] for r in SSW]}", lambda: fvd_of(
        args, evaluate.from_noise(chain, args.fvd_n, EVAL_BATCH, device), cfg))
    fvd_dvd = results.get(f"fvd dvd @{steps['dvd']}", lambda: fvd_of(
        args, evaluate.from_noise(dvd, args.fvd_n, EVAL_BATCH, device), cfg))
    flop = {r: steps[r] * plan["tflop_per_step"][r] for r in [*SSW, "dvd"]}
    wall = {r: training_seconds(log_of(args, r)) / 60 for r in [*SSW, "dvd"]}
    mem_ssw, mem_dvd = max(plan["saved_gb"][r] for r in SSW), plan["saved_gb"]["dvd"]
    real = next(evaluate.real_views(SOURCE, cfg, 2, 2))[0]
    made = [next(evaluate.from_noise(c, 2, 2, device))[0] for c in (chain, dvd)]
    strip(os.path.join(args.out, "arm1-samples.png"),
          [(f"{who} {k}", x[k]) for k in range(2) for who, x in zip(("real", "SSW", "DVD"), (real, *made))],
          list(range(0, cfg.video_frames, 4)), 2)
    return [
        "## 1. Stage-wise training against one full-size stage, at equal training FLOPs", "",
        f"Both make {cfg.video_frames} frames at {cfg.out_size}x{cfg.out_size}. SSW-GAN trains tiny's "
        f"three stages for {steps['ssw-stage1']} steps each; the single-stage DVD-GAN (`dvd-tiny`) trains "
        f"for the steps that spend the same FLOPs (FLOPs per step from `bench.step_cost`, batch "
        f"{args.batch_size}, 2 D steps + 1 G step). FVD: {args.fvd_n} videos from noise against "
        f"{args.fvd_n} held-out real clips, first {FVD_FRAMES} frames.", "",
        "| model | steps | training TFLOP | training wall time (min) | activations saved for backward, "
        "largest stage (GB) | FVD |", "|---|---|---|---|---|---|",
        f"| SSW-GAN: tiny stages 1, 2, 3 | {' + '.join(str(steps[r]) for r in SSW)} | "
        f"{sum(flop[r] for r in SSW):.3g} | {sum(wall[r] for r in SSW):.1f} | {mem_ssw:.3g} | {fvd_ssw:.1f} |",
        f"| DVD-GAN: dvd-tiny, one stage | {steps['dvd']} | {flop['dvd']:.3g} | {wall['dvd']:.1f} | "
        f"{mem_dvd:.3g} | {fvd_dvd:.1f} |", "",
        verdict_line("SSW-GAN makes better videos than one full-size stage trained on the same FLOPs.",
                     fvd_ssw, fvd_dvd, "SSW's FVD", "DVD's FVD"), "",
        verdict_line("Each SSW stage keeps fewer activations for backward than the single stage.",
                     mem_ssw, mem_dvd, "SSW's largest stage's GB", "DVD's GB"), "",
        "Samples (every 4th frame; real clips of the held-out split, then each model's videos from noise):", "",
        "![arm 1 samples](arm1-samples.png)", ""]


def stage2_measures(args: argparse.Namespace, plan: dict, results: Results) -> dict:
    """What arms 2 and 3 report of the three stage-2 runs: the rung (FVD on real views, overlap
    R) and its trilinear floor, grounding error, seam error at overlap R and 0; a strip."""
    n = plan["steps"]["ssw-stage2"]
    (cfg, G), = load(args, "ssw-stage2")
    print("[study] arms 2 and 3: stage 2's rungs, grounding and seams", flush=True)
    floor = results.get("fvd trilinear x2 of real views", lambda: fvd_of(
        args, evaluate.interpolated(SOURCE, cfg, args.fvd_n, EVAL_BATCH, 1, "trilinear"), cfg))
    names = ["ssw-stage2", "stage2-no-dm", "stage2-no-context"]
    rung = {r: results.get(f"fvd rung {r} @{n}", lambda r=r: rung_fvd(args, r, n)) for r in names}
    x, c = zip(*(on_real_views(args, r, None) for r in names))                 # overlap R
    x0 = {r: on_real_views(args, r, 0)[0] for r in ("ssw-stage2", "stage2-no-context")}
    strip(os.path.join(args.out, "stage2-samples.png"),
          [(f"{who} {k}", v[k]) for k in range(2) for who, v in
           (("trilinear", upsample(c[0][:2])), ("D_m, ctx R", x[0]), ("no D_m", x[1]),
            ("ctx 0", x[2]), ("real", next(evaluate.real_views(SOURCE, cfg, 2, 2))[0]))],
          list(range(0, cfg.video_frames, 2)), 3)
    return {"cfg": cfg, "R": G.receptive_radius, "steps": n, "floor": floor, "rung": rung,
            "views": f"{c[0].shape[2]}@{c[0].shape[3]}",
            "floor_grounding": sample.grounding_error(upsample(c[0]), c[0]),
            "grounding": {r: sample.grounding_error(xr, c[0]) for r, xr in zip(names, x)},
            "seam_R": {r: seams_of(xr, cfg) for r, xr in zip(names, x)},
            "seam_0": {r: seams_of(xr, cfg) for r, xr in x0.items()}}


def arm_matching(args: argparse.Namespace, m: dict) -> list[str]:
    """Arm 2: stage 2 with and without the matching discriminator D_m, at equal steps."""
    cfg, rung, ground = m["cfg"], m["rung"], m["grounding"]
    return [
        "## 2. The matching discriminator grounds each window in its view", "",
        f"Tiny's stage 2 ({m['views']} real views -> {cfg.video_frames}@{cfg.out_size}), {m['steps']} steps "
        f"each, scored on {args.fvd_n} held-out real views of its input, upscaled chunk by chunk with "
        f"overlap R = {m['R']} (the ladder's rung). Grounding error: mean abs(view(x, 2, 2) - c).", "",
        f"| stage 2 | FVD on real {m['views']} views | grounding error |", "|---|---|---|",
        f"| trilinear x2 (the floor) | {m['floor']:.1f} | {m['floor_grounding']:.4f} |",
        f"| with D_m (--lambda-m 1) | {rung['ssw-stage2']:.1f} | {ground['ssw-stage2']:.4f} |",
        f"| without D_m (--lambda-m 0) | {rung['stage2-no-dm']:.1f} | {ground['stage2-no-dm']:.4f} |", "",
        verdict_line("D_m keeps the upscaled videos closer to their low-resolution view.",
                     ground["ssw-stage2"], ground["stage2-no-dm"], "grounding error with D_m", "without D_m"), "",
        verdict_line("Stage 2 beats interpolating its input (the ladder's test of an upscaler).",
                     rung["ssw-stage2"], m["floor"], "stage 2's FVD", "trilinear's FVD"), ""]


def arm_context(args: argparse.Namespace, m: dict) -> list[str]:
    """Arm 3: stage 2 trained with context R and with none, at equal steps."""
    R, rung, seam_0, seam_R = m["R"], m["rung"], m["seam_0"], m["seam_R"]
    return [
        f"## 3. Training as sampled: context R = {R} against 0", "",
        f"The same stage trained with {R} conditioning frames of context each side of a window, as the "
        f"sampler's overlap gives, or with none. Seam error: mean change across a chunk seam over the "
        f"mean change inside chunks (1: the seams are invisible).", "",
        "| stage 2 | FVD on real views (overlap R) | seam error, overlap 0 | seam error, overlap R |",
        "|---|---|---|---|",
        *(f"| --context {ctx} | {rung[r]:.1f} | {seam_0[r]:.3f} | {seam_R[r]:.3f} |"
          for ctx, r in ((R, "ssw-stage2"), (0, "stage2-no-context"))), "",
        verdict_line("Training with context makes a better upscaler.", rung["ssw-stage2"],
                     rung["stage2-no-context"], "FVD with context R", "with context 0"), "",
        verdict_line("Each sampled as trained (overlap = its context), context R leaves smaller seams.",
                     abs(seam_R["ssw-stage2"] - 1), abs(seam_0["stage2-no-context"] - 1),
                     "abs(seam error - 1) with context R", "with context 0"), "",
        "Samples (every 2nd frame of held-out videos): trilinear, the three runs, the real video:", "",
        "![stage 2 samples](stage2-samples.png)", ""]


def arm_seams(args: argparse.Namespace, plan: dict, results: Results) -> list[str]:
    """Arm 4: the trained chain's seams against the overlap, and exactness of overlap >= R."""
    chain = load(args, *SSW)
    R = max(G.receptive_radius for _, G in chain[1:])
    print("[study] arm 4: seams of the chain against the overlap", flush=True)
    rows = results.get(f"chain seams @{[plan['steps'][r] for r in SSW]}", lambda: chain_seams(args, chain))
    exact = max(err for overlap, _, err in rows[1:] if overlap >= R)
    at = {overlap: seam for overlap, seam, _ in rows}
    return [
        "## 4. Seams of the trained chain against the overlap", "",
        f"{args.fvd_n} videos from noise through stages 1-3, every upscaler chunked by its training "
        f"window's conditioning ({chain[-1][0].cond_frames} frames) with the overlap below, the same "
        f"noise each time; seams at frames {chain_seam_frames(chain)}. The reference is the "
        f"whole-video pass (one chunk, the video mirrored R = {R} frames past its ends).", "",
        "| overlap | seam error | max abs(chunked - whole) |", "|---|---|---|",
        *(f"| {overlap} | {seam:.3f} | {err:.2e} |" for overlap, seam, err in rows), "",
        verdict_line(f"Chunks with overlap >= R = {R} equal the whole-video pass.", exact, EXACT_TOL,
                     "max abs(chunked - whole)", "tolerance", margin=0.0), "",
        verdict_line("Overlap 0 leaves seams that overlap R removes.", abs(at[R] - 1), abs(at[0] - 1),
                     "abs(seam error - 1) at overlap R", "at overlap 0"), ""]


def arm_curves(args: argparse.Namespace, plan: dict) -> list[str]:
    """Arm 5: every run's curves."""
    lines = ["## 5. Curves", "", f"From each run's log.jsonl: status lines every {min(plan['log_every'].values())}"
             f"-{max(plan['log_every'].values())} steps, FVD at {args.fvd_points} points of each run "
             f"({args.fvd_n} videos, the run's own rung).", ""]
    for name in RUNS:
        curves(args, name, os.path.join(args.out, f"curves-{name}.png"))
        lines += [f"![{name}](curves-{name}.png)", ""]
    return lines


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):  # Linux names the model; platform often does not
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores; GPU: {gpu}; runs on {device}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def header(args: argparse.Namespace, plan: dict, argv: list[str], seconds: float) -> list[str]:
    smoke = (["**Smoke run (`--quick`): these numbers show that the study runs end to end; at this "
              "budget they say nothing about the claims.**", ""] if args.quick else [])
    tflop = {r: f"{f:.3g}" for r, f in plan["tflop_per_step"].items()}
    runs = [f"| {name} | `{' '.join(RUNS[name])}` | {plan['steps'][name]} | {plan['s_per_step'][name]:.3f} | "
            f"{tflop.get(name, 'not counted')} | {training_seconds(log_of(args, name)) / 60:.1f} |"
            for name in RUNS]
    return [
        "# SSW-GAN at small scale: the study", "", *smoke,
        f"Made by `python study.py {' '.join(argv)}` ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
        f"UTC), {seconds / 60:.1f} min in all (the invocations of the command that reached the report, added up).", "",
        f"- Machine: {machine(args.device)}.",
        f"- Seeds: every run trains with --seed {args.seed} (init, noise and data order); every score uses "
        f"evaluate.py's FVD_SEED = {evaluate.FVD_SEED} (its held-out real clips and its noise).",
        "- Data: the built-in synthetic videos, 32-frame 32x32 clips (the tiny preset); scores on the "
        "held-out split.",
        f"- Budget: {args.budget_minutes:g} min. Each run's s/step was measured on its first {CAL_STEPS} "
        f"steps; I3D took {plan['s_per_video']:.2f} s per video here, and scoring gets its estimated "
        f"share ({scored_videos(args)} videos); training gets the rest. Batch {args.batch_size}; "
        f"FVD on {args.fvd_n} videos per set (few: compare rows with each other, not with papers).", "",
        "| run | train.py flags | steps | s/step | TFLOP/step | training wall time (min) |",
        "|---|---|---|---|---|---|", *runs, ""]


def main(argv: list[str] | None = None) -> str:
    """Run (or continue) the study; returns the report's path."""
    argv = sys.argv[1:] if argv is None else argv
    args = get_args(argv)
    if args.quick:  # the runs' --fvd-every also logs recognizability, which the study never reads:
        # a smoke run's recognizer is a small one (2,000 steps on a stage is minutes on a CPU)
        evaluate.RECOGNIZER_CLIPS, evaluate.RECOGNIZER_STEPS = 256, 100
    t0 = time.time()
    os.makedirs(os.path.join(args.out, "fvd-stats"), exist_ok=True)
    plan = make_plan(args)
    done = {name: ckpt_step(run_dir(args, name)) for name in RUNS}
    for i, name in enumerate(RUNS, 1):
        print(f"[study] run {i}/{len(RUNS)}: {name}, step {done[name]} of {plan['steps'][name]}; "
              f"about {minutes_left(args, plan, done):.0f} min left in the study", flush=True)
        train_run(args, name, plan["steps"][name], plan["fvd_every"][name], plan["log_every"][name])
        done[name] = plan["steps"][name]
    results = Results(os.path.join(args.out, "results.json"))
    sections = arm_compute(args, plan, results)
    stage2 = stage2_measures(args, plan, results)
    sections += [*arm_matching(args, stage2), *arm_context(args, stage2), *arm_seams(args, plan, results),
                 *arm_curves(args, plan)]
    seconds = results.values.get("study seconds", 0.0) + time.time() - t0  # this invocation and earlier ones
    results.values["study seconds"] = seconds
    results.save()
    path = os.path.join(args.out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join([*header(args, plan, argv, seconds), *sections]))
    print(f"[study] wrote {path}", flush=True)
    return path


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
