"""losses.py: the hinge terms against hand computations, the whole objective of a stage on
stub discriminators whose logits are known by hand, and each optional term (mismatched
negatives, the L1 term) on the real networks, adding exactly itself."""
import torch
import torch.nn.functional as F

from losses import LAMBDA_M, LAMBDA_REC, d_hinge, d_hinge_negative, d_loss, g_hinge, g_loss, translate
from models import build_stage, fake_batch, stage_config
from test_train import fixed_batch


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


def stub_batch(upscaler: bool) -> tuple[dict, torch.Tensor]:
    """Two real videos at 0.5 and their fakes at -0.5 (and zero conditioning views)."""
    batch = {"x": torch.full((2, 3, 2, 2, 2), 0.5), "y": torch.zeros(2, dtype=torch.long)}
    if upscaler:
        batch["c"] = torch.zeros(2, 3, 1, 1, 1)
    return batch, torch.full((2, 3, 2, 2, 2), -0.5)


def D_s(x, y, frames=None):  # logit 2 mean(x): real 1, fake -1
    return 2 * x.mean((1, 2, 3, 4))


def D_t(x, y):               # mean(x): real 0.5, fake -0.5
    return x.mean((1, 2, 3, 4))


def D_m(x, c, y):            # mean(x) + mean(c): real and mismatched pairs 0.5, fake -0.5
    return x.mean((1, 2, 3, 4)) + c.mean((1, 2, 3, 4))


def test_stage_objective_by_hand():
    """Every term of L_D and L_G with its weight, on stub Ds: D_s's hinge is saturated (0), D_t's
    and D_m's are relu(1 - 0.5) + relu(1 - 0.5) = 1, a mismatched pair adds relu(1 + 0.5) = 1.5;
    G's hinges are 1, 0.5 and 0.5, and |fake - real| = 1. The defaults are lambda_m 1 and
    lambda_rec 100, and the mismatch term is off."""
    assert (LAMBDA_M, LAMBDA_REC) == (1.0, 100.0)
    batch, x_fake = stub_batch(upscaler=False)
    loss, stats = d_loss(D_s, D_t, None, batch, x_fake)
    torch.testing.assert_close(loss, torch.tensor(0.0 + 1.0))
    assert stats == {"D_s_real": 1.0, "D_s_fake": -1.0, "D_t_real": 0.5, "D_t_fake": -0.5}
    loss, stats = g_loss(D_s, D_t, None, batch, x_fake)
    torch.testing.assert_close(loss, torch.tensor(1.0 + 0.5))
    assert stats == {}  # stage 1: no real window to match, no rec
    batch, x_fake = stub_batch(upscaler=True)
    torch.testing.assert_close(d_loss(D_s, D_t, D_m, batch, x_fake)[0], torch.tensor(1.0 + 1.0))
    loss, stats = d_loss(D_s, D_t, D_m, batch, x_fake, lambda_m=0.5, mismatch=True)
    torch.testing.assert_close(loss, torch.tensor(1.0 + 0.5 * (1.0 + 1.5)))
    assert (stats["D_m_real"], stats["D_m_fake"]) == (0.5, -0.5)
    loss, stats = g_loss(D_s, D_t, D_m, batch, x_fake)
    torch.testing.assert_close(loss, torch.tensor(1.0 + 0.5 + 0.5 + 100 * 1.0))
    torch.testing.assert_close(stats["rec"], torch.tensor(1.0))
    loss, stats = g_loss(D_s, D_t, D_m, batch, x_fake, lambda_m=0.5, lambda_rec=0.0)
    torch.testing.assert_close(loss, torch.tensor(1.0 + 0.5 + 0.5 * 0.5))
    torch.testing.assert_close(stats["rec"], torch.tensor(1.0))  # logged at lambda_rec 0 too


