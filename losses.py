"""The whole objective of SSW-GAN, every stage (DESIGN.md section 4), as functions of the
discriminators, the batch and the fake batch (d_loss, g_loss), and the forward of a training
step, which makes the fake batch (d_forward, g_forward: G's videos are models.fake_batch, this
file's one import of the project; the nets come in as arguments).

A stage has D_s (k frames of each video, 2D), D_t (the whole clip or window, 3D) and, for the
upscaling stages >= 2, D_m (is the window x grounded in its conditioning view c?). With hinge
terms h_D(r, f) = mean relu(1 - r) + mean relu(1 + f) and h_G(f) = -mean f:

    L_D = h_D(D_s(x), D_s(G)) + h_D(D_t(x), D_t(G))
          + lambda_m [ h_D(D_m(x, c), D_m(G, c)) + mismatch * mean relu(1 + D_m(x, c')) ]
    L_G = h_G(D_s(G)) + h_G(D_t(G)) + lambda_m h_G(D_m(G, c))
          + lambda_rec mean |G - x|                          (upscalers only)

    term        default                  flag                    what it is
    lambda_m    1 (stages >= 2)          --lambda-m              weight of D_m; 0 removes D_m
    mismatch    off                      --mismatch-negatives    D_m also sees (x, c') as fake, c' the
                                                                 view of the batch's next video
    lambda_rec  100 (upscalers; stage 1 has no real window to match)
                                         --lambda-rec            pix2pix's L1 between G's window and
                                                                 the real one; 0: the paper's G loss
    r1          0                        --r1                    + r1/2 E|grad_x D(x)|^2 on real x, for
                                                                 D_s and D_t (Mescheder et al. 2018)
    augment     off                      --augment               D_s and D_t see every video, real and
                                                                 fake, translated (DiffAugment)
    adv         1                        --adv-fade              the G step's adversarial terms' weight,
                                                                 faded in from 0 (ESRGAN's schedule)
    aux_class   0                        --aux-class             + aux_class CE(class head of D_s and D_t,
                                                                 y): D on real videos, G on its own
                                                                 (AC-GAN's auxiliary classifier)

Augmentation (DiffAugment, Zhao et al. 2020) translates each video, all its frames alike, by up
to 1/8 of its size with zero padding, a draw per video that the batch brings ("shift" (2, B, 2)
in [-1, 1): the real videos', then the fakes'); D_m sees no augmentation (its pairs must stay
aligned with c). Stage 1 has no D_m (pass None) and no c. D_s scores the frames batch["frames"] names where the
batch brings them ((2, B, k): the real videos' and the fakes', train.py draws them per example),
else k frames it draws itself. Logits and losses are float32, under bf16 autocast too.
"""
import torch
import torch.nn.functional as F

from models import StageConfig, fake_batch

LAMBDA_M = 1.0      # --lambda-m's default
LAMBDA_REC = 100.0  # --lambda-rec's default: pix2pix's weight


# -----------------------------------------------------------------------------
# Hinge terms, on (B,) logits; each returns a scalar

