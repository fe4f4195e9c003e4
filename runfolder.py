"""The run folder (train.py --out) and the life of a run: what is written there, and how it is
read back, in one place.

    ckpt.pt      the checkpoint, everything needed to continue exactly: train_state and
                 save_checkpoint write it; restore_state (resume), load_checkpoint and
                 load_weights (sampling, evaluation) read it
    config.json  the run's flags and StageConfig
    log.jsonl    one JSON record per status line (Status), and the samples' and FVD's; read_log
    samples/     sample grids (train.py)
    lock         held by the live run (lock_folder): two runs never share a folder

Every file written whole goes through atomic_file, so none is ever half-written. A run ends at
a step boundary with a checkpoint on a stop signal (stop_on_signals), and raises
TrainingDiverged rather than save a diverged one. Imports models (StageConfig) alone of the
project; never train.py or sample.py.
"""
import argparse
import contextlib
import datetime
import fcntl
import json
import math
import os
import resource
import signal
import socket
import time
import warnings
from dataclasses import asdict, fields

import torch
import torch.distributed as dist
import torch.nn as nn

from models import StageConfig


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """Open a temp file beside path to write; when the block ends, fsync it and rename it over
    path, so path is either the old file or the whole new one, even after a crash. If the block
    or the write fails (disk full, I/O error), the temp file is removed and path is as it was."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# -----------------------------------------------------------------------------
# The checkpoint: written by train.py, read by resume, sample.py and evaluate.py

CHECKPOINT_KEYS = ("G", "G_ema", "D_s", "D_t", "opt_G", "opt_D", "step", "rng", "args", "config")
SAMPLING_KEYS = ("G_ema", "step", "args", "config")  # what sampling reads: a slimmed checkpoint holds these
RETIRED_CONFIG_KEYS = ("num_stages",)  # StageConfig fields older checkpoints carry, unused since


class CheckpointWriteError(RuntimeError):
    pass


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


def save_checkpoint(path: str, ckpt: dict) -> None:
    """Atomic and durable (atomic_file): ckpt.pt is never half-written. If the write fails (disk
    full, I/O error) the previous checkpoint stays as it was; raises CheckpointWriteError."""
    try:
        with atomic_file(path) as f:  # a file object: a failed write raises OSError, not RuntimeError
            torch.save(ckpt, f)
    except OSError as e:
        kept = "the previous checkpoint is intact" if os.path.exists(path) else "there is no earlier checkpoint"
        raise CheckpointWriteError(f"could not write {path} ({e}): the disk may be full. Training stopped and "
                                   f"{kept}; free space, then rerun the same command to resume.") from None


def load_checkpoint(path: str, for_sampling: bool = False) -> tuple[dict, StageConfig]:
    """Read a stage checkpoint safely (weights_only=True) -> (checkpoint dict, its StageConfig).
    Anything that is not one of ours is refused with a message that names the file. for_sampling:
    a checkpoint slimmed to SAMPLING_KEYS (slim_checkpoint) will do."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train the stage first "
                                f"(python train.py --stage N) or fix the path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean the same here
        raise ValueError(f"{path} is not a readable SSW-GAN checkpoint ({type(e).__name__}: {e}). "
                         f"It may be truncated or from another program: move it away or "
                         f"point at another file.") from None
    missing = [k for k in (SAMPLING_KEYS if for_sampling else CHECKPOINT_KEYS)
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing and isinstance(ckpt, dict) and ckpt.get("slim"):
        raise ValueError(f"{path} is slimmed for sampling (G_ema alone) and cannot resume training: "
                         f"train from its run folder's ckpt.pt, or start afresh with another --out.")
    if missing:
        raise ValueError(f"{path} is not an SSW-GAN stage checkpoint (missing {missing}): "
                         f"move it away or point at another file.")
    return ckpt, stage_config_of(path, ckpt["config"])


def slim_checkpoint(path: str, folder: str) -> str:
    """Write checkpoint `path` slimmed to what sampling and evaluation read (SAMPLING_KEYS: G_ema,
    the step, the args and the StageConfig) into `folder` as PRESET-stageN.pt, atomically; returns
    its path. The repository's demo chain is such files: a ninth of a full checkpoint's size."""
    ckpt, cfg = load_checkpoint(path)
    out = os.path.join(folder, f"{cfg.preset}-stage{cfg.stage}.pt")
    save_checkpoint(out, {**{k: ckpt[k] for k in SAMPLING_KEYS}, "shapes": ckpt.get("shapes"), "slim": True})
    return out


def stage_config_of(path: str, cfg: dict) -> StageConfig:
    """The StageConfig a checkpoint's config dict records. Retired fields (RETIRED_CONFIG_KEYS)
    are dropped; a field this code does not know is refused, since it may change the networks."""
    known = {f.name for f in fields(StageConfig)}
    unknown = sorted(set(cfg) - known - set(RETIRED_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{path}: its config has fields this code does not know ({', '.join(unknown)}); it was "
                         f"written by another version of models.py: sample it with the version that wrote it, "
                         f"or retrain the stage.")
    cfg = {k: v for k, v in cfg.items() if k in known}
    cfg.setdefault("d_pool", "sum")  # checkpoints from before d_pool existed: their Ds pooled by sum
    return StageConfig(**{**cfg, "g_mults": tuple(cfg["g_mults"]), "d_mults": tuple(cfg["d_mults"])})


def load_weights(module: nn.Module, state: dict, path: str, name: str) -> None:
    """module.load_state_dict(state), with a mismatch (a checkpoint of an older architecture,
    e.g. a Gup without its interpolation skip) refused in one line that names the file."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: its {name} does not fit this code's architecture ({first}); "
                         f"it was written by another version of models.py: retrain the stage, or "
                         f"sample it with the version that wrote it.") from None


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


def init_generator(path: str, cfg: StageConfig, G: nn.Module, G_ema: nn.Module) -> None:
    """Start G and G_ema from another run's checkpoint of the same stage and generator (train.py
    --init-g: ESRGAN's L1-trained start for the game). The Ds, optimizers and step start fresh,
    so the Ds' settings (--crop, --d-ch) may differ."""
    ckpt, ckpt_cfg = load_checkpoint(path)
    generator = ("preset", "stage", "clip_frames", "clip_size", "view_s", "view_t", "ch", "g_mults", "z_dim",
                 "num_classes", "context", "grounded")
    diff = {k: (getattr(ckpt_cfg, k), getattr(cfg, k)) for k in generator if getattr(ckpt_cfg, k) != getattr(cfg, k)}
    if diff:
        raise ValueError(f"--init-g {path}: its G differs from this run's (checkpoint vs now: {diff}); "
                         f"start from a checkpoint of the same stage with the same flags.")
    load_weights(G, ckpt["G"], path, "G")
    load_weights(G_ema, ckpt["G_ema"], path, "G_ema")


# -----------------------------------------------------------------------------
# The status line and log.jsonl

class TrainingDiverged(RuntimeError):
    pass


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB


class Status:
    """The status line and log.jsonl. A step only adds its named stats on the device, so the
    loop never waits for it; a status line reads their means over the steps since the last one
    (one host sync), checks that they are finite, prints them and appends the same numbers to
    the log, as nanoGPT does."""

    def __init__(self, out: str, device: torch.device, step: int, main: bool, batch: int):
        self.log_path, self.ckpt_path = os.path.join(out, "log.jsonl"), os.path.join(out, "ckpt.pt")
        self.device, self.batch = device, batch  # batch: the global one, all ranks and micro-batches
        self.sums, self.data_time, self.skipped = {}, 0.0, 0
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

    def add(self, stats: dict, weight: float = 1.0) -> None:
        """stats: scalars by the name they are logged under (loss_D, loss_G, D_s_real, ..., rec),
        each counting as `weight` of one step: a step's loss_D is the mean over its D steps and
        micro-batches, so each of those adds with weight 1 / (d_steps x micro-batches). Two ops on
        the device, whatever the number of stats: one stack, one add."""
        names = tuple(stats)
        values = torch.stack([v.detach().float() for v in stats.values()])  # (len(names),)
        self.sums[names] = values * weight if names not in self.sums else self.sums[names].add(values, alpha=weight)

    def means(self, step: int) -> dict:
        """Each stat's mean per step over the steps since the last status line."""
        values = torch.cat(list(self.sums.values())).tolist()  # the host sync
        names = [name for group in self.sums for name in group]
        return {k: v / (step - self.step) for k, v in zip(names, values)}

    def check_finite(self, step: int, nets: dict | None = None) -> None:
        """Raise TrainingDiverged if a loss since the last status line, or a weight or buffer of
        nets, is NaN or inf. A NaN or inf anywhere in a mean makes the mean NaN or inf, so the
        check covers every step since the last status line."""
        means = self.means(step) if self.sums else {}
        if not all(map(math.isfinite, means.values())):
            where = f"at step {step}" if step - self.step == 1 else f"in steps {self.step + 1}-{step}"
            what = f"non-finite loss {where} (mean D {means.get('loss_D')}, G {means['loss_G']})"
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
        rec = {k: round(v, 4) for k, v in self.means(step).items()}
        s_it = (now - self.t - self.aside) / steps  # training alone: no samples, FVD or checkpoints
        rec.update(step=step, batch=self.batch, s_per_it=round(s_it, 4), it_per_s=round(1 / s_it, 3),
                   data_s_per_it=round(self.data_time / steps, 4), mem_gb=round(memory_gb(self.device), 3),
                   skipped_videos=int(self.skipped))
        ds = [k[2:-5] for k in rec if k.startswith("D_") and k.endswith("_real")]  # s, t, m
        print(f"step {step} | batch {self.batch} | "
              + (f"D {rec['loss_D']:.3f} " if "loss_D" in rec else "no D ")  # --no-adversarial
              + f"G {rec['loss_G']:.3f}" + (" | logits real/fake " if ds else "")
              + " ".join(f"{k} {rec[f'D_{k}_real']:+.2f}/{rec[f'D_{k}_fake']:+.2f}" for k in ds)
              + (f" | rec {rec['rec']:.4f}" if "rec" in rec else "")
              + f" | {s_it:.3f} s/it {1 / s_it:.2f} it/s | data {rec['data_s_per_it']:.3f} s/it"
              + f" | {'GPU ' if self.device.type == 'cuda' else ''}mem {rec['mem_gb']:.2f} GB | skipped {rec['skipped_videos']}", flush=True)
        self.append(rec)
        self.sums, self.data_time, self.t, self.step, self.aside = {}, 0.0, now, step, 0.0

    def samples(self, step: int, path: str, err: float | None) -> None:
        """Report the sample grid at path, and log an upscaling stage's grounding error on it."""
        if err is not None:
            self.append({"step": step, "grounding_error": round(err, 5)})
        print(f"wrote {path}" + (f" | grounding error {err:.4f}" if err is not None else ""), flush=True)

    def fvd(self, step: int, s: dict, n: int, seconds: float) -> None:
        """Report and log the stage's rung of the ladder (evaluate.stage_scores, on n videos, in
        `seconds`): G_ema's FVD, its start's, the real floor's, the headroom closed, recognizability."""
        headroom = None if math.isnan(s["headroom"]) else round(s["headroom"], 3)
        recognized = None if s["recognizability"] is None else round(s["recognizability"], 3)
        self.append({"step": step, "fvd": round(s["fvd"], 2), "fvd_start": round(s["start"], 2),
                     "fvd_real": round(s["real"], 2), "headroom": headroom, "recognizability": recognized,
                     "fvd_n": n, "fvd_s": round(seconds, 2)})
        print(f"step {step} | FVD {s['fvd']:.1f} (start {s['start']:.1f}, real {s['real']:.1f}: headroom closed "
              f"{headroom}) | recognizability {recognized} ({n} videos)", flush=True)

    def scores(self, step: int, s: dict, n: int, seconds: float) -> None:
        """Report and log evaluate.quick_scores' scores of G_ema (on n videos, in `seconds`)."""
        self.append({"step": step, **{k: None if v is None else round(v, 3) for k, v in s.items()},
                     "score_n": n, "score_s": round(seconds, 2)})
        print(f"step {step} | " + " | ".join(f"{k} {v if v is None else round(v, 3)}" for k, v in s.items()),
              flush=True)

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


# -----------------------------------------------------------------------------
# The lock on the folder

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
    on unlocked. Makes the folder if it is missing."""
    os.makedirs(out, exist_ok=True)
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


# -----------------------------------------------------------------------------
# Stop signals: a run ends at a step boundary, with a checkpoint

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # Ctrl-C, schedulers, SLURM's --signal


def quiet_worker(worker_id: int) -> None:
    """DataLoader worker start-up. A scheduler signals every process of the job, and a worker
    that dies of it takes the main process down before it can checkpoint: so workers ignore the
    stop signals, and the main process owns shutdown (its workers end with it)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


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