def test_mismatch_negatives_add_exactly_their_hinge_term():
    """--mismatch-negatives: the D loss gains relu(1 + D_m(x, c of another video)) and nothing else."""
    cfg = stage_config("tiny", 2, num_classes=5)
    G, D_s, D_t, D_m = build_stage(cfg)
    batch = fixed_batch(cfg)
    losses = []
    for mismatch in (False, True):
        torch.manual_seed(0)  # the same noise and D_s frames in both calls
        losses.append(d_loss(D_s, D_t, D_m, batch, fake_batch(G, cfg, batch), 0.5, mismatch)[0])
    extra = d_hinge_negative(D_m(batch["x"], batch["c"].roll(1, 0), batch["y"]))
    torch.testing.assert_close(losses[1] - losses[0], 0.5 * extra)
    assert extra > 0


def test_lambda_rec_adds_the_window_l1_and_its_gradient_only():
    """--lambda-rec: the G loss gains lambda_rec * mean |G's window - the real window|, and G's
    gradient gains exactly that term's; at 0 the term is logged but pulls on nothing."""
    torch.manual_seed(0)  # the same weights and noise whatever ran before
    cfg = stage_config("tiny", 3, num_classes=5, grounded=True)
    nets = build_stage(cfg)
    for net in nets:
        net.eval()  # no batch statistics and no power iteration: every call is the same function
    G = nets[0]
    with torch.no_grad():  # a trained-looking residual, so that rec depends on G's weights
        G.out.weight.normal_(0, 0.05)
    batch = fixed_batch(cfg)
    batch["z"] = torch.randn(4, cfg.z_dim, *batch["c_context"].shape[2:])
    batch["frames"] = torch.stack([torch.arange(4).repeat(4, 1)] * 2)  # (2, B, k)
    losses, grads, recs = [], [], []
    for lam in (0.0, 2.0):
        G.zero_grad()
        loss, stats = g_loss(*nets[1:], batch, fake_batch(G, cfg, batch), 1.0, lam)
        loss.backward()
        losses.append(loss.detach()), grads.append(G.out.weight.grad.clone()), recs.append(stats["rec"])
    G.zero_grad()
    rec = (fake_batch(G, cfg, batch) - batch["x"]).abs().mean()
    rec.backward()
    torch.testing.assert_close(recs[0], rec.detach())
    torch.testing.assert_close(recs[1], rec.detach())
    torch.testing.assert_close(losses[1] - losses[0], 2.0 * rec.detach())
    # The adversarial part is in both gradients and cancels up to float error of its own size.
    tol = 1e-5 * grads[0].abs().max().item()
    torch.testing.assert_close(grads[1] - grads[0], 2.0 * G.out.weight.grad, atol=tol, rtol=0)
    assert 2.0 * G.out.weight.grad.abs().max() > 100 * tol  # the term is far above that error



def test_translate_moves_each_video_by_its_own_shift():
    """DiffAugment's translation: shift (B, 2) in [-1, 1] moves a video by round(shift * size / 8)
    rows and columns, every frame alike, zeros coming in; shift 0 is the video itself; the
    gradient reaches the moved pixels only."""
    x = torch.arange(2 * 1 * 2 * 16 * 16, dtype=torch.float32).view(2, 1, 2, 16, 16).requires_grad_(True)
    moved = translate(x, torch.tensor([[0.5, -1.0], [0.0, 0.0]]))  # video 0: 1 row down, 2 columns left
    assert torch.equal(moved[1], x[1])
    assert torch.equal(moved[0, :, :, 1:, :14], x[0, :, :, :15, 2:])
    assert moved[0, :, :, 0].abs().sum() == 0 and moved[0, :, :, :, 14:].abs().sum() == 0
    moved.sum().backward()
    assert x.grad[0].sum() == 15 * 14 * 2 and x.grad[1].sum() == 16 * 16 * 2  # what came out of the frame has none


def test_r1_adds_half_gamma_times_the_squared_gradient_at_real_videos():
    """--r1 gamma: L_D gains gamma / 2 E|grad_x D(x)|^2 over real x, for D_s and D_t. On the stub
    Ds, 2 mean(x) and mean(x) over N = 24 values a video, the gradients are 2/N and 1/N at every
    value: |.|^2 = 4/N + 1/N."""
    batch, x_fake = stub_batch(upscaler=False)
    plain, _ = d_loss(D_s, D_t, None, batch, x_fake)
    loss, stats = d_loss(D_s, D_t, None, batch, x_fake, r1=0.2)
    torch.testing.assert_close(stats["r1"], torch.tensor(5 / 24))
    torch.testing.assert_close(loss - plain, torch.tensor(0.1 * 5 / 24))
    assert not batch["x"].requires_grad  # the caller's batch is left as it was


