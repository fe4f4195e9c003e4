"""torch.compile of the training steps (distributed.compiled_step): each step's forward traces whole
(no graph break) on every tiny stage, the compiled steps train as the eager ones do (losses and
gradients, tiny stage 1 and an upscaler, Inductor on the CPU), and the steps after the first
compile nothing more. The ssw-128 stages' tracing is tested on the meta device in test_bench.py.
Each compiled stage costs a minute or two of Inductor on a CPU: compiled once per test module,
and the tiny stages it compiles (1 and 2) are not traced a second time by torch._dynamo.explain."""
import copy

import pytest
import torch
import torch._dynamo

import losses
import train
from bench import random_batch
from distributed import compiled_step, micro_batch, with_noise
from models import build_stage


class Stage:
    """A tiny stage's nets, optimizers and steps as train.py builds them (one process, one
    micro-batch), compiled or not; iteration() runs one D step and one G step and returns their
    losses, stats and gradients."""

    def __init__(self, stage: int, compile: bool):
        self.args = train.get_args(["--preset", "tiny", "--stage", str(stage), "--device", "cpu"])
        self.cfg = cfg = train.resolve_config(self.args, 3)
        torch.manual_seed(0)  # the same init for the eager and the compiled twin
        self.G, D_s, D_t, D_m = build_stage(cfg)
        self.Ds = [D for D in (D_s, D_t, D_m) if D is not None]
        self.opt_G, self.opt_D = train.optimizers(self.G, self.Ds, self.args)
        self.d_step = compiled_step(losses.d_forward, compile, torch.device("cpu"), self.G, D_s, D_t, D_m, cfg,
                                    self.args.lambda_m, False, self.args.r1, self.args.augment,
                                    self.args.aux_class)
        self.g_step = compiled_step(losses.g_forward, compile, torch.device("cpu"), self.G, D_s, D_t, D_m, cfg,
                                    self.args.lambda_m, self.args.lambda_rec, self.args.augment,
                                    self.args.aux_class)

    def iteration(self, batch: dict) -> dict:
        out = {}
        self.opt_D.zero_grad(set_to_none=True)
        with micro_batch(0, 1, [], trained=self.Ds, others=[self.G]):
            loss_D, stats_D = self.d_step(with_noise(batch, "d_noise"))
            loss_D.backward()
        out["D"] = (loss_D.detach(), stats_D, [p.grad.clone() for D in self.Ds for p in D.parameters()])
        self.opt_D.step()
        for D in self.Ds:
            D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with micro_batch(0, 1, [], trained=[self.G], others=self.Ds):
            loss_G, stats_G = self.g_step(with_noise(batch, "g_noise"))
            loss_G.backward()
        out["G"] = (loss_G.detach(), stats_G, [p.grad.clone() for p in self.G.parameters()])
        self.opt_G.step()
        for D in self.Ds:
            D.requires_grad_(True)
        return out


@pytest.mark.parametrize("stage", [3])
def test_each_step_traces_as_one_graph(stage):
    """Dynamo traces the D step's and the G step's forward whole: Gup's frame arithmetic and
    spectral norm's ready weights included (0 graph breaks). Stage 3 here; stages 1 (the unrolled
    GRU) and 2 are the twins' compiled stages, whose steps compile under fullgraph=True (a graph
    break there is an error, not a second graph) and test_steps_compile_once counts one graph per
    step and no break: tracing them again here would prove nothing more (and cost ~10 s)."""
    s = Stage(stage, compile=False)
    batch = random_batch(s.cfg, 2, seed=0)
    with micro_batch(0, 1, [], trained=s.Ds, others=[s.G]):
        d = torch._dynamo.explain(s.d_step)(with_noise(batch, "d_noise"))
    for D in s.Ds:
        D.requires_grad_(False)
    with micro_batch(0, 1, [], trained=[s.G], others=s.Ds):
        g = torch._dynamo.explain(s.g_step)(with_noise(batch, "g_noise"))
    assert (d.graph_count, d.graph_break_count) == (1, 0), d.break_reasons
    assert (g.graph_count, g.graph_break_count) == (1, 0), g.break_reasons


