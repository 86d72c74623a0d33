"""Gradient-combination rules: pure functions of ``(n, D)`` task gradients (or their ``(n, n)`` Gram matrix).

* :func:`gradient_normalization`: ``sum_i g_i / ||g_i||`` (Part 1, Eq. 13, https://kexue.fm/archives/8870).
* :func:`min_norm_coefficients`, :func:`mgda_direction`: MGDA's min-norm point of the convex hull (Part 2,
  https://kexue.fm/archives/8896; Sener & Koltun 2018, arXiv 1810.04650).
* :func:`primary_auxiliary_coefficients`, :func:`primary_auxiliary_projection`: a main task whose update must
  not increase the auxiliary tasks (Part 3, https://kexue.fm/archives/8907).
* :func:`l2_auxiliary_projection`: L2 decay as an auxiliary task (Part 3, application a).

Scale safety: a task gradient may be ``1e20`` or ``1e-30`` (a loss scaled by a large constant, a vanishing
task). Squaring such a vector overflows or underflows float32 (``(1e20)^2 = 1e40 > 3.4e38``), which used to
drop a task silently or crash the solver. Every rule therefore divides each gradient by its largest absolute
entry before forming norms or Gram matrices (so they only see numbers in ``[-1, 1]``), keeps the per-row
scales and the small ``n x n`` quantities in float64, and forms the result from the normalised rows. The
results are exactly those of the textbook formulas, which are invariant to these rescalings; the tests check
them with gradients scaled by ``1e+-20`` and ``1e+-30`` in float32 and float64.

Inputs must be floating-point, finite and non-empty (``TypeError`` / ``ValueError`` otherwise); outputs have
the input's dtype and device. The Frank-Wolfe and coordinate-descent solvers run on the CPU in float64 (the
Gram matrix is ``n x n``, so this is cheap but synchronises with the device).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from kexue._validate import check_float_tensor, check_int, check_real

from ._inputs import check_eps

__all__ = [
    "gradient_normalization",
    "l2_auxiliary_projection",
    "mgda_direction",
    "min_norm_coefficients",
    "primary_auxiliary_coefficients",
    "primary_auxiliary_projection",
]


# ------------------------------------------------------------------------------------------ scale-safe core


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for sums of squares of numbers in [-1, 1]: float32 for 16-bit inputs (a sum of
    more than 65504 ones overflows float16), the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _normalise_rows(G: Tensor) -> tuple[Tensor, Tensor]:
    """``(G / s[:, None], s)`` with ``s_i = max_j |G_ij|`` (1 for an all-zero row); ``s`` in float64.

    Each normalised row has max-abs 1, so its squared norm lies in ``[1, D]`` and cannot overflow or underflow
    whatever the scale of the original row.
    """
    s = G.detach().abs().amax(dim=1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return G / s.unsqueeze(1), s.double()


def _check_grads(grads: Tensor, name: str = "grads") -> Tensor:
    check_float_tensor(name, grads, ndim=2)
    if grads.shape[0] < 1 or grads.shape[1] < 1:
        raise ValueError(f"{name} must be a (num_tasks, dim) matrix with both sizes >= 1, got {tuple(grads.shape)}")
    return grads


def _check_gram(gram: Tensor, min_n: int) -> np.ndarray:
    """Validate a Gram matrix and return it as a float64 array divided by its largest diagonal entry.

    The solvers' answers are invariant to a positive rescaling of the Gram matrix; dividing by the largest
    squared norm keeps every entry in ``[-1, 1]`` (Cauchy-Schwarz) for the iterations.
    """
    check_float_tensor("gram", gram, ndim=2)
    if gram.shape[0] != gram.shape[1] or gram.shape[0] < min_n:
        what = "a square (n, n) matrix" if min_n <= 1 else f"a square (n, n) matrix with n >= {min_n}"
        raise ValueError(f"gram must be {what}, got shape {tuple(gram.shape)}")
    M = gram.detach().double().cpu().numpy()
    diag = M.diagonal()
    if (diag < 0).any():
        i = int(np.argmax(diag < 0))
        raise ValueError(f"gram must be a Gram matrix (non-negative diagonal), got gram[{i}, {i}]={diag[i]:.6g}")
    top = float(diag.max())
    return M / top if top > 0 else M


def _gram_of_rows(Gn: Tensor, r: Tensor | None = None) -> Tensor:
    """Float64 Gram matrix of the normalised rows, optionally rescaled to ``diag(r) Gram diag(r)``."""
    A = Gn.to(_acc_dtype(Gn.dtype))
    M = (A @ A.T).double()
    if r is not None:
        M = M * (r[:, None] * r[None, :])
    return M


# ---------------------------------------------------------------------------------- gradient normalisation


def gradient_normalization(grads: Tensor, *, eps: float = 0.0) -> tuple[Tensor, Tensor]:
    """Article Eq. 13: ``u = sum_i g_i / (||g_i|| + eps)`` over the shared parameters.

    Invariant to multiplying any loss by a positive constant and to adding a constant to it (Part 1,
    "理想目标"). For two tasks ``u`` has a non-negative inner product with both gradients (Part 2). Norms are
    taken of max-abs-normalised rows and kept in float64, so a task gradient of size ``1e20`` or ``1e-30`` is
    neither dropped nor allowed to overflow.

    Args:
        grads: ``(n, D)`` task gradients (one flattened row per task), floating point, finite.
        eps: added to each norm. The default 0 is the article's formula; an all-zero gradient then contributes
            nothing (weight 0) instead of dividing by zero. A positive ``eps`` makes tiny gradients
            (``||g_i|| << eps``) count less, i.e. gives up the scale invariance below that size.

    Returns:
        ``(u, weights)``: the ``(D,)`` direction and the ``(n,)`` coefficients ``1 / (||g_i|| + eps)`` (in the
        input dtype: a coefficient beyond its range, e.g. ``1e40`` in float32, is ``inf`` there while ``u`` is
        exact).

    Raises:
        TypeError: ``grads`` is not a floating-point tensor.
        ValueError: ``grads`` is not ``(n, D)``, is empty or non-finite; ``eps`` negative or non-finite.

    Example:
        >>> import torch
        >>> gradient_normalization(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))[0]
        tensor([1., 1.])
    """
    G = _check_grads(grads)
    e = check_eps(eps)
    Gn, s = _normalise_rows(G)
    nrm_n = torch.linalg.vector_norm(Gn, dim=1, dtype=_acc_dtype(G.dtype)).double()  # in [1, sqrt(D)] or 0
    norms = s * nrm_n  # ||g_i||, exact up to rounding, in float64
    if e == 0.0:
        # g_i / ||g_i|| = Gn_i / ||Gn_i||: the scale s_i cancels; zero rows get 0
        c = torch.where(nrm_n > 0, 1.0 / nrm_n.clamp_min(1e-300), torch.zeros_like(nrm_n))
        w = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    else:
        c = s / (norms + e)  # coefficient of Gn_i: s_i / (||g_i|| + eps)
        w = 1.0 / (norms + e)
    u = c.to(G.dtype) @ Gn
    return u, w.to(G.dtype)


# ------------------------------------------------------------------------------------------------------ MGDA


def _two_task_gamma(g11: float, g12: float, g22: float) -> float:
    """Weight of g1 in the min-norm point of segment [g1, g2]: clip(<g2 - g1, g2> / ||g1 - g2||^2, 0, 1)."""
    denom = g11 + g22 - 2.0 * g12
    if denom <= 0.0:  # g1 == g2: any point is the min-norm point
        return 0.5
    return min(max((g22 - g12) / denom, 0.0), 1.0)


def _min_norm(M: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Frank-Wolfe with away steps on the simplex for a float64 Gram matrix with entries in [-1, 1]."""
    n = M.shape[0]
    if n == 1:
        return np.ones(1)
    if n == 2:
        g = _two_task_gamma(float(M[0, 0]), float(M[0, 1]), float(M[1, 1]))
        return np.array([g, 1.0 - g])
    alpha = np.full(n, 1.0 / n)
    stop = tol * max(float(M.diagonal().max()), 1e-300)
    for _ in range(max_iter):
        Ma = M @ alpha
        uu = float(alpha @ Ma)
        s = int(np.argmin(Ma))
        if uu - float(Ma[s]) <= stop:  # Frank-Wolfe duality gap: <g_i, u> >= ||u||^2 - gap for every i
            break
        active = np.flatnonzero(alpha > 0)
        v = int(active[np.argmax(Ma[active])])
        if uu - float(Ma[s]) >= float(Ma[v]) - uu:
            # toward step to vertex g_s: min over t in [0, 1] of ||(1 - t) u + t g_s||^2 (two-task problem)
            t = 1.0 - _two_task_gamma(uu, float(Ma[s]), float(M[s, s]))
            alpha *= 1.0 - t
            alpha[s] += t
        else:
            # away step from g_v (Lacoste-Julien & Jaggi 2015): linear convergence on the simplex, where plain
            # Frank-Wolfe zig-zags at O(1/k) whenever the min-norm point lies on a face
            t_max = alpha[v] / (1.0 - alpha[v]) if alpha[v] < 1.0 else 1e300
            curv = uu - 2.0 * float(Ma[v]) + float(M[v, v])
            t = t_max if curv <= 0 else min((float(Ma[v]) - uu) / curv, t_max)
            alpha *= 1.0 + t
            alpha[v] -= t
            if t >= t_max:
                alpha[v] = 0.0
        alpha = np.maximum(alpha, 0.0)
        alpha /= alpha.sum()
    return alpha


