"""The shared training loop resumes exactly where an interrupted run stopped."""
import csv

import pytest
import torch
from torch import nn

from pipeline.train import train


def make():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def step_fn(crash_at=None):
    def step(m, it):
        if it == crash_at:
            raise KeyboardInterrupt  # stands in for a kill between checkpoints
        g = torch.Generator().manual_seed(it)  # batch drawn from the iteration number
        x = torch.randn(8, 4, generator=g)
        y = x.sum(1, keepdim=True)
        return {"loss": ((m(x) - y) ** 2).mean()}
    return step


def test_resume_equals_uninterrupted(tmp_path):
    ref, opt = make()
    train(ref, opt, step_fn(), tmp_path / "ref", 20, ckpt_every=5, log_every=1, progress=False)

    model, opt = make()
    with pytest.raises(KeyboardInterrupt):
        train(model, opt, step_fn(crash_at=13), tmp_path / "run", 20, ckpt_every=5,
              log_every=1, progress=False)
    model, opt = make()  # a fresh process: nothing kept in memory
    train(model, opt, step_fn(), tmp_path / "run", 20, ckpt_every=5, log_every=1,
          progress=False)
    for a, b in zip(ref.parameters(), model.parameters()):
        assert torch.equal(a, b)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 21))  # no duplicates, no gaps


def test_randomness_inside_the_model_resumes_identically_with_a_seed(tmp_path):
    """Mask R-CNN samples proposals with the global RNG: found by bench/faults.py, its weights
    after kill -9 + resume differed from an uninterrupted run's. train(seed=...) reseeds the
    global RNG per iteration."""
    def step(crash_at=None):
        def f(m, it):
            if it == crash_at:
                raise KeyboardInterrupt
            x = torch.randn(8, 4)                 # the global RNG, like RoI sampling
            return {"loss": ((m(x) - x.sum(1, keepdim=True)) ** 2).mean()}
        return f

    def run(folder, seed, crash=True):
        torch.manual_seed(123)
        model, opt = make()
        if crash:
            with pytest.raises(KeyboardInterrupt):
                train(model, opt, step(13), folder, 20, ckpt_every=5, progress=False, seed=seed)
            torch.manual_seed(999)                # a fresh process: another RNG state
            model, opt = make()
        train(model, opt, step(), folder, 20, ckpt_every=5, progress=False, seed=seed)
        return model.weight.detach().clone()

    assert torch.equal(run(tmp_path / "a", 7, crash=False), run(tmp_path / "b", 7))
    assert not torch.equal(run(tmp_path / "c", None, crash=False), run(tmp_path / "d", None))


def test_non_finite_loss_that_persists_stops_with_one_line(tmp_path):
    from pipeline.errors import UserError
    model, opt = make()
    before = model.weight.detach().clone()
    with pytest.raises(UserError, match="loss nan at iteration 9, 10 iterations in a row"):
        train(model, opt, lambda m, it: {"loss": m(torch.ones(1, 4)).sum() * float("nan")},
              tmp_path, 30, progress=False)
    assert torch.equal(model.weight, before)  # never a NaN weight


def test_a_non_finite_step_is_skipped_and_training_goes_on(tmp_path):
    """A batch whose loss (iteration 3) or gradient (iteration 5: sqrt at 0) is not finite
    leaves the weights as they were; the run finishes with finite weights."""
    step = step_fn()

    def faulty(m, it):
        if it == 3:
            return {"loss": step(m, it)["loss"] * float("inf")}
        if it == 5:  # finite loss, infinite gradient
            return {"loss": torch.sqrt((m.weight * 0).abs().sum())}
        return step(m, it)
    model, opt = make()
    train(model, opt, faulty, tmp_path / "a", 12, progress=False)
    assert torch.isfinite(model.weight).all() and torch.isfinite(model.bias).all()
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert len(rows) == 2 and float(rows[-1]["loss"]) < float("inf")


def test_lr_schedules_warm_up_then_follow_their_shape():
    import pytest
    import torch
    from pipeline.errors import UserError
    from pipeline.train import lr_schedule

    def lrs(kind):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = lr_schedule(opt, kind, max_iter=90, warmup=10)
        out = []
        for _ in range(90):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out
    const, steps, cos = lrs("constant"), lrs("steps"), lrs("cosine")
    assert const[0] < 0.01 and const[10:] == [1.0] * 80
    assert steps[59] == 1.0 and abs(steps[60] - 0.1) < 1e-9 and abs(steps[80] - 0.01) < 1e-9
    assert cos[10] == 1.0 and cos[50] < 0.6 and cos[89] < 0.01
    with pytest.raises(UserError, match="schedule='linear' unknown"):
        lrs("linear")


