"""Cost measurements of SSW-GAN against video length (DESIGN.md section 7).

    python bench.py cost                 # bytes saved for backward + FLOPs per training step,
                                         # every ssw-128 stage vs the dvd-128 baseline, 100/400 frames
    python bench.py profile --stage 3    # one training iteration's anatomy: aten ops per phase and
                                         # kind, host syncs (meta device); on CUDA also kernels, GPU busy
    python bench.py profile --compile    # ... and what torch.compile makes of the steps: graphs,
                                         # graph breaks, recompiles (on CUDA: the compiled steps' profile)
    python bench.py gpu-table            # on a GPU, in one call of under 8 minutes: s/iter, kernels, GPU
                                         # busy, host syncs, memory of ssw-128 stages 1 and 3 at batch 8
                                         # and 32, float32 and bfloat16, eager and compiled (--json too)
    python bench.py step --preset tiny   # seconds per training step (real run of train.py), its
                                         # FLOP/s against the machine's own conv (and GPU matmul)
    python bench.py sample               # time and peak memory to sample 100/400/1000 frames
    python bench.py data                 # training examples/s per DataLoader worker
    python bench.py i3d                  # FVD's I3D: clips/s at 16x224x224
    python bench.py learn --stage 3      # can the Ds tell real videos from the stage's untrained start?
    python bench.py see --preset demo    # can D_s's trunk see the data's classes? held-out accuracy of
                                         # its class head, trained alone on real videos

`cost` and `profile` run on the meta device: shapes only, no arithmetic, so they are exact and
take seconds on any machine. `step`, `sample` and `gpu-table` measure the machine they run on (say
which, when quoting); `gpu-table --budget` skips, and says so, what would not fit in its time.
"""
import argparse
import collections
import copy
import dataclasses
import functools
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from torch._dynamo.utils import counters as dynamo_counters
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import distributed
import fvd
import losses
import models
import sample
import train  # train.py's own flags, config and optimizers, not copies
from data import StageExamples, SyntheticVideos, view
from distributed import example_noise, micro_batch, with_noise
from models import G1, PRESETS, Gup, build_stage, stage_config
from runfolder import Status, read_log


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    cost = sub.add_parser("cost", help="activation bytes and FLOPs per training step (meta device)")
    cost.add_argument("--frames", type=int, nargs="+", default=[100, 400], help="source clip lengths")
    cost.add_argument("--batch", type=int, default=8, help="videos per step")
    cost.add_argument("--grounded", action="store_true",
                      help="upscalers as train.py trains them by default (grounded, with the L1 term "
                           "--lambda-rec); without it, the paper's form")
    prof = sub.add_parser("profile", help="the anatomy of one training iteration: aten ops per phase and kind "
                                          "(meta device, or CUDA), and on CUDA kernels, GPU busy time, syncs")
    prof.add_argument("--preset", default="ssw-128")
    prof.add_argument("--stage", type=int, default=1)
    prof.add_argument("--batch", type=int, default=8)
    prof.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    prof.add_argument("--device", default=None, help="default: cuda if there is one, else meta (shapes only)")
    prof.add_argument("--compile", action="store_true",
                      help="also the steps' forwards under torch.compile, as train.py --compile: graphs, graph "
                           "breaks, recompiles (on the meta device traced alike, run by the eager backend); on "
                           "CUDA the GPU profile is then the compiled steps'")
    prof.add_argument("--json", default=None, help="also write the table here")
    step = sub.add_parser("step", help="seconds per training step, from a real short run of train.py")
    step.add_argument("--preset", default="tiny")
    step.add_argument("--stage", type=int, default=1)
    step.add_argument("--batch", type=int, default=8)
    step.add_argument("--iters", type=int, default=6, help="steps to run; the first is not timed")
    step.add_argument("--compile", action="store_true")
    step.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    step.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    step.add_argument("--workers", type=int, default=None,
                      help="DataLoader workers (default 8 on CUDA, where 1 cannot keep up; 1 on CPU)")
    tab = sub.add_parser("gpu-table", help="s/iter, kernels, GPU busy, host syncs and peak memory of training "
                                            "iterations over stages x batches x dtypes x eager/compiled, one call")
    tab.add_argument("--preset", default="ssw-128")
    tab.add_argument("--stages", type=int, nargs="+", default=[1, 3])
    tab.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    tab.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    tab.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    tab.add_argument("--iters", type=int, default=3, help="timed iterations per combination, after 2 warm-up ones")
    tab.add_argument("--budget", type=float, default=400,
                     help="seconds for the whole table: a combination that would not fit is skipped")
    tab.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    tab.add_argument("--json", default=None, help="also write the rows here (after each one)")
    smp = sub.add_parser("sample", help="time and peak memory of sampling one video (untrained chain)")
    smp.add_argument("--preset", default="ssw-128")
    smp.add_argument("--frames", type=int, nargs="+", default=[100, 400, 1000])
    smp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    i3d = sub.add_parser("i3d", help="FVD's I3D throughput in clips/s at 16x224x224")
    i3d.add_argument("--batch", type=int, default=8)
    i3d.add_argument("--iters", type=int, default=3, help="timed batches, after one warm-up batch")
    i3d.add_argument("--compile", action="store_true")
    i3d.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dat = sub.add_parser("data", help="training examples/s of each stage on the built-in data, one process")
    dat.add_argument("--preset", default="ssw-128")
    dat.add_argument("--n", type=int, default=40, help="examples timed per stage")
    lrn = sub.add_parser("learn", help="can the Ds learn? trained alone against the stage's frozen untrained G, "
                                       "held-out real-vs-fake accuracy per D")
    lrn.add_argument("--preset", default="tiny")
    lrn.add_argument("--stage", type=int, default=3)
    lrn.add_argument("--steps", type=int, default=300, help="D steps")
    lrn.add_argument("--batch", type=int, default=16)
    lrn.add_argument("--n-train", type=int, default=640, help="fixed training examples")
    lrn.add_argument("--n-val", type=int, default=128, help="held-out examples scored")
    lrn.add_argument("--lr-d", type=float, default=None, help="default: train.py's")
    lrn.add_argument("--flags", default="", help="more train.py flags, e.g. '--d-pool sum --d-ch 16'")
    lrn.add_argument("--json", default=None, help="also write the curve here")
    see = sub.add_parser("see", help="can D_s's trunk see the classes? its class head (--aux-class's) trained "
                                     "alone on real videos, held-out accuracy")
    see.add_argument("--preset", default="demo")
    see.add_argument("--stage", type=int, default=1)
    see.add_argument("--steps", type=int, default=800)
    see.add_argument("--batch", type=int, default=16)
    see.add_argument("--n-train", type=int, default=2048, help="fixed training videos")
    see.add_argument("--n-val", type=int, default=512, help="held-out videos scored")
    see.add_argument("--lr-d", type=float, default=None, help="default: train.py's")
    see.add_argument("--flags", default="", help="more train.py flags, e.g. '--d-pool max --d-ch 32'")
    one = sub.add_parser("sample-one", help=argparse.SUPPRESS)  # one length, in a fresh process
    one.add_argument("--preset")
    one.add_argument("--frames", type=int)
    one.add_argument("--device")
    return p.parse_args(argv)