def _check_solver(max_iter: int, tol: float, iter_name: str) -> tuple[int, float]:
    return check_int(iter_name, max_iter, low=1), check_real("tol", tol, low=0.0)


def min_norm_coefficients(gram: Tensor, *, max_iter: int = 250, tol: float = 1e-10) -> Tensor:
    """MGDA: ``alpha = argmin_{alpha in simplex} ||sum_i alpha_i g_i||^2`` from the Gram matrix ``<g_i, g_j>``.

    Part 2 (https://kexue.fm/archives/8896), Sener & Koltun 2018 (arXiv 1810.04650): two tasks use the closed
    form ``gamma = clip(<g2 - g1, g2> / ||g1 - g2||^2, 0, 1)`` (the foot of the triangle's altitude); more
    tasks use Frank-Wolfe from the uniform point, with ``tau = argmin_i <g_i, u>`` and the exact line search
    towards ``g_tau`` (itself the two-task problem), plus away steps (Lacoste-Julien & Jaggi 2015) so that it
    converges linearly rather than at O(1/k). Runs in float64 on the CPU on the Gram matrix divided by its
    largest diagonal entry (the answer does not depend on that positive factor).

    Args:
        gram: ``(n, n)`` Gram matrix of the task gradients (floating point, finite, non-negative diagonal).
        max_iter: Frank-Wolfe iterations (>= 1).
        tol: stop when the Frank-Wolfe duality gap ``alpha^T M alpha - min_i (M alpha)_i`` falls below
            ``tol * max(diag M)`` (>= 0).

    Returns:
        ``(n,)`` non-negative coefficients summing to 1 (dtype/device of ``gram``).

    Raises:
        TypeError: ``gram`` is not a floating-point tensor (an integer Gram matrix used to be truncated to
            integer coefficients); ``max_iter``/``tol`` of the wrong type.
        ValueError: not square, empty, non-finite, a negative diagonal entry, ``max_iter < 1`` or ``tol < 0``.

    Example:
        >>> import torch
        >>> min_norm_coefficients(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))  # 4/5, 1/5
        tensor([0.8000, 0.2000])
    """
    M = _check_gram(gram, 1)
    iters, t = _check_solver(max_iter, tol, "max_iter")
    alpha = _min_norm(M, iters, t)
    return torch.as_tensor(alpha, dtype=gram.dtype, device=gram.device)


