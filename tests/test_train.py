"""train.py end to end at the tiny preset: smoke runs of the README commands, determinism,
exact resume, checkpoint refusals, divergence handling, learning sanity checks."""
import contextlib
import errno
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train as train_module
from data import StageExamples, to_float, view
from losses import d_hinge, d_hinge_negative
from models import MatchingD, build_stage, load_checkpoint, stage_config
from test_data import same_up_to_rounding_flips
from train import StepSampler, get_args, make_clips, read_log, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tmp_path, *extra, stage=1, iters=2, name="run"):
    argv = ["--preset", "tiny", "--stage", str(stage), "--max-iters", str(iters), "--batch-size", "2",
            "--workers", "0", "--out", str(tmp_path / name), "--log-every", "1", *extra]
    return train(get_args(argv))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_smoke_writes_outputs(tmp_path, stage):
    """`python train.py --stage N` at tiny size: checkpoint, config, log and a sample GIF."""
    ckpt = run(tmp_path, stage=stage)
    out = tmp_path / "run"
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


def test_two_runs_with_one_seed_agree(tmp_path):
    assert_same_weights(run(tmp_path, name="a"), run(tmp_path, name="b"))


def test_another_seed_differs(tmp_path):
    a, b = run(tmp_path, name="a"), run(tmp_path, "--seed", "1", name="b")
    assert not torch.equal(state(a)["G.linear.parametrizations.weight.original"],
                           state(b)["G.linear.parametrizations.weight.original"])


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_equals_uninterrupted(tmp_path, stage):
    """Stop at step 2, rerun the same command to step 4 == straight to 4 (weights, EMA, Adam)."""
    straight = run(tmp_path, stage=stage, iters=4, name="straight")
    run(tmp_path, stage=stage, iters=2, name="resumed")
    resumed = run(tmp_path, stage=stage, iters=4, name="resumed")
    assert resumed["step"] == straight["step"] == 4
    assert_same_weights(straight, resumed)
    torch.testing.assert_close(resumed["opt_G"]["state"], straight["opt_G"]["state"])
    torch.testing.assert_close(resumed["opt_D"]["state"], straight["opt_D"]["state"])


def test_wrong_stage_checkpoint_refused(tmp_path):
    run(tmp_path, stage=2, iters=1)
    with pytest.raises(ValueError, match=r"holds stage 2 of preset 'tiny'.*--out"):
        run(tmp_path, stage=1, iters=2)


def test_other_architecture_refused(tmp_path):
    run(tmp_path, stage=2, iters=1)
    with pytest.raises(ValueError, match="different config.*window"):
        run(tmp_path, "--window", "4", stage=2, iters=2)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hostile pickle is protocol 4
def test_non_checkpoint_refused(tmp_path):
    """A pickle that is not ours (and would run code under full pickle) is refused by name."""
    out = tmp_path / "run"
    out.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(out / "ckpt.pt", "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(ValueError, match=r"ckpt.pt is not a readable SSW-GAN checkpoint"):
        run(tmp_path)
    torch.save({"hello": torch.zeros(1)}, out / "ckpt.pt")
    with pytest.raises(ValueError, match=r"not an SSW-GAN stage checkpoint \(missing"):
        run(tmp_path)


def test_truncated_checkpoint_refused(tmp_path):
    run(tmp_path, iters=1)
    path = tmp_path / "run" / "ckpt.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable SSW-GAN checkpoint"):
        run(tmp_path, iters=2)


def test_nan_stops_run_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    run(tmp_path, iters=1)
    path = tmp_path / "run" / "ckpt.pt"
    before = path.read_bytes()
    monkeypatch.setattr(train_module, "d_hinge", lambda real, fake: d_hinge(real, fake) * float("nan"))
    with pytest.raises(train_module.TrainingDiverged, match="non-finite loss at step 2.*left as it was"):
        run(tmp_path, "--ckpt-every", "1", iters=3)
    assert path.read_bytes() == before and not (tmp_path / "run" / "ckpt.pt.tmp").exists()


def test_lambda_m_zero_removes_matching_discriminator(tmp_path):
    """--lambda-m 0: D_m is never built, so no parameter of it can receive a gradient; opt_D
    holds exactly the parameters of D_s and D_t."""
    ckpt = run(tmp_path, "--lambda-m", "0", stage=2)
    assert "D_m" not in ckpt
    _, D_s, D_t, _ = build_stage(stage_config("tiny", 2, num_classes=5))
    assert len(ckpt["opt_D"]["state"]) == len(list(D_s.parameters())) + len(list(D_t.parameters()))