# -----------------------------------------------------------------------------
# cost: saved-for-backward bytes and FLOPs on the meta device

def step_cost(preset: str, stage: int, clip_frames: int, batch: int, grounded: bool = False) -> dict:
    """One training iteration of (preset, stage) on clips of clip_frames frames: the bytes of
    distinct activation storages autograd saves for backward in a D step and in a G step
    (parameters excluded), and the FLOPs of d_steps D steps + one G step, forward + backward.
    Upscaling stages train with their default context, R conditioning frames each side, in the
    paper's form, or as train.py trains them by default: `grounded` (models.ground), with its
    L1 term (--lambda-rec)."""
    recipe = train.get_args(["--preset", preset, "--stage", str(stage)])  # what train.py would train with
    d_steps, lambda_rec = recipe.d_steps, recipe.lambda_rec if grounded else 0.0
    cfg = stage_config(preset, stage, num_classes=5, clip_frames=clip_frames, grounded=grounded)
    if stage > 1:
        cfg = stage_config(preset, stage, num_classes=5, clip_frames=clip_frames, grounded=grounded,
                           context=Gup(cfg).receptive_radius)
    nets = [m.to("meta") if m is not None else None for m in build_stage(cfg)]
    G, D_s, D_t, D_m = nets
    params = {p.untyped_storage()._cdata for m in nets if m is not None for p in m.parameters()}
    saved: dict[int, int] = {}
    convs: dict[tuple, int] = {}  # (conv layer, input shape) -> its forward FLOPs in this step
    weight = [d_steps]            # a D step's convs run d_steps times per iteration

    def count(conv: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        key = ("Conv3d" if isinstance(conv, torch.nn.Conv3d) else "Conv2d", conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding,
               tuple(inputs[0].shape))
        convs[key] = convs.get(key, 0) + weight[0] * 2 * out.numel() * conv.in_channels * math.prod(conv.kernel_size)

    hooks = [m.register_forward_hook(count) for net in nets if net is not None for m in net.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in params:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.device("meta"):
        x = torch.randn(batch, 3, cfg.out_frames, cfg.out_size, cfg.out_size)
        c = torch.randn(batch, 3, cfg.cond_frames, cfg.cond_size, cfg.cond_size) if stage > 1 else None
        y = torch.zeros(batch, dtype=torch.long)
        data = {"x": x, "y": y}
        if stage > 1:
            n, k = cfg.cond_frames, cfg.context
            data["c"] = c
            data["c_context"] = torch.randn(batch, 3, n + 2 * k, cfg.cond_size, cfg.cond_size)
        with FlopCounterMode(display=False) as flops:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with torch.no_grad():
                    x_fake = models.fake_batch(G, cfg, data)
                loss_D, _ = losses.d_loss(D_s, D_t, D_m, data, x_fake, 1.0, False)
            bytes_D, saved, weight[0] = sum(saved.values()), {}, 1
            loss_D.backward()
            flops_D = flops.get_total_flops()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss_G, _ = losses.g_loss(D_s, D_t, D_m, data, models.fake_batch(G, cfg, data), 1.0, lambda_rec)
            bytes_G = sum(saved.values())
            loss_G.backward()
            flops_G = flops.get_total_flops() - flops_D
    for h in hooks:
        h.remove()
    conv, conv_flops = max(convs.items(), key=lambda kv: kv[1])
    return {"preset": preset, "stage": stage, "clip_frames": clip_frames,
            "out": f"{cfg.out_frames}@{cfg.out_size}", "saved_D_GB": bytes_D / 1e9, "saved_G_GB": bytes_G / 1e9,
            "TFLOP_per_iter": (d_steps * flops_D + flops_G) / 1e12,
            # the conv layer (at one input shape) with the most forward FLOPs per iteration, and its share
            "conv": conv, "conv_share": conv_flops / sum(convs.values())}


def cost(args: argparse.Namespace) -> None:
    print(f"batch {args.batch}, upscalers {'grounded, with the L1 term' if args.grounded else 'as in the paper'}; "
          f"saved = activation bytes autograd keeps for backward in one D / G step")
    print(f"{'preset':8} {'stage':>5} {'clip T':>6} {'makes':>8} {'saved D GB':>11} {'saved G GB':>11} "
          f"{'TFLOP/iter':>11}")
    rows = [("ssw-128", s) for s in (1, 2, 3)] + [("dvd-128", 1)]
    for preset, stage in rows:
        for frames in args.frames:
            r = step_cost(preset, stage, frames, args.batch, args.grounded)
            print(f"{preset:8} {stage:>5} {frames:>6} {r['out']:>8} {r['saved_D_GB']:>11.3f} "
                  f"{r['saved_G_GB']:>11.3f} {r['TFLOP_per_iter']:>11.2f}")


# -----------------------------------------------------------------------------
# profile: the anatomy of one training iteration, op by op

class OpCount(TorchDispatchMode):
    """Counts the aten ops dispatched under it by kind, into the phase `self.phase` names (None:
    not counted), in bins: "ops", the non-view ops: in eager mode each is a host dispatch and,
    on a GPU, a kernel launch or more, whatever the batch (what a batch-independent time per
    iteration is made of); "views" (the schema says the output aliases an input, or
    _unsafe_view): no data moves; "host", numbers read from CPU scalars (.item() of a CPU
    tensor, as the optimizers' step counters): no kernel and no sync; "syncs", values read
    from a tensor that is not on the CPU (its .item(), .tolist(), .cpu(): host_read): the host
    waits there until the device has run all the work queued before, so a GPU runs dry once
    per sync. On the meta device such a read has no value to give and raises; here it is
    counted and gives zeros (on the CPU), so that an iteration's count completes."""

    def __init__(self):
        super().__init__()
        self.phase, self.bins = None, {}

    def count(self, bin: str, kind: str) -> None:
        self.bins.setdefault(bin, {}).setdefault(self.phase, collections.Counter())[kind] += 1

    @staticmethod
    def host_read(kind: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The tensor whose values op `kind` brings to the host: .item()'s (_local_scalar_dense),
        or the source of a copy to the CPU (.cpu(), .tolist(), .to("cpu"), copy_ into a CPU
        tensor; non_blocking too: its result is only there after a sync); else None."""
        if kind == "_local_scalar_dense":
            return args[0]
        if kind == "_to_copy" and (kwargs.get("device") or args[0].device).type == "cpu":
            return args[0]
        if kind == "copy_" and args[0].device.type == "cpu":
            return args[1]
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = func.overloadpacket.__name__
        source = self.host_read(kind, args, kwargs)
        if self.phase is not None:
            if func.is_view or kind == "_unsafe_view":
                self.count("views", kind)
            elif source is not None and source.device.type != "cpu":
                self.count("syncs", kind)
            elif kind == "_local_scalar_dense":
                self.count("host", kind)
            else:
                self.count("ops", kind)
        if source is not None and source.device.type == "meta":  # no values: zeros, on the CPU
            if kind == "_local_scalar_dense":
                return torch.zeros((), dtype=source.dtype).item()
            if kind == "copy_":
                return args[0].zero_()
            return torch.zeros(source.shape, dtype=kwargs.get("dtype") or source.dtype)
        return func(*args, **kwargs)


PHASES = ("D steps", "opt_D.step", "G step", "opt_G.step", "EMA", "status")


def compiled_step(forward, compile: bool, device: torch.device, *nets_and_settings):
    """forward bound as train.py binds it (distributed.compiled_step); on the meta device, where
    Inductor cannot make kernels, traced as train.py traces it (fullgraph, static shapes) and run
    op by op (the eager backend): Dynamo, where graphs break and recompile, does the same
    whatever the backend."""
    if compile and device.type == "meta":
        return functools.partial(torch.compile(forward, backend="eager", fullgraph=True, dynamic=False),
                                 *nets_and_settings)
    return distributed.compiled_step(forward, compile, device, *nets_and_settings)


def random_batch(cfg, batch: int, seed: int = 0) -> dict:
    """`batch` random examples of the shapes of StageConfig cfg's data, collated as the loader
    collates them, with the noise of a D step and of a G step (distributed.example_noise) for
    examples seed * batch ... : a training batch without rendering a video."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, cfg.out_frames, cfg.out_size, cfg.out_size, generator=g) * 2 - 1
    data = {"x": x, "y": torch.arange(batch) % cfg.classes}
    if cfg.stage > 1:
        data["c"] = view(x, 2, 2)
        data["c_context"] = torch.rand(batch, 3, cfg.cond_frames + 2 * cfg.context, cfg.cond_size, cfg.cond_size,
                                       generator=g) * 2 - 1
    c_frames = data["c_context"].shape[2:] if cfg.stage > 1 else None
    noise = {s: [example_noise(cfg, seed * batch + i, c_frames, 0, s) for i in range(batch)]
             for s in ("d_noise", "g_noise")}
    data["noise"] = {s: {k: torch.stack([n[k] for n in drawn]) for k in ("z", "frames", "shift")}  # as the loader collates
                     for s, drawn in noise.items()}
    return data


def training_iteration(preset: str, stage: int, batch: int, device: torch.device, dtype: str = "float32",
                       count: OpCount | None = None, compile: bool = False):
    """(preset, stage) at `batch` videos, built as train.py builds it with its defaults, on random
    data of the stage's shapes with its noise drawn as the loader draws it (distributed.WithNoise);
    returns iteration(step), which trains one iteration with train.py's own steps (--d-steps D
    steps, each: losses.d_forward, backward, opt_D.step; one G step: losses.g_forward, backward,
    opt_G.step; EMA; one micro-batch), with `count` (an OpCount) set to each phase; compile: the
    steps' forwards under torch.compile, as train.py --compile (compiled_step), from an empty
    compile cache. On the meta device, shapes only: a ssw-128 stage counts in seconds, but
    autocast does not apply there (bfloat16 counts as float32)."""
    args = train.get_args(["--preset", preset, "--stage", str(stage), "--device", str(device),
                           "--batch-size", str(batch), "--dtype", dtype])
    cfg = train.resolve_config(args, 5)
    count = count if count is not None else OpCount()
    torch.manual_seed(0)
    # Built on the CPU, then moved: on the meta device the init would run op by op through
    # Python meta kernels, 5-10x the CPU's arithmetic (ssw-128 stage 3: 7.6 s against 0.8 s).
    G, D_s, D_t, D_m = (None if m is None else m.to(device) for m in build_stage(cfg))
    data = distributed.to_device(random_batch(cfg, batch), device)
    Ds = [D for D in (D_s, D_t, D_m) if D is not None]
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G, opt_D = train.optimizers(G, Ds, args)
    autocast = torch.autocast("cpu" if device.type == "meta" else device.type, dtype=torch.bfloat16,
                              enabled=dtype == "bfloat16" and device.type != "meta")
    if compile:
        torch._dynamo.reset()  # its compiles are its own, and no earlier run counts against the recompile limit
    d_step = compiled_step(losses.d_forward, compile, device, G, D_s, D_t, D_m, cfg, args.lambda_m,
                           args.mismatch_negatives, args.r1, args.augment, args.aux_class)
    g_step = compiled_step(losses.g_forward, compile, device, G, D_s, D_t, D_m, cfg, args.lambda_m, args.lambda_rec,
                           args.augment, args.aux_class)
    status = Status("", device, 0, main=False, batch=batch)

    def iteration(step: int) -> None:
        for _ in range(args.d_steps):
            count.phase = "D steps"
            opt_D.zero_grad(set_to_none=True)
            with micro_batch(0, 1, [], trained=Ds, others=[G]):
                with autocast:
                    loss_D, stats = d_step(with_noise(data, "d_noise"))
                loss_D.backward()
            count.phase = "status"
            status.add({"loss_D": loss_D, **stats}, weight=1 / args.d_steps)
            count.phase = "opt_D.step"
            opt_D.step()
        count.phase = "G step"
        for D in Ds:
            D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        with micro_batch(0, 1, [], trained=[G], others=Ds):
            with autocast:
                loss_G, stats = g_step(with_noise(data, "g_noise"))
            loss_G.backward()
        count.phase = "status"
        status.add({"loss_G": loss_G, **stats})
        count.phase = "opt_G.step"
        opt_G.step()
        for D in Ds:
            D.requires_grad_(True)
        count.phase = "EMA"
        models.ema_update(G_ema, G, args.ema, step)
        count.phase = None

    return iteration


def op_table(count: OpCount, top: int = 15) -> dict:
    """Per phase and in all: each bin's count (OpCount), and the non-view ops by kind."""
    empty, bins = collections.Counter(), ("ops", "views", "host", "syncs")
    phases = {p: {bin: sum(count.bins.get(bin, {}).get(p, empty).values()) for bin in bins}
              | {"kinds": dict(count.bins.get("ops", {}).get(p, empty).most_common())} for p in PHASES}
    total = sum((count.bins.get("ops", {}).get(p, empty) for p in PHASES), collections.Counter())
    return {"phases": phases, **{bin: sum(r[bin] for r in phases.values()) for bin in bins},
            "top_kinds": dict(total.most_common(top))}


def compile_stats(iteration, iters: int = 3) -> dict:
    """torch.compile's work in iteration(step) (training_iteration(compile=True)): "graphs"
    compiled in the first iteration (one per step's forward), "graph_breaks", "recompiles" (graphs
    compiled in the `iters` iterations after it: guards that failed). Under fullgraph a graph
    break raises, so there is at most one, with its "break" (the reason and the line)."""
    dynamo_counters.clear()
    try:
        iteration(0)
        graphs = dynamo_counters["stats"]["unique_graphs"]
        for step in range(1, 1 + iters):
            iteration(step)
    except torch._dynamo.exc.Unsupported as e:
        reason, _, where = str(e).partition("from user code:")
        lines = [line.strip() for line in where.splitlines()]
        frame = [i for i, line in enumerate(lines) if line.startswith("File ")][-1:]  # the innermost one
        at = f" at {lines[frame[0]]}: {lines[frame[0] + 1]}" if frame else ""
        return {"graphs": dynamo_counters["stats"]["unique_graphs"], "graph_breaks": 1, "recompiles": None,
                "break": reason.strip().splitlines()[0] + at}
    return {"graphs": graphs, "graph_breaks": sum(dynamo_counters["graph_break"].values()),
            "recompiles": dynamo_counters["stats"]["unique_graphs"] - graphs}


def seconds_per_iteration(iteration, device: torch.device, steps: range) -> float:
    """Wall time per iteration of iteration(step) over `steps`, the device waited for."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.time()
    for step in steps:
        iteration(step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.time() - t0) / len(steps)


def kernel_profile(iteration, device: torch.device, steps: range) -> dict:
    """On CUDA, iteration(step) over `steps` under torch.profiler: GPU busy time over wall time
    (the union of kernel intervals), kernel launches per iteration, the 15 kernels with the most
    GPU time, the native fallback convs that run (vol2col, slow_conv, ...)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.time()
        for step in steps:
            iteration(step)
        torch.cuda.synchronize(device)
        wall = time.time() - t0
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy, end = 0.0, -math.inf
    for start, stop in sorted((e.time_range.start, e.time_range.end) for e in kernels):  # us
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    by_name = collections.Counter()
    for e in kernels:
        by_name[e.name] += e.time_range.elapsed_us()
    return {"busy_over_wall": busy / 1e6 / wall, "kernels_per_iter": len(kernels) / len(steps),
            "fallback_convs": sorted({e.name for e in kernels if any(
                s in e.name.lower() for s in ("vol2col", "col2vol", "im2col", "col2im", "slow_conv"))}),
            "top_kernels_ms_per_iter": {k: v / 1e3 / len(steps) for k, v in by_name.most_common(15)}}


def host_syncs(iteration, device: torch.device, step: int) -> int:
    """The host syncs of iteration(step) on CUDA, as its sync debug mode reports them (what
    OpCount's "syncs" counts on the meta device, seen by the driver)."""
    with warnings.catch_warnings(record=True) as syncs:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            iteration(step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize(device)
    return sum("synchroniz" in str(w.message) for w in syncs)


def gpu_profile(iteration, device: torch.device, tflop: float, iters: int = 3) -> dict:
    """On CUDA, for iteration(step) (training_iteration's), after 2 warm-up iterations (cuDNN
    picks its kernels; a compiled step compiles): s/iter over `iters`; then `iters` under
    torch.profiler (kernel_profile); host syncs of one iteration; achieved TFLOP/s against a
    dense bf16 matmul in the same run."""
    for step in range(2):
        iteration(step)
    s_per_iter = seconds_per_iteration(iteration, device, range(2, 2 + iters))
    kernels = kernel_profile(iteration, device, range(2 + iters, 2 + 2 * iters))
    syncs = host_syncs(iteration, device, 2 + 2 * iters)
    peak = matmul_throughput(device)
    return {"s_per_iter": s_per_iter, "tflops": tflop / s_per_iter, "bf16_matmul_tflops": peak / 1e12,
            "host_syncs_per_iter": syncs, **kernels}


def profile(args: argparse.Namespace) -> None:
    """The op table of one iteration (on the meta device without a GPU), with --compile what
    torch.compile made of the steps, and on CUDA the GPU's profile (of the compiled steps with
    --compile)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "meta"))
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as train.py on CUDA
        torch.backends.cudnn.benchmark = True
    count = OpCount()
    t0 = time.time()
    # eager: a dispatch mode (OpCount, FlopCounterMode) stops torch.compile, so the count is of eager steps
    iteration = training_iteration(args.preset, args.stage, args.batch, device, args.dtype, count)
    flops = FlopCounterMode(display=False)
    with count:  # from the start: a read of device values, which the meta device cannot give, gives zeros
        iteration(0)  # the optimizers' first step creates their state
        with flops:   # apart: it decomposes some ops (upsampling) that eager mode runs whole
            iteration(1)
        count.bins = {}  # the count is of the third iteration alone
        iteration(2)
    table = op_table(count)
    sn = "batched per net, one power iteration per optimizer step"
    d_steps = train.get_args(["--preset", args.preset, "--stage", str(args.stage)]).d_steps
    print(f"{args.preset} stage {args.stage} batch {args.batch} {args.dtype} on {device}, spectral norm {sn}: "
          f"the third iteration ({d_steps} D steps + 1 G step), eager, {flops.get_total_flops() / 1e12:.2f} TFLOP, "
          f"counted in {time.time() - t0:.1f} s")
    if args.dtype == "bfloat16" and device.type == "meta":
        print("(autocast does not apply on the meta device: these are float32's counts, without its casts)")
    print("| phase | non-view ops | views | CPU scalar reads | host syncs | top non-view kinds |\n"
          "|---|---|---|---|---|---|")
    for phase, r in table["phases"].items():
        print(f"| {phase} | {r['ops']} | {r['views']} | {r['host']} | {r['syncs']} | "
              + ", ".join(f"{k} {n}" for k, n in list(r["kinds"].items())[:6]) + " |")
    print(f"| **iteration** | **{table['ops']}** | {table['views']} | {table['host']} | **{table['syncs']}** | "
          + ", ".join(f"{k} {n}" for k, n in table["top_kinds"].items()) + " |")
    print(f"host syncs per iteration: {table['syncs']}")
    result = {"preset": args.preset, "stage": args.stage, "batch": args.batch, "dtype": args.dtype,
              "device": str(device), "spectral_norm": sn, "tflop_per_iter": flops.get_total_flops() / 1e12, **table}
    if args.compile:
        del iteration  # the eager nets, before the compiled ones are built
        t0, iters = time.time(), 3
        iteration = training_iteration(args.preset, args.stage, args.batch, device, args.dtype, compile=True)
        stats = result["compile"] = compile_stats(iteration, iters)
        backend = "the eager backend (meta)" if device.type == "meta" else "Inductor"
        print(f"torch.compile, fullgraph, static shapes, {backend}: {stats['graphs']} graphs compiled in the "
              f"first iteration, {stats['graph_breaks']} graph breaks, {stats['recompiles']} recompiles in the "
              f"{iters} after it "
              f"({time.time() - t0:.1f} s)" + (f"; graph break: {stats['break']}" if "break" in stats else ""))
    if device.type == "cuda" and "break" not in result.get("compile", {}):
        gpu = result["gpu"] = gpu_profile(iteration, device, result["tflop_per_iter"])
        print(f"GPU {torch.cuda.get_device_name(device)}, cuDNN {torch.backends.cudnn.version()}, "
              f"{'compiled' if args.compile else 'eager'}: "
              f"{gpu['s_per_iter']:.3f} s/iter, {gpu['tflops']:.1f} TFLOP/s = "
              f"{gpu['tflops'] / gpu['bf16_matmul_tflops']:.1%} of a dense bf16 matmul "
              f"({gpu['bf16_matmul_tflops']:.0f} TFLOP/s); GPU busy {gpu['busy_over_wall']:.0%} of the wall time; "
              f"{gpu['kernels_per_iter']:.0f} kernels, {gpu['host_syncs_per_iter']} host syncs per iteration; "
              f"fallback convs: {', '.join(gpu['fallback_convs']) or 'none'}")
        for name, ms in gpu["top_kernels_ms_per_iter"].items():
            print(f"  {ms:8.2f} ms/iter  {name[:110]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


# -----------------------------------------------------------------------------
# gpu-table: seconds per iteration over stages, batches, dtypes, eager and compiled, in one call

# What a combination is guessed to take before one of its mode has run: eager is measured by the
# first (dearest) one; the first compile of a ssw-128 stage took 144 s on a CPU (docs/measured.md).
FIRST_GUESS_S = {"eager": 0.0, "compiled": 150.0}


def table_row(args: argparse.Namespace, stage: int, batch: int, dtype: str, compiled: bool) -> dict:
    """One combination: training_iteration's iteration, 2 warm-up iterations (cuDNN picks its
    kernels, a compiled step compiles), s/iter over --iters, then on CUDA one iteration under
    torch.profiler (kernels, GPU busy) and one under the sync debug mode, and the peak memory."""
    device = torch.device(args.device)
    iteration = training_iteration(args.preset, stage, batch, device, dtype, compile=compiled)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    for step in range(2):
        iteration(step)
    row = {"warmup_s": time.time() - t0,
           "s_per_iter": seconds_per_iteration(iteration, device, range(2, 2 + args.iters))}
    if device.type == "cuda":
        kernels = kernel_profile(iteration, device, range(2 + args.iters, 3 + args.iters))
        row |= {"kernels_per_iter": kernels["kernels_per_iter"], "busy_over_wall": kernels["busy_over_wall"],
                "host_syncs_per_iter": host_syncs(iteration, device, 3 + args.iters),
                "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    return row


def gpu_table(args: argparse.Namespace) -> None:
    """Every (stage, batch, dtype, mode) of the flags, within --budget seconds: eager first, then
    compiled, each mode's dearest combinations first, so that a combination is skipped (and says
    why) when the longest one of its mode so far would not fit in the time left. A combination
    that fails (out of memory, a compile error) says so in its row and the rest go on. Rows
    print as they finish (stderr), the table at the end (stdout); --json is rewritten after
    each row, so a run cut short keeps what it measured."""
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as train.py on CUDA
        torch.backends.cudnn.benchmark = True
    combos = [(s, b, d, m) for s in args.stages for b in args.batches for d in args.dtypes for m in args.modes]
    order = sorted(combos, key=lambda c: (c[3] == "compiled", -c[1], c[2] != "bfloat16", -c[0]))
    took = {"eager": [], "compiled": []}
    rows, start = {}, time.time()
    for stage, batch, dtype, mode in order:
        left, need = args.budget - (time.time() - start), max(took[mode], default=FIRST_GUESS_S[mode])
        if left <= need:
            row = {"skipped": f"needs ~{need:.0f} s, {max(left, 0):.0f} s of --budget left"}
        else:
            t0 = time.time()
            try:
                row = table_row(args, stage, batch, dtype, mode == "compiled")
            except Exception as e:  # one combination's failure is its row's result, not the table's end
                row = {"failed": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}
            took[mode].append(time.time() - t0)
            row["wall_s"] = took[mode][-1]
            gc.collect()  # this combination's models, optimizers and graphs, before the next one's
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows[stage, batch, dtype, mode] = row
        done = (f"{row['s_per_iter']:.3f} s/iter ({row['wall_s']:.0f} s in all)" if "s_per_iter" in row
                else row.get("skipped") or row["failed"])
        print(f"stage {stage} batch {batch} {dtype} {mode}: {done}", file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": name, "torch": torch.__version__, "preset": args.preset, "iters": args.iters,
                           "budget_s": args.budget, "rows": [{"stage": s, "batch": b, "dtype": d, "mode": m, **r}
                                                             for (s, b, d, m), r in rows.items()]}, f, indent=1)
    cudnn = f", cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else ""
    print(f"{args.preset} training iterations on {name}, torch {torch.__version__}{cudnn}: s/iter over {args.iters} "
          f"after 2 warm-up iterations (their time: warm-up s); kernels, GPU busy and host syncs of one more each")
    print("| stage | batch | dtype | mode | s/iter | warm-up s | kernels/iter | GPU busy | host syncs/iter | peak GiB "
          "| note |\n|---|---|---|---|---|---|---|---|---|---|---|")

    def cell(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"  # "-": skipped, failed, or not measured off CUDA

    for combo in combos:
        r = rows[combo]
        print(f"| {' | '.join(map(str, combo))} | {cell(r, 's_per_iter', '.3f')} | {cell(r, 'warmup_s', '.1f')} | "
              f"{cell(r, 'kernels_per_iter', '.0f')} | {cell(r, 'busy_over_wall', '.0%')} | "
              f"{cell(r, 'host_syncs_per_iter', 'd')} | {cell(r, 'peak_gib', '.2f')} | "
              f"{r.get('skipped') or r.get('failed') or ''} |")


# -----------------------------------------------------------------------------
# step: a real short training run; the status lines give s/it

def throughput(run, flops: float, device: torch.device, seconds: float = 1.0) -> float:
    """FLOP/s of run(), which does `flops` FLOPs: after 3 warm-up calls, calls in groups of 5
    (each group waited for on a GPU) until `seconds` have passed."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        run()
    sync()
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        for _ in range(5):
            run()
        sync()
        n += 5
    return n * flops / (time.time() - t0)


def conv_throughput(conv: tuple, device: torch.device, dtype: str) -> float:
    """FLOP/s of one conv layer alone, forward and backward (input and weight gradients: 3x
    the forward FLOPs), at the shape and dtype it has in the step: what this machine's conv
    kernels reach on this work, the ceiling a step made of such convs could approach."""
    name, c_in, c_out, kernel, padding, shape = conv
    layer = getattr(torch.nn, name)(c_in, c_out, kernel, padding=padding).to(device)
    x = torch.randn(shape, device=device, requires_grad=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with autocast:
        y = layer(x)
    grad = torch.randn_like(y)

    def run():
        with autocast:
            out = layer(x)
        torch.autograd.grad(out, (x, layer.weight), grad)

    return throughput(run, 3 * 2 * y.numel() * c_in * math.prod(kernel), device)


def matmul_throughput(device: torch.device, n: int = 8192) -> float:
    """FLOP/s of a dense bf16 (n, n) @ (n, n) matmul: close to the GPU's bf16 peak in practice."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return throughput(lambda: a @ b, 2 * n**3, device)


def step_time(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 1)
    with tempfile.TemporaryDirectory() as out:
        argv = ["--preset", args.preset, "--stage", str(args.stage), "--batch-size", str(args.batch),
                "--max-iters", str(args.iters), "--log-every", "1", "--sample-every", "1000000",
                "--workers", str(workers), "--out", out, "--device", args.device, "--dtype", args.dtype]
        t0 = time.time()
        train.train(train.get_args(argv + (["--compile"] if args.compile else [])))
        total = time.time() - t0
        steps = [r for r in read_log(os.path.join(out, "log.jsonl")) if "s_per_it" in r]
    first, rest = steps[0]["s_per_it"], sorted(r["s_per_it"] for r in steps[1:])
    per_step = rest[len(rest) // 2]  # the median: a late recompile or a slow batch does not move it
    data = sorted(r["data_s_per_it"] for r in steps[1:])[len(rest) // 2]
    mode = f"{args.dtype} {'compiled' if args.compile else 'eager'}"
    print(f"{args.preset} stage {args.stage} batch {args.batch} {mode} on {device}: first step {first:.2f} s, "
          f"then {per_step:.3f} s/step (median of {len(rest)}; waiting for data {data:.3f} s of it); "
          f"whole run {total:.1f} s")
    cost = step_cost(args.preset, args.stage, stage_config(args.preset, args.stage).clip_frames, args.batch)
    mem = "GPU max allocated" if device.type == "cuda" else "peak RSS"
    print(f"memory: {mem} {steps[-1]['mem_gb']:.2f} GiB; bench.py cost: activations saved for backward "
          f"{cost['saved_D_GB']:.3g} GB (D step) / {cost['saved_G_GB']:.3g} GB (G step) in float32")
    achieved = cost["TFLOP_per_iter"] * 1e12 / per_step
    name, c_in, c_out, kernel, _, shape = cost["conv"]
    conv = conv_throughput(cost["conv"], device, args.dtype)
    print(f"achieved {achieved / 1e12:.3g} TFLOP/s ({cost['TFLOP_per_iter']:.3g} TFLOP per step, bench.py cost) = "
          f"{achieved / conv:.1%} of the step's dominant conv alone: {name} {c_in}->{c_out} k{kernel[0]} on "
          f"{list(shape)} ({cost['conv_share']:.0%} of the step's conv FLOPs), {conv / 1e12:.3g} TFLOP/s "
          f"forward+backward in {args.dtype}")
    if device.type == "cuda":
        peak = matmul_throughput(device)
        print(f"  = {achieved / peak:.1%} of a dense bf16 8192^3 matmul on {torch.cuda.get_device_name(device)}: "
              f"{peak / 1e12:.1f} TFLOP/s")


# -----------------------------------------------------------------------------
# sample: each length in a fresh process, so peak RSS is that length's alone

def sample_one(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    chain = []
    for s in range(1, len(PRESETS[args.preset]) + 1):
        cfg = stage_config(args.preset, s, num_classes=5)
        chain.append((cfg, (G1 if s == 1 else Gup)(cfg).to(device).eval()))
    y = torch.zeros(1, dtype=torch.long)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    video = sample.generate(chain, y, args.frames, None, None, device, torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.time() - t0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"frames": video.shape[2], "size": video.shape[3], "seconds": seconds,
                      "peak_bytes": peak, "output_bytes": video.numel() * 4}))


def sample_sweep(args: argparse.Namespace) -> None:
    kind = "GPU max allocated" if args.device.startswith("cuda") else "CPU peak RSS"
    print(f"{args.preset}, one video, untrained weights, default chunk and overlap, on {args.device}")
    print(f"{'frames':>6} {'seconds':>8} {kind + ' MB':>22} {'final video MB':>15}")
    for frames in args.frames:
        res = subprocess.run([sys.executable, __file__, "sample-one", "--preset", args.preset,
                              "--frames", str(frames), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{r['frames']:>6} {r['seconds']:>8.1f} {r['peak_bytes'] / 2**20:>22.0f} "
              f"{r['output_bytes'] / 2**20:>15.0f}")


# -----------------------------------------------------------------------------
# data: how fast one DataLoader worker makes a stage's examples

def data_speed(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # as in a DataLoader worker
    for stage in range(1, len(PRESETS[args.preset]) + 1):
        cfg = stage_config(args.preset, stage)
        examples = StageExamples(SyntheticVideos(cfg.clip_frames, cfg.clip_size), cfg.view_s, cfg.view_t,
                                 cfg.window)
        t0 = time.time()
        for i in range(args.n):
            examples[i]
        print(f"{args.preset} stage {stage} ({cfg.out_frames}@{cfg.out_size} from {cfg.clip_frames}@"
              f"{cfg.clip_size} clips): {args.n / (time.time() - t0):.1f} examples/s per worker")


# -----------------------------------------------------------------------------
# i3d: feature extraction speed, the cost of an FVD

@torch.no_grad()
def i3d_speed(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    model = fvd.load_i3d().to(device)
    run = torch.compile(model) if args.compile else model
    x = torch.rand(args.batch, 3, 16, 224, 224, device=device) * 2 - 1
    t0 = time.time()
    run(x)  # warm-up (and the compile, with --compile)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warm = time.time() - t0
    t0 = time.time()
    for _ in range(args.iters):
        run(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = args.batch * args.iters / (time.time() - t0)
    print(f"I3D {'compiled' if args.compile else 'eager'} on {device}, batch {args.batch} of 16x224x224: "
          f"{rate:.2f} clips/s (first batch {warm:.1f} s); 256 vs 256 videos: {512 / rate / 60:.1f} min")


# -----------------------------------------------------------------------------
# Learnability: can the stage's discriminators tell real from the stage's own start?

@torch.no_grad()
def held_out_scores(Ds: dict, real: dict, fake: torch.Tensor, frames: torch.Tensor) -> dict:
    """For each D: "acc", held-out real-vs-fake accuracy by the sign of the logit (real > 0,
    fake < 0, averaged over the two halves: 0.5 is chance), and "pair", the share of videos
    whose real version D scores above its fake one (a D that ranks but does not yet classify)."""
    x, y, c = real["x"], real["y"], real.get("c")
    logits = {"D_s": (Ds["D_s"](x, y, frames), Ds["D_s"](fake, y, frames)),
              "D_t": (Ds["D_t"](x, y), Ds["D_t"](fake, y))}
    if Ds.get("D_m") is not None:
        logits["D_m"] = (Ds["D_m"](x, c, y), Ds["D_m"](fake, c, y))
    return {name: {"acc": ((r > 0).float().mean().item() + (f < 0).float().mean().item()) / 2,
                   "pair": (r > f).float().mean().item()} for name, (r, f) in logits.items()}


def real_examples(args: argparse.Namespace, cfg, split: str, n: int, seed: int) -> dict:
    """Items 0 .. n-1 of the built-in data's `split` as train.py's loader makes them for stage
    cfg (StageExamples), collated: {"x", "y"} and, for an upscaler, {"c", "c_context"}."""
    clips = train.make_clips(args, cfg, split=split)
    ex = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window, cfg.context, seed=seed, crop=cfg.crop)
    real = torch.utils.data.default_collate([ex[i] for i in range(n)])
    return {k: v for k, v in real.items() if k in ("x", "y", "c", "c_context")}


def learnability(preset: str, stage: int, steps: int = 300, batch: int = 16, n_train: int = 640,
                 n_val: int = 128, lr_d: float | None = None, flags: tuple[str, ...] = (),
                 every: int = 50, seed: int = 0) -> list[dict]:
    """Train the stage's D_s, D_t and D_m alone, with train.py's D loss, optimizer and defaults,
    against the stage's *frozen untrained* G (its start: for an upscaler the grounded or plain
    interpolation) on n_train fixed training examples of the built-in data; every `every` steps
    score them on n_val held-out ones. A D that cannot separate the start from real videos
    gives G no signal to improve on it. Returns [{"step", "loss", "D_s": {"acc", "pair"}, ...}]."""
    args = train.get_args(["--preset", preset, "--stage", str(stage), "--seed", str(seed), *flags])
    lr_d = args.lr_d if lr_d is None else lr_d
    torch.manual_seed(seed)
    cfg = train.resolve_config(args, train.make_clips(args, stage_config(preset, stage)).num_classes)
    G, D_s, D_t, D_m = build_stage(cfg)
    G.eval()
    Ds = {"D_s": D_s, "D_t": D_t, "D_m": D_m if args.lambda_m else None}
    g = torch.Generator().manual_seed(seed)

    def examples(split: str, n: int) -> tuple[dict, torch.Tensor]:
        real = real_examples(args, cfg, split, n, seed)
        if cfg.stage == 1:
            real["z"] = torch.randn(n, cfg.out_frames, cfg.z_dim, generator=g)
        else:
            real["z"] = torch.randn(n, cfg.z_dim, *real["c_context"].shape[2:], generator=g)
        with torch.no_grad():
            fake = torch.cat([models.fake_batch(G, cfg, {k: v[i:i + batch] for k, v in real.items()})
                              for i in range(0, n, batch)])
        return real, fake

    (train_real, train_fake), (val_real, val_fake) = examples("train", n_train), examples("val", n_val)
    k = min(cfg.d_frames, cfg.out_frames)
    val_frames = torch.rand(n_val, cfg.out_frames, generator=g).argsort(dim=1)[:, :k]  # (n_val, k)
    params = [p for D in Ds.values() if D is not None for p in D.parameters()]
    opt_D = torch.optim.Adam(params, lr=lr_d, betas=(0.0, 0.999))
    curve = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, n_train, (batch,), generator=g)
        real = {key: v[idx] for key, v in train_real.items()}
        loss, _ = losses.d_loss(D_s, D_t, Ds["D_m"], real, train_fake[idx], args.lambda_m, args.mismatch_negatives)
        opt_D.zero_grad(set_to_none=True)
        loss.backward()
        opt_D.step()
        if step % every == 0 or step == steps:
            curve.append({"step": step, "loss": round(loss.item(), 4),
                          **held_out_scores(Ds, val_real, val_fake, val_frames)})
    return curve


def learn(args: argparse.Namespace) -> None:
    """The learnability table of one stage, printed and written as JSON."""
    flags = tuple(args.flags.split()) if args.flags else ()
    curve = learnability(args.preset, args.stage, args.steps, args.batch, args.n_train, args.n_val,
                         args.lr_d, flags)
    names = [n for n in ("D_s", "D_t", "D_m") if n in curve[0]]
    print(f"{args.preset} stage {args.stage}: D trained against the frozen untrained G, batch "
          f"{args.batch}, {args.n_train} training / {args.n_val} held-out examples"
          + (f", flags {' '.join(flags)}" if flags else ""))
    print("| D step | D loss | " + " | ".join(f"{n} acc / pair" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in curve:
        print(f"| {r['step']} | {r['loss']:.3f} | "
              + " | ".join(f"{r[n]['acc']:.2f} / {r[n]['pair']:.2f}" for n in names) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "stage": args.stage, "flags": flags, "curve": curve}, f, indent=1)


def class_curve(preset: str, stage: int, steps: int = 800, batch: int = 16, n_train: int = 2048,
                n_val: int = 512, lr_d: float | None = None, flags: tuple[str, ...] = (), every: int = 200,
                seed: int = 0) -> list[dict]:
    """What D_s's trunk can learn to see: D_s (train.py's flags, optimizer and D learning rate)
    with its auxiliary class head, trained on the cross-entropy of the classes of n_train fixed
    real training examples alone, no game; every `every` steps the accuracy on n_val held-out
    ones (chance 1/classes). The shapes a D cannot tell apart, it cannot ask G to draw: a slow
    curve here is a slow game. Returns [{"step", "loss", "acc"}]."""
    args = train.get_args(["--preset", preset, "--stage", str(stage), "--seed", str(seed), *flags])
    lr_d = args.lr_d if lr_d is None else lr_d
    torch.manual_seed(seed)
    cfg = train.resolve_config(args, train.make_clips(args, stage_config(preset, stage)).num_classes)
    D_s = models.SpatialD(dataclasses.replace(cfg, d_classify=True))

    real, held_out = real_examples(args, cfg, "train", n_train, seed), real_examples(args, cfg, "val", n_val, seed)
    x, y, x_val, y_val = real["x"], real["y"], held_out["x"], held_out["y"]
    opt = torch.optim.Adam(D_s.parameters(), lr=lr_d, betas=(0.0, 0.999))
    g = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(1, steps + 1):
        i = torch.randint(0, n_train, (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(D_s(x[i], y[i], classes=True)[1], y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                logits = torch.cat([D_s(x_val[k:k + 64], y_val[k:k + 64], classes=True)[1]
                                    for k in range(0, n_val, 64)])
            curve.append({"step": step, "loss": round(loss.item(), 4),
                          "acc": round((logits.argmax(1) == y_val).float().mean().item(), 3)})
    return curve


def see(args: argparse.Namespace) -> None:
    """The class curve of one stage's D_s, printed."""
    flags = tuple(args.flags.split()) if args.flags else ()
    curve = class_curve(args.preset, args.stage, args.steps, args.batch, args.n_train, args.n_val, args.lr_d, flags)
    print(f"{args.preset} stage {args.stage}: D_s's class head alone on real videos, batch {args.batch}, "
          f"{args.n_train} training / {args.n_val} held-out" + (f", flags {' '.join(flags)}" if flags else ""))
    print("| step | " + " | ".join(str(r["step"]) for r in curve) + " |")
    print("|---|" + "---|" * len(curve))
    print("| held-out accuracy | " + " | ".join(f"{r['acc']:.3f}" for r in curve) + " |")


if __name__ == "__main__":
    a = get_args()
    {"cost": cost, "profile": profile, "gpu-table": gpu_table, "step": step_time, "sample": sample_sweep,
     "data": data_speed, "i3d": i3d_speed, "learn": learn, "see": see,
     "sample-one": sample_one}[a.cmd](a)