def mgda_direction(grads: Tensor, *, max_iter: int = 250, tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """MGDA update ``u = sum_i alpha_i g_i`` with :func:`min_norm_coefficients`; ``<g_i, u> >= ||u||^2 >= 0``.

    The Gram matrix is formed from max-abs-normalised rows and rescaled in float64 relative to the largest row,
    so gradients of size ``1e20`` (whose squares overflow float32) or ``1e-30`` are handled exactly.

    Args:
        grads: ``(n, D)`` task gradients (floating point, finite).
        max_iter: Frank-Wolfe iterations, see :func:`min_norm_coefficients`.
        tol: Frank-Wolfe tolerance, see :func:`min_norm_coefficients`.

    Returns:
        ``(u, alpha)``: the ``(D,)`` direction and the ``(n,)`` simplex coefficients.

    Raises:
        TypeError, ValueError: as :func:`gradient_normalization` and :func:`min_norm_coefficients`.

    Example:
        >>> import torch
        >>> mgda_direction(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))[0]
        tensor([0.5000, 0.5000])
    """
    G = _check_grads(grads)
    iters, t = _check_solver(max_iter, tol, "max_iter")
    Gn, s = _normalise_rows(G)
    M = _gram_of_rows(Gn, s / s.max())  # Gram / max_i s_i^2: entries in [-D, D]
    top = float(M.diagonal().max())
    alpha = _min_norm((M / top if top > 0 else M).cpu().numpy(), iters, t)
    a = torch.as_tensor(alpha, dtype=G.dtype, device=G.device)
    return a @ G, a  # a convex combination: |u| <= max |g_i|, no overflow


# ---------------------------------------------------------------------------------------- primary/auxiliary


def _coordinate_descent(M: list[list[float]], max_sweeps: int, tol: float) -> list[float]:
    m = len(M) - 1
    lam = [0.0] * m
    scale = max(max(M[i][i] for i in range(m + 1)), 1e-300)
    for _ in range(max_sweeps if m > 1 else 1):
        moved = 0.0
        for i in range(m):
            aii = M[i + 1][i + 1]
            if aii <= 0.0:
                continue
            # <g_i, u> with u = g_0 + sum_j lambda_j g_j; then the exact 1-D minimiser over lambda_i >= 0
            inner = M[i + 1][0] + sum(M[i + 1][j + 1] * lam[j] for j in range(m))
            new = max(lam[i] - inner / aii, 0.0)
            moved = max(moved, abs(new - lam[i]) * math.sqrt(aii))
            lam[i] = new
        if moved**2 <= tol * scale:
            break
    return lam


def primary_auxiliary_coefficients(gram: Tensor, *, max_sweeps: int = 200, tol: float = 1e-10) -> Tensor:
    """``lambda = argmin_{lambda >= 0} ||g_0 + sum_i lambda_i g_i||^2`` from the Gram matrix of ``[g_0, g_1..]``.

    Part 3 (https://kexue.fm/archives/8907). One auxiliary task has the closed form
    ``lambda = relu(-<g_0, g_1>) / ||g_1||^2``; more use cyclic coordinate descent, each step re-solving the
    one-dimensional problem of one coefficient exactly (Su's loop visits the most violated one first; the
    fixed point, the KKT point of this convex problem, is the same). Runs in float64 on the CPU on the Gram
    matrix divided by its largest diagonal entry (``lambda`` does not depend on that factor).

    Args:
        gram: ``(n, n)`` Gram matrix, ``n >= 2``, row/column 0 the primary task.
        max_sweeps: coordinate-descent sweeps (>= 1).
        tol: stop when no coefficient moved the direction by more than ``sqrt(tol) max_i ||g_i||`` (>= 0).

    Returns:
        ``(m,)`` non-negative coefficients for the ``m = n - 1`` auxiliary gradients.

    Raises:
        TypeError: ``gram`` is not a floating-point tensor.
        ValueError: not square with ``n >= 2``, non-finite, a negative diagonal, ``max_sweeps < 1``, ``tol < 0``.

    Example:
        >>> import torch
        >>> primary_auxiliary_coefficients(torch.tensor([[1.0, -1.0], [-1.0, 4.0]]))  # relu(1) / 4
        tensor([0.2500])
    """
    M = _check_gram(gram, 2)
    sweeps, t = _check_solver(max_sweeps, tol, "max_sweeps")
    lam = _coordinate_descent(M.tolist(), sweeps, t)
    return torch.tensor(lam, dtype=gram.dtype, device=gram.device)


def primary_auxiliary_projection(
    primary: Tensor, auxiliary: Tensor, *, max_sweeps: int = 200, tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """``u = g_0 + sum_i lambda_i g_i`` with ``<u, g_i> >= 0`` for every auxiliary gradient (Part 3).

    With one auxiliary gradient this is ``g_0 + relu(-<g_0, g_1>) / ||g_1||^2 g_1``: ``g_0`` is left alone
    unless it conflicts with ``g_1``, in which case its component along ``-g_1`` is removed (PCGrad's
    projection). Solved on max-abs-normalised rows (the constraints and the minimiser do not change when a
    gradient is rescaled, only ``lambda`` does, by the inverse factor), so gradients of any size work.

    Args:
        primary: ``(D,)`` gradient of the main task.
        auxiliary: ``(m, D)`` gradients of the auxiliary tasks (or ``(D,)`` for one), same dtype as ``primary``.
        max_sweeps: see :func:`primary_auxiliary_coefficients`.
        tol: see :func:`primary_auxiliary_coefficients`.

    Returns:
        ``(u, lambda)``: the ``(D,)`` direction and the ``(m,)`` coefficients (in the input dtype; a coefficient
        beyond its range, possible only when the gradients differ in size by more than the dtype's range, is
        ``inf`` there while ``u`` is exact).

    Raises:
        TypeError: non-floating inputs or different dtypes.
        ValueError: wrong shapes, empty or non-finite inputs, bad solver settings.

    Example:
        >>> import torch
        >>> primary_auxiliary_projection(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0]))[0]
        tensor([1., 0.])
    """
    check_float_tensor("primary", primary, ndim=1)
    check_float_tensor("auxiliary", auxiliary, ndim=(1, 2))
    if auxiliary.dtype != primary.dtype:
        raise TypeError(f"primary and auxiliary must have the same dtype, got {primary.dtype} and {auxiliary.dtype}")
    aux = auxiliary.unsqueeze(0) if auxiliary.dim() == 1 else auxiliary
    if aux.shape[1] != primary.shape[0] or aux.shape[0] < 1:
        raise ValueError(f"auxiliary must be (m, {primary.shape[0]}) with m >= 1, got shape {tuple(auxiliary.shape)}")
    sweeps, t = _check_solver(max_sweeps, tol, "max_sweeps")
    Gn, s = _normalise_rows(torch.cat([primary.unsqueeze(0), aux]))
    # the problem on the normalised rows Gn_i = g_i / s_i is the same problem with mu_i = lambda_i s_i / s_0
    M = _gram_of_rows(Gn)
    top = float(M.diagonal().max())
    mu = torch.tensor(_coordinate_descent((M / top if top > 0 else M).tolist(), sweeps, t), dtype=torch.float64)
    mu = mu.to(Gn.device)
    u = (Gn[0] + mu.to(Gn.dtype) @ Gn[1:]) * s[0].to(Gn.dtype)
    lam = mu * (s[0] / s[1:])
    return u, lam.to(primary.dtype)


# --------------------------------------------------------------------------------------------- L2 auxiliary


def l2_auxiliary_projection(grad: Tensor, param: Tensor, *, eps: float = 0.0) -> Tensor:
    """L2 decay as an auxiliary task (Part 3): ``g + relu(-<g, theta>) / (||theta||^2 + eps) theta``.

    The auxiliary loss is ``||theta||^2 / 2`` (gradient ``theta``); the returned direction never increases it
    to first order, with no decay coefficient to tune. (The article's displayed formula drops the trailing
    ``theta``, a typo.) Inner products are taken of max-abs-normalised vectors, so it works for gradients and
    parameters of any size.

    Args:
        grad: gradient, any shape (floating point, finite, non-empty).
        param: parameters, same shape and dtype.
        eps: added to ``||theta||^2``. The default 0 is the article's formula (``theta = 0`` then leaves ``g``
            unchanged); a positive ``eps`` weakens the projection for parameters with ``||theta||^2 ~ eps``.

    Returns:
        The projected gradient, shape and dtype of ``grad``.

    Raises:
        TypeError: non-floating inputs or different dtypes.
        ValueError: different shapes, empty or non-finite inputs, ``eps`` negative or non-finite.

    Example:
        >>> import torch
        >>> l2_auxiliary_projection(torch.tensor([-1.0, 1.0]), torch.tensor([1.0, 0.0]))
        tensor([0., 1.])
    """
    check_float_tensor("grad", grad)
    check_float_tensor("param", param)
    if grad.shape != param.shape:
        raise ValueError(f"grad and param must have the same shape, got {tuple(grad.shape)} and {tuple(param.shape)}")
    if grad.dtype != param.dtype:
        raise TypeError(f"grad and param must have the same dtype, got {grad.dtype} and {param.dtype}")
    coef, sp = _l2_coefficient(grad, param.detach(), check_eps(eps))
    # coef * theta = (coef * sp) * (theta / sp): the factor coef * sp has the size of g, so it cannot overflow
    # where coef alone would (g = 1e30, theta = 1e-30 gives coef = 1e60)
    return grad + (coef * sp).to(grad.dtype) * (param.detach() / sp.to(param.dtype))


def _l2_coefficient(grad: Tensor, param: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(relu(-<g, theta>) / (||theta||^2 + eps), max|theta|)`` as float64 0-d tensors, from max-abs-normalised
    vectors (``max|theta|`` is 1 for ``theta = 0``)."""
    sg = grad.detach().abs().amax()
    sp = param.abs().amax()
    sg = torch.where(sg > 0, sg, torch.ones_like(sg))
    sp = torch.where(sp > 0, sp, torch.ones_like(sp))
    acc = _acc_dtype(grad.dtype)
    inner = ((grad / sg).to(acc) * (param / sp).to(acc)).sum().double()  # <g, theta> / (sg sp)
    pp = (param / sp).to(acc).pow(2).sum().double()  # ||theta||^2 / sp^2
    sg64, sp64 = sg.double(), sp.double()
    if eps == 0.0:
        # relu(-<g,t>) / ||t||^2 = (sg / sp) relu(-inner) / pp; theta = 0 (pp = 0) gives no decay direction
        coef = torch.where(pp > 0, sg64 / sp64 * torch.relu(-inner) / pp.clamp_min(1e-300), torch.zeros_like(pp))
    else:
        # the same divided through by sp^2, so that neither sp^2 nor eps / sp^2 can overflow together
        coef = sg64 / sp64 * torch.relu(-inner) / (pp + eps / (sp64 * sp64))
    return coef, sp64
