"""Everything scored: the FVD ladder, a stage's own scores for training curves, recognizability,
fine detail, per-frame statistics and seams (DESIGN.md section 7); and the curves of runs' scores.

    python evaluate.py --ckpt out/stage1/ckpt.pt out/stage2/ckpt.pt out/stage3/ckpt.pt --n 256
    python evaluate.py --ckpt out/stage3/ckpt.pt --n 256      # one upscaler on real views
    python evaluate.py curve out/run-a out/run-b --out docs/demo-curve-stage1.png

The ladder scores the chain's last stage against the floors it must beat: real vs real;
interpolations of lower stages' real views; the upscaling stages on those views, each next to
the same stages untrained (their start: an untrained Gup's residual is zero, so it is the plain
or grounded interpolation); the chain from noise, next to the chain untrained. Two measures say
whether a stage learned:
- headroom closed, (start - trained) / (start - real) in FVD: 1.0 is as close to the real videos
  as another draw of them, 0 is its start, below 0 worse than its start (an upscaler makes the
  very clips scored against from their views, so it can pass 1.0, and its start can already lie
  nearer than another draw at small n: no headroom, NaN);
- recognizability, on the built-in synthetic data whose class is the kind of shape: a
  classifier trained on real videos (ShapeClassifier) scores videos of class y, as the
  Classification Accuracy Score of Ravuri & Vinyals 2019 does in this direction. Chance is 1/5;
  its accuracy on held-out real videos is the ceiling. Data of other classes skips it.
A stage that does not beat its own start has learned nothing, whatever it scores against
trilinear. Every rung also gives its fine detail, which needs no classes: the energy of the
highest spatial band (what a 2x2 area view loses) and of the highest temporal band (what keeping
every other frame loses), each over real videos' (detail_ratios): 1.0 as much as real, below 1
blurred (an upscaler trained on L1 alone), above 1 wrong or excess texture.

A stage's own rung is scored during training: stage_scores with I3D (train.py --fvd-every,
minutes on a CPU), quick_scores without (--score-every, seconds: recognizability and detail).
`curve` plots those records of run folders' log.jsonl against training minutes, one panel per
measure, one line per run.
"""
import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

import fvd
from data import StageExamples, SyntheticVideos, open_clips, to_uint8, view
from models import G1, Gup, StageConfig, upsample
from sample import DEMO_CHAIN, generate, load_chain, upscale
from videos import STREAMS

