"""Distributed training, and the batch-split contract that makes it exact (docs/scaling.md).

Under torchrun, K processes x --batch-size videos x --grad-accum micro-batches make one batch.
Any split of a batch trains what one process at the whole batch trains, because:
  - StepSampler: batch b is the same examples whatever the number of ranks and micro-batches;
  - example_noise: a step's noise and D_s's frames are drawn per example id, in the loader
    (WithNoise), not per call;
  - micro_batch: DDP all-reduces gradients once per step, and spectral norm's power iteration
    runs once per optimizer step, for all the layers of a net together (SpectralNorms);
  - CrossReplicaBN (--sync-bn): G's batch norm normalises over the whole batch of all ranks.
Also here: a step's batch on the device (to_device) and its forward compiled (compiled_step);
setting up and tearing down the process group, and telling a lost rank's error.
Imports the random-stream table of videos.py; nothing here imports train.py.
"""
import contextlib
import datetime
import functools
import itertools
import os
import weakref

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol  # all_reduce with autograd
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from videos import STREAMS


def setup(device: str, timeout: datetime.timedelta) -> tuple[int, int, torch.device]:
    """(rank, world, device) of this process: torchrun's (RANK, WORLD_SIZE; a GPU per LOCAL_RANK),
    with the process group up (nccl on GPUs, gloo on CPUs); or (0, 1, device) alone. On a GPU,
    TF32 matmuls and cuDNN's conv autotuning."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = torch.device(device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (cuDNN's convs use TF32 by default)
        torch.backends.cudnn.benchmark = True        # a stage's shapes never change: pick conv kernels once
    return rank, world, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(net: torch.nn.Module | None, world: int):
    """net in DDP under torchrun (its backward all-reduces its gradients), else net itself."""
    return DDP(net) if world > 1 and net is not None else net


def average_gradients(nets: list) -> None:
    """Average the gradients of nets over the ranks, in one all-reduce: what DDP's backward does,
    for the steps that call the nets unwrapped (train.py --compile under torchrun: torch.compile
    cannot trace DDP's forward inside a step's graph)."""
    grads = [p.grad for net in nets for p in net.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])                       # (sum of sizes,)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    chunks = flat.split([g.numel() for g in grads])
    torch._foreach_copy_(grads, [chunk.view_as(g) for chunk, g in zip(chunks, grads)])


def lost_rank_exit(e: RuntimeError, ddp_timeout: float) -> SystemExit | None:
    """One clear line to exit with where a collective failed: another rank died (connection
    reset) or hung past --ddp-timeout; None for any other error (torch.compile refusing code
    among them, whose message may name c10d's functions)."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1 or isinstance(e, torch._dynamo.exc.TorchDynamoException):
        return None
    if not (isinstance(e, dist.DistError) or any(s in str(e) for s in ("gloo", "NCCL", "c10d", "pair closure"))):
        return None
    return SystemExit(f"error: rank {os.environ['RANK']}: another rank died, or hung for more than --ddp-timeout "
                      f"{ddp_timeout:g} s; see its log. Rerun the same command to resume from the last checkpoint. "
                      f"({str(e).splitlines()[0]})")


# -----------------------------------------------------------------------------
# Which examples, which noise: pure functions of the step and the example ids

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


class WithNoise(torch.utils.data.Dataset):
    """A stage's examples, each with its index "id" and the randomness of the steps that use it,
    drawn here, in the loader's workers: "d_noise" for the D step it feeds and, on the last D
    batch of an iteration, "g_noise" for the G step that reuses that batch (example_noise); with
    d_steps 0 (no D) every batch feeds a G step. Batch b of the StepSampler holds examples
    [b * batch, (b + 1) * batch) of all ranks and micro-batches (`batch`), so an example's id says
    which steps it feeds. A training step then holds no generator and no per-example work: its
    noise came with its batch."""

    def __init__(self, examples: torch.utils.data.Dataset, cfg, seed: int, d_steps: int, batch: int):
        self.examples, self.cfg, self.seed, self.d_steps, self.batch = examples, cfg, seed, d_steps, batch

    def __len__(self) -> int:
        return len(self.examples)

    def streams(self, i: int) -> list[str]:
        """The steps example i feeds: its batch's D step, and the G step if its batch is the last
        of an iteration's max(d_steps, 1)."""
        g_step = (i // self.batch + 1) % max(self.d_steps, 1) == 0
        return ["d_noise"] * (self.d_steps > 0) + ["g_noise"] * g_step

    def __getitem__(self, i: int) -> dict:
        item = self.examples[i]
        c_frames = item["c_context"].shape[1:] if "c_context" in item else None  # (T', H', W'): upscalers
        noise = {stream: example_noise(self.cfg, i, c_frames, self.seed, stream) for stream in self.streams(i)}
        return {**item, "id": i, "noise": noise}


def example_noise(cfg, i: int, c_frames: tuple | None, seed: int, stream: str) -> dict:
    """The randomness one D or G step (stream "d_noise" or "g_noise" of videos.STREAMS) takes
    for example i of a StageConfig cfg's data: "z" for G ((T, z_dim) for stage 1; for
    upscalers a (z_dim, T', H', W') map over c_frames, the (T', H', W') of the example's
    c_context), "frames" (2, k), the frames D_s scores of the real video and of the fake, and
    "shift" (2, 2) in [-1, 1), the translations --augment gives them (drawn last, so that the
    other draws are those of a run without it). A
    pure function of (seed, i, stream), drawn on the CPU: one process at batch 4, two ranks at 2
    and two micro-batches of 2 draw the same numbers for the same examples, a resumed run draws
    what an uninterrupted one drew, and a run on a GPU draws what one on a CPU does."""
    z_shape = (cfg.out_frames, cfg.z_dim) if cfg.stage == 1 else (cfg.z_dim, *c_frames)
    T, k = cfg.out_frames, min(cfg.d_frames, cfg.out_frames)
    entropy = np.random.SeedSequence([seed, i, STREAMS[stream]]).generate_state(1, np.uint64)[0]
    g = torch.Generator().manual_seed(int(entropy))
    z = torch.randn(z_shape, generator=g)
    frames = torch.rand(2, T, generator=g).argsort(dim=1)[:, :k]  # (2, k): distinct frames
    return {"z": z, "frames": frames, "shift": 2 * torch.rand(2, 2, generator=g) - 1}


def with_noise(batch: dict, stream: str) -> dict:
    """A collated batch of WithNoise with the noise of `stream` in place: "z" (B, ...), "frames"
    (2, B, k) and "shift" (2, B, 2) (the real videos', then the fakes', as losses.py reads them)."""
    noise = batch["noise"][stream]
    return {**{k: v for k, v in batch.items() if k != "noise"}, "z": noise["z"],
            "frames": noise["frames"].transpose(0, 1), "shift": noise["shift"].transpose(0, 1)}


# -----------------------------------------------------------------------------
# One step over micro-batches and ranks: the batch on the device, the compiled step, gradients,
# spectral norm, batch norm

def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """A collated batch (nested dicts of tensors) on the device; channels_last: its 5D tensors
    (videos, views, noise maps) in channels_last_3d memory."""
    def move(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last_3d) if channels_last and t.dim() == 5 else t

    return {k: to_device(v, device, channels_last) if isinstance(v, dict) else move(v) for k, v in batch.items()}


def compiled_step(forward, compile: bool, device: torch.device, *nets_and_settings):
    """forward (losses.d_forward or losses.g_forward) with its leading arguments bound, as the loop
    calls it: step(batch). Under --compile, forward is torch.compile'd whole (fullgraph: a graph
    break is an error, not a silent slow path; dynamic=False: a stage's shapes never change), its
    backward compiled from the same graph; the optimizer steps and EMA stay eager. Compiled before
    binding, so each step's forward has its own code and graph (a partial compiled as such would
    share one wrapper, and the G step would first try the D step's guards). Spectral norm's
    weights come in ready (spectral_norm_once, below)."""
    if compile:
        if device.type == "cuda" and torch.__version__ < "2.14":
            # Inductor's loop reordering failed on the D step on CUDA with torch 2.11 ("'7 - ((0))' is
            # not comparable"); kept off through 2.13, unverified on a GPU since
            torch._inductor.config.loop_ordering_after_fusion = False
        forward = torch.compile(forward, fullgraph=True, dynamic=False)
    return functools.partial(forward, *nets_and_settings)


@contextlib.contextmanager
def micro_batch(m: int, n: int, ddp_nets: list, trained: list, others: list):
    """Micro-batch m of a step's n (forward and backward inside), a step of the nets `trained`
    (its optimizer steps after the last micro-batch) that also calls the nets `others`, frozen
    (G in a D step, the Ds in a G step). The DDP modules of ddp_nets all-reduce their gradients
    on the last micro-batch only (no_sync before it). Spectral norm: spectral_norm_once, with
    the trained nets' power iteration on the first micro-batch alone, so a step updates u and v
    once, as one big batch does."""
    with contextlib.ExitStack() as stack:
        if m < n - 1:
            for net in ddp_nets:
                stack.enter_context(net.no_sync())
        stack.enter_context(spectral_norm_once(trained, others, power_iteration=m == 0))
        yield


@contextlib.contextmanager
def power_iterations_paused(nets: list):
    """Spectral norm of nets, computed by torch's parametrization at each access, reuses its
    last estimate (no power iteration) within it."""
    layers = [m for net in nets for m in net.modules() if isinstance(m, _SpectralNorm)]
    for m in layers:
        m.train(False)
    try:
        yield
    finally:
        for m in layers:
            m.train(True)


# -----------------------------------------------------------------------------
# Spectral norm once per optimizer step, all the layers of a net together

class SpectralNorms:
    """The layers of a net that torch's spectral_norm parametrization normalises (models.sn), as
    one flat problem. torch's parametrization computes W / sigma(W) at each access of a layer's
    weight: in training mode one power iteration (u = W v / |W v|, v = W^T u / |W^T u|, stored
    in place), then sigma = u^T W v: ~13 ops of its own per layer and access and more in
    backward: ~45% of the ops of a ssw-128 training iteration, when it was (docs/measured.md).
    Here all of a net's layers take the same steps together, in ~40 ops whatever their number.

    Layer l's weight is the (h_l, w_l) matrix W_l (dim 0 against the rest); all weights flatten
    into one vector of N entries, the u's into one of sum h_l, the v's into one of sum w_l, and
    row[i], col[i] place weight entry i in them: (W_l v_l)_l for every l is one gather, one
    product and one sum by row (index_add_). The same numbers as torch's, summed in another
    order (float rounding apart)."""

    def __init__(self, net: torch.nn.Module):
        self.layers = [m for m in net.modules() if parametrize.is_parametrized(m, "weight")
                       and isinstance(m.parametrizations.weight[0], _SpectralNorm)]
        self.sns = [m.parametrizations.weight[0] for m in self.layers]
        assert all(len(m.parametrizations.weight) == 1 and sn.dim == 0 and m.parametrizations.weight.original.ndim > 1
                   for m, sn in zip(self.layers, self.sns)), "spectral norm over dim 0 of a matrix or conv, alone"
        self.h, self.w = [sn._u.numel() for sn in self.sns], [sn._v.numel() for sn in self.sns]
        self.device = self.sns[0]._u.device if self.sns else None
        self.usable = bool(self.layers)
        if not self.usable:
            return
        rows, cols, u_at, v_at = [], [], 0, 0
        for h, w in zip(self.h, self.w):  # on the CPU, once per net; then on the net's device
            rows.append(u_at + torch.arange(h, dtype=torch.int32).repeat_interleave(w))  # (h*w,): row-major
            cols.append(v_at + torch.arange(w, dtype=torch.int32).repeat(h))
            u_at, v_at = u_at + h, v_at + w
        layer = torch.arange(len(self.layers), dtype=torch.int32)
        self.row = torch.cat(rows).to(self.device)  # (N,): entry -> its row among all the u's
        self.col = torch.cat(cols).to(self.device)  # (N,): entry -> its column among all the v's
        self.u_layer = layer.repeat_interleave(torch.tensor(self.h)).to(self.device)  # (sum h,): its layer
        self.v_layer = layer.repeat_interleave(torch.tensor(self.w)).to(self.device)  # (sum w,)
        self.usable = self.serves_cache()

    def serves_cache(self) -> bool:
        """Does torch's parametrization cache serve our tensors to these layers? A deep copy of a
        parametrized module keeps the original's cache key (a torch quirk); such a net is left to
        torch's per-layer computation. The probe leaves no trace: a layer the cache does not serve
        computes its weight, here without a power iteration and dropped from the cache after."""
        probe, keys = torch.empty(0), [(id(m), "weight") for m in self.layers]
        saved, training = dict(parametrize._cache), [sn.training for sn in self.sns]
        try:
            for sn in self.sns:
                sn.train(False)
            with torch.no_grad(), parametrize.cached():
                parametrize._cache.update(dict.fromkeys(keys, probe))
                return all(m.weight is probe for m in self.layers)
        finally:
            parametrize._cache.clear()
            parametrize._cache.update(saved)
            for sn, was_training in zip(self.sns, training):
                sn.train(was_training)

    def normalize(self, x: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
        """Each layer's part of x (sum h or sum w,) over its norm, as F.normalize(eps=torch's)."""
        norms = torch.zeros(len(self.layers), device=x.device).index_add_(0, layer, x * x).sqrt()
        return x / norms.clamp_min(self.sns[0].eps).index_select(0, layer)

    def fill(self, power_iteration: bool) -> None:
        """Put every layer's W / sigma(W) in torch's parametrization cache (to be called inside
        parametrize.cached()), with the autograd graph from the weights if grad mode wants one.
        power_iteration: one power iteration first, u and v updated in place, as torch's
        parametrization runs at each access in training mode. Gathers are index_select and sums
        index_add: their backward is deterministic on the CPU (advanced indexing's is not, with
        threads)."""
        W = torch.cat([m.parametrizations.weight.original.flatten() for m in self.layers])  # (N,)
        with torch.no_grad():
            u, v = torch.cat([sn._u for sn in self.sns]), torch.cat([sn._v for sn in self.sns])
            if power_iteration:
                Wd = W.detach()
                Wv = torch.zeros_like(u).index_add_(0, self.row, Wd * v.index_select(0, self.col))
                u = self.normalize(Wv, self.u_layer)                                   # W v / |W v|
                WTu = torch.zeros_like(v).index_add_(0, self.col, Wd * u.index_select(0, self.row))
                v = self.normalize(WTu, self.v_layer)                                  # W^T u / |W^T u|
                torch._foreach_copy_([sn._u for sn in self.sns], list(u.split(self.h)))
                torch._foreach_copy_([sn._v for sn in self.sns], list(v.split(self.w)))
            v_at = v.index_select(0, self.col)                                         # (N,)
        Wv = torch.zeros_like(u).index_add(0, self.row, W * v_at)                      # (sum h,): W_l v_l
        sigma = torch.zeros(len(self.layers), device=W.device).index_add(0, self.u_layer, u * Wv)  # u_l^T W_l v_l
        W_sn = W / sigma.index_select(0, self.u_layer).index_select(0, self.row)        # (N,)
        for m, w in zip(self.layers, W_sn.split([h * w for h, w in zip(self.h, self.w)])):
            parametrize._cache[(id(m), "weight")] = w.view_as(m.parametrizations.weight.original)


_spectral_norms: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # net -> its SpectralNorms


def spectral_norms(net: torch.nn.Module) -> SpectralNorms:
    """net's SpectralNorms, made at the first call (and again if net moved to another device)."""
    sn = _spectral_norms.get(net)
    if sn is None or (sn.sns and sn.device != sn.sns[0]._u.device):
        sn = _spectral_norms[net] = SpectralNorms(net)
    return sn


@contextlib.contextmanager
def spectral_norm_once(trained: list, others: list, power_iteration: bool = True):
    """Within it, every net of a step has its spectrally normalised weights computed once, up
    front, all layers of a net together (SpectralNorms.fill), and each access reads them from
    torch's parametrization cache: the forward of a step (compiled or not) finds its weights
    ready, and holds no spectral-norm arithmetic of its own. The trained nets' weights carry
    the autograd graph back to their parameters, after one power iteration if power_iteration;
    the others' (frozen in this step) are their last estimate, without grad. So each net runs
    one power iteration per step of its own optimizer: D per D step, G per G step, where torch's
    parametrization runs one at every forward in training mode. A net whose layers the cache
    cannot serve (SpectralNorms.serves_cache) is left to torch's parametrization, paused likewise."""
    nets = trained + [net for net in others if net is not None]
    iterating = [net for net in trained if power_iteration]
    per_layer = [net for net in nets if not spectral_norms(net).usable and net not in iterating]
    with power_iterations_paused(per_layer), parametrize.cached():
        for net in nets:
            sn = spectral_norms(net)
            if sn.usable:
                with torch.set_grad_enabled(torch.is_grad_enabled() and net in trained):
                    sn.fill(power_iteration=net in iterating)
        yield


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
