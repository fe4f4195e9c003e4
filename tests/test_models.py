"""Contracts of models.py: shapes, ranges, spectral norm, receptive radius, G1 length, presets."""
import copy
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from conftest import assert_close_at_scale, max_abs
from data import view
from distributed import micro_batch, spectral_norm_once, spectral_norms
from losses import d_loss, g_loss
from models import (GRU, PRESETS, G1, DBlock, GBlock, Gup, SpatialD, build_stage, fake_batch, ground, head_pool,
                    stage_config, upsample)


def tiny(stage: int, **kw):
    return stage_config("tiny", stage, num_classes=3, **kw)


def inputs(cfg, B=2):
    y = torch.tensor([0, 2])[:B]
    if cfg.stage == 1:
        return (torch.randn(B, cfg.out_frames, cfg.z_dim), y)
    c = torch.rand(B, 3, cfg.cond_frames, cfg.cond_size, cfg.cond_size) * 2 - 1
    return (c, torch.randn(B, cfg.z_dim, *c.shape[2:]), y)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_tiny_shapes_and_ranges(stage):
    cfg = tiny(stage)
    G, D_s, D_t, D_m = build_stage(cfg)
    args = inputs(cfg)
    x = G(*args)
    assert x.shape == (2, 3, cfg.out_frames, cfg.out_size, cfg.out_size)
    assert x.abs().max() <= 1 and x.std() > 0  # stages >= 2 start as an interpolation of c
    y = args[-1]
    assert D_s(x, y).shape == (2,) and D_t(x, y).shape == (2,)
    if stage == 1:
        assert D_m is None
    else:
        assert D_m(x, args[0], y).shape == (2,)


@pytest.mark.parametrize("preset,stage", [(p, s + 1) for p in PRESETS for s in range(len(PRESETS[p]))])
def test_preset_shapes_on_meta(preset, stage):
    """Every row of the table builds and maps its inputs to the documented sizes (on the meta
    device: shapes only, no compute)."""
    cfg = stage_config(preset, stage, num_classes=5)
    G, D_s, D_t, D_m = (m.to("meta") if m is not None else None for m in build_stage(cfg))
    with torch.device("meta"):
        args = inputs(cfg)
        x = G(*args)
        assert x.shape == (2, 3, cfg.out_frames, cfg.out_size, cfg.out_size)
        assert D_s(x, args[-1]).shape == D_t(x, args[-1]).shape == (2,)
        if D_m is not None:
            assert D_m(x, args[0], args[-1]).shape == (2,)


def test_ssw128_table():
    """The headline preset: 25@32 -> 50@64 -> 100@128, each a view of 100-frame 128x128 clips."""
    s1, s2, s3 = (stage_config("ssw-128", s) for s in (1, 2, 3))
    assert (s1.out_frames, s1.out_size) == (25, 32)
    assert (s2.video_frames, s2.out_size, s2.cond_size) == (50, 64, 32)
    assert (s3.video_frames, s3.out_size, s3.cond_size) == (100, 128, 64)
    assert s2.cond_frames * 2 == s2.window
    dvd = stage_config("dvd-128", 1)  # the baseline is G1/D_s/D_t at full size
    assert (dvd.out_frames, dvd.out_size) == (100, 128)


def test_bad_rows_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        stage_config("nope", 1)
    with pytest.raises(ValueError, match="stages 1..3"):
        stage_config("tiny", 4)
    with pytest.raises(ValueError, match="even"):
        stage_config("tiny", 2, window=7)


@pytest.mark.parametrize("stage", [1, 2])
def test_spectral_norm_on_every_conv_and_linear(stage):
    """Every conv and linear but Gup's zero-initialised residual output (DESIGN.md section 3)."""
    for module in build_stage(tiny(stage)):
        if module is None:
            continue
        exempt = [module.out] if isinstance(module, Gup) else []
        layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))
                  and not any(m is e for e in exempt)]
        assert layers
        for m in layers:
            assert hasattr(m, "parametrizations") and "weight" in m.parametrizations, m


def spectral_norm_layers(net) -> dict:
    return {name: m for name, m in net.named_modules() if hasattr(m, "parametrizations")}


def spectral_norm_buffers(net) -> dict:
    return {k: v for k, v in net.state_dict().items() if k.endswith(("._u", "._v"))}