@pytest.fixture(scope="module", params=[1, 2])
def twins(request):
    """An eager stage and its compiled twin (the same init), and 2 iterations of each on the
    same batches, with the number of graphs compiled after each iteration and the graph breaks
    Dynamo met in all. The second iteration starts from what both optimizers' steps, Adam's state
    and spectral norm's power iteration left: a third adds no new kind of input (~2 s)."""
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    eager, compiled = Stage(request.param, compile=False), Stage(request.param, compile=True)
    runs, graphs, before = [], [], counters["stats"]["unique_graphs"]
    breaks_before = sum(counters["graph_break"].values())
    for i in range(2):
        batch = random_batch(eager.cfg, 4, seed=i)
        runs.append((eager.iteration(copy.deepcopy(batch)), compiled.iteration(batch)))
        graphs.append(counters["stats"]["unique_graphs"] - before)
    return runs, graphs, sum(counters["graph_break"].values()) - breaks_before


def test_compiled_steps_train_as_eager(twins):
    """Two iterations, compiled and eager, from the same init on the same batches: the same
    losses, logits and gradients of every parameter, float rounding apart (Inductor fuses and
    reorders the arithmetic; the optimizers' steps then carry the rounding on)."""
    runs, _, _ = twins
    for i, (eager, compiled) in enumerate(runs):
        for step in ("D", "G"):
            (loss, stats, grads), (loss_c, stats_c, grads_c) = eager[step], compiled[step]
            torch.testing.assert_close(loss_c, loss, rtol=1e-4, atol=1e-5, msg=f"iteration {i} {step} loss")
            torch.testing.assert_close(stats_c, stats, rtol=1e-4, atol=1e-5, msg=f"iteration {i} {step} stats")
            for n, (g_c, g) in enumerate(zip(grads_c, grads)):
                torch.testing.assert_close(g_c, g, rtol=1e-3, atol=1e-5, msg=f"iteration {i} {step} grad {n}")


def test_steps_compile_once(twins):
    """The first iteration compiles two graphs (the D step's and the G step's forwards, each with
    its backward), with no graph break: each step traces as one graph, as
    test_each_step_traces_as_one_graph shows for stage 3 (fullgraph=True would raise at a break;
    the count says so too); the next iteration reuses them: no recompile per step (spectral
    norm's weights, new tensors at every step, come in as graph inputs)."""
    _, graphs, breaks = twins
    assert graphs == [2, 2], graphs
    assert breaks == 0, breaks


@pytest.mark.parametrize("stage", [1, 2])
def test_bf16_keeps_sigma_statistics_logits_and_losses_in_float32(stage):
    """--dtype bfloat16's policy: under autocast the convs run in bf16, but spectral norm's
    normalised weights (sigma computed before autocast), G1's GRU, the batch-norm running
    statistics, the logits and the losses stay float32, and the backward runs."""
    s = Stage(stage, compile=False)
    batch = random_batch(s.cfg, 2, seed=0)
    for D in s.Ds:
        D.requires_grad_(False)
    with micro_batch(0, 1, [], trained=[s.G], others=s.Ds):
        weights = [m.weight for m in s.G.modules() if hasattr(m, "parametrizations")]
        conv_out, gru_out = [], []
        s.G.out.register_forward_hook(lambda m, args, out: conv_out.append(out.dtype))
        if stage == 1:
            s.G.gru.register_forward_hook(lambda m, args, out: gru_out.append(out.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_G, stats = s.g_step(with_noise(batch, "g_noise"))
        loss_G.backward()
    assert conv_out == [torch.bfloat16]  # the policy is not vacuous: the convs ran in bf16
    assert gru_out == ([torch.float32] if stage == 1 else [])
    assert all(torch.isfinite(p.grad).all() for p in s.G.parameters())
    assert weights and all(w.dtype == torch.float32 for w in weights)
    assert loss_G.dtype == torch.float32 and all(v.dtype == torch.float32 for v in stats.values())
    bn = [b for m in s.G.modules() if isinstance(m, torch.nn.BatchNorm3d) for b in (m.running_mean, m.running_var)]
    assert bn and all(b.dtype == torch.float32 and torch.isfinite(b).all() for b in bn)
