"""Hinge losses against hand computations."""
import torch

from losses import d_hinge, d_hinge_negative, g_hinge


def test_d_hinge_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])   # relu(1 - r): 0, 0.5, 2   -> mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.5])   # relu(1 + f): 0, 1, 2.5   -> mean 3.5/3
    torch.testing.assert_close(d_hinge(real, fake), torch.tensor(6.0 / 3))
    torch.testing.assert_close(d_hinge_negative(fake), torch.tensor(3.5 / 3))


def test_g_hinge_by_hand():
    torch.testing.assert_close(g_hinge(torch.tensor([1.0, -3.0, 0.5, 0.5])), torch.tensor(0.25))


def test_hinge_saturates():
    """Confident correct logits give zero D loss and zero gradient."""
    real = torch.tensor([1.5, 3.0], requires_grad=True)
    fake = torch.tensor([-1.2, -4.0], requires_grad=True)
    loss = d_hinge(real, fake)
    loss.backward()
    assert loss.item() == 0 and real.grad.abs().sum() == 0 and fake.grad.abs().sum() == 0