def d_hinge(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


def d_hinge_negative(logits_negative: torch.Tensor) -> torch.Tensor:
    """The fake half of the hinge alone: extra negatives such as mismatched real pairs for D_m."""
    return F.relu(1 + logits_negative).mean()


def g_hinge(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge: -mean(D(fake))."""
    return -logits_fake.mean()


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x (B, C, T, H, W) moved by round(shift * H / 8) rows and round(shift * W / 8) columns,
    shift (B, 2) in [-1, 1], zeros (mid-grey) coming in: DiffAugment's translation, the same for
    every frame of a video. Two gathers, so its backward reaches G's fakes."""
    B, C, T, H, W = x.shape
    p = H // 8
    move = (shift * p).round().long()                                          # (B, 2) in [-p, p]
    x = F.pad(x, (p, p, p, p))                                                 # (B, C, T, H + 2p, W + 2p)
    rows = torch.arange(H, device=x.device) + p - move[:, :1]                  # (B, H)
    cols = torch.arange(W, device=x.device) + p - move[:, 1:]                  # (B, W)
    x = x.gather(3, rows.view(B, 1, 1, H, 1).expand(B, C, T, H, W + 2 * p))    # (B, C, T, H, W + 2p)
    return x.gather(4, cols.view(B, 1, 1, 1, W).expand(B, C, T, H, W))         # (B, C, T, H, W)


def r1_penalty(logits_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """E |grad_x D(x)|^2 over real videos x (B, ...) that require grad, from their (B,) logits:
    R1 (Mescheder et al. 2018), with the graph kept so that it trains D."""
    grad, = torch.autograd.grad(logits_real.sum(), x_real, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


# -----------------------------------------------------------------------------
# The D and G losses of a stage. batch: "x" (B, 3, T, H, W) real in [-1, 1], "y" (B,) classes,
# for upscalers "c" (B, 3, T/2, H/2, W/2) = view(x, 2, 2), optionally "frames"; x_fake like x.

def d_loss(D_s, D_t, D_m, batch: dict, x_fake: torch.Tensor, lambda_m: float = LAMBDA_M,
           mismatch: bool = False, r1: float = 0.0, augment: bool = False,
           aux_class: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L_D. Real and fake go through each D as one batch. Returns (loss, stats), stats holding
    each D's mean logits by name ("D_s_real", "D_s_fake", ...), with r1 "r1" (the penalty of
    D_s and D_t, summed) and with aux_class "class_D" (their class heads' CE on the real
    videos), detached."""
    x_real, c, y, frames = batch["x"], batch.get("c"), batch["y"], batch.get("frames")
    B = x_real.shape[0]
    assert x_fake.shape == x_real.shape, f"G made {tuple(x_fake.shape)}, data is {tuple(x_real.shape)}"
    if r1:  # the penalty's gradient is taken at the real videos, before any augmentation
        x_real = x_real.detach().requires_grad_(True)
    x, yy = torch.cat([x_real, x_fake]), torch.cat([y, y])                 # (2B, 3, T, H, W)
    if augment:
        x = translate(x, batch["shift"].flatten(0, 1))                      # (2B, 3, T, H, W)
    frames = None if frames is None else frames.flatten(0, 1)               # (2B, k): real, fake
    stats = {}
    if aux_class:  # the Ds' class heads learn the real videos' classes
        (s, class_s), (t, class_t) = D_s(x, yy, frames, classes=True), D_t(x, yy, classes=True)
        logits = {"s": s.float(), "t": t.float()}                           # (2B,) each
        class_loss = F.cross_entropy(class_s[:B].float(), y) + F.cross_entropy(class_t[:B].float(), y)
        stats["class_D"] = class_loss.detach()
    else:
        logits = {"s": D_s(x, yy, frames).float(), "t": D_t(x, yy).float()}  # (2B,) each
    loss = d_hinge(logits["s"][:B], logits["s"][B:]) + d_hinge(logits["t"][:B], logits["t"][B:])
    if aux_class:
        loss = loss + aux_class * class_loss
    if r1:
        penalty = r1_penalty(logits["s"][:B], x_real) + r1_penalty(logits["t"][:B], x_real)
        loss = loss + r1 / 2 * penalty
        stats["r1"] = penalty.detach()
    if D_m is not None:
        pairs_x, pairs_c = [x_real, x_fake], [c, c]
        if mismatch:  # a real window with another video's view is a fake pair too
            pairs_x.append(x_real)
            pairs_c.append(c.roll(1, dims=0))
        logits_m = D_m(torch.cat(pairs_x), torch.cat(pairs_c), y.repeat(len(pairs_x))).float()
        loss_m = d_hinge(logits_m[:B], logits_m[B:2 * B])
        if mismatch:
            loss_m = loss_m + d_hinge_negative(logits_m[2 * B:])
        loss = loss + lambda_m * loss_m
        logits["m"] = logits_m[:2 * B]
    for k, v in logits.items():
        stats[f"D_{k}_real"], stats[f"D_{k}_fake"] = v[:B].mean().detach(), v[B:].mean().detach()
    return loss, stats


def g_loss(D_s, D_t, D_m, batch: dict, x_fake: torch.Tensor, lambda_m: float = LAMBDA_M,
           lambda_rec: float = LAMBDA_REC, augment: bool = False,
           adv: torch.Tensor | float = 1.0, aux_class: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L_G on a fake batch made with its graph, its adversarial terms weighted by adv (a 0-d
    tensor where it changes from step to step, so a compiled step does not recompile); D_s,
    D_t and D_m all None: the L1 term alone (an upscaler's baseline, ESRGAN's pre-training). For
    the upscalers (the batch brings "c") stats holds "rec", the mean |x_fake - x_real| over the
    window, logged at any lambda_rec (at 0 it pulls on nothing); with aux_class, "class_G" (the
    Ds' class heads' CE on G's videos, an adversarial term). Returns (loss, stats)."""
    c, y, frames = batch.get("c"), batch["y"], batch.get("frames")
    stats = {}
    if D_s is None:  # no adversarial terms (train.py --no-adversarial): the L1 term alone
        loss = x_fake.new_zeros((), dtype=torch.float32)
    else:
        x_seen = translate(x_fake, batch["shift"][1]) if augment else x_fake  # (B, 3, T, H, W)
        frames_fake = None if frames is None else frames[1]
        if aux_class:  # G's videos should show their class to the Ds' class heads
            (s, class_s), (t, class_t) = D_s(x_seen, y, frames_fake, classes=True), D_t(x_seen, y, classes=True)
            class_loss = F.cross_entropy(class_s.float(), y) + F.cross_entropy(class_t.float(), y)
            loss = g_hinge(s.float()) + g_hinge(t.float()) + aux_class * class_loss
            stats["class_G"] = class_loss.detach()
        else:
            loss = g_hinge(D_s(x_seen, y, frames_fake).float()) + g_hinge(D_t(x_seen, y).float())
    if D_m is not None:
        loss = loss + lambda_m * g_hinge(D_m(x_fake, c, y).float())
    loss = adv * loss
    if c is None:
        return loss, stats
    rec = ((x_fake if lambda_rec else x_fake.detach()).float() - batch["x"].float()).abs().mean()
    return loss + lambda_rec * rec, {**stats, "rec": rec.detach()}


# -----------------------------------------------------------------------------
# The forward of a D step and of a G step: what train.py runs, and --compile compiles

def d_forward(G, D_s, D_t, D_m, cfg: StageConfig, lambda_m: float, mismatch: bool, r1: float, augment: bool,
              aux_class: float, batch: dict) -> tuple[torch.Tensor, dict]:
    """A D step's forward: G's videos for the batch (no grad), and the Ds on them and on the real
    ones: (L_D, the mean logits) (d_loss)."""
    with torch.no_grad():
        x_fake = fake_batch(G, cfg, batch)
    return d_loss(D_s, D_t, D_m, batch, x_fake, lambda_m, mismatch, r1, augment, aux_class)


def g_forward(G, D_s, D_t, D_m, cfg: StageConfig, lambda_m: float, lambda_rec: float, augment: bool,
              aux_class: float, batch: dict, adv: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, dict]:
    """A G step's forward: G's videos with their graph, and L_G with its adversarial terms
    weighted by adv (g_loss; Ds None: the L1 term alone)."""
    return g_loss(D_s, D_t, D_m, batch, fake_batch(G, cfg, batch), lambda_m, lambda_rec, augment, adv, aux_class)


def adv_weight(step: int, fade: int, device: torch.device) -> torch.Tensor:
    """min(1, step / fade), 1 without a fade: a 0-d tensor, so that a compiled G step takes it as an input."""
    return torch.tensor(min(1.0, step / fade) if fade else 1.0, device=device)
