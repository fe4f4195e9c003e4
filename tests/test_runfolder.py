"""runfolder.py: the checkpoint (refusals, compatibility, atomic writes), the status line and
log.jsonl, the folder lock and the stop signals, mostly through real tiny runs of train.py."""
import contextlib
import errno
import os
import pickle
import runpy
import signal
import sys

import pytest
import torch

import losses
import runfolder
from losses import d_hinge
from runfolder import Status, atomic_file, load_checkpoint, read_log
from test_train import ROOT, assert_same_weights, launch, one_step_run, run, wait_for_step


def test_atomic_file_is_all_or_nothing(tmp_path):
    path = tmp_path / "f.txt"
    with atomic_file(path, "w") as f:
        f.write("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_file(path, "w") as f:
            f.write("half of the new")
            raise OSError(errno.ENOSPC, "disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_an_older_checkpoint_loads_and_resumes_an_unknown_field_is_refused(tmp_path, checkpoints):
    """Checkpoints store the StageConfig as a dict. One written when StageConfig had num_stages
    (retired: nothing read it) loads and resumes; a field this code does not know is refused
    by name, since it might change the networks."""
    one_step_run(checkpoints, tmp_path)
    path = tmp_path / "run" / "ckpt.pt"
    ckpt = torch.load(path, weights_only=True)
    now = load_checkpoint(str(path))[1]
    ckpt["config"]["num_stages"] = 3
    torch.save(ckpt, path)
    assert load_checkpoint(str(path))[1] == now
    assert run(tmp_path, iters=2)["step"] == 2
    ckpt["config"]["frobnicate"] = 1
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"ckpt.pt: its config has fields this code does not know \(frobnicate\)"):
        load_checkpoint(str(path))


def test_status_line_means_every_d_step_and_names_its_stats(tmp_path, capsys):
    """A step adds named stats: its D loss is the mean over its --d-steps (and micro-batches),
    not the last one; a status line prints and logs the mean per step since the last line."""
    status = Status(str(tmp_path), torch.device("cpu"), step=0, main=True, batch=4)
    for step_D in ([1.0, 3.0], [5.0, 7.0]):  # two steps of 2 D steps each
        for loss in step_D:
            status.add({"loss_D": torch.tensor(loss), "D_s_real": torch.tensor(loss), "D_s_fake": torch.tensor(-loss)},
                       weight=1 / 2)
        status.add({"loss_G": torch.tensor(0.5), "rec": torch.tensor(0.25)})
    status.log(2)
    record, = read_log(tmp_path / "log.jsonl")
    assert (record["step"], record["loss_D"], record["D_s_real"], record["D_s_fake"]) == (2, 4.0, 4.0, -4.0)
    assert (record["loss_G"], record["rec"], record["batch"]) == (0.5, 0.25, 4)
    assert "| D 4.000 G 0.500 | logits real/fake s +4.00/-4.00 | rec 0.2500 |" in capsys.readouterr().out


def test_wrong_stage_checkpoint_refused(tmp_path, checkpoints):
    one_step_run(checkpoints, tmp_path, stage=2)
    with pytest.raises(ValueError, match=r"holds stage 2 of preset 'tiny'.*--out"):
        run(tmp_path, stage=1, iters=2)


def test_other_architecture_refused(tmp_path, checkpoints):
    one_step_run(checkpoints, tmp_path, stage=2)
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


def test_truncated_checkpoint_refused(tmp_path, checkpoints):
    one_step_run(checkpoints, tmp_path)
    path = tmp_path / "run" / "ckpt.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable SSW-GAN checkpoint"):
        run(tmp_path, iters=2)


def test_nan_stops_run_and_keeps_last_checkpoint(tmp_path, monkeypatch, checkpoints):
    one_step_run(checkpoints, tmp_path)
    path = tmp_path / "run" / "ckpt.pt"
    before = path.read_bytes()
    monkeypatch.setattr(losses, "d_hinge", lambda real, fake: d_hinge(real, fake) * float("nan"))
    with pytest.raises(runfolder.TrainingDiverged, match="non-finite loss at step 2.*left as it was"):
        run(tmp_path, "--ckpt-every", "1", iters=3)
    assert path.read_bytes() == before and not (tmp_path / "run" / "ckpt.pt.tmp").exists()


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


def test_a_folder_in_use_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with runfolder.lock_folder(str(tmp_path / "run")):
        with pytest.raises(runfolder.FolderInUse, match=rf"in use by another run \(pid {os.getpid()} on host"):
            run(tmp_path)
    assert run(tmp_path, iters=1)["step"] == 1  # free again


def test_a_filesystem_without_locks_warns_and_trains(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")  # Lustre mounted without flock

    monkeypatch.setattr(runfolder.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*Function not implemented"):
        assert run(tmp_path, iters=1)["step"] == 1


def test_kill_9_leaves_no_stale_lock(tmp_path, monkeypatch, capfd):
    """While a run lives, a second one on its folder is refused in one line that names it; the
    moment it is killed with -9 (its DataLoader workers still winding down), the folder is free.
    The second is `python train.py ...` run in this process (runpy, as __main__), not in another
    interpreter (3 s of imports): it ends in the SystemExit whose message Python prints as the
    one line on stderr, exit code 1, and writes nothing else there."""
    out = tmp_path / "run"
    holder = launch(out, workers=2)
    try:
        wait_for_step(holder, 1)
        monkeypatch.setattr(sys, "argv", ["train.py", "--preset", "tiny", "--out", str(out)])
        with pytest.raises(SystemExit) as second:
            runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")
        assert second.value.code == (
            f"error: {out} is in use by another run (pid {holder.pid} on host {os.uname().nodename}): "
            f"wait for it to end, stop it, or pass another --out"), second.value.code
        assert capfd.readouterr().err == ""
        holder.kill()
        holder.wait()
        assert run(tmp_path, iters=1)["step"] == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)  # the workers, if still there
        holder.communicate()


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, checkpoints):
    """A full disk (or an I/O error) while writing: the run stops with a message, the previous
    checkpoint is left loadable, no temp file is left behind."""
    one_step_run(checkpoints, tmp_path)
    path = tmp_path / "run" / "ckpt.pt"
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(runfolder.CheckpointWriteError, match=r"could not write .*ckpt.pt \(.*No space left"
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

