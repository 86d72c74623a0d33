"""Idempotent Generative Network (IGN): one network f trained so that f(f(z)) = f(z) and f(x) = x on data.

Paper: Shocher et al., "Idempotent Generative Network", ICLR 2024, arXiv 2311.01462. Article: Su Jianlin,
"幂等生成网络IGN：试图将判别和生成合二为一的GAN", https://kexue.fm/archives/9969.

With a distance ``D`` (per sample) and ``delta_theta(y) = D(f_theta(y), y)``, the three losses are::

    L_rec   = E_x delta_theta(x)                                   real data are fixed points
    L_idem  = E_z D(f_theta'(f_theta(z)), f_theta(z))              gradient only through the INNER f(z)
    L_tight = -E_z D(f_theta(sg f_theta'(z)), sg f_theta'(z))      gradient only through the OUTER f
    L       = lambda_rec L_rec + lambda_idem L_idem + lambda_tight L_tight

where ``theta'`` is a frozen copy of ``theta`` (same values, no gradient). The frozen copy is implemented
without copying any weight: the copy's forward pass is :func:`torch.func.functional_call` on the same module
with ``p.detach()`` of every parameter (and clones of the buffers, so a BatchNorm copy's running-statistics
update is discarded exactly as the paper's ``f_copy.load_state_dict(f.state_dict())`` per step discards it).

Su's article shows that this is a GAN whose critic is the reconstruction energy ``delta`` with all parameters
shared between generator and critic, and gives a copy-free single loss built from the identity
``grad[delta(y) - delta(sg y)] = inner-only gradient of delta(y)``::

    L = lambda_rec delta(x) + lambda_idem [delta(y) - delta(sg y)] + lambda_tight L_tight(delta(sg y))
    with y = f(z)

(``form="copy_free"``; with unit weights and no clamp this is Su's ``delta(x) - 2 delta(sg y) + delta(y)``).

The tightness term is smoothly clamped per sample (paper, Sec. 3 / App.)::

    L_tight(z) = -tanh(L~_tight(z) / (a * R)) * a * R,     a = tight_clamp = 1.5

so the push-away term is bounded by ``a * R``. Reimplementations disagree on the reconstruction level ``R``:
``clamp_denominator="rec"`` (most) uses the per-sample real-data reconstruction loss ``D(f(x_i), x_i)`` of the
paired batch element, with gradient; ``"noise"`` (xyfJASON's IGN) uses ``D(f(z_i), z_i)`` with both detached.
``R`` is guarded by ``clamp_min(1e-6)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from kexue._validate import check_choice, check_float_tensor, check_int, check_real

__all__ = [
    "IGN",
    "FrequencyNoise",
    "gaussian_noise",
    "ign_iterate",
    "ign_loss",
]

Distance = Literal["l1", "l2"]
ClampDenominator = Literal["rec", "noise"]
Form = Literal["frozen_copy", "copy_free"]

_DISTANCES = ("l1", "l2")
_DENOMINATORS = ("rec", "noise")
_FORMS = ("frozen_copy", "copy_free")
_EPS = 1e-6


def _per_sample_distance(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """Per-sample ``D(a, b)`` (B,): mean |a-b| (``"l1"``) or mean (a-b)^2 (``"l2"``) over all but dim 0."""
    diff = a - b
    d = diff.abs() if kind == "l1" else diff.square()
    return d.flatten(1).mean(1)


def _frozen_forward(model: nn.Module, y: Tensor) -> Tensor:
    """``f_theta'(y)``: the same module run with detached parameters and cloned buffers (no weight copy).

    Gradients flow into ``y`` but never into the module's parameters. Buffers are cloned so BatchNorm's
    running-statistics update during this call is thrown away, as with a ``load_state_dict`` copy refreshed
    every step.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return functional_call(model, (params, buffers), (y,))


def _check_output(out: Tensor, inp: Tensor, what: str) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != inp.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"IGN needs a model whose output has the input's shape: f({what}) has shape {shape}, "
            f"{what} has shape {tuple(inp.shape)}"
        )
    return out