def test_step_sampler_indices():
    s = iter(StepSampler(first_batch=3, batch_size=2, rank=1, world=2))
    assert [next(s) for _ in range(4)] == [14, 15, 18, 19]  # batches 3, 4 of rank 1


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


def test_torchrun_two_processes(tmp_path):
    """The scale-out command: torchrun with 2 CPU processes (gloo) trains and checkpoints."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
           "--preset", "tiny", "--stage", "2", "--max-iters", "2", "--workers", "0", "--batch-size", "1",
           "--device", "cpu", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done at step 2" in res.stdout
    ckpt, cfg = load_checkpoint(str(out / "ckpt.pt"))
    assert ckpt["step"] == 2 and cfg.stage == 2


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
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # as conftest's torch.set_num_threads(2): same numbers
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


@pytest.mark.parametrize("sig,workers", [(signal.SIGTERM, 2), (signal.SIGINT, 0), (signal.SIGUSR1, 0)],
                         ids=["SIGTERM", "SIGINT", "SIGUSR1"])
def test_a_signal_to_the_process_group_stops_with_a_checkpoint(tmp_path, capsys, sig, workers):
    """timeout, scancel, Kubernetes and systemd signal every process of a job, DataLoader workers
    included; Ctrl-C sends SIGINT and SLURM's --signal SIGUSR1. The run ends at a step boundary:
    exit code 0, one line, a checkpoint; rerunning the command continues the same steps."""
    proc = launch(tmp_path / "run", workers=workers)
    wait_for_step(proc, 2)
    os.killpg(proc.pid, sig)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest
    step = load_checkpoint(str(tmp_path / "run" / "ckpt.pt"))[0]["step"]
    assert step >= 2 and rest.splitlines()[-1] == f"stopped at step {step}: {tmp_path / 'run' / 'ckpt.pt'}", rest
    resumed = run(tmp_path, iters=step + 1)
    assert f"resuming {tmp_path / 'run' / 'ckpt.pt'} at step {step}" in capsys.readouterr().out
    if sig == signal.SIGTERM:  # the steps of an uninterrupted run
        assert_same_weights(resumed, run(tmp_path, iters=step + 1, name="straight"))


def test_torchrun_ranks_stop_at_the_same_step(tmp_path):
    """Under DDP every process gets the scheduler's signal (torchrun forwards it too), and the
    ranks agree on the step to stop at; rank 0 writes the checkpoint of that step."""
    proc = launch(tmp_path / "ddp", torchrun=True)
    wait_for_step(proc, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    stops = dict(re.findall(r"^(rank 1: |)stopped at step (\d+)", rest, re.M))  # {"": rank 0's, "rank 1: ": ...}
    assert len(stops) == 2 and len(set(stops.values())) == 1, rest[-3000:]
    assert load_checkpoint(str(tmp_path / "ddp" / "ckpt.pt"))[0]["step"] == int(stops[""])


def test_a_folder_in_use_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with train_module.lock_folder(str(tmp_path / "run")):
        with pytest.raises(train_module.FolderInUse, match=rf"in use by another run \(pid {os.getpid()} on host"):
            run(tmp_path)
    assert run(tmp_path, iters=1)["step"] == 1  # free again


def test_a_filesystem_without_locks_warns_and_trains(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")  # Lustre mounted without flock

    monkeypatch.setattr(train_module.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*Function not implemented"):
        assert run(tmp_path, iters=1)["step"] == 1


def test_kill_9_leaves_no_stale_lock(tmp_path):
    """While a run lives, a second one on its folder is refused in one line that names it; the
    moment it is killed with -9 (its DataLoader workers still winding down), the folder is free."""
    out = tmp_path / "run"
    holder = launch(out, workers=2)
    try:
        wait_for_step(holder, 1)
        second = subprocess.run([sys.executable, "train.py", "--preset", "tiny", "--out", str(out)], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and second.stderr.splitlines() == [
            f"error: {out} is in use by another run (pid {holder.pid} on host {os.uname().nodename}): "
            f"wait for it to end, stop it, or pass another --out"], second.stderr
        holder.kill()
        holder.wait()
        assert run(tmp_path, iters=1)["step"] == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)  # the workers, if still there
        holder.communicate()


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """A full disk (or an I/O error) while writing: the run stops with a message, the previous
    checkpoint is left loadable, no temp file is left behind."""
    run(tmp_path, iters=1)
    path = tmp_path / "run" / "ckpt.pt"
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(train_module.CheckpointWriteError, match=r"could not write .*ckpt.pt \(.*No space left"
                                                                r".*disk may be full.*previous checkpoint is intact"):
        run(tmp_path, iters=2)
    monkeypatch.undo()
    assert path.read_bytes() == before and not (tmp_path / "run" / "ckpt.pt.tmp").exists()
    assert load_checkpoint(str(path))[0]["step"] == 1


def test_a_cut_last_log_line_is_tolerated(tmp_path):
    """kill -9 can cut the last line of log.jsonl: readers skip it, and a resumed run drops it
    so its own records start on a line of their own. A bad line elsewhere is an error."""
    run(tmp_path, iters=2)
    log = tmp_path / "run" / "log.jsonl"
    whole = read_log(log)
    log.write_text(log.read_text() + '{"loss_D": 1.9, "loss_G": 0.')
    assert read_log(log) == whole
    run(tmp_path, iters=3)
    assert [r["step"] for r in read_log(log) if "loss_D" in r] == [1, 2, 3]
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON record"):
        read_log(log)


def test_mismatch_negatives_add_exactly_their_hinge_term():
    """--mismatch-negatives: the D loss gains relu(1 + D_m(x, c of another video)) and nothing else."""
    cfg = stage_config("tiny", 2, num_classes=5)
    G, D_s, D_t, D_m = build_stage(cfg)
    batch = fixed_batch(cfg)
    losses = []
    for mismatch in (False, True):
        torch.manual_seed(0)  # the same noise and D_s frames in both calls
        losses.append(train_module.d_loss(G, D_s, D_t, D_m, cfg, batch, 0.5, mismatch)[0])
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
        loss, stats = train_module.g_loss(*nets, cfg, batch, 1.0, lam)
        loss.backward()
        losses.append(loss.detach()), grads.append(G.out.weight.grad.clone()), recs.append(stats["rec"][0])
    G.zero_grad()
    rec = (train_module.generate(G, cfg, batch) - batch["x"]).abs().mean()
    rec.backward()
    torch.testing.assert_close(recs[0], rec.detach())
    torch.testing.assert_close(recs[1], rec.detach())
    torch.testing.assert_close(losses[1] - losses[0], 2.0 * rec.detach())
    # The adversarial part is in both gradients and cancels up to float error of its own size.
    tol = 1e-5 * grads[0].abs().max().item()
    torch.testing.assert_close(grads[1] - grads[0], 2.0 * G.out.weight.grad, atol=tol, rtol=0)
    assert 2.0 * G.out.weight.grad.abs().max() > 100 * tol  # the term is far above that error


@pytest.mark.parametrize("flags", [["--dtype", "bfloat16"], ["--mismatch-negatives"]])
def test_smoke_with_option(tmp_path, flags):
    """The options that change the step run end to end: bf16 autocast, extra D_m negatives."""
    ckpt = run(tmp_path, *flags, stage=2)
    assert ckpt["step"] == 2
    weights = state(ckpt)
    assert all(torch.isfinite(v).all() and v.dtype != torch.bfloat16 for v in weights.values())


@pytest.mark.parametrize("stage", [1, 3])
def test_fvd_every_logs_the_stage_score(tmp_path, stage):
    """--fvd-every: the stage's FVD rung lands in log.jsonl at those steps, as sample.py's
    ladder scores that stage (its own videos, or its output on real views of its input)."""
    run(tmp_path, "--fvd-every", "2", "--fvd-n", "3", stage=stage, iters=2)
    scores = [r for r in read_log(str(tmp_path / "run" / "log.jsonl")) if "fvd" in r]
    assert [(r["step"], r["fvd_n"]) for r in scores] == [(2, 3)] and scores[0]["fvd"] > 0
    assert len(list((tmp_path / "run" / "fvd-stats").glob("*.npz"))) == 1


def test_context_is_recorded_and_zero_reproduces_the_window_alone(tmp_path):
    """The context defaults to R and is saved with the config; --context 0 trains on the window's
    own conditioning (one length for every example) and refuses to resume a context-R run."""
    ckpt = run(tmp_path, stage=2, iters=1)
    assert ckpt["config"]["context"] == 6
    zero = run(tmp_path, "--context", "0", stage=2, iters=1, name="zero")
    assert zero["config"]["context"] == 0
    with pytest.raises(ValueError, match="context"):
        run(tmp_path, "--context", "0", stage=2, iters=2)


def test_trains_on_prepared_shards_with_a_frame_stride(tmp_path):
    """data.py prepare -> train.py --data PREPARED; --frame-stride is in the checkpoint's config,
    and resuming with another stride is refused. Stage 2 also draws its sample grid from the
    held-out split (one of the three videos)."""
    import numpy as np
    from data import prepare, write_gif
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
    assert len(y) == shown * per_class <= train_module.GRID_MAX
    assert y == sorted(y) and len(set(y)) == shown and all(y.count(c) == per_class for c in set(y))
    assert y[0] == 0 and y[-1] == max(num_classes - 1, 0)  # first to last class, evenly between
    gaps = {b - a for a, b in zip(sorted(set(y)), sorted(set(y))[1:])}
    assert not gaps or max(gaps) - min(gaps) <= 1


# -----------------------------------------------------------------------------
# Data parallelism: 2 ranks x batch 2 == 1 process x batch 4 == batch 2 x --grad-accum 2

def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def ddp_worker(rank, world, ports, runs, report_dir):
    """One rank (gloo, as torchrun would set it up) running train() once per run, in order;
    saves each run's final state and the files this rank opened for writing under runs/."""
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    written = []

    def audit(event, args):  # every open for writing, and every mkdir, by this process
        if event == "open" and isinstance(args[0], str):
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if mode else flags & (os.O_WRONLY | os.O_RDWR)
            if writes:
                written.append(path)
        elif event == "os.mkdir":
            written.append(str(args[0]))

    sys.addaudithook(audit)
    for port, (name, argv) in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)
        state = train(get_args(argv))
        ours = [p for p in written if p.startswith(os.path.join(report_dir, "runs"))]
        torch.save({"state": state, "written": ours}, os.path.join(report_dir, f"{name}.rank{rank}.pt"))


