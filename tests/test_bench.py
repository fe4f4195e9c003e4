"""The cost claim of DESIGN.md section 7, on the meta device (shapes only, no arithmetic):
an upscaling stage's training step costs the same whatever the clip length; stage 1 (and so
the single-stage baseline) grows with it."""
import json
import re

from bench import PHASES, get_args, profile, step_cost, step_time


def test_upscaling_stage_cost_does_not_grow_with_video_length():
    short, long = step_cost("tiny", 3, 32, batch=2), step_cost("tiny", 3, 128, batch=2)
    assert short["saved_G_GB"] > 0 and short["TFLOP_per_iter"] > 0
    assert (short["saved_D_GB"], short["saved_G_GB"], short["TFLOP_per_iter"]) == \
        (long["saved_D_GB"], long["saved_G_GB"], long["TFLOP_per_iter"])


def test_whole_video_stage_cost_grows_with_length():
    short, long = step_cost("tiny", 1, 128, batch=2), step_cost("tiny", 1, 512, batch=2)
    assert long["out"] == "128@8" and short["out"] == "32@8"
    # 4x the frames: close to 4x the cost (a little less: D_s scores a fixed k frames, and G1
    # makes a fixed margin of 3 frames on each side, 38 vs 134 frames)
    assert 3.0 < long["saved_G_GB"] / short["saved_G_GB"] <= 4.0
    assert 3.0 < long["TFLOP_per_iter"] / short["TFLOP_per_iter"] <= 4.0


def test_grounding_costs_one_output_frame_at_the_chunk_end():
    """models.ground's look-ahead is one output frame, kept at the end of a chunk only: a little
    more than the paper's form, far less than a frame pair at both ends (~15% at tiny). (The
    default form also has the L1 term, which saves one window-sized tensor and no conv FLOPs.)"""
    plain, grounded = step_cost("tiny", 3, 32, batch=2), step_cost("tiny", 3, 32, batch=2, grounded=True)
    assert 1.0 < grounded["TFLOP_per_iter"] / plain["TFLOP_per_iter"] < 1.05
    assert 1.0 < grounded["saved_G_GB"] / plain["saved_G_GB"] < 1.08


def test_step_cost_names_the_dominant_conv():
    """The layer bench.py step times alone: a conv of the step, at its input shape."""
    r = step_cost("tiny", 3, 32, batch=2)
    name, c_in, c_out, kernel, padding, shape = r["conv"]
    assert name in ("Conv2d", "Conv3d") and len(shape) == {"Conv2d": 4, "Conv3d": 5}[name] and shape[1] == c_in
    assert 0 < r["conv_share"] <= 1


def test_step_reports_flops_against_the_conv_alone(capsys):
    """bench.py step on the CPU: s/step from a real run, then achieved FLOP/s as a fraction of
    the dominant conv's own FLOP/s on this machine (no matmul line without a GPU)."""
    step_time(get_args(["step", "--preset", "tiny", "--batch", "2", "--iters", "3", "--workers", "0",
                        "--device", "cpu"]))
    out = capsys.readouterr().out
    assert re.search(r"tiny stage 1 batch 2 float32 eager on cpu: .* s/step", out)
    assert re.search(r"achieved [\d.e-]+ TFLOP/s .* = [\d.]+% of the step's dominant conv alone: Conv", out)
    assert "matmul" not in out


def test_discriminators_learn_to_tell_real_from_the_stage_start():
    """bench.py learn, small: tiny stage 2's Ds trained alone against the frozen untrained G (the
    grounded interpolation it starts from) separate held-out real windows from it, where a D
    that cannot learn (lr 0) stays at chance. A D at chance gives G nothing to improve on."""
    from bench import learnability
    small = dict(steps=100, batch=16, n_train=128, n_val=64, every=100)
    learned, crippled = learnability("tiny", 2, **small)[-1], learnability("tiny", 2, lr_d=0.0, **small)[-1]
    assert learned["D_s"]["acc"] >= 0.62 and learned["D_s"]["pair"] >= 0.9, learned
    assert all(crippled[d]["acc"] <= 0.55 for d in ("D_s", "D_t", "D_m")), crippled
    assert learned["loss"] < crippled["loss"] - 0.2


def test_profile_counts_the_ops_of_each_phase(tmp_path, capsys):
    """bench.py profile on the meta device: every phase of an iteration dispatches ops; stage
    1's GRU is told apart (cuDNN runs it as one op on CUDA); the optimizers' step counters are
    CPU scalars; and spectral norm batched per net (train.py's) dispatches far fewer ops than
    torch's parametrization per layer (--per-layer-sn), the GRU and optimizers alike."""
    runs = []
    for flags in ([], ["--per-layer-sn"]):
        path = tmp_path / "profile.json"
        profile(get_args(["profile", "--preset", "tiny", "--stage", "1", "--batch", "2", "--device", "meta",
                          "--json", str(path), *flags]))
        runs.append(json.loads(path.read_text()))
    batched, per_layer = runs
    assert all(batched["phases"][p]["ops"] > 0 for p in PHASES)
    assert batched["views"] > 0 and batched["host"] > 0 and 0 < batched["rnn"] == per_layer["rnn"]
    for p in ("noise", "opt_D.step", "opt_G.step", "EMA", "status"):
        assert batched["phases"][p] == per_layer["phases"][p], p
    assert batched["ops"] - batched["rnn"] < 0.65 * (per_layer["ops"] - per_layer["rnn"])
    assert "mv" in per_layer["top_kinds"] and "mv" not in batched["phases"]["D steps"]["kinds"]
    assert re.search(r"\| \*\*iteration\*\* \| \*\*\d+\*\* \|", capsys.readouterr().out)