def test_augment_shows_the_ds_translated_videos_and_adv_weights_the_game():
    """--augment: D_s and D_t score translate(x) of real and fake (the batch's shifts), in the D
    and the G step; --adv-fade's weight scales the adversarial terms alone, not the L1 term."""
    torch.manual_seed(0)
    cfg = stage_config("tiny", 1, num_classes=5)
    G, D_s_net, D_t_net, _ = (m.eval() if m is not None else None for m in build_stage(cfg))
    batch = fixed_batch(cfg)
    batch["frames"] = torch.stack([torch.arange(4).repeat(4, 1)] * 2)  # (2, B, k)
    batch["shift"] = 2 * torch.rand(2, 4, 2) - 1                        # (2, B, 2)
    x_fake = fake_batch(G, cfg, batch).detach()
    moved = {**batch, "x": translate(batch["x"], batch["shift"][0])}
    augmented = d_loss(D_s_net, D_t_net, None, batch, x_fake, augment=True)[0]
    by_hand = d_loss(D_s_net, D_t_net, None, moved, translate(x_fake, batch["shift"][1]))[0]
    torch.testing.assert_close(augmented, by_hand)
    assert not torch.allclose(augmented, d_loss(D_s_net, D_t_net, None, batch, x_fake)[0])
    augmented = g_loss(D_s_net, D_t_net, None, batch, x_fake, augment=True)[0]
    torch.testing.assert_close(augmented, g_loss(D_s_net, D_t_net, None, batch, translate(x_fake, batch["shift"][1]))[0])
    batch, x_fake = stub_batch(upscaler=True)  # hinges 1 + 0.5 + 0.5, L1 100 x 1
    torch.testing.assert_close(g_loss(D_s, D_t, D_m, batch, x_fake, adv=torch.tensor(0.25))[0],
                               torch.tensor(0.25 * 2.0 + 100.0))


def test_aux_class_adds_the_class_heads_cross_entropy():
    """--aux-class w: L_D gains w CE(the class heads of D_s and D_t on the real videos, y), L_G
    w CE(the same heads on G's videos, y), each exactly; D_m has no class head."""
    torch.manual_seed(0)
    cfg = stage_config("tiny", 2, num_classes=5, d_classify=True)
    G, D_s_net, D_t_net, D_m_net = (m.eval() for m in build_stage(cfg))
    assert D_s_net.head.classify is not None and D_m_net.head.classify is None
    batch = fixed_batch(cfg)
    batch["frames"] = torch.stack([torch.arange(4).repeat(4, 1)] * 2)  # (2, B, k)
    x_fake, y = fake_batch(G, cfg, batch).detach(), batch["y"]
    nets = (D_s_net, D_t_net, D_m_net)

    def ce(x, frames):
        return (F.cross_entropy(D_s_net(x, y, frames, classes=True)[1], y)
                + F.cross_entropy(D_t_net(x, y, classes=True)[1], y))

    plain, with_class = d_loss(*nets, batch, x_fake), d_loss(*nets, batch, x_fake, aux_class=0.5)
    torch.testing.assert_close(with_class[0] - plain[0], 0.5 * ce(batch["x"], batch["frames"][0]))
    torch.testing.assert_close(with_class[1]["class_D"], ce(batch["x"], batch["frames"][0]))
    plain = g_loss(*nets, batch, x_fake, lambda_rec=0.0)  # the L1 term's size apart: differences of losses near 1
    with_class = g_loss(*nets, batch, x_fake, lambda_rec=0.0, aux_class=0.5)
    torch.testing.assert_close(with_class[0] - plain[0], 0.5 * ce(x_fake, batch["frames"][1]))
