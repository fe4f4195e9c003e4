"""Hinge losses of SSW-GAN as pure functions of discriminator logits (DESIGN.md section 4).

A D step sums `d_hinge` over D_s, D_t (and D_m for stages >= 2); a G step sums `g_hinge`
over the same discriminators. Weights (e.g. --lambda-m) are applied by the caller.
Logits are (B,) tensors; every function returns a scalar.
"""
import torch
import torch.nn.functional as F


def d_hinge(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


def d_hinge_negative(logits_negative: torch.Tensor) -> torch.Tensor:
    """The fake half of the hinge alone: extra negatives such as mismatched real pairs for D_m."""
    return F.relu(1 + logits_negative).mean()


def g_hinge(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge: -mean(D(fake))."""
    return -logits_fake.mean()