FVD_SEED = 2024  # the real clips and the noise scored: a fixed draw, apart from training's seeds
# The real clips whose views the upscaling rungs upscale: another draw than the FVD_SEED ones they
# are scored against, so a made video is never compared with its own ground truth. Their full-size
# videos are the real floor: what a perfect upscaler makes, scored as every rung is.
VIEWS_SEED = FVD_SEED + 1
STAGE_BATCH = 16  # stage_scores' batch: noise is drawn per batch, so it fixes the videos scored
# A recognizer's training: till its held-out accuracy stops rising (demo stage 1, version-3 scenes,
# 2,048 clips: 0.943 at 600 steps, 0.973 at 1,000, 0.982 at 2,000, 0.988 at 4,000; docs/demo.md)
RECOGNIZER_CLIPS, RECOGNIZER_STEPS, RECOGNIZER_HELDOUT = 2048, 2000, 256
RECOGNIZER_VERSION = 1  # bump when ShapeClassifier or its training changes: cached ones retrain

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]  # (x (b, 3, T, H, W) in [-1, 1], y (b,))


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Print the FVD ladder of a chain of SSW-GAN stage checkpoints.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=DEMO_CHAIN,
                   help="stage checkpoints in stage order; the ladder is the last one's, and a chain "
                        "that starts above stage 1 has the rungs its stages can make (default: the "
                        "demo's trained chain, checkpoints/)")
    p.add_argument("--n", type=int, default=8, help="videos per set (256 or more for real numbers)")
    p.add_argument("--batch", type=int, default=8, help="videos generated at once")
    p.add_argument("--real", default="synthetic",
                   help="the real data, 'synthetic' (built-in) or a folder data.py reads")
    p.add_argument("--fvd-frames", type=int, default=16, help="the first frames of each video scored")
    p.add_argument("--fvd-cache", default=os.path.join("out", "fvd-stats"),
                   help="folder of cached real statistics, starts and recognizers")
    p.add_argument("--recognizer-clips", type=int, default=RECOGNIZER_CLIPS,
                   help="real training clips the recognizer of --real synthetic learns from")
    p.add_argument("--recognizer-steps", type=int, default=RECOGNIZER_STEPS,
                   help="the recognizer's training steps (batches of 64)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


# -----------------------------------------------------------------------------
# The videos scored, each batch with its classes: real views, their interpolations, the stages
# on them, the chain from noise

def real_views(source: str, cfg: StageConfig, n: int, batch: int, down: int = 0,
               seed: int = FVD_SEED) -> Batches:
    """Whole real videos as stage `cfg` makes them, or `down` halvings below (down=1: the views
    the stage is conditioned on): batches of (x (b, 3, T, H, W) in [-1, 1], y (b,)), items
    0 .. n-1 of the held-out split's clips drawn with `seed` (not flipped): never trained on.
    `source`: 'synthetic', a prepared folder or a folder of videos."""
    clips = open_clips(source, cfg.clip_frames, cfg.clip_size, seed, cfg.frame_stride, flip=False,
                       split="val")
    views = StageExamples(clips, cfg.view_s * 2 ** down, cfg.view_t * 2 ** down, window=None)
    for k in range(0, n, batch):
        items = [views[i] for i in range(k, min(k + batch, n))]
        yield torch.stack([it["x"] for it in items]), torch.tensor([it["y"] for it in items])


def for_i3d(x: torch.Tensor, frames: int) -> np.ndarray:
    """float (b, 3, T, H, W) -> uint8 (b, F, H, W, 3): the first F = min(frames, T) frames. A
    video shorter than I3D's 10 frames (tiny's stage 1) shows each frame k times, real and fake
    alike, so that it can be scored at all."""
    x = x[:, :, :frames]
    if x.shape[2] < fvd.MIN_FRAMES:
        x = x.repeat_interleave(math.ceil(fvd.MIN_FRAMES / x.shape[2]), dim=2)
    return to_uint8(x).numpy()


def interpolated(source: str, cfg: StageConfig, n: int, batch: int, down: int, mode: str) -> Batches:
    """The floors: real views (VIEWS_SEED's) `down` halvings below stage cfg, upsampled back to its size."""
    for x, y in real_views(source, cfg, n, batch, down, seed=VIEWS_SEED):
        for _ in range(down):
            x = upsample(x, mode)
        yield x, y


def upscaled(stages: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, batch: int,
             device: torch.device) -> Batches:
    """Upscaling stages applied to the real views (VIEWS_SEED's) of the first one's input, with their labels."""
    g = torch.Generator().manual_seed(FVD_SEED)
    for x, y in real_views(source, stages[-1][0], n, batch, down=len(stages), seed=VIEWS_SEED):
        yield upscale(stages, x, y, None, None, device, g), y


def untrained(cfgs: list[StageConfig], device: torch.device) -> list[tuple[StageConfig, torch.nn.Module]]:
    """The same stages at their start: a fresh G from each StageConfig, each initialized under
    FVD_SEED, so a stage's start is one fixed draw whatever the chain around it, built without
    moving the caller's random stream (G alone: build_stage makes it first, so with the same
    weights, and its Ds' init is most of the cost). An untrained Gup's residual's last conv is
    zero, so it is exactly the interpolation upsample(c), grounded if the stage is, whatever the
    rest of its init; an untrained G1 makes what its init makes."""
    stages = []
    with torch.random.fork_rng(devices=[]):
        for cfg in cfgs:
            torch.manual_seed(FVD_SEED)
            G = G1(cfg) if cfg.stage == 1 else Gup(cfg)
            stages.append((cfg, G.to(device).eval().requires_grad_(False)))
    return stages


def from_noise(chain: list[tuple[StageConfig, torch.nn.Module]], n: int, batch: int,
               device: torch.device) -> Batches:
    """The chain's videos, classes y in turn (those it was asked for), at its full training length."""
    g = torch.Generator().manual_seed(FVD_SEED)
    cfg = chain[-1][0]
    for y in (torch.arange(n) % cfg.classes).split(batch):
        yield generate(chain, y, cfg.video_frames, None, None, device, g), y


def stage_videos(stages: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, batch: int,
                 device: torch.device) -> Batches:
    """A stage's own rung: stage 1's videos from noise, an upscaling stage on real views of its input."""
    if stages[0][0].stage == 1:
        return from_noise(stages, n, batch, device)
    return upscaled(stages, source, n, batch, device)


# -----------------------------------------------------------------------------
# Recognizability: a classifier trained on real videos scores made ones of class y (CAS)

class ShapeClassifier(nn.Module):
    """Which kind of shape a synthetic video shows: (B, 3, T, H, W) in [-1, 1] -> logits
    (B, classes). It sees a view of the video (prepared) of at most max_frames frames spread over
    it, at most max_size pixels wide: it costs the same at 64x64x32 as at 32x32x16, and a step
    on few frames buys more steps, which it needs more. Its shapes move by up to a sixth of their
    width a frame, so what finds them looks at single frames: conv/BN/ReLU/max-pool blocks of 1x3x3
    kernels halve H and W down to 4x4; a 3x3x3 conv then joins the frames; each feature's maximum
    over the frame (a shape anywhere in it), its mean over the frames and a linear layer give the
    logits. Above 32 px it sees 2x2 block means, which a grounded upscaler takes from its input
    on kept frames: there its recognizability is mostly its input's."""
    max_frames, max_size = 4, 32

    def __init__(self, frames: int, size: int, classes: int):
        super().__init__()
        self.frames = math.ceil(frames / math.ceil(frames / self.max_frames))
        self.size = size // math.ceil(size / self.max_size)
        layers, c_in, r = [], 3, self.size
        while r > 4:
            c = 256 // r  # 8 channels at 32 px, 16 at 16, 32 at 8: narrow where it is large
            layers += [nn.Conv3d(c_in, c, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(c), nn.ReLU(),
                       nn.MaxPool3d((1, 2, 2))]
            c_in, r = c, r // 2
        self.features = nn.Sequential(*layers, nn.Conv3d(c_in, 2 * c_in, 3, padding=1, bias=False),
                                      nn.BatchNorm3d(2 * c_in), nn.ReLU())
        self.head = nn.Linear(2 * c_in, classes)

    @classmethod
    def prepared(cls, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> its view(x, s, t) with the least s and t that bring H to max_size or
        below and T to max_frames or below: the mean of each s x s block of frames 0, t, 2t, ...
        Idempotent, so training can keep its clips prepared."""
        T, W = x.shape[2], x.shape[-1]
        return view(x, math.ceil(W / cls.max_size), math.ceil(T / cls.max_frames))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepared(x)
        B, C, T, H, W = x.shape
        assert (C, T, H, W) == (3, self.frames, self.size, self.size), f"ShapeClassifier got {tuple(x.shape)}"
        h = self.features(x)                            # (B, C', T, 4, 4)
        return self.head(h.amax(dim=(3, 4)).mean(2))    # (B, classes)


def has_classes(source: str, cfg: StageConfig) -> bool:
    """Whether recognizability means anything: the data is the built-in synthetic data, whose
    classes a ShapeClassifier can learn (another dataset's are not known here, and the ladder
    skips the column), and the chain draws those classes (from_noise's y are then its videos')."""
    return source == "synthetic" and cfg.num_classes == SyntheticVideos.num_classes


def training_views(source: str, cfg: StageConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Items 0 .. n-1 of the training split's clips (drawn with FVD_SEED, not flipped) as stage
    cfg's whole views, prepared for a ShapeClassifier: (x (n, 3, T', H', W'), y (n,)), rendered
    once, so that training repeats them for free."""
    clips = open_clips(source, cfg.clip_frames, cfg.clip_size, FVD_SEED, cfg.frame_stride, flip=False,
                       split="train")
    views = StageExamples(clips, cfg.view_s, cfg.view_t, window=None)
    items = [views[i] for i in range(n)]
    return (torch.cat([ShapeClassifier.prepared(it["x"][None]) for it in items]),
            torch.tensor([it["y"] for it in items]))


def fit_classifier(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int, device: torch.device,
                   batch: int = 64) -> ShapeClassifier:
    """A ShapeClassifier trained on prepared clips x (N, 3, T, H, W) of classes y (N,): Adam over
    `steps` random batches, its rate decayed to 0 by a cosine, each clip mirrored at random (the
    shapes are drawn at random angles, so a mirrored clip is a new one of the same class). A fixed
    draw (FVD_SEED) that moves no caller's random stream; in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FVD_SEED)
        classifier = ShapeClassifier(x.shape[2], x.shape[-1], classes).to(device)
    opt = torch.optim.Adam(classifier.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(FVD_SEED)
    for _ in range(steps):
        i = torch.randint(len(x), (batch,), generator=g)
        x_real, flip = x[i], torch.rand(2, batch, 1, 1, 1, 1, generator=g) < 0.5
        x_real = torch.where(flip[0], x_real.flip(-1), x_real)
        x_real = torch.where(flip[1], x_real.flip(-2), x_real)          # (batch, 3, T, H, W)
        loss = F.cross_entropy(classifier(x_real.to(device)), y[i].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return classifier.eval()


@torch.no_grad()
def recognized(classifier: ShapeClassifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(b,) bool: the classifier's top class of each video x (b, 3, T, H, W) is its class y (b,)."""
    device = next(classifier.parameters()).device
    return classifier(x.to(device)).argmax(1).cpu() == y


def recognizability(classifier: ShapeClassifier,
                     videos_with_labels: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy of the classifier on batches of (videos (b, 3, T, H, W) in [-1, 1], their
    classes y (b,)): made videos of class y recognized as y, 1/classes for videos that do not
    show their class."""
    return torch.cat([recognized(classifier, x, y) for x, y in videos_with_labels]).float().mean().item()


def recognizer(source: str, cfg: StageConfig, cache_dir: str, device: torch.device,
               n_train: int = RECOGNIZER_CLIPS, steps: int = RECOGNIZER_STEPS,
               n_heldout: int = RECOGNIZER_HELDOUT) -> tuple[ShapeClassifier, float]:
    """(a ShapeClassifier of stage cfg's videos, its accuracy on n_heldout held-out real videos:
    the ladder's real views, split "val", FVD_SEED), trained on n_train real views of the training
    split (fit_classifier), and cached in cache_dir under a name and settings that say what it
    is: a cache made otherwise is trained again. Only the built-in synthetic data has the classes
    it knows (has_classes)."""
    if source != "synthetic":
        raise ValueError(f"recognizability needs the built-in synthetic data's classes, not {source!r}")
    settings = json.dumps({"real": source, "preset": cfg.preset, "stage": cfg.stage,
                           "clip": [cfg.clip_frames, cfg.clip_size, cfg.frame_stride],
                           "view": [cfg.view_s, cfg.view_t], "streams": STREAMS, "data": data_version(source),
                           "classes": SyntheticVideos.classes, "n_train": n_train, "steps": steps,
                           "n_heldout": n_heldout, "seed": FVD_SEED, "version": RECOGNIZER_VERSION},
                          sort_keys=True)
    path = Path(cache_dir) / f"recognizer-{source}-{cfg.preset}-stage{cfg.stage}-n{n_train}-s{steps}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["settings"] == settings:
            classifier = ShapeClassifier(cfg.video_frames, cfg.out_size, SyntheticVideos.num_classes)
            classifier.load_state_dict(saved["classifier"])
            return classifier.to(device).eval(), saved["accuracy"]
    t0 = time.time()
    x, y = training_views(source, cfg, n_train)
    t1 = time.time()
    classifier = fit_classifier(x, y, SyntheticVideos.num_classes, steps, device)
    accuracy = recognizability(classifier, real_views(source, cfg, n_heldout, 64))
    print(f"recognizer of {cfg.preset} stage {cfg.stage}: {n_train} clips rendered in {t1 - t0:.0f} s, "
          f"{steps} steps in {time.time() - t1:.0f} s; held-out real accuracy {accuracy:.3f}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({"settings": settings, "classifier": classifier.state_dict(), "accuracy": accuracy}, tmp)
    os.replace(tmp, path)  # a reader finds the whole file or none, never half of one
    return classifier, accuracy


# -----------------------------------------------------------------------------
# Fine detail: the energy of the highest spatial and temporal bands, against real videos'

def detail_energy(x: torch.Tensor) -> torch.Tensor:
    """Each video's energy in its highest spatial band and in its highest temporal band: x (B, 3,
    T, H, W) in [-1, 1], H and W even, T >= 3 -> (B, 2) (spatial, temporal), each a mean square
    over channels, frames and pixels. Spatial: what a 2x2 area view loses, x - nearest-upsample(
    view(x, 2, 1)) (for a grounded upscaler on its kept frames, exactly the residual it adds to
    its input). Temporal: the second difference x[t] - (x[t-1] + x[t+1]) / 2 over the interior
    frames, what keeping every other frame loses (a frame interpolated midway has none)."""
    x = x.float()
    means = view(x, 2, 1).repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # (B, 3, T, H, W)
    spatial = (x - means).square().mean(dim=(1, 2, 3, 4))                           # (B,)
    temporal = (x[:, :, 1:-1] - (x[:, :, :-2] + x[:, :, 2:]) / 2).square().mean(dim=(1, 2, 3, 4))
    return torch.stack([spatial, temporal], dim=1)                                   # (B, 2)


def detail_ratios(made: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """(spatial, temporal): the mean detail_energy of made videos over that of real ones, from
    each set's detail_energy (N, 2) and (M, 2); only the means enter, so a set's mean (1, 2) can
    stand for it. 1.0 is as much fine detail as real videos; an upscaler that blurs (one trained
    on L1 alone) falls below 1, wrong or excess texture (noise, flicker) lies above."""
    spatial, temporal = (made.mean(0) / real.mean(0)).tolist()
    return spatial, temporal


# -----------------------------------------------------------------------------
# The FVD ladder (DESIGN.md section 7): every score next to the floors it must beat

def ladder_rungs(chain: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, batch: int,
                 device: torch.device) -> list[tuple[str, Callable[[], Batches]]]:
    """The rungs of the ladder at the chain's last stage K, each (name, batches of (videos at
    stage K's size, their classes)): real vs real; for each lower stage j, nearest and trilinear
    upsampling of its real views, then stages j+1..K applied to them untrained (their start) and
    trained (j = K-1 is LongVideoGAN's protocol for a super-resolution network); the whole chain
    from noise, untrained (its start) and trained. A chain that starts above stage 1 has the
    rungs its stages can make."""
    cfg, K, first = chain[-1][0], chain[-1][0].stage, chain[0][0].stage

    def size(down):  # "8@8": frames @ pixels of the real views `down` halvings below stage K
        return f"{math.ceil(cfg.video_frames / 2 ** down)}@{cfg.out_size // 2 ** down}"

    rungs = [("real vs real (another draw)", lambda: real_views(source, cfg, n, batch, seed=VIEWS_SEED))]
    for d in range(1, K):
        rungs += [(f"nearest x{2 ** d} of real {size(d)} views",
                   lambda d=d: interpolated(source, cfg, n, batch, d, "nearest")),
                  (f"trilinear x{2 ** d} of real {size(d)} views",
                   lambda d=d: interpolated(source, cfg, n, batch, d, "trilinear"))]
        if K - d + 1 >= first:  # the chain holds stages K-d+1 .. K
            stages = f"stage {K}" if d == 1 else f"stages {K - d + 1}-{K}"
            rungs += [(f"{stages} untrained on real {size(d)} views",
                       lambda d=d: upscaled(untrained([c for c, _ in chain[-d:]], device), source, n, batch, device)),
                      (f"{stages} on real {size(d)} views",
                       lambda d=d: upscaled(chain[-d:], source, n, batch, device))]
    if first == 1:
        whole = "full chain" if K > 1 else "stage 1"
        rungs += [(f"{whole} untrained from noise",
                   lambda: from_noise(untrained([c for c, _ in chain], device), n, batch, device)),
                  (f"{whole} from noise", lambda: from_noise(chain, n, batch, device))]
    return rungs


def data_version(source: str) -> int | None:
    """What a cache of statistics of `source` records of how its videos are made: the built-in
    data's version (new scenes, new statistics); None for videos on disk."""
    return SyntheticVideos.version if source == "synthetic" else None


def real_key(source: str, cfg: StageConfig, n: int) -> dict:
    """What a cache of statistics of n videos at stage cfg's size records of the real data they
    are drawn from or measured against: its source, the clips and views a stage cuts from it."""
    return {"real": source if source == "synthetic" else os.path.abspath(source), "n": n,
            "clip": [cfg.clip_frames, cfg.clip_size, cfg.frame_stride], "view": [cfg.view_s, cfg.view_t],
            "split": "val", "streams": STREAMS,  # the random streams that draw the clips: new tags, new clips
            "data": data_version(source)}


def video_stats(kind: str, settings: dict, model: fvd.I3D, source: str, cfg: StageConfig, n: int,
                frames: int, cache_dir: str, videos: Callable[[], Batches]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of I3D features of n videos (batches (x, y)) at stage cfg's size,
    cached in cache_dir under a name and settings that say what they are: `kind` and `settings`
    which videos, the rest the real data, stage, count and frames they are scored at."""
    settings = {**settings, **real_key(source, cfg, n), "frames": frames, "weights": model.weights_id}
    name = f"{kind}-{os.path.basename(os.path.abspath(source))}-{cfg.preset}-stage{cfg.stage}-n{n}-f{frames}.npz"
    mu, sigma, _ = fvd.cached_stats(Path(cache_dir) / name, settings, lambda: fvd.video_features(
        (for_i3d(x, frames) for x, _ in videos()), model, n, progress=True))
    return mu, sigma


def real_stats(model: fvd.I3D, source: str, cfg: StageConfig, n: int, frames: int, batch: int,
               cache_dir: str, seed: int = FVD_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of I3D features of n real videos at stage cfg's size (real_views drawn
    with `seed`: FVD_SEED is what everything is scored against, VIEWS_SEED the real floor), cached."""
    return video_stats(f"real-seed{seed}", {"seed": seed}, model, source, cfg, n, frames, cache_dir,
                       lambda: real_views(source, cfg, n, batch, seed=seed))


def real_detail(source: str, cfg: StageConfig, n: int, batch: int, cache_dir: str,
                seed: int = FVD_SEED) -> torch.Tensor:
    """The mean detail_energy (1, 2) of n real videos at stage cfg's size (real_views drawn with
    `seed`), cached like real_stats (fvd.cached_stats keeps the energies' mean as it keeps I3D
    features'), keyed also by detail_energy's values on a fixed video: a new measure, a new key."""
    probe = torch.rand(1, 3, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    measure = [f"{e:.6g}" for e in detail_energy(probe).flatten().tolist()]
    name = f"detail-real-seed{seed}-{os.path.basename(os.path.abspath(source))}-{cfg.preset}-stage{cfg.stage}-n{n}.npz"
    settings = {**real_key(source, cfg, n), "seed": seed, "measure": measure}
    mean, _, _ = fvd.cached_stats(Path(cache_dir) / name, settings, lambda: torch.cat(
        [detail_energy(x) for x, _ in real_views(source, cfg, n, batch, seed=seed)]).numpy())
    return torch.from_numpy(mean).float()[None]  # (1, 2)


def start_stats(model: fvd.I3D, source: str, cfg: StageConfig, n: int, frames: int, batch: int,
                cache_dir: str, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of I3D features of stage cfg's start, the stage untrained (untrained)
    on its own rung (stage_videos): fixed for a cfg, so cached like real_stats, keyed also by the
    config, the batch (noise is drawn per batch) and a fingerprint of the init's weights (a
    change to how models.py initializes them)."""
    start = untrained([cfg], device)
    weights = start[0][1].state_dict().values()
    init = hashlib.sha256(b"".join(w.cpu().numpy().tobytes() for w in weights)).hexdigest()[:16]
    views = {} if cfg.stage == 1 else {"views": VIEWS_SEED}  # an upscaler's start upscales those views
    return video_stats("start", {"seed": FVD_SEED, **views, "batch": batch, "start": dataclasses.asdict(cfg),
                                 "init": init},
                       model, source, cfg, n, frames, cache_dir,
                       lambda: stage_videos(start, source, n, batch, device))


def score(videos: Batches, model: fvd.I3D, n: int, frames: int, real: tuple[np.ndarray, np.ndarray],
          classifier: ShapeClassifier | None = None
          ) -> tuple[float, float, float, float, float | None, torch.Tensor]:
    """(FVD of the videos (batches of (x (b, 3, T, H, W) in [-1, 1], y (b,))) against real (mean,
    covariance), frame 0's change to frame 1 and its sharpness, each over the video's mean: 1.0 =
    no start-up transient, pair_cadence: 1.0 = none, the classifier's recognizability of the
    videos as their classes y (None without a classifier), and their detail_energy (n, 2))."""
    change, sharpness, hits, energies = [], [], [], []

    def scored(x, y):  # -> uint8 for I3D, with frame statistics, recognition and detail on the way
        c, s = frame_stats(x)
        change.append(c), sharpness.append(s), energies.append(detail_energy(x))
        if classifier is not None:
            hits.append(recognized(classifier, x, y))
        return for_i3d(x, frames)
    feats = fvd.video_features((scored(x, y) for x, y in videos), model, n, progress=True)
    change, sharpness = torch.stack(change).mean(0), torch.stack(sharpness).mean(0)
    recognizable = torch.cat(hits).float().mean().item() if hits else None
    return (fvd.frechet_distance(*real, *fvd.feature_stats(feats)),
            (change[0] / change.mean()).item(), (sharpness[0] / sharpness.mean()).item(), pair_cadence(change),
            recognizable, torch.cat(energies))


Rung = tuple[str, float, float | None, float, float, float, float, float]  # a ladder row: see ladder()


def ladder(chain: list[tuple[StageConfig, torch.nn.Module]], source: str, n: int, frames: int,
           batch: int, device: torch.device, cache_dir: str, model: fvd.I3D,
           classifier: ShapeClassifier | None = None) -> list[Rung]:
    """[(rung, FVD against n real videos at the chain's last stage, recognizability by the
    classifier (None without one), spatial and temporal detail ratios against the same real
    videos (detail_ratios), frame-0 change ratio, frame-0 sharpness ratio, pair cadence)] for
    every rung of ladder_rungs, in order."""
    cfg = chain[-1][0]
    print(f"FVD ladder at stage {cfg.stage} of {cfg.preset} ({cfg.video_frames}@{cfg.out_size}), "
          f"{n} vs {n} videos, first {frames} frames", file=sys.stderr)
    real = real_stats(model, source, cfg, n, frames, batch, cache_dir)
    real_energy = real_detail(source, cfg, n, batch, cache_dir)
    scores = []
    for name, videos in ladder_rungs(chain, source, n, batch, device):
        print(name, file=sys.stderr)
        v, change0, sharp0, pairs, recognizable, energies = score(videos(), model, n, frames, real, classifier)
        scores.append((name, v, recognizable, *detail_ratios(energies, real_energy), change0, sharp0, pairs))
    return scores


def headroom_closed(start: float, trained: float, real: float) -> float:
    """The share of the way from a stage's start to the real floor that training covered, in FVD:
    (start - trained) / (start - real). 1.0 = as close to the real videos as another draw of them,
    0 = learned nothing, negative = worse than its start. NaN where the start is no further from
    the real videos than the floor: there was no way to cover."""
    return (start - trained) / (start - real) if start > real else math.nan


def stage_scores(cfg: StageConfig, G: torch.nn.Module, source: str, n: int, device: torch.device,
                 cache_dir: str, frames: int = 16, n_train: int | None = None, steps: int | None = None) -> dict:
    """One stage's own rung, for training curves: stage 1's videos from noise, or an upscaling
    stage on real views of its input (VIEWS_SEED's: never the videos it is scored against), against
    n real videos at the stage's size. {"fvd": its FVD,
    "start": the untrained stage's, "real": real vs real (another draw), "headroom":
    headroom_closed, "recognizability": by a recognizer (n_train clips, `steps`), None where the
    data has no classes it knows, "detail_s", "detail_t": detail_ratios against the real videos}.
    The start, the floor, the real detail and the recognizer are fixed for a cfg: cached in
    cache_dir, computed at the first call."""
    model = fvd.load_i3d().to(device)
    real = real_stats(model, source, cfg, n, frames, STAGE_BATCH, cache_dir)
    floor = fvd.frechet_distance(*real, *real_stats(model, source, cfg, n, frames, STAGE_BATCH, cache_dir,
                                                    seed=VIEWS_SEED))
    start = fvd.frechet_distance(*real, *start_stats(model, source, cfg, n, frames, STAGE_BATCH, cache_dir, device))
    n_train, steps = n_train or RECOGNIZER_CLIPS, steps or RECOGNIZER_STEPS  # read at the call: tests lower them
    classifier = recognizer(source, cfg, cache_dir, device, n_train, steps)[0] if has_classes(source, cfg) else None
    trained, *_, recognizable, energies = score(stage_videos([(cfg, G)], source, n, STAGE_BATCH, device), model,
                                                n, frames, real, classifier)
    detail_s, detail_t = detail_ratios(energies, real_detail(source, cfg, n, STAGE_BATCH, cache_dir))
    return {"fvd": trained, "start": start, "real": floor, "headroom": headroom_closed(start, trained, floor),
            "recognizability": recognizable, "detail_s": detail_s, "detail_t": detail_t}


def quick_scores(cfg: StageConfig, G: torch.nn.Module, source: str, n: int, device: torch.device,
                 cache_dir: str) -> dict:
    """stage_scores without I3D, seconds on a CPU, for training curves (train.py's --score-every):
    the same n videos (stage_videos) scored by the same cached recognizer and against the same
    cached real detail. {"recognizability": None where the data has no classes it knows,
    "detail_s", "detail_t"}."""
    classifier = (recognizer(source, cfg, cache_dir, device, RECOGNIZER_CLIPS, RECOGNIZER_STEPS)[0]
                  if has_classes(source, cfg) else None)  # the constants read at the call: tests lower them
    hits, energies = [], []
    for x, y in stage_videos([(cfg, G)], source, n, STAGE_BATCH, device):
        energies.append(detail_energy(x))
        if classifier is not None:
            hits.append(recognized(classifier, x, y))
    detail_s, detail_t = detail_ratios(torch.cat(energies), real_detail(source, cfg, n, STAGE_BATCH, cache_dir))
    return {"recognizability": torch.cat(hits).float().mean().item() if hits else None,
            "detail_s": detail_s, "detail_t": detail_t}


def stage_fvd(cfg: StageConfig, G: torch.nn.Module, source: str, n: int, device: torch.device,
              cache_dir: str, frames: int = 16) -> float:
    """stage_scores' "fvd" alone, without the start, floor and recognizer the others cost at a
    first call (study.py's rung_fvd; train.py's --fvd-every logs stage_scores)."""
    model = fvd.load_i3d().to(device)
    real = real_stats(model, source, cfg, n, frames, STAGE_BATCH, cache_dir)
    return score(stage_videos([(cfg, G)], source, n, STAGE_BATCH, device), model, n, frames, real)[0]


def ladder_table(scores: list[Rung], cfg: StageConfig, heldout: float | None = None) -> str:
    """The ladder as a Markdown table. Each rung made from real views of some size is also given
    as a ratio to trilinear upsampling of the same views, its floor; the chain from noise to
    trilinear of the lowest views (the stage-1 size) as the issue's aim. Each rung of stages with
    a start (the same stages untrained on the same views, or the chain untrained from noise) is
    also given as a ratio to it, below 1.00 is what training earned, and as the headroom closed
    from it towards real vs real. Given the recognizer's accuracy on held-out real videos
    (`heldout`), a column of recognizability; without, none. The detail ratios share a column,
    spatial / temporal."""
    def views(name):  # "16@16 views" of "... of real 16@16 views", "... on real 16@16 views"
        return name.split(" real ")[-1] if " real " in name else None
    floors = {views(name): v for name, v, *_ in scores if name.startswith("trilinear x")}
    starts = {name.replace(" untrained", ""): v for name, v, *_ in scores if " untrained " in name}
    real = {name: v for name, v, *_ in scores}.get("real vs real (another draw)")
    lowest = list(floors.values())[-1] if floors else None
    recognition = ([f"recognizability (held-out real {heldout:.2f}, chance {1 / SyntheticVideos.num_classes:.2f})"]
                   if heldout is not None else [])
    header = [f"stage {cfg.stage} of {cfg.preset}", "FVD", "/ its trilinear floor", "/ its start", "headroom closed",
              *recognition, "detail / real: space / time", "frame 0 change", "frame 0 sharpness",
              "change within / across frame pairs"]
    rows = [header, ["---"] * len(header)]
    for name, v, recognizable, detail_s, detail_t, change0, sharp0, pairs in scores:
        floor = floors.get(views(name), lowest if name.startswith("full chain") else None)
        ratio = f"{v / floor:.2f}" if floor and not name.startswith(("trilinear", "real vs real")) else ""
        start = starts.get(name.replace(" untrained", ""))  # an untrained rung is its own start
        headroom = headroom_closed(start, v, real) if start and real else math.nan
        rows.append([name, f"{v:.1f}", ratio, f"{v / start:.2f}" if start else "",
                     "" if math.isnan(headroom) else f"{headroom:.2f}",
                     *([f"{recognizable:.2f}" if recognizable is not None else ""] if recognition else []),
                     f"{detail_s:.2f} / {detail_t:.2f}", f"{change0:.2f}", f"{sharp0:.2f}", f"{pairs:.2f}"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# -----------------------------------------------------------------------------
# Frame statistics and seams

def frame_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame statistics that show a start-up transient, in grey levels (0-255), averaged over
    videos, channels and pixels. x (B, 3, T, H, W) in [-1, 1] -> (change (T-1,): mean |frame t+1 -
    frame t|; sharpness (T,): mean (|d/dx| + |d/dy|) / 2 of frame t, forward differences)."""
    g = x.float() * 127.5                                             # grey levels, up to an offset
    change = (g[:, :, 1:] - g[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))
    dx = (g[..., :, 1:] - g[..., :, :-1]).abs().mean(dim=(0, 1, 3, 4))
    dy = (g[..., 1:, :] - g[..., :-1, :]).abs().mean(dim=(0, 1, 3, 4))
    return change, (dx + dy) / 2


def pair_cadence(change: torch.Tensor) -> float:
    """An upscaler's judder: the mean change from frame 2k to 2k+1 (within a pair that shares a
    conditioning frame) over the mean change from 2k+1 to 2k+2 (across pairs), from
    frame_stats' change (T-1,). 1.0 on real videos."""
    return (change[0::2].mean() / change[1::2].mean()).item()


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
# Training curves: the scores in run folders' log.jsonl against training minutes, drawn with Pillow

CURVES = [("headroom", "headroom closed (FVD): 0 its start, 1 real", [0.0, 1.0]),
          ("recognizability", f"recognizability: chance {1 / SyntheticVideos.num_classes:.2f}",
           [1 / SyntheticVideos.num_classes]),
          ("detail_s", "spatial detail / real", [1.0]), ("detail_t", "temporal detail / real", [1.0])]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]  # study.py's
PANEL_W, PANEL_H, LEGEND_H = 480, 300, 64  # a curve image: 2 x 2 panels above a legend


def get_curve_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="evaluate.py curve",
                                description="Plot training runs' scores (train.py's --fvd-every and --score-every "
                                            "records in log.jsonl) against their training minutes.")
    p.add_argument("runs", nargs="+", help="run folders (train.py's --out), each with its log.jsonl")
    p.add_argument("--out", required=True, help="the PNG to write")
    return p.parse_args(argv)


def training_minutes(records: list[dict]) -> list[float | None]:
    """The minutes of training at each record of a log.jsonl, in log order: the sum over its status
    records (those with "s_per_it", the seconds of a step without the bookkeeping) of s_per_it
    times the steps since the status record before (since step 0 for the first); a record between
    two status records at the later one's s_per_it from the earlier's minutes (the line between
    them), one after the last at the last's. Steps repeated by a run resumed from an earlier
    checkpoint add nothing. None everywhere in a log without a status record."""
    rates = [r["s_per_it"] for r in records if "s_per_it" in r]
    if not rates:
        return [None] * len(records)
    minutes, done, step, k = [], 0.0, 0, 0  # done: the minutes at `step`, the highest status step yet; k: those passed
    for r in records:
        at = done + rates[min(k, len(rates) - 1)] * max(r["step"] - step, 0) / 60
        if "s_per_it" in r:
            done, step, k = at, max(step, r["step"]), k + 1
        minutes.append(at)
    return minutes


def start_minutes(run: Path) -> float:
    """The training minutes a run's G had before its step 0: for a run that train.py --init-g
    started from a checkpoint in another run's folder, that run's minutes at the checkpoint's step
    (training_minutes); else 0. So a game started from an L1 run plots where the L1 run stood, at
    the minutes both took together."""
    config = run / "config.json"
    init = json.loads(config.read_text())["args"].get("init_g") if config.exists() else None
    log = Path(init).parent / "log.jsonl" if init else None
    if log is None or not log.exists():
        return 0.0
    step = torch.load(init, map_location="cpu", weights_only=True)["step"]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    before = [r for r in records if r["step"] <= step]
    return training_minutes(before + [{"step": step}] + records[len(before):])[len(before)] or 0.0


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round numbers 1, 2 or 5 times a power of ten apart, at most `count` steps of them from at
    or below lo to at or above hi (lo < hi): an axis's ticks, its first and last its ends."""
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [round(k * step, 12) for k in range(math.floor(lo / step), math.ceil(hi / step) + 1)]


def curve_image(runs: list[tuple[str, list[dict], float]]) -> Image.Image:
    """Each measure of CURVES in its panel, against training minutes (training_minutes), one
    line per run (name, its log's records, the minutes before its step 0) in COLOURS, with
    numbered ticks, the measure's reference values as dashed grey lines, and a legend of the runs
    beneath. Records whose value
    is None (no headroom to close; no classes to recognize) are left out."""
    font = ImageFont.load_default(size=13)
    img = Image.new("RGB", (2 * PANEL_W, 2 * PANEL_H + LEGEND_H), "white")
    draw = ImageDraw.Draw(img)
    at = [[None if m is None else start + m for m in training_minutes(records)] for _, records, start in runs]
    x_ticks = ticks(0.0, max([m for ms in at for m in ms if m is not None] + [1.0]))
    for p, (key, title, references) in enumerate(CURVES):
        left, top = (p % 2) * PANEL_W, (p // 2) * PANEL_H
        x0, y0, x1, y1 = left + 60, top + 30, left + PANEL_W - 20, top + PANEL_H - 46  # the plot area
        lines = [[(m, r[key]) for m, r in zip(minutes, records) if m is not None and r.get(key) is not None]
                 for minutes, (_, records, _) in zip(at, runs)]
        values = [v for line in lines for _, v in line] + references
        lo, hi = min(values), max(values)
        y_ticks = ticks(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)) if hi > lo else ticks(lo - 0.5, hi + 0.5)

        def xy(m, v):  # (minutes, value) -> pixels
            return (x0 + (m - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (x1 - x0),
                    y1 - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (y1 - y0))
        draw.text((x0, top + 8), title, fill="black", font=font)
        draw.rectangle((x0, y0, x1, y1), outline="black")
        for m in x_ticks:
            x = xy(m, y_ticks[0])[0]
            draw.line((x, y1, x, y1 + 4), fill="black")
            draw.text((x, y1 + 6), f"{m:g}", fill="black", font=font, anchor="mt")
        for v in y_ticks:
            y = xy(x_ticks[0], v)[1]
            draw.line((x0 - 4, y, x0, y), fill="black")
            draw.text((x0 - 6, y), f"{v:g}", fill="black", font=font, anchor="rm")
        draw.text(((x0 + x1) / 2, y1 + 24), "training minutes", fill="black", font=font, anchor="mt")
        for v in references:  # dashed: 6 pixels drawn, 4 left out
            y = xy(x_ticks[0], v)[1]
            for x in range(x0, x1, 10):
                draw.line((x, y, min(x + 6, x1), y), fill="grey")
        for k, line in enumerate(lines):
            points = [xy(m, v) for m, v in line]
            colour = COLOURS[k % len(COLOURS)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for px, py in points if len(points) <= 40 else []:  # few scores: each one marked
                draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        if not any(lines):
            draw.text(((x0 + x1) / 2, (y0 + y1) / 2), "no records", fill="grey", font=font, anchor="mm")
    x, y = 60, 2 * PANEL_H + 8
    for k, (name, *_) in enumerate(runs):  # the legend, in rows
        width = 22 + draw.textlength(name, font=font) + 24
        if x + width > img.width and x > 60:
            x, y = 60, y + 20
        draw.rectangle((x, y + 3, x + 14, y + 13), fill=COLOURS[k % len(COLOURS)])
        draw.text((x + 20, y), name, fill="black", font=font)
        x += width
    return img


def curves(argv: list[str]) -> Path:
    """`evaluate.py curve RUN [RUN ...] --out PNG`: the curve image of the runs (each labelled by
    its folder's name, by the path given where two names are the same; one started by --init-g
    from another run's checkpoint where that run stood: start_minutes), written to --out."""
    args = get_curve_args(argv)
    names = [Path(run).resolve().name for run in args.runs]
    names = names if len(set(names)) == len(names) else args.runs
    runs = []
    for name, run in zip(names, args.runs):
        with open(Path(run) / "log.jsonl") as f:
            runs.append((name, [json.loads(line) for line in f if line.strip()], start_minutes(Path(run))))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curve_image(runs).save(out)
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> list[Rung] | Path:
    """The ladder of --ckpt's chain, printed as a table: its rows; or with `curve` first, the
    curve image of run folders (curves): its path."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["curve"]:
        return curves(argv[1:])
    args = get_args(argv)
    if args.n < 1:
        raise ValueError("--n must be at least 1")
    device = torch.device(args.device)
    chain = load_chain(args.ckpt, device)
    cfg = chain[-1][0]
    classifier, heldout = (recognizer(args.real, cfg, args.fvd_cache, device, args.recognizer_clips,
                                      args.recognizer_steps) if has_classes(args.real, cfg) else (None, None))
    scores = ladder(chain, args.real, args.n, args.fvd_frames, args.batch, device, args.fvd_cache,
                    fvd.load_i3d().to(device), classifier)
    print(ladder_table(scores, cfg, heldout))
    return scores


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
