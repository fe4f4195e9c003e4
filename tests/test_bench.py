"""The cost claim of DESIGN.md section 7, on the meta device (shapes only, no arithmetic):
an upscaling stage's training step costs the same whatever the clip length; stage 1 (and so
the single-stage baseline) grows with it."""
from bench import step_cost


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