def _check_options(
    distance: str,
    lambda_rec: float,
    lambda_idem: float,
    lambda_tight: float,
    tight_clamp: float | None,
    clamp_denominator: str,
    form: str,
) -> None:
    check_choice("distance", distance, _DISTANCES)
    # finite weights: an inf weight turns the loss into inf or NaN (inf * 0)
    check_real("lambda_rec", lambda_rec, low=0)
    check_real("lambda_idem", lambda_idem, low=0)
    check_real("lambda_tight", lambda_tight, low=0)
    if tight_clamp is not None:
        # finite: the clamp -tanh(L / (a R)) a R is 0 * inf = NaN for a = inf (use None for no clamp)
        check_real("tight_clamp", tight_clamp, low=0, low_inclusive=False)
    check_choice("clamp_denominator", clamp_denominator, _DENOMINATORS)
    check_choice("form", form, _FORMS)


def _check_data(x: Tensor, z: Tensor) -> None:
    check_float_tensor("x", x, min_ndim=2)
    check_float_tensor("z", z, min_ndim=2)
    if z.shape[1:] != x.shape[1:]:
        raise ValueError(f"z must have the shape of x past the batch dim: x {tuple(x.shape)}, z {tuple(z.shape)}")
    if z.dtype != x.dtype or z.device != x.device:
        raise TypeError(f"z must have the dtype and device of x ({x.dtype}, {x.device}), got {z.dtype}, {z.device}")


def _ign_core(
    model: nn.Module,
    x: Tensor,
    z: Tensor,
    *,
    distance: str,
    lambda_rec: float,
    lambda_idem: float,
    lambda_tight: float,
    tight_clamp: float | None,
    clamp_denominator: str,
    form: str,
) -> dict[str, Tensor]:
    _check_data(x, z)
    if tight_clamp is not None and clamp_denominator == "rec" and x.shape[0] != z.shape[0]:
        raise ValueError(
            "clamp_denominator='rec' pairs each noise sample with a real one: x and z need the same batch "
            "size, "
            f"got {x.shape[0]} and {z.shape[0]}"
        )
    # reconstruction: delta(x) reaches theta through f(x)
    fx = _check_output(model(x), x, "x")
    rec_i = _per_sample_distance(fx, x, distance)  # (B,)
    # y = f(z): the generated sample, with gradient
    fz = _check_output(model(z), z, "z")
    fz_sg = fz.detach()
    # tightness: the LIVE f applied to the DETACHED y, so the gradient flows only through the outer f
    f_fz_sg = model(fz_sg)
    tight_raw_i = _per_sample_distance(f_fz_sg, fz_sg, distance)  # delta(sg y), (B,)
    if form == "frozen_copy":
        # idempotence: the FROZEN f applied to y (not detached): the gradient flows only through the inner f
        idem_i = _per_sample_distance(_frozen_forward(model, fz), fz, distance)
    else:
        # Su's copy-free identity: grad[delta(y) - delta(sg y)] is the inner-only gradient of delta(y). Adding
        # delta(sg y).detach() back restores the value delta(y) without changing the gradient.
        idem_i = _per_sample_distance(model(fz), fz, distance) - tight_raw_i + tight_raw_i.detach()
    if tight_clamp is None:
        tight_i = -tight_raw_i
    else:
        # "rec": the paired real sample's reconstruction loss, with gradient; "noise": D(f(z), z), detached
        # (the denominator one public reimplementation uses).
        level = rec_i if clamp_denominator == "rec" else _per_sample_distance(fz.detach(), z.detach(), distance)
        scale = (tight_clamp * level).clamp_min(_EPS)
        tight_i = -torch.tanh(tight_raw_i / scale) * scale
    rec, idem, tight = rec_i.mean(), idem_i.mean(), tight_i.mean()
    loss = lambda_rec * rec + lambda_idem * idem + lambda_tight * tight
    return {"loss": loss, "rec": rec, "idem": idem, "tight": tight, "tight_raw": tight_raw_i.mean().detach()}


