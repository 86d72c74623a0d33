"""Tests for IGN (kexue.methods.ign) and the DCGAN autoencoder (kexue.modules.autoencoder).

The reference here is the paper's listing written out literally: a second network refreshed with
``load_state_dict`` every step, per-sample loops for the clamp. Gradient routing is checked per loss term with
a recorder that sees, for every forward call of f, whether it ran with live or frozen parameters, whether its
input was detached and whether its output received a gradient.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from kexue.methods import IGN, FrequencyNoise, gaussian_noise, ign_iterate, ign_loss
from kexue.modules import DCGANAutoencoder

D_IN = 6


def _mlp(dtype: torch.dtype = torch.float64) -> nn.Module:
    return nn.Sequential(nn.Linear(D_IN, 5), nn.Tanh(), nn.Linear(5, D_IN)).to(dtype)


class Recorder(nn.Module):
    """Wraps f and logs each call: input (x, z or y), live/frozen parameters, input detached, output grad."""

    def __init__(self, net: nn.Module, x: Tensor, z: Tensor) -> None:
        super().__init__()
        self.net = net
        self._x, self._z = x, z
        self.calls: list[dict] = []

    def forward(self, inp: Tensor) -> Tensor:
        kind = "x" if torch.equal(inp, self._x) else "z" if torch.equal(inp, self._z) else "y"
        live = next(self.net.parameters()).requires_grad  # False under the detached-parameter frozen call
        rec = {"input": kind, "live": live, "input_grad": inp.requires_grad, "out_grad": 0.0}
        out = self.net(inp)
        if out.requires_grad:
            out.register_hook(lambda g, r=rec: r.__setitem__("out_grad", r["out_grad"] + float(g.abs().sum())))
        self.calls.append(rec)
        return out


def _routed(term: str, **kw) -> tuple[list[dict], list[Tensor]]:
    x = torch.randn(4, D_IN, dtype=torch.float64)
    z = torch.randn(4, D_IN, dtype=torch.float64)
    f = Recorder(_mlp(), x, z)
    out = ign_loss(f, x, z, **kw)
    out[term].backward()
    return f.calls, [p.grad if p.grad is not None else torch.zeros_like(p) for p in f.parameters()]


def _reached(calls: list[dict]) -> set[tuple[str, bool]]:
    """(input, live) of the calls whose output received a nonzero gradient."""
    return {(c["input"], c["live"]) for c in calls if c["out_grad"] > 0}


def _grad_norm(grads: list[Tensor]) -> float:
    return float(sum(g.abs().sum() for g in grads))


# --- gradient routing, one assertion per term --------------------------------------------------------------


def test_rec_reaches_theta_through_f_of_x() -> None:
    calls, grads = _routed("rec")
    assert _reached(calls) == {("x", True)}
    assert _grad_norm(grads) > 0


def test_idem_reaches_theta_only_through_inner_f() -> None:
    calls, grads = _routed("idem")
    # the gradient enters through the frozen outer call (which has no parameters to receive it) into the live
    # inner f(z); the live outer call on the detached y (the tightness pass) gets nothing
    assert _reached(calls) == {("y", False), ("z", True)}
    frozen = [c for c in calls if not c["live"]]
    assert len(frozen) == 1
    assert frozen[0]["input_grad"]  # y = f(z) is NOT detached in the idempotence term
    assert _grad_norm(grads) > 0


def test_idem_outer_copy_receives_no_gradient_vs_reference() -> None:
    x = torch.randn(5, D_IN, dtype=torch.float64)
    z = torch.randn(5, D_IN, dtype=torch.float64)
    f = _mlp()
    ign_loss(f, x, z, distance="l2")["idem"].backward()
    ours = [p.grad.clone() for p in f.parameters()]
    # reference: an explicit copy whose parameters DO require grad, to see what the outer call would get
    f.zero_grad()
    f_copy = copy.deepcopy(f)
    fz = f(z)
    ((f_copy(fz) - fz) ** 2).mean(1).mean().backward()
    inner = [p.grad for p in f.parameters()]
    outer = [p.grad for p in f_copy.parameters()]
    for a, b in zip(ours, inner):
        torch.testing.assert_close(a, b)
    assert _grad_norm(outer) > 0  # the outer path exists, and our gradient excludes it


@pytest.mark.parametrize("form", ["frozen_copy", "copy_free"])
def test_tight_reaches_theta_only_through_outer_f(form: str) -> None:
    for clamp_kw in ({"tight_clamp": None}, {"tight_clamp": 1.5, "clamp_denominator": "noise"}):
        calls, grads = _routed("tight", form=form, **clamp_kw)
        assert _reached(calls) == {("y", True)}
        tight_calls = [c for c in calls if c["input"] == "y" and c["live"] and c["out_grad"] > 0]
        assert all(not c["input_grad"] for c in tight_calls)  # the outer f sees a detached input
        # the known reimplementation bug (frozen f for tightness) would give exactly zero here
        assert _grad_norm(grads) > 0


def test_tight_with_rec_denominator_also_reaches_f_of_x_only_through_the_clamp() -> None:
    calls, _ = _routed("tight", tight_clamp=1.5, clamp_denominator="rec")
    assert _reached(calls) == {("y", True), ("x", True)}


# --- values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_identity_map_has_zero_rec_and_idem(distance: str) -> None:
    f = nn.Linear(D_IN, D_IN, dtype=torch.float64)
    with torch.no_grad():
        f.weight.copy_(torch.eye(D_IN))
        f.bias.zero_()
    x, z = torch.randn(3, D_IN, dtype=torch.float64), torch.randn(3, D_IN, dtype=torch.float64)
    for form in ("frozen_copy", "copy_free"):
        out = ign_loss(f, x, z, distance=distance, form=form)
        assert out["rec"].item() == 0.0
        assert out["idem"].item() == 0.0
        assert out["tight"].item() == 0.0  # identity also has delta = 0 on generated points: nothing is pushed away


def test_clamp_bounds_tight_by_a_times_rec() -> None:
    torch.manual_seed(3)
    f = _mlp()
    x = torch.randn(8, D_IN, dtype=torch.float64) * 0.1
    z = torch.randn(8, D_IN, dtype=torch.float64) * 50  # huge raw tightness
    for a in (0.1, 0.5, 1.5, 4.0):
        out = ign_loss(f, x, z, tight_clamp=a)
        if a == 0.1:  # here the raw term alone would exceed the bound, so the clamp is active
            assert out["tight_raw"].item() > a * out["rec"].item()
        assert out["tight"].item() >= -a * out["rec"].item() - 1e-12
        assert out["tight"].item() < 0


@given(a=st.floats(0.1, 5.0), scale=st.floats(0.01, 10.0), n=st.integers(2, 6))
def test_clamp_per_sample_formula(a: float, scale: float, n: int) -> None:
    torch.manual_seed(0)
    f = _mlp()
    x = torch.randn(n, D_IN, dtype=torch.float64)
    z = torch.randn(n, D_IN, dtype=torch.float64) * scale
    out = ign_loss(f, x, z, tight_clamp=a, distance="l1")
    # naive per-sample loop straight from -tanh(L~/(a R)) a R
    with torch.no_grad():
        total = 0.0
        for i in range(n):
            rec_i = (f(x[i : i + 1]) - x[i : i + 1]).abs().mean()
            y = f(z[i : i + 1])
            raw = (f(y) - y).abs().mean()
            r = max(a * float(rec_i), 1e-6)
            total += -torch.tanh(raw / r).item() * r
            assert -torch.tanh(raw / r).item() * r >= -a * float(rec_i) - 1e-12
    torch.testing.assert_close(out["tight"].item(), total / n)


def test_clamp_is_near_identity_for_small_push() -> None:
    f = _mlp()
    x = torch.randn(4, D_IN, dtype=torch.float64) * 100  # large reconstruction level
    z = torch.randn(4, D_IN, dtype=torch.float64) * 1e-3
    clamped = ign_loss(f, x, z, tight_clamp=1.5)
    raw = ign_loss(f, x, z, tight_clamp=None)
    torch.testing.assert_close(clamped["tight"], raw["tight"], rtol=1e-4, atol=0)


# --- equivalences ------------------------------------------------------------------------------------------


def _conv_ae() -> nn.Module:
    return DCGANAutoencoder(width=4, latent_dim=8).double()


def _grads(model: nn.Module, loss: Tensor) -> list[Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "kw",
    [
        {"distance": "l1", "tight_clamp": 1.5, "clamp_denominator": "rec"},
        {"distance": "l1", "tight_clamp": 1.5, "clamp_denominator": "noise"},
        {"distance": "l2", "lambda_rec": 1.0, "lambda_idem": 1.0, "lambda_tight": 0.1, "tight_clamp": None},
    ],
)
def test_copy_free_equals_frozen_copy(kw: dict) -> None:
    f = _conv_ae()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64) * 2 - 1
    z = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    a = ign_loss(f, x, z, form="frozen_copy", **kw)
    ga = _grads(f, a["loss"])
    b = ign_loss(f, x, z, form="copy_free", **kw)
    gb = _grads(f, b["loss"])
    for k in ("loss", "rec", "idem", "tight"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-9)
    for g1, g2 in zip(ga, gb):
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)


def test_su_single_loss_matches_three_term_loss() -> None:
    """Su's GAN single loss delta(x) - 2 delta(sg y) + delta(y) has the gradient of rec + idem + tight."""
    f = _mlp()
    x, z = torch.randn(5, D_IN, dtype=torch.float64), torch.randn(5, D_IN, dtype=torch.float64)
    ours = ign_loss(f, x, z, distance="l2", lambda_rec=1.0, lambda_idem=1.0, lambda_tight=1.0, tight_clamp=None)
    g_ours = _grads(f, ours["loss"])

    def delta(v: Tensor) -> Tensor:
        return ((f(v) - v) ** 2).mean(1).mean()

    y = f(z)
    su = delta(x) - 2 * delta(y.detach()) + delta(y)
    for g1, g2 in zip(g_ours, _grads(f, su)):
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)


