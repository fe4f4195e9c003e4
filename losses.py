"""The whole objective of SSW-GAN, every stage (DESIGN.md section 4), as pure functions of the
discriminators, the batch and the fake batch. It imports nothing of the project: the Ds come in
as arguments, and train.py makes the fake batch.

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

Stage 1 has no D_m (pass None) and no c. D_s scores the frames batch["frames"] names where the
batch brings them ((2, B, k): the real videos' and the fakes', train.py draws them per example),
else k frames it draws itself. Logits and losses are float32, under bf16 autocast too.
"""
import torch
import torch.nn.functional as F

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


# -----------------------------------------------------------------------------
# The D and G losses of a stage. batch: "x" (B, 3, T, H, W) real in [-1, 1], "y" (B,) classes,
# for upscalers "c" (B, 3, T/2, H/2, W/2) = view(x, 2, 2), optionally "frames"; x_fake like x.

def d_loss(D_s, D_t, D_m, batch: dict, x_fake: torch.Tensor, lambda_m: float = LAMBDA_M,
           mismatch: bool = False) -> tuple[torch.Tensor, dict]:
    """L_D. Real and fake go through each D as one batch. Returns (loss, stats), stats holding
    each D's mean logits by name ("D_s_real", "D_s_fake", ...), detached."""
    x_real, c, y, frames = batch["x"], batch.get("c"), batch["y"], batch.get("frames")
    B = x_real.shape[0]
    assert x_fake.shape == x_real.shape, f"G made {tuple(x_fake.shape)}, data is {tuple(x_real.shape)}"
    x, yy = torch.cat([x_real, x_fake]), torch.cat([y, y])                 # (2B, 3, T, H, W)
    frames = None if frames is None else frames.flatten(0, 1)               # (2B, k): real, fake
    logits = {"s": D_s(x, yy, frames).float(), "t": D_t(x, yy).float()}     # (2B,) each
    loss = d_hinge(logits["s"][:B], logits["s"][B:]) + d_hinge(logits["t"][:B], logits["t"][B:])
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
    stats = {}
    for k, v in logits.items():
        stats[f"D_{k}_real"], stats[f"D_{k}_fake"] = v[:B].mean().detach(), v[B:].mean().detach()
    return loss, stats


def g_loss(D_s, D_t, D_m, batch: dict, x_fake: torch.Tensor, lambda_m: float = LAMBDA_M,
           lambda_rec: float = LAMBDA_REC) -> tuple[torch.Tensor, dict]:
    """L_G on a fake batch made with its graph; D_s, D_t and D_m all None: the L1 term alone (an
    upscaler's baseline, ESRGAN's pre-training). For the upscalers (the batch brings "c") stats
    holds "rec", the mean |x_fake - x_real| over the window, logged at any lambda_rec (at 0 it
    pulls on nothing). Returns (loss, stats)."""
    c, y, frames = batch.get("c"), batch["y"], batch.get("frames")
    if D_s is None:  # no adversarial terms (train.py --no-adversarial): the L1 term alone
        loss = x_fake.new_zeros((), dtype=torch.float32)
    else:
        loss = g_hinge(D_s(x_fake, y, None if frames is None else frames[1]).float()) + g_hinge(D_t(x_fake, y).float())
    if D_m is not None:
        loss = loss + lambda_m * g_hinge(D_m(x_fake, c, y).float())
    if c is None:
        return loss, {}
    rec = ((x_fake if lambda_rec else x_fake.detach()).float() - batch["x"].float()).abs().mean()
    return loss + lambda_rec * rec, {"rec": rec.detach()}