def ign_loss(
    model: nn.Module,
    x: Tensor,
    z: Tensor,
    *,
    distance: Distance = "l1",
    lambda_rec: float = 20.0,
    lambda_idem: float = 20.0,
    lambda_tight: float = 2.5,
    tight_clamp: float | None = 1.5,
    clamp_denominator: ClampDenominator = "rec",
    form: Form = "frozen_copy",
) -> dict[str, Tensor]:
    """The IGN objective ``lambda_rec L_rec + lambda_idem L_idem + lambda_tight L_tight`` and its parts.

    Defaults are the paper's configuration (L1, 20/20/2.5, tanh clamp a=1.5; App. C as reported by
    reimplementations). Four forward passes of ``model``: f(x), f(z), f(sg f(z)) and f_frozen(f(z)) (or, for
    ``form="copy_free"``, f(f(z))). No weight is copied.

    Args:
        model: f, mapping ``(B, *S)`` to ``(B, *S)`` (e.g. :class:`kexue.modules.DCGANAutoencoder`).
        x: real data ``(B, *S)``, scaled like the model's output (``[-1, 1]`` for a tanh output).
        z: noise ``(B', *S)`` (``B' = B`` when ``clamp_denominator="rec"`` and the clamp is on).
        distance: ``"l1"`` (mean absolute error per sample, the paper's) or ``"l2"`` (mean squared error per
            sample, the paper's simplified listing).
        lambda_rec: weight of the reconstruction loss (>= 0).
        lambda_idem: weight of the idempotence loss (>= 0).
        lambda_tight: weight of the tightness loss (>= 0); 0 removes it.
        tight_clamp: ``a`` of the smooth clamp ``-tanh(L~/(a R)) a R``; ``None`` uses the raw ``-L~``.
        clamp_denominator: ``"rec"`` (R = paired ``D(f(x_i), x_i)``, with gradient) or ``"noise"``
            (R = ``D(f(z_i), z_i)``, detached).
        form: ``"frozen_copy"`` (the paper's losses with ``theta'`` as detached parameters) or ``"copy_free"``
            (Su's single loss with stop-gradients; identical gradients).

    Returns:
        ``{"loss", "rec", "idem", "tight", "tight_raw"}``, scalars (batch means): ``tight`` is the (clamped,
        negative) tightness loss, ``tight_raw`` the detached unclamped ``D(f(sg y), sg y)``.

    Raises:
        TypeError: non-float ``x``/``z`` (or of different dtypes/devices); weights or clamp not real numbers.
        ValueError: unknown distance/denominator/form, a negative or infinite weight, a clamp that is not finite
            and > 0, empty or NaN/inf ``x``/``z``, a model whose output shape differs from its input's, or
            mismatched x/z shapes.

    Example:
        >>> import torch
        >>> from kexue.modules import DCGANAutoencoder
        >>> f = DCGANAutoencoder(width=8, latent_dim=16)
        >>> x = torch.rand(4, 1, 28, 28) * 2 - 1
        >>> out = ign_loss(f, x, torch.randn_like(x))
        >>> out["loss"].backward()
        >>> sorted(out)
        ['idem', 'loss', 'rec', 'tight', 'tight_raw']
    """
    _check_options(distance, lambda_rec, lambda_idem, lambda_tight, tight_clamp, clamp_denominator, form)
    return _ign_core(
        model,
        x,
        z,
        distance=distance,
        lambda_rec=lambda_rec,
        lambda_idem=lambda_idem,
        lambda_tight=lambda_tight,
        tight_clamp=tight_clamp,
        clamp_denominator=clamp_denominator,
        form=form,
    )


@torch.no_grad()
def ign_iterate(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor, *, steps: int = 1) -> list[Tensor]:
    """Apply f repeatedly: ``[f(x), f(f(x)), ..., f^steps(x)]``, without gradient.

    One step from noise is IGN's generator (``x = f(z)``); further steps are the paper's refinement
    ``f(f(z))``; from a corrupted image it is the projection onto the learned set. The model is run in its
    current mode: call ``model.eval()`` first to use BatchNorm running statistics.

    Args:
        model: f, shape-preserving.
        x: inputs ``(B, *S)``: noise ``z`` or corrupted images.
        steps: number of applications (>= 1).

    Returns:
        ``steps`` tensors of shape ``(B, *S)``.

    Raises:
        TypeError: ``x`` not a tensor; ``steps`` not an integer.
        ValueError: ``x`` without a batch or with an empty one; ``steps`` < 1; ``f`` changed the shape.

    Example:
        >>> import torch
        >>> outs = ign_iterate(torch.tanh, torch.zeros(2, 3), steps=3)
        >>> len(outs), outs[-1].shape
        (3, torch.Size([2, 3]))
    """
    check_int("steps", steps, low=1)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:  # dtype and values are the model's business (it may take any input)
        raise ValueError(f"x must hold a non-empty batch (B, *S), got shape {tuple(x.shape)}")
    outs = []
    y = x
    for _ in range(steps):
        y = model(y)
        if y.shape != x.shape:
            raise ValueError(f"f must preserve the shape: got {tuple(y.shape)} from {tuple(x.shape)}")
        outs.append(y)
    return outs