@pytest.mark.parametrize("stage", [1, 3])
def test_batched_spectral_norm_trains_as_torchs_parametrization(stage):
    """distributed.micro_batch computes each net's spectrally normalised weights once per step,
    all its layers together (SpectralNorms), with a power iteration for the nets the step trains
    alone (the Ds in a D step, G in a G step); torch's parametrization computes them per layer at
    each access, here paused likewise (a deep copy: the cache cannot serve it). From
    power-iteration vectors u, v far from converged (so one iteration more or less would show):
    the same normalised weights, and in a D step, a G step and a --grad-accum micro-batch after
    the first (power iteration paused) the same losses, gradients and u, v, float rounding apart:
    the two paths sum in other orders, so each value within a few ulps of its scale (a gradient's
    is its network's largest: G's at stages >= 2 carry the L1 term at weight 100)."""
    torch.manual_seed(0)
    cfg = tiny(stage, context=1) if stage > 1 else tiny(stage)
    batched = [net for net in build_stage(cfg) if net is not None]
    per_layer = copy.deepcopy(batched)  # a deep copy: torch's parametrization cache would not serve it
    for net, twin in zip(batched, per_layer):
        assert spectral_norms(net).usable
        for (k, buffer), twin_buffer in zip(spectral_norm_buffers(net).items(), spectral_norm_buffers(twin).values()):
            buffer.copy_(nn.functional.normalize(torch.randn_like(buffer), dim=0))
            twin_buffer.copy_(buffer)
        # Weights away from their orthogonal init, whose singular values are all 1: there any u, v
        # give sigma 1 and one power iteration converges, so a power iteration more would not show.
        for m, twin_m in zip(spectral_norm_layers(net).values(), spectral_norm_layers(twin).values()):
            with torch.no_grad():
                twin_m.parametrizations.weight.original.copy_(m.parametrizations.weight.original.normal_())

    with spectral_norm_once(batched, []):  # one power iteration, then W / sigma, per layer
        got = [{k: m.weight for k, m in spectral_norm_layers(net).items()} for net in batched]
    want = [{k: m.weight for k, m in spectral_norm_layers(net).items()} for net in per_layer]  # the same, by torch
    for weights, twin_weights in zip(got, want):
        for k, w in twin_weights.items():
            assert_close_at_scale(weights[k], w, msg=k)

    B, k = 2, min(cfg.d_frames, cfg.out_frames)
    batch = {"x": torch.rand(B, 3, cfg.out_frames, cfg.out_size, cfg.out_size) * 2 - 1, "y": torch.tensor([0, 2]),
             "frames": torch.rand(2, B, cfg.out_frames).argsort(dim=2)[..., :k]}
    if stage == 1:
        batch["z"] = torch.randn(B, cfg.out_frames, cfg.z_dim)
    else:
        batch["c"] = view(batch["x"], 2, 2)
        batch["c_context"] = torch.rand(B, 3, cfg.cond_frames + 2, cfg.cond_size, cfg.cond_size) * 2 - 1
        batch["z"] = torch.randn(B, cfg.z_dim, *batch["c_context"].shape[2:])

    def steps(nets, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A D step's and a G step's forward and backward, as micro-batch m of 2 in train.py."""
        G, D_s, D_t, D_m = nets + [None] * (4 - len(nets))
        Ds = nets[1:]
        with micro_batch(m, 2, [], trained=Ds, others=[G]):
            with torch.no_grad():
                x_fake = fake_batch(G, cfg, batch)
            loss_D, _ = d_loss(D_s, D_t, D_m, batch, x_fake)
            loss_D.backward()
        for D in Ds:
            D.requires_grad_(False)
        with micro_batch(m, 2, [], trained=[G], others=Ds):
            loss_G, _ = g_loss(D_s, D_t, D_m, batch, fake_batch(G, cfg, batch))
            loss_G.backward()
        for D in Ds:
            D.requires_grad_(True)
        return loss_D, loss_G

    for m in (0, 1):
        for loss, twin_loss in zip(steps(batched, m), steps(per_layer, m)):  # loss_D, loss_G
            assert_close_at_scale(loss, twin_loss)
        for net, twin in zip(batched, per_layer):
            assert_close_at_scale(spectral_norm_buffers(net), spectral_norm_buffers(twin))  # unit vectors
            scale = max_abs([q.grad for q in twin.parameters()])
            for (name, p), q in zip(net.named_parameters(), twin.parameters()):
                assert_close_at_scale(p.grad, q.grad, scale, msg=name)


def test_gup_receptive_radius_matches_probe():
    """Perturb one conditioning frame (and its noise) in the middle of a long input: the outputs
    that move are exactly those within R conditioning frames of it."""
    cfg = tiny(2)
    G = Gup(cfg).eval()
    torch.nn.init.normal_(G.out.weight, std=0.05)  # the residual starts at zero: give it reach
    torch.nn.init.normal_(G.noise_gain)            # and the noise
    R = G.receptive_radius
    Tc, mid = 4 * R + 8, 2 * R + 4
    c, z, y = inputs(replace(cfg, window=2 * Tc), B=1)
    base = G(c, z, y)
    c2, z2 = c.clone(), z.clone()
    c2[:, :, mid] += 0.5
    z2[:, :, mid] += 0.5
    moved = (G(c2, z2, y) - base).abs().amax(dim=(0, 1, 3, 4)) > 0   # (2Tc,) output frames
    cond_of_moved = torch.nonzero(moved).squeeze(1) // 2              # conditioning frame each upsamples
    assert (cond_of_moved - mid).abs().max().item() == R


def test_g1_draws_longer_videos_with_the_same_start():
    """A longer temporal latent makes a longer video; far from the old end the frames agree."""
    cfg = tiny(1)
    G = G1(cfg).eval()
    z, y = inputs(cfg)
    z_long = torch.cat([z, torch.randn_like(z)], dim=1)
    short, long = G(z, y), G(z_long, y)
    T = cfg.out_frames
    assert long.shape[2] == 2 * T
    radius = G.margin  # 3x3x3 convs after the (causal) GRU; past it, mirrored latents
    assert radius == 2 * len(G.blocks) + 1
    torch.testing.assert_close(long[:, :, :T - radius], short[:, :, :T - radius])
    assert not torch.allclose(long[:, :, T - 1], short[:, :, T - 1])


def test_compiled_block_matches_eager_with_dynamic_time():
    """--compile: a compiled GBlock gives eager's outputs and gradients, at two lengths T.
    Two copies of one block: each forward advances spectral norm's power iteration."""
    torch.manual_seed(0)
    eager = GBlock(8, 4, cond_dim=6, up=(2, 2, 2))
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    for T in (3, 5):
        x = torch.randn(2, 8, T, 4, 4)
        cond = torch.randn(2, 6)
        # maybe_mark_dynamic: inductor's CPU lowering of the conv backward specialises T
        # (mark_dynamic raises there), so a new T may recompile; both must match eager.
        torch._dynamo.maybe_mark_dynamic(x, 2)
        outs, grads = [], []
        for block, fn in ((eager, eager), (twin, compiled)):
            block.zero_grad()
            out = fn(x, cond)
            out.square().sum().backward()
            outs.append(out)
            grads.append([p.grad for p in block.parameters()])
        assert outs[0].shape == (2, 4, 2 * T, 8, 8)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
        # Some grads are ~0 in theory (a conv bias right before BN): compare against the
        # overall gradient scale, not elementwise relative error.
        scale = max(g.abs().max().item() for g in grads[0])
        for g_c, g_e in zip(grads[1], grads[0]):
            torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-4 * scale)


