"""bench.py's measurements, small. The cost claim of DESIGN.md section 7, on the meta device
(shapes only, no arithmetic): an upscaling stage's training step costs the same whatever the clip
length; stage 1 (and so the single-stage baseline) grows with it. The profile's counts (ops, host
syncs, torch.compile's graphs); gpu-table's code path on a CPU."""
import json
import re

import pytest
import torch

import losses
import models
from bench import (PHASES, OpCount, compile_stats, get_args, gpu_table, profile, step_cost, step_time,
                   training_iteration)


@pytest.fixture(scope="module")
def tiny3_cost() -> dict:
    """step_cost of tiny stage 3 on 32-frame clips at batch 2, which three tests read: shapes on
    the meta device, a pure function of its arguments, so computed once (seconds each time)."""
    return step_cost("tiny", 3, 32, batch=2)


def test_upscaling_stage_cost_does_not_grow_with_video_length(tiny3_cost):
    short, long = tiny3_cost, step_cost("tiny", 3, 128, batch=2)
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


def test_grounding_costs_one_output_frame_at_the_chunk_end(tiny3_cost):
    """models.ground's look-ahead is one output frame, kept at the end of a chunk only: a little
    more than the paper's form, far less than a frame pair at both ends (~15% at tiny). (The
    default form also has the L1 term, which saves one window-sized tensor and no conv FLOPs.)"""
    plain, grounded = tiny3_cost, step_cost("tiny", 3, 32, batch=2, grounded=True)
    assert 1.0 < grounded["TFLOP_per_iter"] / plain["TFLOP_per_iter"] < 1.05
    assert 1.0 < grounded["saved_G_GB"] / plain["saved_G_GB"] < 1.08