def tiny_argv(tmp_path, name, *extra, iters=3, batch=2):
    return ["--preset", "tiny", "--stage", "1", "--max-iters", str(iters), "--batch-size", str(batch),
            "--workers", "0", "--log-every", "1", "--sample-every", "1000", "--device", "cpu",
            "--out", str(tmp_path / "runs" / name), *extra]


def floats(ckpt, bn_stats=True):
    """The networks' floating-point state as one vector per network (BN running stats optional)."""
    return {net: torch.cat([v.flatten() for k, v in ckpt[net].items() if v.is_floating_point()
                            and (bn_stats or "running_" not in k)])
            for net in ("G", "G_ema", "D_s", "D_t") if net in ckpt}


def apart(a, b, init, bn_stats=True):
    """max over networks of |a - b| / |a - init|: how far two runs ended apart, relative to how
    far they moved. Adam turns a tiny gradient difference into a whole step for the odd weight
    whose gradient is near 0, so weights are compared in norm, not element by element."""
    fa, fb, f0 = floats(a, bn_stats), floats(b, bn_stats), floats(init, bn_stats)
    return max(float((fa[n] - fb[n]).norm() / (fa[n] - f0[n]).norm()) for n in fa)


def test_ddp_equals_one_big_batch_and_grad_accum(tmp_path):
    """2 gloo ranks x batch 2 for 3 steps, with and without --sync-bn, and a run stopped at
    step 2 and resumed to 3. Ranks end identical (BN running stats apart, without --sync-bn:
    each rank tracks its own); only rank 0 wrote files; the status line's batch is the global 4.
    With --sync-bn G's batch norm sees all 4 videos, and the run equals one process at batch 4.
    Without it each rank normalises over its 2 videos, as each micro-batch does under
    --grad-accum 2: the run equals one process at batch 2 x 2, and differs from batch 4, which
    shows the comparison can fail (BN statistics over 2 instead of 4 videos are a small change)."""
    runs = [("ddp", tiny_argv(tmp_path, "ddp")), ("sync", tiny_argv(tmp_path, "sync", "--sync-bn")),
            ("resumed", tiny_argv(tmp_path, "resumed", iters=2)), ("resumed", tiny_argv(tmp_path, "resumed"))]
    torch.multiprocessing.spawn(ddp_worker, args=(2, free_ports(len(runs)), runs, str(tmp_path)), nprocs=2)
    got = {(name, r): torch.load(tmp_path / f"{name}.rank{r}.pt", weights_only=True)
           for name in ("ddp", "sync", "resumed") for r in (0, 1)}
    torch.set_num_threads(1)  # as each rank: the same kernels, so float noise is not amplified
    try:
        init = train(get_args(tiny_argv(tmp_path, "init", iters=0)))
        big = train(get_args(tiny_argv(tmp_path, "big", batch=4)))
        accum = train(get_args(tiny_argv(tmp_path, "accum", "--grad-accum", "2")))
    finally:
        torch.set_num_threads(2)

    for name in ("ddp", "sync", "resumed"):
        rank0, rank1 = got[name, 0], got[name, 1]
        assert rank1["written"] == [] and rank0["written"], name
        a, b = floats(rank0["state"], bn_stats=name == "sync"), floats(rank1["state"], bn_stats=name == "sync")
        assert all(torch.equal(a[n], b[n]) for n in a), name
        assert [r["batch"] for r in read_log(tmp_path / "runs" / name / "log.jsonl") if "loss_D" in r] == [4, 4, 4]
    ddp, sync, resumed = got["ddp", 0]["state"], got["sync", 0]["state"], got["resumed", 0]["state"]
    assert_same_weights(resumed, ddp)
    torch.testing.assert_close(resumed["opt_G"]["state"], ddp["opt_G"]["state"])
    # measured: sync-big 3e-4, ddp-accum 0 (the same kernels on the same numbers), ddp-big 0.4
    assert apart(sync, big, init) < 2e-2
    assert apart(ddp, accum, init, bn_stats=False) < 2e-2
    assert apart(ddp, big, init) > 0.1 and apart(accum, big, init) > 0.1