def test_ground_makes_the_view_exact_with_the_least_change():
    """view(ground(x, c), 2, 2) == c; a grounded x is left as it is; each 2x2 block of a kept
    frame moves by one value (the least change in L2), and frame 2k+1 moves by the mean of the
    moves of frames 2k and 2k+2 (the last frame as the one before it)."""
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 3, 8, 6, 6, generator=g), torch.randn(2, 3, 4, 3, 3, generator=g)
    y = ground(x, c)
    torch.testing.assert_close(view(y, 2, 2), c)
    torch.testing.assert_close(ground(y, c), y)
    moved = y - x                                                       # (2, 3, 8, 6, 6)
    torch.testing.assert_close(moved[:, :, 1:-1:2], (moved[:, :, 0:-2:2] + moved[:, :, 2::2]) / 2)
    torch.testing.assert_close(moved[:, :, -1], moved[:, :, -2])
    blocks = moved.unflatten(3, (3, 2)).unflatten(5, (3, 2))            # (2, 3, 8, 3, 2, 3, 2)
    torch.testing.assert_close(blocks, blocks[:, :, :, :, :1, :, :1].expand_as(blocks))


def test_grounding_a_still_video_in_a_ramp_makes_no_cadence():
    """A still x grounded in a brightening c: the grounded video brightens by the same step from
    every frame to the next (within a frame pair and across), as the interpolation does. Giving
    frame 2k+1 frame 2k's correction made steps of 0 and 2 (a two-frame cadence)."""
    c = torch.linspace(-0.5, 0.5, 6).view(1, 1, 6, 1, 1).expand(1, 3, 6, 4, 4)  # (1, 3, 6, 4, 4)
    y = ground(torch.zeros(1, 3, 12, 8, 8), c)                                   # (1, 3, 12, 8, 8)
    steps = y[:, :, 1:-1] - y[:, :, :-2]                                          # frames 0..10 -> 1..10
    torch.testing.assert_close(steps, torch.full_like(steps, 0.1))
    torch.testing.assert_close(y, upsample(c))