def _listing_reference(f: nn.Module, f_copy: nn.Module, x: Tensor, z: Tensor, *, a: float | None, lam) -> Tensor:
    """The paper's listing literally: refresh the copy, 4 forwards, per-sample L1/L2 with optional clamp."""
    f_copy.load_state_dict(f.state_dict())
    for p in f_copy.parameters():
        p.requires_grad_(False)
    fx = f(x)
    fz = f(z)
    f_z = fz.detach()
    ff_z = f(f_z)
    f_fz = f_copy(fz)
    dist = (
        (lambda u, v: (u - v).abs().flatten(1).mean(1))
        if a is not None
        else (lambda u, v: ((u - v) ** 2).flatten(1).mean(1))
    )
    rec = dist(fx, x)
    idem = dist(f_fz, fz)
    raw = dist(ff_z, f_z)
    tight = -raw if a is None else -torch.tanh(raw / (a * rec).clamp_min(1e-6)) * (a * rec).clamp_min(1e-6)
    return lam[0] * rec.mean() + lam[1] * idem.mean() + lam[2] * tight.mean()


@pytest.mark.parametrize(("preset", "a", "lam"), [("paper", 1.5, (20, 20, 2.5)), ("listing", None, (1, 1, 0.1))])
@pytest.mark.parametrize("form", ["frozen_copy", "copy_free"])
def test_presets_match_paper_listing_reference(preset: str, a, lam, form: str) -> None:
    torch.manual_seed(1)
    f = _conv_ae()
    f_copy = copy.deepcopy(f)
    ign = getattr(IGN, preset)(f, form=form)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64) * 2 - 1
    z = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    ref_model = copy.deepcopy(f)
    ref = _listing_reference(ref_model, f_copy, x, z, a=a, lam=lam)
    g_ref = _grads(ref_model, ref)
    out = ign(x, z)
    g = _grads(f, out["loss"])
    torch.testing.assert_close(out["loss"], ref, rtol=1e-6, atol=1e-9)
    for g1, g2 in zip(g, g_ref):
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)
    if form == "frozen_copy":  # the frozen call's BatchNorm statistics update is discarded, as in the listing
        for b1, b2 in zip(f.buffers(), ref_model.buffers()):
            torch.testing.assert_close(b1, b2)


