"""Cost measurements of SSW-GAN against video length (DESIGN.md section 7).

    python bench.py cost                 # bytes saved for backward + FLOPs per training step,
                                         # every ssw-128 stage vs the dvd-128 baseline, 100/400 frames
    python bench.py step --preset tiny   # seconds per training step (real run of train.py), its
                                         # FLOP/s against the machine's own conv (and GPU matmul)
    python bench.py sample               # time and peak memory to sample 100/400/1000 frames
    python bench.py data                 # training examples/s per DataLoader worker
    python bench.py i3d                  # FVD's I3D: clips/s at 16x224x224

`cost` runs on the meta device: shapes only, no arithmetic, so it is exact and takes seconds
on any machine. `step` and `sample` measure the machine they run on (say which, when quoting).
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import fvd
import losses
import sample
import train  # the real fake batch and losses, not copies
from data import StageExamples, SyntheticVideos
from models import G1, PRESETS, Gup, build_stage, stage_config
from runfolder import read_log


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    cost = sub.add_parser("cost", help="activation bytes and FLOPs per training step (meta device)")
    cost.add_argument("--frames", type=int, nargs="+", default=[100, 400], help="source clip lengths")
    cost.add_argument("--batch", type=int, default=8, help="videos per step")
    cost.add_argument("--grounded", action="store_true",
                      help="upscalers as train.py trains them by default (grounded, with the L1 term "
                           "--lambda-rec); without it, the paper's form")
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
    d_steps, lambda_rec = 2, train.get_args([]).lambda_rec if grounded else 0.0
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
                    x_fake = train.fake_batch(G, cfg, data)
                loss_D, _ = losses.d_loss(D_s, D_t, D_m, data, x_fake, 1.0, False)
            bytes_D, saved, weight[0] = sum(saved.values()), {}, 1
            loss_D.backward()
            flops_D = flops.get_total_flops()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss_G, _ = losses.g_loss(D_s, D_t, D_m, data, train.fake_batch(G, cfg, data), 1.0, lambda_rec)
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


if __name__ == "__main__":
    a = get_args()
    {"cost": cost, "step": step_time, "sample": sample_sweep, "data": data_speed, "i3d": i3d_speed,
     "sample-one": sample_one}[a.cmd](a)