def test_a_hung_rank_ends_the_job_after_the_timeout(tmp_path):
    """Two ranks started by hand (as srun or torchrun set them up); rank 1 freezes (SIGSTOP).
    Rank 0 does not wait forever: after --ddp-timeout it exits non-zero with one clear line."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_ports(1)[0]), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", *tiny_argv(tmp_path, "run", iters=100000), "--ddp-timeout", "5"]
    ranks = [subprocess.Popen(cmd, cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in (0, 1)]
    try:
        wait_for_step(ranks[0], 2)
        ranks[1].send_signal(signal.SIGSTOP)
        rest = ranks[0].communicate(timeout=120)[0]
        assert ranks[0].returncode == 1, rest[-3000:]
        assert rest.splitlines()[-1].startswith("error: rank 0: another rank died, or hung for more than "
                                                "--ddp-timeout 5 s; see its log. Rerun the same command"), rest[-3000:]
    finally:
        for proc in ranks:
            proc.kill()
            proc.communicate()


def test_grounded_is_part_of_the_stage_config():
    """--grounded changes Gup's forward, so it lives in the checkpoint's config (resume checks it)."""
    on = train_module.resolve_config(get_args(["--preset", "tiny", "--stage", "3"]), 0)  # the default
    off = train_module.resolve_config(get_args(["--preset", "tiny", "--stage", "3", "--no-grounded"]), 0)
    assert on.grounded and not off.grounded and on != off


def test_status_seconds_per_step_leave_out_samples_and_checkpoints(tmp_path, monkeypatch):
    """s/it times training alone (study.py plans from it): a sample grid and a checkpoint after
    every step, each made to take a second, do not show in it."""
    slow = 1.0
    real_write, real_save = train_module.write_samples, train_module.save_checkpoint

    def slow_write(*args):
        time.sleep(slow)
        return real_write(*args)

    def slow_save(*args):
        time.sleep(slow)
        return real_save(*args)

    monkeypatch.setattr(train_module, "write_samples", slow_write)
    monkeypatch.setattr(train_module, "save_checkpoint", slow_save)
    run(tmp_path, "--sample-every", "1", "--ckpt-every", "1", iters=3)
    steps = [r for r in read_log(tmp_path / "run" / "log.jsonl") if "s_per_it" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["s_per_it"] < slow for r in steps[1:]), steps  # 2 s of bookkeeping before each
