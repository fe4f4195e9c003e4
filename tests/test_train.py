"""train.py end to end at the tiny preset: smoke runs of the README commands, determinism,
exact resume, learning sanity checks. The run folder's tests (checkpoints, log, lock, signals)
are in test_runfolder.py, the distributed ones in test_distributed.py, the losses' in
test_losses.py; they share this file's helpers (run, launch, fixed_batch, ...)."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import sample as sample_module
import train as train_module
from data import StageExamples, to_float, view
from losses import adv_weight, d_hinge
from models import MatchingD, build_stage, stage_config
from runfolder import load_checkpoint, read_log
from test_data import same_up_to_rounding_flips
from train import get_args, make_clips, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tmp_path, *extra, stage=1, iters=2, name="run"):
    argv = ["--preset", "tiny", "--stage", str(stage), "--max-iters", str(iters), "--batch-size", "2",
            "--workers", "0", "--out", str(tmp_path / name), "--log-every", "1", *extra]
    return train(get_args(argv))


def one_step_run(checkpoints, tmp_path, stage=1):
    """tmp_path/run as `run(tmp_path, stage=stage, iters=1)` leaves it, for the tests that go on
    from there: a copy of conftest's one-step run of that tiny stage (trained once per session;
    the copy leaves it as it was for the other tests that read it)."""
    shutil.copytree(os.path.dirname(checkpoints[stage - 1]), tmp_path / "run")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """plain_run(stage): (final state, folder) of `run(tmp_path, stage=stage)`, the defaults at 2
    steps, trained once for this module on first use. Several tests read the same run (its
    files, its weights, its log); none writes to its folder (a test that goes on from it copies
    it)."""
    root, runs = tmp_path_factory.mktemp("plain"), {}

    def plain(stage: int):
        if stage not in runs:
            runs[stage] = run(root, stage=stage, name=f"stage{stage}"), root / f"stage{stage}"
        return runs[stage]
    return plain


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_smoke_writes_outputs(plain_run, stage):
    """`python train.py --stage N` at tiny size: checkpoint, config, log and a sample GIF."""
    ckpt, out = plain_run(stage)
    assert ckpt["step"] == 2 and os.path.isfile(out / "ckpt.pt") and os.path.isfile(out / "config.json")
    records = read_log(out / "log.jsonl")
    status = [r for r in records if "loss_D" in r]
    assert [r["step"] for r in status] == [1, 2]
    assert all(k in status[0] for k in ("loss_G", "D_s_real", "D_t_fake", "s_per_it", "mem_gb"))
    assert ("D_m_real" in status[0]) == (stage > 1) == ("rec" in status[0])
    assert os.listdir(out / "samples") == ["step0000001.gif"]
    if stage > 1:
        assert any("grounding_error" in r for r in records)
    saved, cfg = load_checkpoint(str(out / "ckpt.pt"))
    assert cfg.stage == stage and cfg.num_classes == 5 and ("D_m" in saved) == (stage > 1)
    assert saved["shapes"]["out"] == {1: [8, 8, 8], 2: [8, 16, 16], 3: [8, 32, 32]}[stage]
    assert saved["shapes"]["cond"] == {1: None, 2: [4, 8, 8], 3: [4, 16, 16]}[stage]


def test_dry_run_prints_config(tmp_path, capsys):
    assert run(tmp_path, "--dry-run", "--window", "4", stage=2) == {}
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["window"] == 4 and printed["config"]["stage"] == 2
    assert not (tmp_path / "run").exists()


def state(ckpt):
    return {f"{net}.{k}": v for net in ("G", "G_ema", "D_s", "D_t", "D_m") if net in ckpt
            for k, v in ckpt[net].items()}


def assert_same_weights(a, b):
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)


def test_two_runs_with_one_seed_agree(tmp_path, plain_run):
    assert_same_weights(plain_run(1)[0], run(tmp_path, name="b"))


def test_another_seed_differs(tmp_path, plain_run):
    a, b = plain_run(1)[0], run(tmp_path, "--seed", "1", name="b")
    assert not torch.equal(state(a)["G.linear.parametrizations.weight.original"],
                           state(b)["G.linear.parametrizations.weight.original"])


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_equals_uninterrupted(tmp_path, stage, plain_run):
    """Stop at step 2, rerun the same command to step 4 == straight to 4 (weights, EMA, Adam).
    The run stopped at step 2 is a copy of the plain run's folder (the same command's)."""
    straight = run(tmp_path, stage=stage, iters=4, name="straight")
    shutil.copytree(plain_run(stage)[1], tmp_path / "resumed")
    resumed = run(tmp_path, stage=stage, iters=4, name="resumed")
    assert resumed["step"] == straight["step"] == 4
    assert_same_weights(straight, resumed)
    torch.testing.assert_close(resumed["opt_G"]["state"], straight["opt_G"]["state"])
    torch.testing.assert_close(resumed["opt_D"]["state"], straight["opt_D"]["state"])


def test_lambda_m_zero_removes_matching_discriminator(tmp_path):
    """--lambda-m 0: D_m is never built, so no parameter of it can receive a gradient; opt_D
    holds exactly the parameters of D_s and D_t."""
    ckpt = run(tmp_path, "--lambda-m", "0", stage=2)
    assert "D_m" not in ckpt
    _, D_s, D_t, _ = build_stage(stage_config("tiny", 2, num_classes=5))
    assert len(ckpt["opt_D"]["state"]) == len(list(D_s.parameters())) + len(list(D_t.parameters()))


def fixed_batch(cfg, n=4):
    examples = StageExamples(make_clips(get_args(["--preset", "tiny"]), cfg), cfg.view_s, cfg.view_t, cfg.window)
    return torch.utils.data.default_collate([examples[i] for i in range(n)])


def fit(D, loss_of, steps=40):
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.999))
    for _ in range(steps):
        opt.zero_grad()
        loss_of().backward()
        opt.step()


def test_dual_discriminators_learn_to_separate_real_from_fake():
    """On a fixed batch of real clips vs fixed untrained-G fakes, D_s and D_t learn to tell them
    apart: every real logit ends above every fake one."""
    torch.manual_seed(0)
    cfg = stage_config("tiny", 1, num_classes=5)
    batch = fixed_batch(cfg)
    x_real, y = batch["x"], batch["y"]
    G, D_s, D_t, _ = build_stage(cfg)
    with torch.no_grad():
        x_fake = G(torch.randn(4, cfg.out_frames, cfg.z_dim), y)
    for D in (D_s, D_t):
        fit(D, lambda: d_hinge(D(x_real, y), D(x_fake, y)))
        assert D(x_real, y).min() > D(x_fake, y).max()


def test_matching_discriminator_separates_matched_from_mismatched_pairs():
    """D_m on real windows: (x, view(x, 2, 2)) vs (x, another window's view). Only the pairing
    differs, so telling them apart means D_m reads the relation between x and c."""
    torch.manual_seed(0)
    cfg = stage_config("tiny", 2, num_classes=5)
    batch = fixed_batch(cfg)
    x, c, y = batch["x"], batch["c"], batch["y"]
    torch.testing.assert_close(c, view(x, 2, 2))
    D_m = MatchingD(cfg)
    fit(D_m, lambda: d_hinge(D_m(x, c, y), D_m(x, c.roll(1, 0), y)), steps=60)
    assert D_m(x, c, y).min() > D_m(x, c.roll(1, 0), y).max()


@pytest.mark.parametrize("preset,stage", [("tiny", 1), ("tiny", 2), ("tiny", 3), ("ssw-128", 1),
                                          ("ssw-128", 2), ("ssw-128", 3)])
def test_stage_examples_are_views_of_the_preset_clips(preset, stage):
    """What train.py feeds a stage: x = view(clip, s, t) (windowed for stages >= 2), c = view(x, 2, 2),
    at the sizes the preset table promises; ssw-128 stage 1 sees view(clip, 4, 4) of 100@128."""
    cfg = stage_config(preset, stage, num_classes=5)
    clips = make_clips(get_args(["--preset", preset]), cfg)
    item = StageExamples(clips, cfg.view_s, cfg.view_t, cfg.window)[3]
    assert item["x"].shape == (3, cfg.out_frames, cfg.out_size, cfg.out_size)
    clip, y = clips[3]
    assert clip.shape == (cfg.clip_frames, cfg.clip_size, cfg.clip_size, 3) and item["y"] == y
    if stage == 1:  # the item renders only the frames it keeps: another path than the whole clip
        assert same_up_to_rounding_flips(item["x"], view(to_float(clip), cfg.view_s, cfg.view_t), cfg.view_s)
    else:  # the same mean over another memory layout: float32 rounding apart at most
        assert item["c"].shape == (3, cfg.cond_frames, cfg.cond_size, cfg.cond_size)
        torch.testing.assert_close(item["c"], view(item["x"], 2, 2), rtol=1e-6, atol=1e-6)


def launch(out, *extra, workers=0, torchrun=False):
    """An endless tiny stage-1 run of train.py in its own process group, as a scheduler starts a
    job (stderr joins stdout)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else []
    cmd = [sys.executable, *launcher, "train.py", "--preset", "tiny", "--stage", "1", "--batch-size", "2",
           "--workers", str(workers), "--max-iters", "100000", "--log-every", "1", "--device", "cpu",
           "--out", str(out), *extra]
    # conftest's threads: the same sums; under torchrun one per rank, torchrun's own default (two
    # ranks of conftest's 2 threads would oversubscribe a 2-core machine, their all-reduces waiting)
    env = {**os.environ, "OMP_NUM_THREADS": str(1 if torchrun else torch.get_num_threads())}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_step(proc, step):
    """Read proc's output until its status line of `step`: training is under way."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"step {step} "):
            return
    raise AssertionError(f"the run ended before step {step}:\n" + "".join(seen)[-3000:])


@pytest.mark.parametrize("flags", [["--dtype", "bfloat16"], ["--mismatch-negatives"]])
def test_smoke_with_option(tmp_path, flags):
    """The options that change the step run end to end: bf16 autocast, extra D_m negatives."""
    ckpt = run(tmp_path, *flags, stage=2)
    assert ckpt["step"] == 2
    weights = state(ckpt)
    assert all(torch.isfinite(v).all() and v.dtype != torch.bfloat16 for v in weights.values())


@pytest.mark.parametrize("stage", [1, 3])
def test_channels_last_changes_the_layout_not_the_numbers(tmp_path, stage, plain_run):
    """--channels-last: the same losses and logits, step by step, as the default layout (the
    plain run; float rounding apart: the convs run other kernels)."""
    run(tmp_path, "--channels-last", stage=stage, name="cl")
    logs = [[r for r in read_log(folder / "log.jsonl") if "loss_D" in r]
            for folder in (plain_run(stage)[1], tmp_path / "cl")]
    for want, got in zip(*logs):
        for k in ("loss_D", "loss_G", "D_s_real", "D_t_fake"):
            assert got[k] == pytest.approx(want[k], rel=1e-3, abs=1e-3), (k, got, want)


@pytest.mark.parametrize("stage", [1, 3])
def test_fvd_every_logs_the_stage_score(tmp_path, stage, monkeypatch, brief_heldout):
    """--fvd-every: the stage's FVD rung lands in log.jsonl at those steps, as evaluate.py's
    ladder scores that stage (its own videos, or its output on real views of its input), with its
    start, the real floor, the headroom closed and recognizability; the curve starts at step 0,
    the untrained stage: what training must improve on, so its FVD there is its start's. I3D is
    test_study's stand-in (I3D's own numbers are test_fvd's): 12 videos through it cost 10 s. The
    recognizer is brief, and its held-out accuracy, which no score reads, is measured on 16 videos."""
    import evaluate
    import fvd
    from test_study import PooledPixels
    proxy = PooledPixels()
    monkeypatch.setattr(fvd, "load_i3d", lambda: proxy)
    monkeypatch.setattr(evaluate, "RECOGNIZER_CLIPS", 16)
    monkeypatch.setattr(evaluate, "RECOGNIZER_STEPS", 2)
    run(tmp_path, "--fvd-every", "2", "--fvd-n", "3", stage=stage, iters=2)
    scores = [r for r in read_log(str(tmp_path / "run" / "log.jsonl")) if "fvd" in r]
    assert [(r["step"], r["fvd_n"]) for r in scores] == [(0, 3), (2, 3)]
    assert all(r["fvd"] > 0 for r in scores) and scores[0]["fvd"] != scores[1]["fvd"]
    assert all(0 <= r["recognizability"] <= 1 for r in scores)
    assert len({(r["fvd_start"], r["fvd_real"]) for r in scores}) == 1  # cached, fixed for the stage
    if stage == 3:  # an upscaler's start is the grounded interpolation: the untrained G_ema at step 0
        assert scores[0]["fvd"] == pytest.approx(scores[0]["fvd_start"], rel=1e-3)
    # the real statistics, the real floor's, the start's and the real videos' detail; and the recognizer
    assert len(list((tmp_path / "run" / "fvd-stats").glob("*.npz"))) == 4
    assert len(list((tmp_path / "run" / "fvd-stats").glob("recognizer-*.pt"))) == 1


def test_context_is_recorded_and_zero_reproduces_the_window_alone(tmp_path, checkpoints):
    """The context defaults to R and is saved with the config; --context 0 trains on the window's
    own conditioning (one length for every example) and refuses to resume a context-R run (a
    copy of conftest's one-step stage-2 run, as `run(tmp_path, stage=2, iters=1)` leaves it)."""
    one_step_run(checkpoints, tmp_path, stage=2)
    ckpt = load_checkpoint(str(tmp_path / "run" / "ckpt.pt"))[0]
    assert ckpt["config"]["context"] == 6
    zero = run(tmp_path, "--context", "0", stage=2, iters=1, name="zero")
    assert zero["config"]["context"] == 0
    with pytest.raises(ValueError, match="context"):
        run(tmp_path, "--context", "0", stage=2, iters=2)


def test_trains_on_prepared_shards_with_a_frame_stride(tmp_path):
    """prepare.py -> train.py --data PREPARED; --frame-stride is in the checkpoint's config,
    and resuming with another stride is refused. Stage 2 also draws its sample grid from the
    held-out split (one of the three videos)."""
    import numpy as np
    from prepare import prepare
    from videos import write_gif
    for k, name in enumerate(["walk/a.gif", "walk/b.gif", "run/c.gif"]):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        level = (3 * np.arange(64) + 20 * k).astype(np.uint8)  # 64 frames: tiny's 32 at stride 2 span 63
        write_gif(tmp_path / "src" / name, np.broadcast_to(level[:, None, None, None], (64, 32, 32, 3)), fps=25)
    prepare(tmp_path / "src", tmp_path / "prepared", size=32, fps=25, workers=0)
    ckpt = run(tmp_path, "--data", str(tmp_path / "prepared"), "--frame-stride", "2", stage=2, iters=1)
    assert ckpt["config"]["frame_stride"] == 2 and ckpt["config"]["num_classes"] == 2
    assert len(list((tmp_path / "run" / "samples").glob("*.gif"))) == 1
    with pytest.raises(ValueError, match="frame_stride"):
        run(tmp_path, "--data", str(tmp_path / "prepared"), stage=2, iters=2)
    with pytest.raises(ValueError, match="--frame-stride 2: the built-in data"):
        run(tmp_path, "--frame-stride", "2", name="synthetic")
    with pytest.raises(SystemExit):
        get_args(["--frame-stride", "0"])


@pytest.mark.parametrize("num_classes,shown,per_class", [(0, 1, 4), (5, 5, 4), (9, 9, 3), (101, 32, 1), (600, 32, 1)])
def test_stage1_sample_grid_is_capped_with_classes_spread_evenly(num_classes, shown, per_class):
    cfg = stage_config("tiny", 1, num_classes=num_classes)
    fixed = train_module.fixed_inputs(cfg, None, torch.device("cpu"), seed=0)
    y = fixed["y"].tolist()
    assert len(y) == shown * per_class <= sample_module.GRID_MAX
    assert y == sorted(y) and len(set(y)) == shown and all(y.count(c) == per_class for c in set(y))
    assert y[0] == 0 and y[-1] == max(num_classes - 1, 0)  # first to last class, evenly between
    gaps = {b - a for a, b in zip(sorted(set(y)), sorted(set(y))[1:])}
    assert not gaps or max(gaps) - min(gaps) <= 1


def test_grounded_is_part_of_the_stage_config():
    """--grounded changes Gup's forward, so it lives in the checkpoint's config (resume checks it)."""
    on = train_module.resolve_config(get_args(["--preset", "tiny", "--stage", "3"]), 0)  # the default
    off = train_module.resolve_config(get_args(["--preset", "tiny", "--stage", "3", "--no-grounded"]), 0)
    assert on.grounded and not off.grounded and on != off


def test_status_seconds_per_step_leave_out_samples_checkpoints_and_scores(tmp_path, monkeypatch):
    """s/it times training alone (study.py plans from it): a sample grid and a checkpoint after
    every step, each made to take half a second, do not show in it: counted, they would make
    every s/it after the first at least 1 s, twice the bound (a tiny step takes ~0.15 s). Nor do
    the scores (--score-every): the start's, at step 0, made to take 2 s, would make the first s/it
    2 s or more, against a bound of 1."""
    slow = 0.5

    def slow_scores(*args):
        time.sleep(4 * slow)
        return {"recognizability": None, "detail_s": 1.0, "detail_t": 1.0}

    real_write, real_save = train_module.write_samples, train_module.save_checkpoint

    def slow_write(*args):
        time.sleep(slow)
        return real_write(*args)

    def slow_save(*args):
        time.sleep(slow)
        return real_save(*args)

    monkeypatch.setattr(train_module, "write_samples", slow_write)
    monkeypatch.setattr(train_module, "save_checkpoint", slow_save)
    monkeypatch.setattr(train_module, "quick_scores", slow_scores)
    run(tmp_path, "--sample-every", "1", "--ckpt-every", "1", "--score-every", "100", iters=3)
    records = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in records if "detail_s" in r] == [0]
    steps = [r for r in records if "s_per_it" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["s_per_it"] < 2 * slow, steps  # the start's score (4 x slow) before step 1
    assert all(r["s_per_it"] < slow for r in steps[1:]), steps  # 2 x slow of bookkeeping before each



# -----------------------------------------------------------------------------
# Recipes, the CPU default, the L1 baseline and an L1-trained start

def test_flags_fall_back_to_the_presets_recipe():
    demo = train_module.RECIPES["demo"][0]
    args = get_args(["--preset", "demo", "--stage", "1", "--device", "cpu"])
    assert (args.lr_g, args.lr_d, args.d_steps, args.batch_size) == (demo.lr_g, demo.lr_d, demo.d_steps,
                                                                     demo.batch_size)
    args = get_args(["--preset", "demo", "--stage", "1", "--device", "cpu", "--lr-g", "3e-5", "--d-steps", "3"])
    assert (args.lr_g, args.d_steps, args.lr_d) == (3e-5, 3, demo.lr_d)  # a flag beats the recipe
    args = get_args(["--preset", "demo", "--stage", "3", "--device", "cpu"])  # the demo's stage 3: L1 alone
    assert (args.adversarial, args.d_steps) == (False, 0)
    assert get_args(["--preset", "demo", "--stage", "3", "--device", "cpu", "--adversarial"]).d_steps == 1
    dvd = train_module.Recipe()  # a preset without a row keeps DVD-GAN's
    args = get_args(["--preset", "ssw-128", "--stage", "3", "--device", "cpu"])
    assert (args.lr_g, args.lr_d, args.beta1, args.d_steps, args.ema, args.lambda_rec) == \
        (dvd.lr_g, dvd.lr_d, dvd.beta1, dvd.d_steps, dvd.ema, dvd.lambda_rec) == (1e-4, 5e-4, 0.0, 2, 0.999, 100.0)


def test_a_cpu_trains_the_demo_preset_by_default_and_says_so(tmp_path, capsys):
    assert get_args(["--device", "cuda"]).preset == "ssw-128"
    assert get_args(["--device", "cpu", "--preset", "ssw-128"]).preset == "ssw-128"
    args = get_args(["--device", "cpu", "--dry-run", "--out", str(tmp_path / "run")])
    assert args.preset == train_module.CPU_PRESET == "demo"
    train(args)
    assert capsys.readouterr().out.splitlines()[0].startswith("no GPU: training the CPU demo preset 'demo'")


def test_no_adversarial_trains_g_on_the_l1_term_alone(tmp_path):
    """--no-adversarial: the Ds are never stepped (their weights stay at init, opt_D holds no
    state) and G moves, on one batch per step."""
    ckpt = run(tmp_path, "--no-adversarial", stage=3, iters=2)
    fresh = run(tmp_path, stage=3, iters=0, name="fresh")
    for D in ("D_s", "D_t", "D_m"):
        for k, v in ckpt[D].items():
            torch.testing.assert_close(v, fresh[D][k], msg=f"{D}.{k}")
    assert ckpt["opt_D"]["state"] == {}
    assert not torch.equal(ckpt["G"]["out.weight"], fresh["G"]["out.weight"])


def test_init_g_starts_from_another_runs_generator(tmp_path):
    """--init-g: G and G_ema begin as the given checkpoint's (the Ds fresh, the crop may differ);
    a checkpoint of another generator is refused with its path."""
    source = run(tmp_path, "--no-adversarial", stage=2, iters=2, name="l1")
    path = str(tmp_path / "l1" / "ckpt.pt")
    start = run(tmp_path, "--init-g", path, "--crop", "8", stage=2, iters=0, name="game")
    for net in ("G", "G_ema"):
        for k, v in source[net].items():
            torch.testing.assert_close(start[net][k], v, msg=f"{net}.{k}")
    with pytest.raises(ValueError, match="l1.*ckpt.pt.*differs"):
        run(tmp_path, "--init-g", path, "--context", "2", stage=2, iters=0, name="other")


def test_l1_steps_trains_esrgans_two_phases_as_their_two_commands(tmp_path):
    """--l1-steps N: one command trains G on the L1 term alone for N steps (at --l1-lr-g, in
    --out/l1), then the game from its G, as the two commands by hand do (the same arithmetic:
    bit-exact); the game's config names its start (the curves count its minutes); rerunning the
    command resumes, with nothing left to train. Stage 1 has no L1 term: refused."""
    l1 = run(tmp_path, "--no-adversarial", "--lr-g", "1e-3", stage=2, iters=2, name="l1")
    game = run(tmp_path, "--init-g", str(tmp_path / "l1" / "ckpt.pt"), stage=2, iters=2, name="game")
    argv = ["--preset", "tiny", "--stage", "2", "--max-iters", "2", "--batch-size", "2", "--workers", "0",
            "--out", str(tmp_path / "both"), "--l1-steps", "2", "--l1-lr-g", "1e-3"]
    both = train_module.train_schedule(get_args(argv))
    first = torch.load(tmp_path / "both" / "l1" / "ckpt.pt", weights_only=True)
    for net in ("G", "G_ema"):
        assert all(torch.equal(first[net][k], v) for k, v in l1[net].items()), net
    for net in ("G", "G_ema", "D_s", "D_t", "D_m"):
        assert all(torch.equal(both[net][k], v) for k, v in game[net].items()), net
    assert not torch.equal(both["G"]["out.weight"], l1["G"]["out.weight"])  # the game moved G on
    config = json.loads((tmp_path / "both" / "config.json").read_text())["args"]
    assert config["init_g"] == str(tmp_path / "both" / "l1" / "ckpt.pt") and config["adversarial"]
    assert json.loads((tmp_path / "both" / "l1" / "config.json").read_text())["args"]["lr_g"] == 1e-3
    again = train_module.train_schedule(get_args(argv))
    assert again["step"] == 2 and torch.equal(again["G"]["out.weight"], both["G"]["out.weight"])
    with pytest.raises(SystemExit):
        get_args(["--stage", "1", "--l1-steps", "10"])


def test_upscalers_train_on_patches_and_sample_whole_frames(tmp_path):
    """--crop 8 at tiny stage 2 (16 px frames): the Ds are built for 8 px patches, G samples
    whole 16 px frames."""
    ckpt = run(tmp_path, "--crop", "8", stage=2, iters=1)
    _, cfg = load_checkpoint(str(tmp_path / "run" / "ckpt.pt"))
    assert cfg.crop == 8 and cfg.d_size == 8 and cfg.out_size == 16
    G = sample_module.load_chain([str(tmp_path / "run" / "ckpt.pt")], torch.device("cpu"))[0][1]
    c = torch.zeros(1, 3, 4, 8, 8)
    assert G(c, torch.zeros(1, cfg.z_dim, 4, 8, 8), torch.zeros(1, dtype=torch.long)).shape == (1, 3, 8, 16, 16)
    assert ckpt["step"] == 1


def test_regularizers_train_end_to_end_and_are_logged(tmp_path):
    """--r1, --augment and --aux-class run a whole stage-1 step and log R1's penalty and the class
    heads' losses; --g1-margin, --g1-class-input, --d-down and the class heads reach the stage's
    config (and its checkpoint); --r1 with --compile is refused, naming why."""
    ckpt = run(tmp_path, "--r1", "0.01", "--augment", "--aux-class", "0.5", "--g1-margin", "1", "--g1-class-input",
               "--d-down", "max")
    assert ckpt["config"]["g1_margin"] == 1 and ckpt["config"]["d_classify"] and ckpt["config"]["g1_class_input"]
    assert ckpt["config"]["d_down"] == "max"
    logged = [r for r in read_log(str(tmp_path / "run" / "log.jsonl")) if "loss_D" in r]
    assert logged and all(r["r1"] > 0 and r["class_D"] > 0 and r["class_G"] > 0 for r in logged)
    with pytest.raises(SystemExit):
        get_args(["--stage", "1", "--r1", "0.01", "--compile"])


def test_adv_fade_weights_the_game_in_over_its_steps():
    """--adv-fade N: the G step's adversarial weight is step / N, then 1; without it, 1."""
    weights = [adv_weight(step, 4, torch.device("cpu")).item() for step in (0, 1, 4, 9)]
    assert weights == [0.0, 0.25, 1.0, 1.0]
    assert adv_weight(0, 0, torch.device("cpu")).item() == 1.0