def test_step_cost_names_the_dominant_conv(tiny3_cost):
    """The layer bench.py step times alone: a conv of the step, at its input shape."""
    r = tiny3_cost
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
    that cannot learn (lr 0) stays at chance. A D at chance gives G nothing to improve on.
    At lr 0 Adam moves nothing and the Ds' orthogonal init has every singular value 1 (one power
    iteration converges): one step scores the very Ds that 100 would."""
    from bench import learnability
    small = dict(batch=16, n_train=128, n_val=64)
    learned = learnability("tiny", 2, steps=100, every=100, **small)[-1]
    crippled = learnability("tiny", 2, lr_d=0.0, steps=1, every=1, **small)[-1]
    assert learned["D_s"]["acc"] >= 0.62 and learned["D_s"]["pair"] >= 0.9, learned
    assert all(crippled[d]["acc"] <= 0.55 for d in ("D_s", "D_t", "D_m")), crippled
    assert learned["loss"] < crippled["loss"] - 0.2


@pytest.mark.parametrize("stage", [2])
def test_profile_counts_the_ops_of_each_phase_and_compiles_each_step_once(stage, tmp_path, capsys):
    """bench.py profile --compile on the meta device: every phase of an iteration dispatches ops;
    the optimizers' step counters are CPU scalars, read without a sync; nothing in the iteration
    waits for the device; and under torch.compile (fullgraph, static shapes) the D step and the G
    step are one graph each, compiled once: no break, no recompile in the 3 iterations after.
    Stage 2, an upscaler with all three Ds; stage 1's profile is the next test's (the same counts,
    and its one sync the slipped-in read), its steps' single graphs and no recompile
    test_compile's twins (fullgraph, Inductor) and the ssw-128 trace below: profiling it again
    here would prove nothing more (and cost ~11 s)."""
    path = tmp_path / "profile.json"
    profile(get_args(["profile", "--preset", "tiny", "--stage", str(stage), "--batch", "2", "--device", "meta",
                      "--compile", "--json", str(path)]))
    r = json.loads(path.read_text())
    assert all(r["phases"][p]["ops"] > 0 for p in PHASES)
    assert r["views"] > 0 and r["host"] > 0 and r["phases"]["opt_D.step"]["host"] > 0
    assert r["syncs"] == 0
    assert r["compile"] == {"graphs": 2, "graph_breaks": 0, "recompiles": 0}
    out = capsys.readouterr().out
    assert re.search(r"\| \*\*iteration\*\* \| \*\*\d+\*\* \| \d+ \| \d+ \| \*\*0\*\* \|", out)
    assert "2 graphs compiled in the first iteration, 0 graph breaks, 0 recompiles" in out


def test_profile_counts_a_read_of_device_values_as_a_host_sync(monkeypatch, tmp_path):
    """An .item() of a tensor on the device, slipped into the EMA phase, is one host sync (on a
    GPU the host would wait there for all the work queued): counted on the meta device, where it
    has no value and gives a placeholder 0 so that the count completes."""
    ema_update = models.ema_update

    def ema_update_and_read(G_ema, G, decay, step):
        ema_update(G_ema, G, decay, step)
        assert next(G.parameters()).sum().item() == 0.0

    monkeypatch.setattr(models, "ema_update", ema_update_and_read)
    path = tmp_path / "profile.json"
    profile(get_args(["profile", "--preset", "tiny", "--stage", "1", "--batch", "2", "--device", "meta",
                      "--json", str(path)]))
    r = json.loads(path.read_text())
    assert r["syncs"] == r["phases"]["EMA"]["syncs"] == 1
    # stage 1's profile otherwise counts as stage 2's does (the test above): every phase
    # dispatches ops, the optimizers' step counters are CPU scalars read without a sync
    assert all(r["phases"][p]["ops"] > 0 for p in PHASES)
    assert r["views"] > 0 and r["host"] > 0 and r["phases"]["opt_D.step"]["host"] > 0


def test_op_count_tells_host_syncs_from_cpu_scalar_reads():
    """.item() of a CPU scalar is a host read, no sync; .item(), .tolist() and .cpu() of a device
    (meta) tensor each are one sync, and give zeros on the CPU."""
    count, x = OpCount(), torch.ones(3, device="meta")
    count.phase = "EMA"
    with count:
        assert torch.ones(()).item() == 1.0
        assert (x.sum().item(), x.tolist(), x.cpu().tolist()) == (0.0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert sum(count.bins["host"]["EMA"].values()) == 1 and sum(count.bins["syncs"]["EMA"].values()) == 3


@pytest.mark.parametrize("stage", [1, 3])
def test_ssw_128_steps_trace_without_graph_breaks(stage):
    """train.py --compile traces each step's forward whole (fullgraph): at ssw-128 too, on the
    meta device (Dynamo's part alone; the eager backend runs the graph). Stages 1 and 3: stage 2's
    nets are stage 3's classes (Gup, D_s, D_t, D_m) on the same code path, the same G blocks at
    twice the width and one D block fewer, and its shapes are static: stage 3's trace runs every
    line stage 2's would (which would cost ~11 s more)."""
    iteration = training_iteration("ssw-128", stage, 1, torch.device("meta"), compile=True)
    assert compile_stats(iteration, iters=0) == {"graphs": 2, "graph_breaks": 0, "recompiles": 0}


def test_compile_stats_reports_a_graph_break(monkeypatch):
    """A step whose forward cannot be one graph (a branch on a tensor's value) is reported with
    its reason and line, not raised."""
    d_forward = losses.d_forward

    def branching_d_forward(*args):
        # on the batch's values (the step's last argument), before the nets: Dynamo meets the
        # branch at once, not after seconds of tracing G and the Ds that the report does not need
        sign = 1 if args[-1]["x"].mean() > 0 else -1
        loss, stats = d_forward(*args)
        return sign * loss, stats

    monkeypatch.setattr(losses, "d_forward", branching_d_forward)
    # on the CPU (train.py's compiled step): its nets build in 0.1 s where the meta device's init
    # runs op by op in Python (2 s); Dynamo stops at the branch before any backend is called
    stats = compile_stats(training_iteration("tiny", 1, 2, torch.device("cpu"), compile=True), iters=0)
    assert stats["graph_breaks"] == 1 and stats["recompiles"] is None
    assert "Data-dependent branching" in stats["break"] and "test_bench.py" in stats["break"]


def test_gpu_table_runs_on_a_cpu(tmp_path, capsys):
    """bench.py gpu-table's code path without a GPU: tiny, eager; then a budget too small for a
    compiled row, which is skipped and says why."""
    path = tmp_path / "table.json"
    gpu_table(get_args(["gpu-table", "--preset", "tiny", "--stages", "1", "--batches", "2", "--dtypes", "float32",
                        "--modes", "eager", "--device", "cpu", "--iters", "1", "--json", str(path)]))
    row, = json.loads(path.read_text())["rows"]
    assert row["stage"] == 1 and row["mode"] == "eager" and row["s_per_iter"] > 0 and "kernels_per_iter" not in row
    assert re.search(r"\| 1 \| 2 \| float32 \| eager \| [\d.]+ \| [\d.]+ \| - \|", capsys.readouterr().out)
    gpu_table(get_args(["gpu-table", "--preset", "tiny", "--stages", "1", "--batches", "2", "--dtypes", "float32",
                        "--modes", "compiled", "--device", "cpu", "--budget", "10", "--json", str(path)]))
    row, = json.loads(path.read_text())["rows"]
    assert "s_per_iter" not in row and row["skipped"].startswith("needs ~150 s")
    assert "| 1 | 2 | float32 | compiled | - |" in capsys.readouterr().out


def test_d_s_class_head_learns_the_classes_of_the_videos_it_sees():
    """bench.py see trains D_s's class head on real videos' classes: on one batch's 16 videos,
    40 steps bring the cross-entropy far below ln 5 (1.61, the 5 classes' chance), where at lr 0
    it stays there. Were the labels not the videos' own, it could not fit them. At lr 0 Adam
    moves nothing and the orthogonal init's singular values are all 1 (one power iteration
    converges): one step scores the very D_s that 40 would (as the learnability test's)."""
    from bench import class_curve
    few = dict(batch=16, n_train=16, n_val=16, every=40, flags=("--d-pool", "max"))
    learned, frozen = class_curve("demo", 1, steps=40, **few)[-1], class_curve("demo", 1, lr_d=0.0, steps=1, **few)[-1]
    assert learned["loss"] < 0.9 < 1.3 < frozen["loss"], (learned, frozen)