def test_grounded_gup_output_is_grounded_in_its_conditioning():
    """With grounded=True, Gup's output (also a kept centre) views back to its conditioning;
    without, a trained residual does not."""
    torch.manual_seed(0)
    for grounded in (True, False):
        G = Gup(stage_config("tiny", 3, num_classes=3, grounded=grounded)).eval()
        nn.init.normal_(G.out.weight, std=0.05)
        c, z, y = torch.rand(2, 3, 10, 4, 4) * 2 - 1, torch.randn(2, 4, 10, 4, 4), torch.tensor([0, 2])
        err = (view(G(c, z, y, keep=4), 2, 2) - c[:, :, 3:7]).abs().max().item()
        assert (err < 1e-5) if grounded else (err > 1e-2), (grounded, err)


def test_d_ch_widens_the_discriminators_alone():
    """d_ch (train.py --d-ch) sets the Ds' base width; G keeps the preset's."""
    base, wide = tiny(3), tiny(3, d_ch=16)
    assert (base.d_width, wide.d_width) == (base.ch, 16)
    (G0, *D0), (G1_, *D1) = build_stage(base), build_stage(wide)
    assert [p.shape for p in G0.parameters()] == [p.shape for p in G1_.parameters()]
    for d0, d1 in zip(D0, D1):
        assert d0.blocks[0].conv1.weight.shape[0] * 4 == d1.blocks[0].conv1.weight.shape[0]
    c, z, y = inputs(wide)
    x = G1_(c, z, y)
    assert D1[0](x, y).shape == D1[1](x, y).shape == D1[2](x, c, y).shape == (2,)


def test_unrolled_gru_is_nn_gru():
    """models.GRU (G1's recurrence, unrolled with its backward written out in GRUSteps) computes
    what nn.GRU computes, outputs and gradients of its input and of every parameter, in float64
    to rounding; and either's state dict loads into the other (checkpoints of G1 made with
    nn.GRU load)."""
    torch.manual_seed(0)
    ref = nn.GRU(6, 6, batch_first=True).double()
    for p in ref.parameters():  # away from G1's zero biases, so every term shows
        nn.init.normal_(p, std=0.5)
    gru = GRU(6).double()
    gru.load_state_dict(ref.state_dict())
    x = torch.randn(3, 9, 6, dtype=torch.float64, requires_grad=True)
    h, (h_ref, _) = gru(x), ref(x)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(h)  # a loss that weighs every frame and unit differently
    got = torch.autograd.grad((h * w).sum(), [x, *gru.parameters()])
    want = torch.autograd.grad((h_ref * w).sum(), [x, *ref.parameters()])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    ref.load_state_dict(GRU(6).double().state_dict())  # and back


@pytest.mark.parametrize("margin", [None, 0, 1])
def test_g1_makes_its_margin_frames_and_keeps_the_video(margin):
    """cfg.g1_margin: G1 makes T + 2 margin frames (what its last conv sees) and keeps the T in
    the middle; None makes its convs' temporal radius each side (tiny: one GBlock, 2 + 1)."""
    cfg = tiny(1, g1_margin=margin)
    G = G1(cfg).eval()
    seen = []
    G.out.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[2]))
    z, y = inputs(cfg)
    assert G(z, y).shape[2] == cfg.out_frames
    assert G.margin == (3 if margin is None else margin)
    assert seen == [cfg.out_frames + 2 * G.margin]


