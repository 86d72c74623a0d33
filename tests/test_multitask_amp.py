"""Multi-task strategies under AMP: the full GradScaler loop (scale -> backward -> step -> update) for every
strategy, compared with the loop without a scaler, plus overflow handling (skipped steps)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from _multitask_toy import ToyMTL, flat, strategy_kwargs, toy_data
from kexue.losses import multitask as mt

ALL = sorted(mt.STRATEGIES)
GRADIENT_LEVEL = sorted(name for name, cls in mt.STRATEGIES.items() if cls.level == "gradient")
SCALE = 2.0**10


class _HalfGradient(torch.autograd.Function):
    """Identity whose backward rounds the incoming gradient to float16, as an fp16 activation would: a scaled
    gradient above 65504 becomes inf there, which is how overflows reach the gradients under real AMP."""

    @staticmethod
    def forward(ctx: object, h: Tensor) -> Tensor:
        return h.view_as(h)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return grad.half().to(grad.dtype)


class HalfActivationMTL(ToyMTL):
    """ToyMTL whose shared representation has a float16 gradient (see :class:`_HalfGradient`)."""

    def losses(self, x: Tensor, y: Tensor) -> list[Tensor]:
        h = _HalfGradient.apply(self.trunk(x))
        return [((head(h).squeeze(-1) - y[:, i]) ** 2).mean() for i, head in enumerate(self.heads)]


def _train(
    name: str,
    scaler: torch.amp.GradScaler | None,
    *,
    steps: int = 1,
    micro_batches: int = 1,
    dtype: torch.dtype = torch.float64,
    autocast: bool = False,
    model_cls: type[ToyMTL] = ToyMTL,
) -> tuple[ToyMTL, mt.MultiTaskStrategy, list[mt.BackwardResult]]:
    """``steps`` optimiser steps of SGD, each over ``micro_batches`` strategy backward calls (accumulation)."""
    model = model_cls(dtype=dtype)
    strat = mt.make_strategy(name, 3, **strategy_kwargs(name)).to(dtype)
    x, y = toy_data(dtype=dtype)
    opt = torch.optim.SGD([*model.parameters(), *strat.parameters()], lr=0.1)
    results = []
    for _ in range(steps):
        opt.zero_grad()
        for k in range(micro_batches):
            sl = slice(k * 8, k * 8 + 8) if micro_batches > 1 else slice(None)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                losses = model.losses(x[sl], y[sl])
            results.append(strat.backward(losses, model.trunk.parameters(), scaler=scaler))
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
    return model, strat, results


def _params(model: ToyMTL) -> Tensor:
    return flat([p.detach() for p in model.parameters()])


@pytest.mark.parametrize("name", ALL)
def test_full_grad_scaler_loop_matches_the_loop_without_amp(name: str) -> None:
    """scaler.step used to raise "Attempted step but _scale is None" for mgda, gradient_normalization,
    projection and gradnorm (their losses never went through scaler.scale). With a power-of-two scale the AMP
    step must give the same parameters as the plain step, and the step must actually happen."""
    ref, ref_strat, ref_out = _train(name, None, steps=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    amp, amp_strat, amp_out = _train(name, scaler, steps=2)
    assert not torch.equal(_params(amp), _params(ToyMTL()))  # activity: the steps were taken, not skipped
    torch.testing.assert_close(_params(amp), _params(ref), rtol=1e-12, atol=1e-14)
    for a, b in zip(amp_out, ref_out):  # the logged values are unscaled
        torch.testing.assert_close(a["weights"], b["weights"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-12, atol=1e-14)
    for (ka, va), (kb, vb) in zip(amp_strat.state_dict().items(), ref_strat.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=1e-12, atol=1e-14)  # EMA/GradNorm/DWA state unaffected
    assert scaler.get_scale() == SCALE  # no inf found, no growth yet (growth_interval 2000)


@pytest.mark.parametrize("name", GRADIENT_LEVEL)
def test_grad_scaler_with_gradient_accumulation(name: str) -> None:
    """Two micro-batches accumulate into .grad (in scaled units) before one scaler.step."""
    ref, _, _ = _train(name, None, micro_batches=2)
    amp, _, _ = _train(name, torch.amp.GradScaler("cpu", init_scale=SCALE), micro_batches=2)
    torch.testing.assert_close(_params(amp), _params(ref), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["gradient_normalization", "mgda", "projection", "gradnorm", "realtime"])
def test_grad_scaler_under_cpu_autocast(name: str) -> None:
    """A float32 model under bfloat16 autocast: with and without the scaler the step is the same (the scale
    is a power of two, so scaling and unscaling are exact unless something overflows)."""
    ref, _, _ = _train(name, None, dtype=torch.float32, autocast=True)
    amp, _, _ = _train(name, torch.amp.GradScaler("cpu", init_scale=SCALE), dtype=torch.float32, autocast=True)
    torch.testing.assert_close(_params(amp), _params(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_disabled_grad_scaler_is_a_no_op(name: str) -> None:
    ref, _, _ = _train(name, None)
    amp, _, _ = _train(name, torch.amp.GradScaler("cpu", enabled=False))
    torch.testing.assert_close(_params(amp), _params(ref), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_overflow_skips_the_step_and_backs_off(name: str) -> None:
    """A float16 activation gradient with a scale of 2^40 overflows: the non-finite values reach .grad,
    scaler.step skips the step (parameters unchanged) and update halves the scale. Control: at scale 1 the
    same model takes its step."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    model, _, out = _train(name, scaler, model_cls=HalfActivationMTL)
    torch.testing.assert_close(_params(model), _params(ToyMTL()), rtol=0, atol=0)
    assert scaler.get_scale() == 2.0**39
    control = torch.amp.GradScaler("cpu", init_scale=1.0)
    moved, _, _ = _train(name, control, model_cls=HalfActivationMTL)
    assert not torch.equal(_params(moved), _params(ToyMTL()))
    assert control.get_scale() == 1.0
    if mt.STRATEGIES[name].level == "gradient" and name not in ("l2_auxiliary", "gradnorm"):
        assert torch.isnan(out[0]["weights"]).all()  # no combination was computed from inf gradients


