"""The cost claim of DESIGN.md section 7, on the meta device (shapes only, no arithmetic):
an upscaling stage's training step costs the same whatever the clip length; stage 1 (and so
the single-stage baseline) grows with it."""
import re

from bench import get_args, step_cost, step_time


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