@pytest.mark.parametrize("class_input", [False, True])
def test_g1_class_input_places_the_class_in_the_base(class_input):
    """cfg.g1_class_input: embed(y) enters the affine that makes each frame's 4x4 base, so two
    classes drawn from the same z start from different bases; without it the base is the
    latents' alone and the class arrives later, through the GBlocks' conditional BN."""
    torch.manual_seed(0)
    cfg = tiny(1, g1_class_input=class_input)
    G = G1(cfg).eval()
    bases = []
    G.linear.register_forward_hook(lambda module, args, out: bases.append(out))
    z = torch.randn(1, cfg.out_frames, cfg.z_dim).expand(2, -1, -1)
    with torch.no_grad():
        x = G(z, torch.tensor([0, 2]))
    assert G.linear.in_features == cfg.z_dim * (2 if class_input else 1)
    gap, scale = max_abs(bases[0][0] - bases[0][1]), max_abs(bases[0])
    # without the class the two rows are one computation, apart from how a CPU's matmul tiles them
    assert (gap > 1e-3 * scale) if class_input else gap <= 128 * torch.finfo(torch.float32).eps * scale
    assert max_abs(x[0] - x[1]) > 0  # the class still reaches the video either way


@pytest.mark.parametrize("pool", ["mean", "sum", "max"])
def test_spatial_d_pools_its_frames_scores_and_positions_as_told(pool):
    """D_s scores a video by pooling its k frames' scores: their mean under "mean" and "max"
    (max pools positions, not frames), their sum under "sum"; one frame's score pools its
    features over positions, so under "max" one feature lit at one position counts in full
    where the mean divides it by the positions."""
    torch.manual_seed(0)
    cfg = replace(stage_config("demo", 1), num_classes=5, d_pool=pool)
    D = SpatialD(cfg).eval()  # eval: no power iteration between the calls compared
    x, y = torch.rand(2, 3, 8, 16, 16) * 2 - 1, torch.tensor([1, 3])
    with torch.no_grad():
        both = D(x, y, frames=torch.tensor([[2, 5], [0, 7]]))
        one = [D(x, y, frames=torch.tensor([[2], [0]])), D(x, y, frames=torch.tensor([[5], [7]]))]
    expected = one[0] + one[1] if pool == "sum" else (one[0] + one[1]) / 2
    assert_close_at_scale(both, expected)
    h = torch.zeros(1, 4, 4, 4)
    h[0, 1, 2, 3] = 8.0                              # one feature, one position of 16
    pooled = head_pool(h, (2, 3), pool)
    assert pooled[0, 1].item() == {"mean": 0.5, "sum": 8.0, "max": 8.0}[pool]
    assert pooled[0, [0, 2, 3]].abs().sum().item() == 0


@pytest.mark.parametrize("dims, down", [(2, (2, 2)), (3, (2, 2, 2)), (3, (1, 2, 2))])
def test_d_blocks_halve_by_the_mean_or_by_each_2x2_blocks_maximum(dims, down):
    """A DBlock's pool under d_down "max" takes each 2x2 block of pixels' maximum and, where it
    halves time (D_t, D_m), the mean of each pair of frames, an odd last frame alone; a one-pixel
    spike passes it whole where the mean quarters it. Every D of a stage takes cfg.d_down."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 8, 8) if dims == 3 else torch.randn(3, 4, 8, 8)
    got = DBlock(dims, 4, 4, down, pool="max")._pool(x)
    blocks = x.unflatten(-1, (4, 2)).unflatten(-3, (4, 2)).amax(dim=(-3, -1))  # (..., 4, 4)
    if dims == 3 and down[0] == 2:
        blocks = torch.stack([blocks[:, :, t:t + 2].mean(2) for t in range(0, 5, 2)], 2)  # frames 0-1, 2-3, 4
    assert got.shape == blocks.shape
    assert_close_at_scale(got, blocks)
    spike = torch.zeros_like(x)
    spike[..., 2, 5] = 8.0
    peak = {p: DBlock(dims, 4, 4, down, pool=p)._pool(spike)[..., 1, 2] for p in ("mean", "max")}
    assert peak["max"].unique().tolist() == [8.0] and peak["mean"].unique().tolist() == [2.0]
    cfg = replace(stage_config("demo", 2), num_classes=5, d_down="max")
    assert {b.pool for D in build_stage(cfg)[1:] for b in D.blocks} == {"max"}