def test_ign_module_draws_noise_and_presets() -> None:
    f = DCGANAutoencoder(width=4, latent_dim=8)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    noise = FrequencyNoise(x)
    ign = IGN.paper(f, noise=noise)
    assert (ign.distance, ign.lambda_rec, ign.lambda_idem, ign.lambda_tight, ign.tight_clamp) == (
        "l1",
        20.0,
        20.0,
        2.5,
        1.5,
    )
    lst = IGN.listing(f)
    assert (lst.distance, lst.lambda_rec, lst.lambda_idem, lst.lambda_tight, lst.tight_clamp) == (
        "l2",
        1.0,
        1.0,
        0.1,
        None,
    )
    out = ign(x)
    assert set(out) >= {"loss", "rec", "idem", "tight"}
    assert all(torch.isfinite(v) for v in out.values())
    assert "form='frozen_copy'" in repr(ign)


# --- errors ------------------------------------------------------------------------------------------------


def test_error_output_shape() -> None:
    f = nn.Linear(D_IN, D_IN + 1)
    x = torch.randn(2, D_IN)
    with pytest.raises(ValueError, match=r"output has the input's shape"):
        ign_loss(f, x, torch.randn_like(x))


@pytest.mark.parametrize("name", ["lambda_rec", "lambda_idem", "lambda_tight"])
def test_error_negative_lambda(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be >= 0, got -1"):
        IGN(_mlp(), **{name: -1.0})
    x = torch.randn(2, D_IN, dtype=torch.float64)
    with pytest.raises(ValueError, match=name):
        ign_loss(_mlp(), x, x, **{name: -0.5})


def test_error_bad_options() -> None:
    x = torch.randn(2, D_IN, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"distance must be one of .* got 'cosine'"):
        ign_loss(_mlp(), x, x, distance="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tight_clamp must be > 0"):
        IGN(_mlp(), tight_clamp=0.0)
    with pytest.raises(ValueError, match="clamp_denominator"):
        IGN(_mlp(), clamp_denominator="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="form must be"):
        IGN(_mlp(), form="copy")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        IGN(lambda t: t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same batch size"):
        ign_loss(_mlp(), x, torch.randn(3, D_IN, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape of x"):
        ign_loss(_mlp(), x, torch.randn(2, D_IN + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ign_iterate(_mlp(), x, steps=0)
    with pytest.raises(ValueError, match="x must hold a non-empty batch"):  # before: an empty list of nothing
        ign_iterate(_mlp(), x[:0])
    for dtype in (torch.int64, torch.bool, "float32"):  # before: NotImplementedError from torch.randn
        with pytest.raises(TypeError, match=r"dtype must be a floating-point torch\.dtype"):
            gaussian_noise((2, 3), dtype=dtype)  # type: ignore[arg-type]


# --- samplers, helpers, module -----------------------------------------------------------------------------


def test_frequency_noise_matches_spectrum_statistics(gen: torch.Generator) -> None:
    images = torch.rand(64, 1, 8, 8, generator=gen, dtype=torch.float64) ** 3 * 2 - 1
    noise = FrequencyNoise(images)
    s = noise.sample(4000, generator=gen)
    assert s.shape == (4000, 1, 8, 8)
    assert s.dtype == torch.float64
    spec = torch.fft.fft2(s)
    # the real part of the inverse FFT keeps the Hermitian part of the spectrum, whose mean is the image
    # spectrum's mean (real images have a Hermitian mean spectrum)
    se = (noise.std_real.max() + noise.std_imag.max()) / 4000**0.5
    torch.testing.assert_close(spec.real.mean(0), noise.mean_real, atol=float(5 * se), rtol=0)
    torch.testing.assert_close(spec.imag.mean(0), noise.mean_imag, atol=float(5 * se), rtol=0)
    torch.testing.assert_close(s.mean(), images.mean(), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="N >= 2"):
        FrequencyNoise(images[:1])


def test_gaussian_noise_and_iterate() -> None:
    z = gaussian_noise((3, 1, 4, 4), dtype=torch.float64)
    assert z.shape == (3, 1, 4, 4)
    assert z.dtype == torch.float64
    outs = ign_iterate(lambda t: 0.5 * t, z, steps=3)
    torch.testing.assert_close(outs[2], z / 8)
    ign = IGN(nn.Identity())
    torch.testing.assert_close(ign.generate(z, steps=2), z)
    torch.testing.assert_close(ign.project(z), z)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_autoencoder_shapes_range_float64(norm: str) -> None:
    f = DCGANAutoencoder(width=8, latent_dim=16, norm=norm).double()  # type: ignore[arg-type]
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64) * 2 - 1
    y = f(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float64
    assert y.abs().max().item() < 1
    assert f.encode(x).shape == (3, 16, 1, 1)
    f32 = DCGANAutoencoder(width=8, latent_dim=16, norm=norm, image_size=32)
    assert f32(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_group_norm_autoencoder_is_batch_independent() -> None:
    f = DCGANAutoencoder(width=8, latent_dim=16, norm="group").double()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(f(x)[:2], f(x[:2]))


def test_autoencoder_errors() -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        DCGANAutoencoder(width=4)(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="norm must be"):
        DCGANAutoencoder(norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size must be 28 or 32"):
        DCGANAutoencoder(image_size=64)
    with pytest.raises(ValueError, match="width must be >= 1"):
        DCGANAutoencoder(width=0)


@pytest.mark.parametrize("kw", [{"distance": "l2", "tight_clamp": None}, {"distance": "l1", "tight_clamp": 1.5}])
def test_gradcheck_float64_wrt_data(kw: dict) -> None:
    # Only x may be gradchecked: the loss value depends on z also through the stop-gradient paths, whose
    # derivative is deliberately dropped. x enters rec (and the clamp's denominator) with full gradient.
    f = _mlp()
    x = torch.randn(3, D_IN, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, D_IN, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ign_loss(f, a, z, **kw)["loss"], (x,))


# --- hyperparameter and input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lambda_rec": float("inf")}, ValueError, "lambda_rec must be finite"),
        ({"lambda_idem": float("nan")}, ValueError, "lambda_idem must be finite"),
        ({"lambda_tight": float("inf")}, ValueError, "lambda_tight must be finite"),
        ({"lambda_tight": True}, TypeError, "lambda_tight must be a real number"),
        ({"tight_clamp": float("inf")}, ValueError, "tight_clamp must be finite"),
        ({"tight_clamp": float("nan")}, ValueError, "tight_clamp must be finite"),
        ({"tight_clamp": -1.0}, ValueError, "tight_clamp must be > 0"),
        ({"tight_clamp": "1.5"}, TypeError, "tight_clamp must be a real number"),
    ],
)
def test_non_finite_hyperparameters_rejected(kwargs: dict, error: type, match: str) -> None:
    """inf weights and an inf clamp used to be accepted: the loss became inf or NaN (tanh(0) * inf)."""
    x = torch.randn(2, D_IN, dtype=torch.float64)
    with pytest.raises(error, match=match):
        ign_loss(_mlp(), x, x, **kwargs)
    with pytest.raises(error, match=match):
        IGN(_mlp(), **kwargs)


def test_bad_data_rejected_naming_the_argument() -> None:
    x = torch.randn(3, D_IN, dtype=torch.float64)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        ign_loss(_mlp(), bad, x)
    with pytest.raises(ValueError, match="z contains NaN"):
        IGN(_mlp())(x, bad)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        ign_loss(_mlp(), x.long(), x)
    with pytest.raises(TypeError, match="z must have the dtype and device of x"):
        ign_loss(_mlp(), x, x.float())
    with pytest.raises(ValueError, match="x must not be empty"):
        ign_loss(_mlp(), x[:0], x[:0])
    with pytest.raises(ValueError, match="x must have at least 2 dimensions"):
        IGN(_mlp())(torch.randn(D_IN, dtype=torch.float64))
    with pytest.raises(TypeError, match="steps must be an integer"):
        ign_iterate(_mlp(), x, steps=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images contains NaN"):
        FrequencyNoise(torch.full((4, 1, 4, 4), float("nan")))
    with pytest.raises(TypeError, match="n must be an integer"):
        FrequencyNoise(torch.randn(4, 1, 4, 4)).sample(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape\[1\] must be >= 0"):
        gaussian_noise((2, -1))