def test_weight_average_is_the_moving_average_of_the_iterates_and_resumes(tmp_path):
    """ema > 0: the returned weights are the average of the iterates (ramped decay), not the
    last iterate, and a killed run resumes with its average intact."""
    decay, n = 0.9, 20
    plain, opt = make()
    iterates = []
    step = step_fn()

    def recording(m, it):  # the weights each step starts from: the iterate of step it-1
        iterates.append(m.weight.detach().clone())
        return step(m, it)
    train(plain, opt, recording, tmp_path / "plain", n, progress=False)
    iterates = iterates[1:] + [plain.weight.detach().clone()]
    expected = make()[0].weight.detach().clone()
    for t, w in enumerate(iterates):
        d = min(decay, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * w

    ref, opt = make()
    train(ref, opt, step_fn(), tmp_path / "ref", n, ckpt_every=5, progress=False, ema=decay)
    assert torch.allclose(ref.weight, expected, atol=1e-6)
    assert not torch.allclose(ref.weight, plain.weight, atol=1e-3)

    model, opt = make()
    with pytest.raises(KeyboardInterrupt):
        train(model, opt, step_fn(crash_at=13), tmp_path / "run", n, ckpt_every=5,
              progress=False, ema=decay)
    model, opt = make()
    train(model, opt, step_fn(), tmp_path / "run", n, ckpt_every=5, progress=False, ema=decay)
    assert torch.equal(model.weight, ref.weight)


def test_kept_checkpoints_hold_the_weights_of_their_iteration(tmp_path):
    """keep={k}: ckpt_k.pt holds the weights after k iterations (the average under ema), the
    same as a run stopped there; a resumed run still writes the kept ones it had not reached,
    and last.pt alone is overwritten."""
    for ema in (0.0, 0.9):
        short, opt = make()
        train(short, opt, step_fn(), tmp_path / f"short{ema}", 7, progress=False, ema=ema)
        model, opt = make()
        with pytest.raises(KeyboardInterrupt):
            train(model, opt, step_fn(crash_at=9), tmp_path / f"run{ema}", 20, ckpt_every=5,
                  progress=False, ema=ema, keep={7, 15})
        model, opt = make()
        train(model, opt, step_fn(), tmp_path / f"run{ema}", 20, ckpt_every=5,
              progress=False, ema=ema, keep={7, 15})
        kept = sorted(p.name for p in (tmp_path / f"run{ema}").glob("ckpt_*.pt"))
        assert kept == ["ckpt_0000007.pt", "ckpt_0000015.pt"]
        at7 = torch.load(tmp_path / f"run{ema}" / "ckpt_0000007.pt", weights_only=True)
        assert torch.equal(at7["weight"], short.weight.detach())
        assert not torch.equal(at7["weight"], model.weight.detach())


def test_reduced_precision_is_bfloat16_on_a_cpu_and_auto_asks_the_cpu(monkeypatch):
    from pipeline import train as loop
    assert loop.autocast_dtype(False, "cpu") is None
    assert loop.autocast_dtype(True, "cuda") is torch.float16
    assert loop.autocast_dtype("auto", "cuda") is torch.float16
    assert loop.autocast_dtype(True, "cpu") is torch.bfloat16
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    assert loop.autocast_dtype("auto", "cpu") is None       # emulated bfloat16: float32
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert loop.autocast_dtype("auto", "cpu") is torch.bfloat16


def test_training_in_bfloat16_on_a_cpu_keeps_float32_weights(tmp_path):
    """hardware.amp on a CPU: the network runs in bfloat16 under autocast, the weights and
    the optimiser stay float32 and end near float32 training's."""
    seen = []

    def step(m, it):
        g = torch.Generator().manual_seed(it)
        x = torch.randn(8, 4, generator=g)
        out = m(x)
        seen.append(out.dtype)
        return {"loss": ((out.float() - x.sum(1, keepdim=True)) ** 2).mean()}
    model, opt = make()
    train(model, opt, step, tmp_path / "bf16", 30, progress=False, amp=True)
    assert set(seen) == {torch.bfloat16}
    assert model.weight.dtype == torch.float32
    seen.clear()
    ref, opt = make()
    train(ref, opt, step, tmp_path / "fp32", 30, progress=False, amp=False)
    assert set(seen) == {torch.float32}
    assert not torch.equal(model.weight, ref.weight)                  # bfloat16 did run
    assert torch.allclose(model.weight, ref.weight, atol=0.05)


def test_a_hook_sees_every_step_and_its_keyed_state_survives_a_resume(tmp_path):
    """A stage's own concern (e.g. an evaluation every k iterations) plugs into the one loop
    as a Hook; a hook with a key is checkpointed with the weights and restored on resume."""
    from pipeline.train import Hook

    class Count(Hook):
        key = "count"

        def __init__(self):
            self.steps, self.seen, self.ended = 0, [], False

        def after_step(self, loop):
            self.steps += 1
            self.seen.append(loop.iter)

        def after_train(self, loop):
            self.ended = True

        def state_dict(self):
            return {"steps": self.steps}

        def load_state_dict(self, state):
            self.steps = state["steps"]

    model, opt = make()
    first = Count()
    with pytest.raises(KeyboardInterrupt):
        train(model, opt, step_fn(crash_at=7), tmp_path, 10, ckpt_every=5, log_every=1,
              progress=False, hooks=(first,))
    assert first.seen == [1, 2, 3, 4, 5, 6, 7] and not first.ended
    model, opt = make()
    second = Count()
    train(model, opt, step_fn(), tmp_path, 10, ckpt_every=5, log_every=1, progress=False,
          hooks=(second,))
    assert second.seen == [6, 7, 8, 9, 10] and second.ended
    assert second.steps == 10   # 5 restored from the checkpoint at 5, then 5 more