def _nan_gradient_losses(model: ToyMTL) -> list[Tensor]:
    """Finite losses whose task-0 gradient is NaN: d sqrt(u)/du = inf at u = 0, times a zero inner gradient."""
    x, y = toy_data()
    ls = model.losses(x, y)
    h = model.trunk(x)
    return [ls[0] + torch.sqrt((0.0 * h).pow(2).sum()), ls[1], ls[2]]


@pytest.mark.parametrize("name", GRADIENT_LEVEL)
def test_non_finite_task_gradient_raises_without_a_scaler(name: str) -> None:
    """Without a scaler nothing would skip the step: a NaN task gradient is an error, not a silent NaN update."""
    model = ToyMTL()
    ls = _nan_gradient_losses(model)
    assert all(torch.isfinite(loss) for loss in ls)
    with pytest.raises(ValueError, match=r"NaN or infinite.*scaler"):
        mt.make_strategy(name, 3).double().backward(ls, model.trunk.parameters())


@pytest.mark.parametrize("name", ["gradient_normalization", "mgda", "projection", "gradnorm"])
def test_non_finite_task_gradient_is_skipped_with_a_scaler(name: str) -> None:
    model = ToyMTL()
    before = _params(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    mt.make_strategy(name, 3).double().backward(_nan_gradient_losses(model), model.trunk.parameters(), scaler=scaler)
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(_params(model), before, rtol=0, atol=0)
    assert scaler.get_scale() == SCALE / 2


def test_scaler_must_be_grad_scaler_like() -> None:
    model = ToyMTL()
    x, y = toy_data()
    with pytest.raises(TypeError, match=r"scaler must be None or a torch\.amp\.GradScaler"):
        mt.MGDA(3).backward(model.losses(x, y), model.trunk.parameters(), scaler=2.0**16)  # type: ignore[arg-type]