def gaussian_noise(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Standard normal noise of image shape, ``z ~ N(0, I)`` (the option the paper compares to).

    Raises:
        ValueError: a negative size in ``shape``.
        TypeError: a non-integer size; a ``dtype`` that is not a floating-point ``torch.dtype``.

    Example:
        >>> gaussian_noise((2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """
    for i, n in enumerate(shape):
        check_int(f"shape[{i}]", n, low=0)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype (normal noise), got {dtype!r}")
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


class FrequencyNoise(nn.Module):
    """The paper's noise: Gaussians with the real images' per-frequency statistics, through an inverse FFT.

    Fit: ``X = fft2(images)`` over the last two dims; per frequency (and channel) the mean and standard
    deviation of ``Re X`` and ``Im X``. Sample: draw ``Re, Im ~ N(mean, std)`` independently per frequency and
    return ``Re(ifft2(Re + i Im))`` (as xyfJASON's reimplementation does; the real part of a non-Hermitian
    spectrum has a smaller variance than the images, which the paper's formulation keeps).

    Args:
        images: ``(N, C, H, W)`` real images, scaled as the model sees them (``[-1, 1]``); the paper's
            reimplementations use about 1000.

    Shapes:
        ``sample(n)`` -> ``(n, C, H, W)`` with the dtype/device of the buffers.

    Example:
        >>> import torch
        >>> noise = FrequencyNoise(torch.rand(16, 1, 28, 28) * 2 - 1)
        >>> noise.sample(3).shape
        torch.Size([3, 1, 28, 28])
    """

    mean_real: Tensor
    std_real: Tensor
    mean_imag: Tensor
    std_imag: Tensor

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        check_float_tensor("images", images, ndim=4)  # finite too: a NaN image would make every sample NaN
        if images.shape[0] < 2:
            raise ValueError(f"images must be (N, C, H, W) with N >= 2, got {tuple(images.shape)}")
        spec = torch.fft.fft2(images.detach())  # (N, C, H, W) complex
        self.register_buffer("mean_real", spec.real.mean(0))
        self.register_buffer("std_real", spec.real.std(0))
        self.register_buffer("mean_imag", spec.imag.mean(0))
        self.register_buffer("std_imag", spec.imag.std(0))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` noise images ``(n, C, H, W)``."""
        check_int("n", n, low=1)
        shape = (n, *self.mean_real.shape)
        kw: dict[str, Any] = {
            "generator": generator,
            "device": self.mean_real.device,
            "dtype": self.mean_real.dtype,
        }
        real = self.mean_real + self.std_real * torch.randn(shape, **kw)
        imag = self.mean_imag + self.std_imag * torch.randn(shape, **kw)
        return torch.fft.ifft2(torch.complex(real, imag)).real

    def forward(self, n: int) -> Tensor:
        return self.sample(n)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean_real.shape)}"


class IGN(nn.Module):
    """Idempotent Generative Network: wraps f and returns the IGN losses for a batch of real data.

    ``IGN(model)`` uses the paper's configuration (L1, lambda 20/20/2.5, tanh clamp a=1.5); :meth:`paper` and
    :meth:`listing` (the paper's simplified PyTorch listing: L2, 1/1/0.1, no clamp) build the two presets. See
    :func:`ign_loss` for every argument and the module docstring for the equations and stop-gradients.

    Args:
        model: f, shape-preserving, e.g. :class:`kexue.modules.DCGANAutoencoder`.
        distance, lambda_rec, lambda_idem, lambda_tight, tight_clamp, clamp_denominator, form: as in
            :func:`ign_loss`.
        noise: draws ``z`` when :meth:`forward` is called without one: a callable ``noise(n) -> (n, *S)``
            such as a :class:`FrequencyNoise`; ``None`` draws ``N(0, I)`` of the shape of ``x``.

    Example:
        >>> import torch
        >>> from kexue.modules import DCGANAutoencoder
        >>> ign = IGN.listing(DCGANAutoencoder(width=8, latent_dim=16))
        >>> x = torch.rand(4, 1, 28, 28) * 2 - 1
        >>> out = ign(x)
        >>> out["loss"].backward()
        >>> ign.generate(torch.randn(2, 1, 28, 28), steps=2).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        distance: Distance = "l1",
        lambda_rec: float = 20.0,
        lambda_idem: float = 20.0,
        lambda_tight: float = 2.5,
        tight_clamp: float | None = 1.5,
        clamp_denominator: ClampDenominator = "rec",
        form: Form = "frozen_copy",
        noise: Callable[[int], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        _check_options(distance, lambda_rec, lambda_idem, lambda_tight, tight_clamp, clamp_denominator, form)
        self.model = model
        self.distance: Distance = distance
        self.lambda_rec = float(lambda_rec)
        self.lambda_idem = float(lambda_idem)
        self.lambda_tight = float(lambda_tight)
        self.tight_clamp = None if tight_clamp is None else float(tight_clamp)
        self.clamp_denominator: ClampDenominator = clamp_denominator
        self.form: Form = form
        self.noise = noise

    @classmethod
    def paper(cls, model: nn.Module, **overrides: Any) -> IGN:
        """The paper's configuration: L1, lambda_rec = lambda_idem = 20, lambda_tight = 2.5, a = 1.5."""
        kw: dict[str, Any] = {
            "distance": "l1",
            "lambda_rec": 20.0,
            "lambda_idem": 20.0,
            "lambda_tight": 2.5,
            "tight_clamp": 1.5,
        }
        return cls(model, **{**kw, **overrides})

    @classmethod
    def listing(cls, model: nn.Module, **overrides: Any) -> IGN:
        """The paper's simplified listing: L2 (MSE) distance, weights 1 / 1 / 0.1, no clamp."""
        kw: dict[str, Any] = {
            "distance": "l2",
            "lambda_rec": 1.0,
            "lambda_idem": 1.0,
            "lambda_tight": 0.1,
            "tight_clamp": None,
        }
        return cls(model, **{**kw, **overrides})

    def sample_noise(self, n: int, like: Tensor) -> Tensor:
        """``n`` noise inputs shaped like ``like[0]``, on its device and dtype."""
        if self.noise is None:
            return gaussian_noise((n, *like.shape[1:]), device=like.device, dtype=like.dtype)
        return self.noise(n).to(device=like.device, dtype=like.dtype)

    def forward(self, x: Tensor, z: Tensor | None = None) -> dict[str, Tensor]:
        """Losses for real ``x (B, *S)`` and noise ``z (B, *S)`` (drawn from ``noise`` when omitted)."""
        check_float_tensor("x", x, min_ndim=2, finite=False)  # values are checked with z in the core
        if z is None:
            z = self.sample_noise(x.shape[0], x)
        return _ign_core(
            self.model,
            x,
            z,
            distance=self.distance,
            lambda_rec=self.lambda_rec,
            lambda_idem=self.lambda_idem,
            lambda_tight=self.lambda_tight,
            tight_clamp=self.tight_clamp,
            clamp_denominator=self.clamp_denominator,
            form=self.form,
        )

    def generate(self, z: Tensor, *, steps: int = 1) -> Tensor:
        """``f^steps(z)`` without gradient: one-step generation (``steps=1``) or refinement."""
        return ign_iterate(self.model, z, steps=steps)[-1]

    def project(self, x: Tensor, *, steps: int = 1) -> Tensor:
        """Project corrupted inputs ``x (B, *S)`` onto the learned set: ``f^steps(x)`` without gradient."""
        return ign_iterate(self.model, x, steps=steps)[-1]

    def extra_repr(self) -> str:
        clamp = "none" if self.tight_clamp is None else f"{self.tight_clamp} ({self.clamp_denominator})"
        return (
            f"distance={self.distance!r}, "
            f"lambdas=({self.lambda_rec}, {self.lambda_idem}, {self.lambda_tight}), "
            f"tight_clamp={clamp}, form={self.form!r}"
        )
