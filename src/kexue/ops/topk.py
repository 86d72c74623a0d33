"""Smooth Top-k operators: differentiable approximations of the top-k multi-hot mask.

Implements the constructions of Su Jianlin, "Softmax后传：寻找Top-K的光滑近似" (https://kexue.fm/archives/10373).
Every method maps scores ``x`` to ``p`` with entries in ``[0, 1]`` that sum to ``k`` along ``dim`` and tends
to the hard top-k mask as ``temperature -> 0`` (the iterative baseline keeps its documented flaws).
Temperature always enters as ``x / temperature``.

Methods:
    ``"iterative"``: Su's 2019 recursion ``p <- p + softmax((1 - p) * (x - min x))`` repeated k times
        (https://kexue.fm/archives/6620). Historical baseline: it can leave ``[0, 1]`` and is not monotone.
        ``k`` is limited to :data:`ITERATIVE_MAX_K` (k sequential passes, k autograd nodes).
    ``"gradtopk"``: ``p = grad_x log e_k(exp(x))``, the inclusion marginals of the log-linear distribution
        over k-subsets. The article's recursion NaNs for spread inputs; here ``log e_k`` is a log-space
        polynomial product (a tree of log-space convolutions truncated at degree k, O(n k) work and memory)
        differentiated by autograd, which is stable for any spread and double-backward correct.
    ``"exp"``: threshold ``p = min(1, exp(x - lambda))`` with ``sum p = k``; closed form after a partial sort.
        ``k = 1`` is exactly softmax.
    ``"sigmoid"``: threshold ``p = sigmoid(x - lambda)``; ``lambda`` by safeguarded Newton on
        ``log A(lambda) - log B(lambda)`` (below) to the precision of the dtype.
    ``"laplace"``: threshold with the Laplace CDF ``f(t) = 1 - exp(-t)/2`` (t >= 0), ``exp(t)/2`` (t < 0);
        closed form, covering the branch ``lambda < min x`` (k > n/2) and ties that the article's code misses.

Any finite temperature > 0 (a Python float or a 0-d floating tensor, which may require grad). Every method but
the iterative baseline works in an *anchored* space ``z = (x - a) / temperature``, where ``a`` is the k-th
largest score of the row (detached: the output is shift invariant). The threshold lies within ``log n`` plus the
gap between the k-th and (k+1)-th scores of the anchor, so the scores that decide the result stay small numbers
with full precision however small the temperature is, and ``z`` is clamped to ``[-2^14, 2^14]``: every f here
is saturated to exactly 0 or 1 far inside that range. Without the anchor, ``x / temperature`` of order 1e8 in
float32 rounds ``log k`` away and the sum collapses to 1 (exp) or 1/2 (sigmoid, Laplace).

The three threshold methods share one custom autograd Function whose backward is the implicit-function-theorem
VJP ``g -> w * (g - (w . g) / sum w)`` with ``w = f'(z - lambda)`` (O(n), no n x n Jacobian). ``w`` is computed
in the forward from the small side of f (accurate even where p rounds to 1) and, for double backward, carries
the derivative of its expression in the saved output p.

The sigmoid solver avoids the cancellation of ``sum p - k``: with T the k largest entries,
``sum_i sigma(z_i - lambda) - k = A - B`` for ``A = sum_{i not in T} sigma(z_i - lambda)`` and
``B = sum_{i in T} sigma(lambda - z_i)``, both sums of small positive terms computed to full relative precision,
and Newton runs on ``log A - log B``, which is exactly linear in lambda when the two sides are far apart.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._validate import check_choice, check_float_tensor, check_int, check_real, is_compiling

try:  # a loop node for torch.compile (its body is traced and compiled once)
    from torch._higher_order_ops.while_loop import while_loop as _while_loop
except ImportError:  # pragma: no cover - older torch: unrolled

    def _while_loop(cond_fn: Any, body_fn: Any, carried_inputs: Any) -> Any:
        while cond_fn(*carried_inputs):
            carried_inputs = body_fn(*carried_inputs)
        return carried_inputs


__all__ = ["ITERATIVE_MAX_K", "METHODS", "SoftTopK", "soft_topk"]

Method = Literal["iterative", "gradtopk", "exp", "sigmoid", "laplace"]
METHODS: tuple[str, ...] = ("iterative", "gradtopk", "exp", "sigmoid", "laplace")
_THRESHOLD = ("exp", "sigmoid", "laplace")

#: Largest ``k`` accepted by ``method="iterative"``: its recursion makes k sequential passes over the row and
#: keeps k autograd nodes, so k = 5e5 would run for hours; larger k raise ``ValueError``.
ITERATIVE_MAX_K = 4096

# |z| clamp in the anchored space. Every f used here is exactly 0 / 1 in float64 more than ~745 units from the
# threshold, and the threshold lies within log(n) + gap / 2 of the anchor, so clamped entries keep their values
# (exactly saturated) and their (zero) gradients; the clamp keeps inf and inf - inf out of the solvers.
_BOUND = 2.0**14
# Newton steps of the sigmoid solver: a fixed count while torch.compile traces, in one while_loop node (no
# data-dependent exit, and the body is compiled once; from the midpoint start, convergence took at most 5
# evaluations in float32 and 6 in float64 over normal, uniform, exponential, Cauchy, tied and clustered rows, n up
# to 3e4, k in {1, n/10, n/2, n-1}, scales 1e-6 .. 1e12); eagerly it stops at convergence (one sync per step).
_SIGMOID_COMPILED_ITERS = 8
_SIGMOID_MAX_ITER = 64


# ----------------------------------------------------------------------------------------------------------
# input validation


def _validate_args(
    x: Any, k: Any, method: Any, temperature: Any, dim: Any, hard: Any
) -> tuple[int, int | Tensor, float | Tensor]:
    """Validate every argument of :func:`soft_topk`; return the normalised ``dim``, ``k`` and ``temperature``.

    Value checks that read tensor data (NaN / inf in ``x``, the range of a tensor ``k``, the sign of a tensor
    ``temperature``) synchronise with the device and are skipped while ``torch.compile`` traces.
    """
    check_float_tensor("x", x, min_ndim=1, allow_empty=True, finite=False)
    check_choice("method", method, METHODS)
    dim = check_int("dim", dim, low=-x.dim(), high=x.dim() - 1) % x.dim()
    if not isinstance(hard, bool):
        raise TypeError(f"hard must be a bool, got {hard!r} ({type(hard).__name__})")
    if isinstance(temperature, Tensor):
        check_real("temperature", temperature, low=0.0, low_inclusive=False, allow_tensor=True)
        if temperature.dim() != 0:
            raise ValueError(f"temperature must be a float or a 0-d tensor, got shape {tuple(temperature.shape)}")
    else:
        temperature = check_real("temperature", temperature, low=0.0, low_inclusive=False)
    n = x.shape[dim]
    if isinstance(k, Tensor):
        if k.dtype == torch.bool or k.is_floating_point() or k.is_complex():
            raise TypeError(f"k must be an int or an integer tensor, got a tensor of dtype {k.dtype}")
        batch_shape = x.shape[:dim] + x.shape[dim + 1 :]
        try:
            k = torch.broadcast_to(k.to(device=x.device, dtype=torch.long), batch_shape)
        except RuntimeError:
            raise ValueError(
                f"k of shape {tuple(k.shape)} does not broadcast to the batch shape {tuple(batch_shape)} "
                f"(x.shape {tuple(x.shape)} without dim={dim})"
            ) from None
        if not is_compiling() and k.numel():
            lo, hi = (int(v) for v in torch.stack(torch.aminmax(k)).tolist())  # one device sync
            if lo < 0 or hi > n:
                raise ValueError(f"k must lie in [0, {n}] (the size of dim {dim}), got values in [{lo}, {hi}]")
            if method == "iterative" and hi > ITERATIVE_MAX_K:
                raise ValueError(
                    f"k must be <= ITERATIVE_MAX_K={ITERATIVE_MAX_K} for method='iterative' (k sequential "
                    f"passes), got max k={hi}; use another method"
                )
    else:
        k = check_int("k", k, low=0, high=n)
        if method == "iterative" and k > ITERATIVE_MAX_K:
            raise ValueError(
                f"k must be <= ITERATIVE_MAX_K={ITERATIVE_MAX_K} for method='iterative' (k sequential passes), "
                f"got k={k}; use another method"
            )
    # NaN / inf reach the sum of x: one reduction and one sync in the common case; the full check (with its
    # message) runs only when the sum is not finite, which plain overflow of finite scores also triggers
    if not is_compiling() and x.numel() and not bool(torch.isfinite(x.detach().sum())):
        check_float_tensor("x", x, min_ndim=1, finite=True)
    return dim, k, temperature


# ----------------------------------------------------------------------------------------------------------
# the anchored, scaled space


def _scale_values(xa: Tensor, temperature: float | Tensor, *, fresh: bool = False) -> Tensor:
    """``clamp(xa / temperature, -B, B)``, finite for every temperature > 0 (no autograd bookkeeping).

    ``fresh``: ``xa`` is a temporary of the caller's, which a unit temperature clamps in place (one pass less).
    """
    fi = torch.finfo(xa.dtype)
    if isinstance(temperature, Tensor):
        # a temperature outside the dtype's normal range only moves entries that are clamped anyway
        return (xa / temperature.to(xa.dtype).clamp(fi.tiny, 1.0 / fi.tiny)).clamp_(-_BOUND, _BOUND)
    if temperature == 1.0:
        return xa.clamp_(-_BOUND, _BOUND) if fresh else xa.clamp(-_BOUND, _BOUND)
    if fi.tiny <= temperature <= 1.0 / fi.tiny:
        return (xa / temperature).clamp_(-_BOUND, _BOUND)
    # the temperature itself is not a normal number of the dtype (e.g. 1e-40 in float32, where x / t would
    # be 0 / 0 or use an infinite reciprocal): divide in float64
    return (xa.double() / temperature).clamp_(-_BOUND, _BOUND).to(xa.dtype)


def _div_temperature(g: Tensor, temperature: float | Tensor) -> Tensor:
    """``g / temperature`` (the chain rule through ``z = x / temperature``) without a 0 / 0."""
    if isinstance(temperature, Tensor):
        fi = torch.finfo(g.dtype)
        return g / temperature.to(g.dtype).clamp(fi.tiny, 1.0 / fi.tiny)
    if temperature == 1.0:
        return g
    fi = torch.finfo(g.dtype)
    if fi.tiny <= temperature <= 1.0 / fi.tiny:
        return g / temperature
    return (g.double() / temperature).to(g.dtype)


class _ScaleByTemperature(torch.autograd.Function):
    """``z = clamp(xa / temperature, -B, B)`` for a 0-d tensor temperature.

    Autograd's own division would form ``grad * (xa / t) / t``, which is ``0 * inf = NaN`` for the saturated
    entries once ``xa / t`` overflows; here ``d z / d t = -z / t`` is summed only over unclamped entries, where z
    is finite. The backward is made of differentiable ops of the saved output, so double backward works.
    """

    @staticmethod
    def forward(ctx: Any, xa: Tensor, temperature: Tensor) -> Tensor:
        z = _scale_values(xa, temperature)
        ctx.save_for_backward(z, temperature)
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        z, temperature = ctx.saved_tensors
        inside = z.abs() < _BOUND
        grad_x = torch.where(inside, _div_temperature(grad, temperature), 0.0)
        grad_t = _div_temperature(-torch.where(inside, grad * z, 0.0).sum(), temperature)
        return grad_x, grad_t.to(temperature)  # a CPU 0-d temperature may scale CUDA scores


def _scale(xa: Tensor, temperature: float | Tensor) -> Tensor:
    """``clamp(xa / temperature, -B, B)`` with autograd: finite for every temperature > 0, finite gradients."""
    if isinstance(temperature, Tensor):
        out: Tensor = _ScaleByTemperature.apply(xa, temperature)
        return out
    if temperature == 1.0:
        return xa.clamp(-_BOUND, _BOUND)
    fi = torch.finfo(xa.dtype)
    if fi.tiny <= temperature <= 1.0 / fi.tiny:
        return (xa / temperature).clamp(-_BOUND, _BOUND)
    return (xa.double() / temperature).clamp(-_BOUND, _BOUND).to(xa.dtype)


def _head_size(method: str, k: int, n: int) -> int:
    """How many of the largest scores a method reads first for 1 <= k <= n - 1 (always at least k)."""
    if method == "laplace" and is_compiling():
        return min(n, 2 * k)  # entries above lambda have f > 1/2, so fewer than 2k of them
    if method == "laplace":
        # eagerly: the top k + 1 first, which usually hold every entry above lambda (the full 2k only when not)
        return min(n, k + 1)
    if method == "sigmoid":
        return k + 1  # the (k+1)-th value bounds the bracket
    return k  # exp: at most k - 1 entries saturate; all methods: the anchor and the hard mask


def _largest(x: Tensor, h: int) -> tuple[Tensor, Tensor]:
    """The h largest entries of each row of ``x`` (R, n), descending, and their positions (1 <= h <= n).

    The values are those of ``x.topk(h)``. For long rows (eagerly) torch.topk runs on a short list of candidates:
    the rows are cut into chunks of c entries, and the h largest entries lie in the h chunks with the largest
    maxima (any other chunk's entries are at most its maximum, and h chosen maxima are at least that), plus the
    tail of the row that fills no chunk. One pass over the row (the chunk maxima) instead of torch.topk's partial
    sort of the whole row; among tied values, other positions than torch.topk's may be picked.
    """
    r, n = x.shape
    if h == 1:
        return x.max(-1, keepdim=True)  # cheaper than topk for the one largest
    # chunk size: a power of two near sqrt(n / h) (about as many chunks as candidates), at least 64 (the maxima
    # of short chunks are a slow reduction)
    c = max(64, 1 << (math.isqrt(n // h).bit_length() - 1))
    if is_compiling() or n < 8192 or 4 * h * c > n:
        return x.topk(h, dim=-1)
    m = n // c
    chunk = x[:, : m * c].reshape(r, m, c).amax(-1).topk(h, dim=-1, sorted=False).indices  # (R, h)
    pos = (chunk[:, :, None] * c + torch.arange(c, device=x.device)).reshape(r, h * c)
    if m * c < n:
        pos = torch.cat([pos, torch.arange(m * c, n, device=x.device).expand(r, n - m * c)], dim=-1)
    vals, j = x.gather(-1, pos).topk(h, dim=-1)
    return vals, pos.gather(-1, j)


# ----------------------------------------------------------------------------------------------------------
# threshold constructions: lambda solvers (no autograd) and the shared implicit-gradient Function


def _suffix_lse(s: Tensor, rest: Tensor) -> Tensor:
    """``out[:, m] = log(sum_{i >= m} exp(s_i) + exp(rest))`` for m = 0..h (the last column is ``rest``)."""
    full = torch.cat([s, rest[:, None]], dim=-1)  # (R, h + 1)
    return full.flip(-1).logcumsumexp(-1).flip(-1)


def _first_true(cond: Tensor) -> Tensor:
    """Index of the first True along the last dim (cond is guaranteed to hold somewhere)."""
    return cond.to(torch.int8).argmax(-1, keepdim=True)


def _lambda_exp(s: Tensor, suf: Tensor, k: Tensor, bound: float) -> Tensor:
    """Threshold for f(t) = min(1, e^t), Su's closed form (article C1), in the anchored space.

    With the m largest saturated, ``lambda_m = log sum_{i>=m} e^{s_i} - log(k - m)``. The right m is the
    smallest one with ``lambda_m >= s_m`` (for smaller m the ansatz over-counts, because e^t >= min(1, e^t));
    choosing it this way is tie-safe and robust to rounding. At most k - 1 entries saturate (m = k - 1 always
    qualifies). ``lambda <= log n`` here (at lambda = log n the k-th and every smaller entry give at most 1/n),
    so candidates with ``s_m > bound`` are saturated for certain and skipped: for them ``lambda_m`` and ``s_m``
    are large numbers whose comparison rounding would decide (``s_0 + log(1 + tiny) - log k`` rounds to ``s_0``
    when s_0 ~ 1e8 in float32, which returned the top-1 mask for every k). The offset
    ``c_m = lambda_m - s_m = softplus(lse_{i>m} s_i - s_m) - log(k - m)`` is computed directly, so its sign (the
    test) is exact and a threshold just above s_m (low temperature) is not rounded onto it: that entry is below
    the kink, with ``f' = e^t ~ 1``, not above it with ``f' = 0``.

    Args:
        s: (R, h) the largest entries, descending, h >= k.
        suf: (R, h + 1) their suffix logsumexp including the entries outside the head.
        k: (R,) in [1, n - 1].
        bound: log(n) + margin.
    """
    h = s.shape[-1]
    m = torch.arange(h, device=s.device)
    offset = F.softplus(suf[:, 1:] - s) - torch.log((k[:, None] - m).clamp_min(1).to(s.dtype))
    cond = ((offset >= 0) & (s <= bound)) | (m >= k[:, None] - 1)
    first = _first_true(cond)
    return s.gather(-1, first).squeeze(-1) + offset.gather(-1, first).squeeze(-1)


def _lambda_laplace(s: Tensor, suf: Tensor, k: Tensor, bound: float, complete: bool) -> tuple[Tensor, Tensor]:
    """Threshold for the Laplace CDF: Su's closed form with both reference-code bugs fixed (anchored space).

    With m entries above lambda, A = sum_{i<m} e^{-s_i}, B = sum_{i>=m} e^{s_i}, c = k - m, the condition
    ``k = m - e^lambda A / 2 + e^{-lambda} B / 2`` is a quadratic in e^lambda whose positive root is
    ``lambda = log B - log(c + sqrt(c^2 + AB))`` (c >= 0) or, without cancellation for c < 0,
    ``lambda = -log A + log(|c| + sqrt(c^2 + AB))``. Candidates m = 0..h include m = n (lambda < min x,
    reachable only when k > n/2, the case the article's code misses); the smallest m with ``lambda_m >= s_m``
    is the consistent one (tie-safe: the article's code broadcasts several candidates under ties). Since
    entries above lambda exceed 1/2, m < 2k, so only the top min(n, 2 kmax) values are needed. As for exp,
    ``lambda <= log n`` in the anchored space, and candidates with ``s_m > bound`` are skipped.

    ``complete``: the head holds the top min(n, 2 kmax) values (every candidate). Otherwise candidates m < h only
    are tried (m = h needs the unknown s_h); the first consistent one among them is the same as with the full
    head, and rows without one are reported.

    Returns:
        lambda (R,) and whether each row found its candidate (R,) bool (always True when ``complete``).
    """
    h = s.shape[-1]
    log_b = suf  # (R, h + 1), m = 0..h
    neg = torch.cat([torch.full_like(s[:, :1], -math.inf), -s], dim=-1)
    log_a = neg.logcumsumexp(-1)  # (R, h + 1): lse_{i<m} (-s_i)
    m = torch.arange(h + 1, device=s.device)
    c = k[:, None].to(s.dtype) - m
    log_abs_c = c.abs().log()
    half_log_ab = 0.5 * (log_a + log_b)
    # log(|c| + sqrt(c^2 + AB)), computed in log space so that huge AB does not overflow
    log_root = torch.logaddexp(log_abs_c, 0.5 * torch.logaddexp(2 * log_abs_c, 2 * half_log_ab))
    lam = torch.where(c >= 0, log_b - log_root, log_root - log_a)
    s_next = torch.cat([s, torch.full_like(s[:, :1], -math.inf)], dim=-1)  # s_m, with s_h = -inf
    cond = (lam >= s_next) & (s_next <= bound)
    found = cond[:, :h].any(-1)
    if complete:
        # the last candidate is unreachable when h < n (m* < 2k <= h) and exact when h == n
        cond = cond | (m == h)
    return lam.gather(-1, _first_true(cond)).squeeze(-1), found | complete


def _sigmoid_sides(z_a: Tensor, z_t: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both sides of the sigmoid residual at ``lambda``: u, v, A, B and ``G = log A - log B``.

    ``u = sigmoid(z - lambda)`` off T (0 on T, whose entries are -inf in ``z_a``), ``v = sigmoid(lambda - z)`` on T.
    G is +-inf when one side underflowed (the Newton step is then infinite and becomes a bisection step) and 0
    when both did (0 / 0, the exact hard mask: lambda is kept).
    """
    col = lam[:, None]
    u = torch.sub(z_a, col).sigmoid_()
    v = torch.sub(col, z_t).sigmoid_()
    a, b = u.sum(-1), v.sum(-1)
    g = torch.div(a, b).log_().nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
    return u, v, a, b, g


def _sigmoid_update(
    u: Tensor, v: Tensor, a: Tensor, b: Tensor, g: Tensor, lam: Tensor, lo: Tensor, hi: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One safeguarded Newton step on G: the bracket shrinks with the sign of G; a step outside it bisects."""
    # -G' = sum_A w / A + sum_B w / B with sum w = sum u - sum u^2 (sum u^2 as a squared norm: one pass, no
    # temporary; it only sets the step, so its last-bit rounding does not matter)
    uu = torch.linalg.vector_norm(u, dim=-1).square_()
    dg = torch.addcdiv(torch.rsub(uu / a, 2.0), torch.linalg.vecdot(v, v), b, value=-1.0)
    newton = torch.addcdiv(lam, g, dg.nan_to_num(nan=1.0))
    pos = g > 0
    lo = torch.where(pos, lam, lo)
    hi = torch.where(pos, hi, lam)
    # a NaN or infinite step is outside too (the clamp moves it)
    return torch.where(newton.clamp(lo, hi) == newton, newton, torch.lerp(lo, hi, 0.5)), lo, hi


def _sigmoid_step(z_a: Tensor, z_t: Tensor, lam: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _sigmoid_update(*_sigmoid_sides(z_a, z_t, lam), lam, lo, hi)


def _solve_sigmoid(
    z: Tensor, k: Tensor, k_int: int | None, s: Tensor, idx: Tensor, inplace: bool = False
) -> tuple[Tensor, Tensor]:
    """``p = sigmoid(z - lambda)`` with ``sum p = k`` in the anchored space; returns p and ``w = p (1 - p)``.

    With T the k largest entries, the residual ``sum p - k = A - B`` (module docstring) and Newton runs on
    ``G = log A - log B``, decreasing with ``-G' = (sum_A w) / A + (sum_B w) / B`` in (0, 2). ``A`` is summed over
    a copy of the row with T's entries at -inf, ``B`` over T's k entries alone, each from its own small side of
    the sigmoid, so both (and w) keep full relative precision even where every p rounds to 0 or 1. The bracket
    ``[s_k - log k, log(n - k)]`` (s_k the (k+1)-th value; the k-th is 0) always holds the root; a Newton step
    that leaves the current bracket becomes a bisection step. Newton starts at the midpoint of the k-th and
    (k+1)-th values, which is the root up to O(log n) when they are far apart.

    Args:
        z: (R, n) anchored scores (k-th largest = 0), 1 <= k <= n - 1.
        k: (R,) per-row k; ``k_int`` the common k, if every row has the same.
        s: (R, h) the largest entries, descending, h >= max k + 1; idx: (R, h) their positions.
        inplace: ``z`` may be overwritten (it is a temporary of the caller's).
    """
    n = z.shape[-1]
    if k_int is not None:
        in_top = None
        z_t = s[:, :k_int]  # (R, k): T's entries
        # (R, n): T's entries at -inf add nothing to A
        z_a = z.scatter_(-1, idx[:, :k_int], -math.inf) if inplace else z.scatter(-1, idx[:, :k_int], -math.inf)
    else:
        in_top = torch.arange(s.shape[-1], device=z.device) < k[:, None]  # (R, h): T is the head's first k
        z_t = torch.where(in_top, s, math.inf)  # +inf adds nothing to B
        z_a = (z.scatter_ if inplace else z.scatter)(-1, idx, torch.where(in_top, -math.inf, s))
    if k_int is not None:  # the bracket from Python numbers (fewer small ops per call)
        s_k = s[:, k_int]
        lo = s_k - math.log(k_int)
        hi = torch.full_like(s_k, math.log(n - k_int))
    else:
        kk = k.to(z.dtype)
        s_k = s.gather(-1, k[:, None]).squeeze(-1)
        lo = s_k - torch.log(kk)
        hi = torch.log(n - kk)
    lam = 0.5 * s_k  # inside [lo, hi] since s_k <= 0
    eps = torch.finfo(z.dtype).eps
    # converged when |G| = |log(A / B)| is at the rounding level of the two sums (then |sum p - k| <= tol * k)
    # or of G itself at this lambda (|G'| <= 2 times the resolution of lambda, which the bracket bounds):
    # gtol = 4 eps (log2(2n) + 2 (1 + max(|lo|, hi)))
    gtol = torch.maximum(lo.abs(), hi).mul_(8 * eps).add_(4 * eps * (math.log2(2 * n) + 2))
    if is_compiling():
        # a fixed number of steps in one loop node: no data-dependent exit, and the body is compiled once
        lam, lo, hi = _while_loop(
            lambda i, *_: i < _SIGMOID_COMPILED_ITERS,
            lambda i, lam, lo, hi: (i + 1, *_sigmoid_step(z_a, z_t, lam, lo, hi)),
            (torch.zeros((), dtype=torch.long, device=z.device), lam, lo, hi),
        )[1:]
        u, v, _, _, _ = _sigmoid_sides(z_a, z_t, lam)
    else:
        for _ in range(_SIGMOID_MAX_ITER):
            u, v, a, b, g = _sigmoid_sides(z_a, z_t, lam)
            if bool((g.abs() <= gtol).all()):
                break  # u and v belong to this lambda
            lam, lo, hi = _sigmoid_update(u, v, a, b, g, lam, lo, hi)
        else:  # the cap: evaluate at the last lambda
            u, v, _, _, _ = _sigmoid_sides(z_a, z_t, lam)
    w = torch.addcmul(u, u, u, value=-1.0)  # u (1 - u); T's entries are filled in below
    w_t = torch.addcmul(v, v, v, value=-1.0)
    # u and w are the solver's own temporaries: T's entries are written in place (no copies of the rows)
    if in_top is None:
        assert k_int is not None
        top = idx[:, :k_int]
        return u.scatter_(-1, top, 1 - v), w.scatter_(-1, top, w_t)
    w_t = torch.where(in_top, w_t, w.gather(-1, idx))
    u.scatter_(-1, idx, torch.where(in_top, 1 - v, u.gather(-1, idx)))
    return u, w.scatter_(-1, idx, w_t)


def _threshold_forward(
    z: Tensor, k: Tensor, k_int: int | None, method: str, s: Tensor, idx: Tensor, inplace: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """``p = f(z - lambda(z))`` and ``w = f'(z - lambda)``, each computed accurately, on (R, n) anchored rows.

    ``w`` is evaluated from ``t = z - lambda`` (the small side of f), not from p: where p rounds to 1, ``p (1 - p)``
    or ``min(p, 1 - p)`` would lose it (1 - p is 0 or a few ulps), and for exp ``p [p < 1]`` would give 0 for
    t just below the kink. Rows have 1 <= k <= n - 1.

    Args:
        z: (R, n) anchored, scaled scores (the k-th largest of each row is 0).
        k: (R,) per-row k; ``k_int`` the common k, if every row has the same.
        method: ``"exp"``, ``"sigmoid"`` or ``"laplace"``.
        s: (R, h) the h largest entries of each row, descending; idx: (R, h) their positions.
        inplace: ``z`` may be overwritten (it is a temporary of the caller's).

    Returns:
        p, w and the head's positions (laplace reads a longer head when the first one is too short).
    """
    n = z.shape[-1]
    if method == "sigmoid":
        return (*_solve_sigmoid(z, k, k_int, s, idx, inplace), idx)
    if method == "exp" and k_int == 1:
        # lambda = logsumexp z, which lies above every entry (nothing saturates): exactly softmax (article),
        # and f'(t) = e^t = p everywhere
        p = torch.softmax(z, dim=-1)
        return p, p, idx
    if method == "exp":
        e, top, rest = _tail_exp(z, s, idx)
        suf = _suffix_lse(s, rest)  # (R, h + 1)
        lam = _lambda_exp(s, suf, k, math.log(n) + 1.0)[:, None]
        if e is None or top is None:  # the head is the whole row
            p = torch.sub(z, lam).exp_().clamp_max_(1.0)
        else:
            # every entry outside the head is at most their maximum M <= s_{k-1} <= lambda (at most k - 1 entries
            # saturate, all of them in the head), so e^{z - lambda} = e^{z - M} e^{M - lambda} <= 1 there: the
            # exponentials of the logsumexp are reused (no second exp pass) and the head is exponentiated alone
            head = torch.sub(s, lam).exp_().clamp_max_(1.0)
            p = e.mul_(torch.sub(top, lam).exp_()).scatter_(-1, idx, head)
        # f'(t) = e^t below the kink: from t, not from p, which rounds to 1 for t just below 0
        return p, p * (z < lam), idx
    # eagerly the head is the top k + 1 (see _head_size): enough unless more than k entries lie above lambda
    full = min(n, 2 * (k_int if k_int is not None else int(k.max()))) if not is_compiling() else s.shape[-1]
    if s.shape[-1] < full:
        lam, found, e, top = _threshold_laplace(z, k, s, idx, complete=False)
        if bool(found.all()):  # one sync; the longer head (a second topk) is rarely needed
            return (*_laplace_p(z, lam, s, idx, e, top), idx)
        s, idx = _largest(z, full)
    lam, _, e, top = _threshold_laplace(z, k, s, idx, complete=True)
    return (*_laplace_p(z, lam, s, idx, e, top), idx)


def _tail_exp(z: Tensor, s: Tensor, idx: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """The entries outside the head ``idx``: ``e = exp(z - M)`` (0 on the head), their maximum M (R, 1) and their
    logsumexp ``M + log sum e`` (R,); ``None, None, -inf`` when the head is the whole row."""
    if s.shape[-1] == z.shape[-1]:
        return None, None, torch.full_like(z[:, 0], -math.inf)
    e = z.scatter(-1, idx, -math.inf)
    top = e.amax(-1, keepdim=True)  # finite: z is clamped and some entry lies outside the head
    e.sub_(top).exp_()
    return e, top, top.squeeze(-1) + e.sum(-1).log()


def _threshold_laplace(
    z: Tensor, k: Tensor, s: Tensor, idx: Tensor, complete: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The Laplace threshold from the head ``s`` (see :func:`_lambda_laplace`; ``complete``: h = min(n, 2k)), whether
    each row found it, and the exponentials and maximum of the entries outside the head (:func:`_tail_exp`)."""
    e, top, rest = _tail_exp(z, s, idx)
    suf = _suffix_lse(s, rest)  # (R, h + 1)
    return (*_lambda_laplace(s, suf, k, math.log(z.shape[-1]) + 1.0, complete), e, top)


def _laplace_p(
    z: Tensor, lam: Tensor, s: Tensor, idx: Tensor, e: Tensor | None, top: Tensor | None
) -> tuple[Tensor, Tensor]:
    """p and w = f'(t) at ``t = z - lambda`` for the Laplace CDF (``e``, ``top``: see :func:`_tail_exp`)."""
    col = lam[:, None]
    if e is None or top is None:  # the head is the whole row
        t = z - col
        # Laplace CDF from its small side e^{-|t|} / 2, which is also f'(t): no overflow, no cancellation
        w = t.abs().neg_().exp_().mul_(0.5)  # one temporary, the rest in place
        return torch.where(t >= 0, 1 - w, w), w
    # every entry above lambda is in the head (the first consistent candidate lies in it), so outside it
    # t <= M - lambda <= 0 (M their maximum) and p = f'(t) = e^t / 2 = e^{z - M} e^{M - lambda} / 2: the
    # exponentials of the logsumexp are reused (no second exp pass) and the head is computed alone
    t = s - col
    w_head = t.abs().neg_().exp_().mul_(0.5)
    w = e.mul_(torch.sub(top, col).exp_().mul_(0.5)).scatter_(-1, idx, w_head)
    return w.scatter(-1, idx, torch.where(t >= 0, 1 - w_head, w_head)), w


def _threshold_weight(p: Tensor, method: str) -> Tensor:
    """w = f'(z - lambda) expressed through p = f(z - lambda), differentiably (for double backward)."""
    if method == "sigmoid":
        return p * (1 - p)
    if method == "exp":
        return torch.where(p < 1, p, 0.0)
    return torch.minimum(p, 1 - p)  # Laplace: f' = min(f, 1 - f)


def _threshold_vjp(p: Tensor, w: Tensor, g: Tensor, method: str, idx: Tensor) -> Tensor:
    """Implicit-function VJP ``w * (g - (w . g) / sum w)`` (spec 8.4 C2), O(n) per row.

    ``w`` is the accurate value from the forward. When the backward itself is differentiated (double backward),
    its dependence on z goes through the saved output: ``w + (h(p) - h(p).detach())`` has the value of w and the
    derivative of ``h(p) = f'(f^{-1}(p))``. ``g`` is first shifted by its value at the entry of largest weight
    among the head ``idx`` (the formula is invariant to shifting g): where one entry carries nearly all the weight
    (low temperature), the weighted mean is nearly g there and ``g - mean`` would cancel to 0. Such an entry is
    in the head: for exp the largest unsaturated entry (at most the k-th), otherwise a neighbour of lambda, which
    lies between the (k+1)-th and the k-th entries unless near-ties (and so several heavy entries) surround it.
    """
    if method == "softmax":  # exp with k = 1: w = p, the heaviest entry is the largest (idx holds just it)
        return torch._softmax_backward_data(g - g.gather(-1, idx), p, -1, p.dtype)
    double = torch.is_grad_enabled()
    if double:
        hp = _threshold_weight(p, method)
        w = w + (hp - hp.detach())
    heaviest = idx.gather(-1, w.detach().gather(-1, idx).argmax(-1, keepdim=True))
    g = g - g.gather(-1, heaviest)
    sw = w.sum(-1, keepdim=True)
    # rows where every w vanished (the exact hard mask) have zero gradient
    mean = torch.linalg.vecdot(w, g)[:, None] / sw.clamp_min(torch.finfo(p.dtype).tiny)
    # g is this function's own temporary: without a graph to record, finish in place
    return w * (g - mean) if double else g.sub_(mean).mul_(w)


class _ThresholdTopK(torch.autograd.Function):
    """``p = f(z - lambda(z))`` with ``sum f(z - lambda) = k`` for ``z = clamp((x - a) / temperature)``.

    The anchoring and scaling happen inside, so that the backward is one node: the implicit-function VJP in z,
    divided by the temperature, and for a tensor temperature ``dL/dt = -(g_z . z) / t``, where ``g_z`` is 0 on
    every saturated (and so every clamped) entry, so no ``0 * inf`` can appear. The backward is written with
    differentiable torch ops of the saved output ``p``, so that autograd differentiates it again (double backward)
    through this same Function.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        anchor: Tensor,
        temperature: float | Tensor,
        k: Tensor,
        k_int: int | None,
        method: str,
        idx: Tensor,
    ) -> Tensor:
        z = _scale_values(x - anchor, temperature, fresh=True)  # (R, n): the k-th largest entry of each row is 0
        # z is saved for a tensor temperature's gradient; otherwise the solver may overwrite it
        keep = isinstance(temperature, Tensor)
        p, w, idx = _threshold_forward(z, k, k_int, method, z.gather(-1, idx), idx, inplace=not keep)
        # exp with k = 1 is softmax: its backward is the fused softmax VJP (same formula, w = p)
        ctx.method = "softmax" if method == "exp" and k_int == 1 else method
        if isinstance(temperature, Tensor):
            ctx.temperature = None
            ctx.save_for_backward(p, w, idx, temperature, x, anchor, z)
        else:
            ctx.temperature = temperature
            ctx.save_for_backward(p, w, idx)
        return p

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        g_z = _threshold_vjp(saved[0], saved[1], grad_output, ctx.method, saved[2])
        if ctx.temperature is not None:
            return _div_temperature(g_z, ctx.temperature), None, None, None, None, None, None
        temperature, x, anchor, z = saved[3:]
        grad_t = None
        if ctx.needs_input_grad[2]:
            if torch.is_grad_enabled():  # double backward: z as a differentiable function of x and t
                z = _scale(x - anchor, temperature)
            grad_t = _div_temperature(-torch.linalg.vecdot(g_z, z).sum(), temperature).to(temperature)
        return _div_temperature(g_z, temperature), None, grad_t, None, None, None, None


# ----------------------------------------------------------------------------------------------------------
# gradtopk: log e_k(exp z) by a tree of truncated log-space polynomial products


def _log_poly_mul(a: Tensor, b: Tensor, kmax: int) -> Tensor:
    """Log-space product of polynomials truncated at degree kmax.

    Args:
        a: (..., da + 1) log-coefficients of degrees 0..da.
        b: (..., db + 1) log-coefficients of degrees 0..db.

    Returns:
        (..., min(da + db, kmax) + 1) with ``out_j = logsumexp_i (a_i + b_{j-i})``.
    """
    da, db = a.shape[-1] - 1, b.shape[-1] - 1
    dc = min(da + db, kmax)
    # sliding windows over b padded with -inf: win[..., j, t] = b_{j + t - da}, so the term a_i + b_{j-i} sits
    # at t = da - i. unfold is a view, which keeps forward and backward cheap (no gather / index_put)
    left = torch.full_like(b[..., :1], -math.inf).expand(*b.shape[:-1], da)
    right = torch.full_like(b[..., :1], -math.inf).expand(*b.shape[:-1], max(0, dc - db))
    win = torch.cat([left, b, right], dim=-1).unfold(-1, da + 1, 1)  # (..., dc + 1, da + 1)
    terms = a.flip(-1)[..., None, :] + win
    # every output degree j <= da + db has at least one finite term, so logsumexp and its gradient are finite
    return terms.logsumexp(-1)


def _log_esp(z: Tensor, kmax: int) -> Tensor:
    """``log e_j(exp z)``, j = 0..kmax, per row: (R, n) -> (R, kmax + 1); O(n kmax) work in log2(n) steps."""
    r, n = z.shape
    size = 1 << max(n - 1, 0).bit_length()  # next power of two
    if size > n:
        # pad with dummy items far below every score: their share of e_j(e^z) underflows to exactly 0, and all
        # log-coefficients stay finite (a -inf coefficient would give 0 * inf = NaN in the logsumexp gradient)
        zd = z.detach()
        spread = zd.amax(-1, keepdim=True) - zd.amin(-1, keepdim=True)
        pad = zd.amin(-1, keepdim=True) - spread - 100.0 - float(n)
        z = torch.cat([z, pad.expand(r, size - n)], dim=-1)
    # leaves: polynomial 1 + e^{z_i} t, i.e. log-coefficients [0, z_i]
    poly = torch.stack([torch.zeros_like(z), z], dim=-1)[:, :, : kmax + 1]  # (R, size, d + 1)
    while poly.shape[1] > 1:
        poly = _log_poly_mul(poly[:, 0::2], poly[:, 1::2], kmax)
    return poly[:, 0]


# torch.compile cannot trace torch.autograd.grad inside a forward: run this part eagerly (a graph break), which
# also keeps its double backward intact
@torch.compiler.disable
def _gradtopk(z: Tensor, k: Tensor, k_int: int | None) -> Tensor:
    """GradTopK marginals ``grad_z log e_k(exp z)`` per row (rows (R, n), k: (R,) in [1, n-1]).

    ``k_int`` is the common k of every row, if there is one (saves a device sync).

    Rows with k > n/2 use the complement identity ``e_k(e^z) = e^{sum z} e_{n-k}(e^{-z})``, i.e.
    ``ST_k(z) = 1 - ST_{n-k}(-z)``: exact, O(n min(k, n-k)), and entries near 1 come out as 1 - (small), which
    keeps their rounding error relative to the small side.
    """
    n = z.shape[-1]
    flip = k > n // 2
    k_eff = torch.where(flip, n - k, k)
    z_eff = torch.where(flip[:, None], -z, z)
    kmax = int(k_eff.max()) if k_int is None else min(k_int, n - k_int)
    if kmax == 1:  # e_1(e^z) = sum e^z: GradTopK is exactly softmax (and 1 - softmax(-z) for k = n - 1)
        p = torch.softmax(z_eff, dim=-1)
        return torch.where(flip[:, None], 1 - p, p)
    need_graph = torch.is_grad_enabled() and z.requires_grad
    with torch.enable_grad():
        zz = z_eff if z_eff.requires_grad else z_eff.detach().requires_grad_(True)
        # log e_k sums up to k scores: in float32 a spread of 1e4 leaves too few bits for the marginals, so
        # the DP runs in float64; the row max is subtracted (detached; the output is shift invariant)
        z64 = zz.double()
        z64 = z64 - z64.detach().amax(-1, keepdim=True)
        log_e = _log_esp(z64, kmax)  # (R, kmax + 1)
        log_z = log_e.gather(-1, k_eff[:, None]).sum()
        (p,) = torch.autograd.grad(log_z, zz, create_graph=need_graph)
    p = torch.where(flip[:, None], 1 - p, p)
    # the marginals lie in [0, 1] exactly; rounding in the DP can overshoot by ~1e-12. Clamp the value only:
    # the gradient is that of the unclamped marginals (a clamp's zero gradient would corrupt the Jacobian)
    return p + (p.clamp(0, 1) - p).detach()


# ----------------------------------------------------------------------------------------------------------
# iterative baseline


def _iterative(z: Tensor, k: Tensor, kmax: int) -> Tensor:
    """Su's 2019 soft k-max (https://kexue.fm/archives/6620): z <- z - min z; p <- p + softmax((1 - p) z), k
    times.

    Kept verbatim as a baseline: the sum is exactly k, but p can exceed 1 and is not monotone in z. Its
    Jacobian is a product of k factors that scale with the spread of z, so for a large spread and large k the
    gradient itself overflows (e.g. spread 1e4, k=990 of n=1000 in float32); the forward value stays finite.
    """
    z = z - z.amin(-1, keepdim=True)
    p = torch.zeros_like(z)
    for i in range(kmax):
        step = torch.softmax((1 - p) * z, dim=-1)
        p = p + torch.where((i < k)[:, None], step, torch.zeros_like(step))
    return p


# ----------------------------------------------------------------------------------------------------------
# public API


def _soft_topk_rows(z0: Tensor, k: Tensor | int, method: str, temperature: float | Tensor, hard: bool) -> Tensor:
    """The smooth top-k of (R, n) rows (n >= 1, R >= 1); ``k`` an int in [0, n] or an (R,) long tensor."""
    rows, n = z0.shape
    if isinstance(k, int):
        if k in (0, n):  # exact 0 / 1 with zero gradient, no solver
            return z0 * 0 + (1.0 if k == n else 0.0)
        k_int: int | None = k
        kc = torch.full((rows,), k, dtype=torch.long, device=z0.device)
        kmax = k
    else:
        if n == 1:  # every row is degenerate
            return z0 * 0 + (k == n)[:, None].to(z0.dtype)
        k_int = None
        kc = k.clamp(1, n - 1)
        # the head size must be static while compiling: read the whole row then
        kmax = n - 1 if is_compiling() else int(kc.max())
    if method == "iterative":
        z = z0 / temperature
        p = _iterative(z, kc, kmax)
        idx = z0.detach().topk(kmax, dim=-1).indices if hard else None
    else:
        h = _head_size(method, kmax, n)
        # the h largest, descending (max is cheaper than topk for the one largest)
        # (the hard mask breaks ties as torch.topk does)
        vals, idx = z0.detach().topk(h, dim=-1) if hard and h > 1 else _largest(z0.detach(), h)
        anchor = vals[:, kmax - 1 : kmax] if k_int is not None else vals.gather(-1, kc[:, None] - 1)
        if method in _THRESHOLD:
            p = _ThresholdTopK.apply(z0, anchor, temperature, kc, k_int, method, idx)
        elif k_int == 1:  # gradtopk is exactly softmax for k = 1 (article); skip the DP
            p = torch.softmax(_scale(z0 - anchor, temperature), dim=-1)
        else:
            p = _gradtopk(_scale(z0 - anchor, temperature), kc, k_int)
    if hard:
        assert idx is not None
        # straight-through: forward value is the exact multi-hot (ties broken by torch.topk), backward smooth
        keep = (torch.arange(kmax, device=z0.device) < kc[:, None]).to(p.dtype)
        mask = torch.zeros_like(p).scatter(-1, idx[:, :kmax], keep)
        p = mask + (p - p.detach())
    if k_int is None:
        assert isinstance(k, Tensor)
        # exact 0 / 1 and zero gradient for rows with k = 0 / k = n
        p = torch.where((k == 0)[:, None], 0.0, torch.where((k == n)[:, None], 1.0, p))
    return p


def _soft_topk_core(
    x: Tensor, k: Tensor | int, method: str, temperature: float | Tensor, dim: int, hard: bool
) -> Tensor:
    """Shared core (arguments validated): move ``dim`` last, flatten to (R, n) rows, dispatch, restore."""
    orig_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # solvers and log-space sums need at least float32
    xt = x.movedim(dim, -1)
    shape = xt.shape
    n = shape[-1]
    if xt.numel() == 0:
        return x.new_zeros(x.shape).to(orig_dtype)
    z0 = xt.reshape(-1, n)  # (R, n)
    kr = k.reshape(-1) if isinstance(k, Tensor) else k
    p = _soft_topk_rows(z0, kr, method, temperature, hard)
    return p.reshape(shape).movedim(-1, dim).to(orig_dtype)


def soft_topk(
    x: Tensor,
    k: int | Tensor,
    *,
    method: Method = "sigmoid",
    temperature: float | Tensor = 1.0,
    dim: int = -1,
    hard: bool = False,
) -> Tensor:
    """Smooth top-k mask: entries in [0, 1] summing to ``k`` along ``dim``, tending to the top-k multi-hot.

    Implements the constructions of https://kexue.fm/archives/10373 (``ST_k(x / temperature)``): the iterative
    recursion (section "迭代构造"), GradTopK ``grad log e_k(e^x)`` and the threshold construction
    ``f(x - lambda)`` with ``sum f(x_i - lambda) = k`` for ``f`` in {min(1, e^t), sigmoid, Laplace CDF}.

    Works under ``torch.compile``: the threshold methods trace to one graph (``fullgraph=True``) with an int
    ``k``; value checks that would synchronise (NaN in ``x``, a tensor ``k`` out of range, a tensor
    ``temperature <= 0``) are skipped while compiling, so call once eagerly to validate values.

    Args:
        x: (..., n, ...) floating-point scores; ``dim`` indexes the n items. Any rank; float64 works.
        k: number of items to select, an int in [0, n] or an integer tensor broadcastable to the shape of ``x``
            without ``dim`` (one k per row). k = 0 gives exact zeros and k = n exact ones (zero gradient).
            ``method="iterative"`` accepts k <= :data:`ITERATIVE_MAX_K` only.
        method: ``"sigmoid"`` (default; smooth, strictly monotone, exact sum), ``"exp"`` (closed form, k=1 is
            softmax, saturates at 1), ``"laplace"`` (closed form, C^1), ``"gradtopk"`` (k-subset marginals,
            O(n k) memory), ``"iterative"`` (2019 baseline; may leave [0, 1]).
        temperature: any finite value > 0: a float, or a 0-d floating tensor (e.g. an ``nn.Parameter``; the
            gradient flows to it). Scores are divided by it; small values approach the hard mask, which the
            threshold methods and gradtopk reach exactly (ties split evenly) however small it is.
        dim: the item dimension.
        hard: straight-through estimator: the forward returns the exact top-k multi-hot (ties broken by
            ``torch.topk``), the backward is that of the smooth operator.

    Returns:
        Tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: ``x`` not a floating-point tensor; ``k`` not an int or integer tensor (bools and floats
            included); ``temperature`` not a real number or floating tensor; ``dim`` not an int; ``hard`` not a
            bool.
        ValueError: ``k`` outside [0, n] (or above ``ITERATIVE_MAX_K`` for ``"iterative"``); ``temperature``
            not finite or ``<= 0``, or a tensor that is not 0-d; ``dim`` out of range; NaN or inf in ``x``;
            ``x`` 0-d; unknown ``method``.

    Example:
        >>> x = torch.tensor([3.0, 2.0, 1.0, 4.0])
        >>> p = soft_topk(x, 2, method="sigmoid", temperature=0.01)
        >>> p.round(decimals=3)
        tensor([1., 0., 0., 1.])
        >>> float(soft_topk(x, 2, method="gradtopk").sum())
        2.0
        >>> soft_topk(torch.tensor([1.0, 1.0, 0.0]), 1, method="laplace", temperature=1e-30)
        tensor([0.5000, 0.5000, 0.0000])
    """
    dim, kk, tau = _validate_args(x, k, method, temperature, dim, hard)
    return _soft_topk_core(x, kk, method, tau, dim, hard)


class SoftTopK(nn.Module):
    """Module form of :func:`soft_topk` (https://kexue.fm/archives/10373).

    Args:
        k: items to select (int, or an integer tensor broadcastable to the batch shape).
        method: see :func:`soft_topk`.
        temperature: > 0, a float or a 0-d floating tensor; an ``nn.Parameter`` is registered (learnable), any
            other tensor becomes a buffer (moves with ``.to``).
        dim: the item dimension.
        hard: straight-through multi-hot forward.

    Raises:
        TypeError, ValueError: as :func:`soft_topk`, for the hyperparameters it can check without ``x``.

    Example:
        >>> m = SoftTopK(2, method="exp")
        >>> m(torch.tensor([[0.0, 1.0, 2.0]])).sum().item()
        2.0
    """

    temperature: float | Tensor

    def __init__(
        self,
        k: int | Tensor,
        *,
        method: Method = "sigmoid",
        temperature: float | Tensor = 1.0,
        dim: int = -1,
        hard: bool = False,
    ) -> None:
        super().__init__()
        check_choice("method", method, METHODS)
        if isinstance(k, Tensor):
            if k.dtype == torch.bool or k.is_floating_point() or k.is_complex():
                raise TypeError(f"k must be an int or an integer tensor, got a tensor of dtype {k.dtype}")
        else:
            k = check_int("k", k, low=0, high=ITERATIVE_MAX_K if method == "iterative" else None)
        check_int("dim", dim)
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be a bool, got {hard!r} ({type(hard).__name__})")
        self.k = k
        self.method: Method = method
        self.dim = dim
        self.hard = hard
        if isinstance(temperature, Tensor):
            check_real("temperature", temperature, low=0.0, low_inclusive=False, allow_tensor=True)
            if temperature.dim() != 0:
                raise ValueError(f"temperature must be a float or a 0-d tensor, got shape {tuple(temperature.shape)}")
            if isinstance(temperature, nn.Parameter):
                self.temperature = temperature
            else:
                self.register_buffer("temperature", temperature)
        else:
            self.temperature = check_real("temperature", temperature, low=0.0, low_inclusive=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the smooth top-k to ``x`` (any shape; output same shape)."""
        return soft_topk(x, self.k, method=self.method, temperature=self.temperature, dim=self.dim, hard=self.hard)

    def extra_repr(self) -> str:
        k = f"tensor{tuple(self.k.shape)}" if isinstance(self.k, Tensor) else str(self.k)
        t = self.temperature
        temp = f"tensor({float(t.detach()):g})" if isinstance(t, Tensor) else f"{t}"
        return f"k={k}, method={self.method!r}, temperature={temp}, dim={self.dim}, hard={self.hard}"
