"""Shared pytest setup: tests run on CPU, serially, with tiny shapes."""
import pytest
import torch

from train import get_args, train

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> list[str]:
    """Checkpoints of all three stages of the tiny preset, one training step each."""
    root = tmp_path_factory.mktemp("chain")
    paths = []
    for stage in (1, 2, 3):
        out = root / f"stage{stage}"
        train(get_args(["--preset", "tiny", "--stage", str(stage), "--max-iters", "1", "--batch-size", "2",
                        "--workers", "0", "--out", str(out)]))
        paths.append(str(out / "ckpt.pt"))
    return paths
