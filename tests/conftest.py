"""Shared pytest setup: tests run on CPU, serially, with tiny shapes."""
import os

import pytest
import torch

import evaluate
from train import get_args, train

# serially 2 threads; under pytest-xdist (`-n 2`, README) one per worker process, a core each
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)))
if os.environ.get("SSW_FLUSH_DENORMAL") == "1":  # the portability check of docs/testing.md
    torch.set_flush_denormal(True)

EPS = torch.finfo(torch.float32).eps


def max_abs(values) -> float:
    """The largest |element| of a tensor, or of the tensors in a list, tuple or dict (None skipped)."""
    if isinstance(values, dict):
        values = list(values.values())
    if isinstance(values, (list, tuple)):
        return max((max_abs(v) for v in values), default=0.0)
    return 0.0 if values is None or values.numel() == 0 else values.detach().abs().max().item()


def assert_close_at_scale(actual, expected, scale: float | None = None, ulps: float = 128,
                          msg: str | None = None):
    """assert_close for float32 values that two paths of arithmetic compute (other kernels,
    another summation order, another CPU's SIMD width): every element within `ulps` float32
    epsilons of `scale`, by default the largest |expected| (of a tensor, or of a list's or dict's
    tensors). An element that sums large terms to near 0 (a gradient, a bias's above all) carries
    their rounding, not rounding of its own size: no rtol covers it, and a fixed atol near
    float32's resolution (1e-6) passes on one CPU and fails on another. 128 eps is 1.5e-5 of the
    scale; a real difference in the arithmetic (a power iteration more, another BN statistic)
    moves values by orders of magnitude more."""
    scale = max_abs(expected) if scale is None else scale
    torch.testing.assert_close(actual, expected, rtol=0, atol=ulps * EPS * scale, msg=msg)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> list[str]:
    """Checkpoints of all three stages of the tiny preset, one training step each. Their run
    folders are read, never written: a test that goes on from one (resumes it, changes its files)
    copies its folder first (test_train.one_step_run)."""
    root = tmp_path_factory.mktemp("chain")
    paths = []
    for stage in (1, 2, 3):
        out = root / f"stage{stage}"
        train(get_args(["--preset", "tiny", "--stage", str(stage), "--max-iters", "1", "--batch-size", "2",
                        "--workers", "0", "--out", str(out)]))
        paths.append(str(out / "ckpt.pt"))
    return paths


@pytest.fixture
def brief_heldout(monkeypatch):
    """recognizer() measures its held-out real accuracy on 16 videos, not 256: for the tests whose
    claims do not hang on it (a stage's scores never read it; rendering and classifying the 256
    were about a quarter of a tiny stage-3 run's time with --fvd-every)."""
    recognizer = evaluate.recognizer
    monkeypatch.setattr(evaluate, "recognizer", lambda *args: recognizer(*args, n_heldout=16))
