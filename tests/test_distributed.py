"""distributed.py: the batch-split contract (2 ranks x batch 2 == 1 process x batch 4 == batch 2
x --grad-accum 2), per-example noise, torchrun end to end, and a lost rank."""
import os
import re
import signal
import socket
import subprocess
import sys

import torch
from torch.utils.data import default_collate

from data import StageExamples, open_clips
from distributed import StepSampler, WithNoise, with_noise
from models import stage_config
from runfolder import load_checkpoint, read_log
from test_train import ROOT, assert_same_weights, launch, wait_for_step
from train import get_args, train


def test_noise_comes_with_the_batch_per_example_and_per_stream():
    """The loader draws each example's noise (WithNoise): a pure function of its id, so any split
    of a batch collates the same rows; a D step's and the G step's draws for one example differ;
    with_noise hands a step its stream in the layout the losses read ("frames" (2, B, k)). Only
    the steps an example feeds are drawn: with 2 D steps, g_noise on every second batch alone;
    with none (--no-adversarial), g_noise alone."""
    cfg = stage_config("tiny", 2, num_classes=5, context=1)
    examples = StageExamples(open_clips("synthetic", cfg.clip_frames, cfg.clip_size, 0), cfg.view_s, cfg.view_t,
                             cfg.window, cfg.context, seed=0)
    noisy = WithNoise(examples, cfg, seed=0, d_steps=1, batch=2)

    def batch(ids):
        return with_noise(default_collate([noisy[i] for i in ids]), "d_noise")

    whole, half = batch([2, 3]), batch([3])
    torch.testing.assert_close(whole["z"][1:], half["z"])
    torch.testing.assert_close(whole["frames"][:, 1:], half["frames"])
    k = min(cfg.d_frames, cfg.out_frames)
    assert whole["z"].shape == (2, cfg.z_dim, *whole["c_context"].shape[2:]) and whole["frames"].shape == (2, 2, k)
    g = with_noise(default_collate([noisy[3]]), "g_noise")
    assert not torch.equal(g["z"], half["z"])
    assert whole["id"].tolist() == [2, 3] and "noise" not in whole

    two_d_steps = WithNoise(examples, cfg, seed=0, d_steps=2, batch=2)  # batches 0 and 1 make iteration 0
    assert [sorted(two_d_steps[i]["noise"]) for i in (0, 1, 2, 3)] == [["d_noise"]] * 2 + [["d_noise", "g_noise"]] * 2
    torch.testing.assert_close(two_d_steps[3]["noise"]["g_noise"]["z"], g["z"][0])  # the same draw, whatever d_steps
    assert list(WithNoise(examples, cfg, seed=0, d_steps=0, batch=2)[0]["noise"]) == ["g_noise"]


def test_step_sampler_indices():
    s = iter(StepSampler(first_batch=3, batch_size=2, rank=1, world=2))
    assert [next(s) for _ in range(4)] == [14, 15, 18, 19]  # batches 3, 4 of rank 1


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


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def ddp_worker(rank, world, ports, runs, alone, report_dir):
    """One rank (gloo, as torchrun would set it up) running train() once per run of `runs`, in
    order; then, as a process of its own (no process group), the runs of alone[rank]: the
    single-process references, trained two at a time on the two processes, at the ranks' one
    thread (the same kernels, so float noise is not amplified). Saves each run's final state and
    the files this process had opened for writing under runs/ by then."""
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

    def save(name, state):
        ours = [p for p in written if p.startswith(os.path.join(report_dir, "runs"))]
        torch.save({"state": state, "written": ours}, os.path.join(report_dir, f"{name}.rank{rank}.pt"))

    sys.addaudithook(audit)
    for port, (name, argv) in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)
        save(name, train(get_args(argv)))
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")  # one process: no process group
    for name, argv in alone[rank]:
        save(name, train(get_args(argv)))


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
    shows the comparison can fail (BN statistics over 2 instead of 4 videos are a small change).
    With --compile (and --sync-bn) the ranks train what they train eagerly."""
    runs = [("ddp", tiny_argv(tmp_path, "ddp")), ("sync", tiny_argv(tmp_path, "sync", "--sync-bn")),
            ("resumed", tiny_argv(tmp_path, "resumed", iters=2)), ("resumed", tiny_argv(tmp_path, "resumed")),
            ("compiled", tiny_argv(tmp_path, "compiled", "--sync-bn", "--compile"))]
    alone = [[("init", tiny_argv(tmp_path, "init", iters=0)), ("big", tiny_argv(tmp_path, "big", batch=4))],
             [("accum", tiny_argv(tmp_path, "accum", "--grad-accum", "2"))]]  # after the DDP runs, one per process
    torch.multiprocessing.spawn(ddp_worker, args=(2, free_ports(len(runs)), runs, alone, str(tmp_path)), nprocs=2)
    got = {(name, r): torch.load(tmp_path / f"{name}.rank{r}.pt", weights_only=True)
           for name in ("ddp", "sync", "resumed", "compiled") for r in (0, 1)}
    init, big, accum = (torch.load(tmp_path / f"{name}.rank{r}.pt", weights_only=True)["state"]
                        for r, names in enumerate(alone) for name, _ in names)

    for name in ("ddp", "sync", "resumed", "compiled"):
        rank0, rank1 = got[name, 0], got[name, 1]
        assert rank1["written"] == [] and rank0["written"], name
        synced = name in ("sync", "compiled")
        a, b = floats(rank0["state"], bn_stats=synced), floats(rank1["state"], bn_stats=synced)
        assert all(torch.equal(a[n], b[n]) for n in a), name
        assert [r["batch"] for r in read_log(tmp_path / "runs" / name / "log.jsonl") if "loss_D" in r] == [4, 4, 4]
    ddp, sync, resumed = got["ddp", 0]["state"], got["sync", 0]["state"], got["resumed", 0]["state"]
    # --compile under torchrun: the plain nets in each step's graph, gradients averaged by hand
    assert apart(got["compiled", 0]["state"], sync, init) < 2e-2
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

