"""Smooth Top-k operators: differentiable approximations of the top-k multi-hot mask.

Implements the constructions of Su Jianlin, "Softmax后传：寻找Top-K的光滑近似" (https://kexue.fm/archives/10373).
Every method maps scores ``x`` to ``p`` with entries in ``[0, 1]`` that sum to ``k`` along ``dim`` and tends
to the hard top-k mask as ``temperature -> 0`` (the iterative baseline keeps its documented flaws).
Temperature always enters as ``x / temperature``.

Methods:
    ``"iterative"``: Su's 2019 recursion ``p <- p + softmax((1 - p) * (x - min x))`` repeated k times
        (https://kexue.fm/archives/6620). Historical baseline: it can leave ``[0, 1]`` and is not monotone.
    ``"gradtopk"``: ``p = grad_x log e_k(exp(x))``, the inclusion marginals of the log-linear distribution
        over k-subsets. The article's recursion NaNs for spread inputs; here ``log e_k`` is a log-space
        polynomial product (a tree of log-space convolutions truncated at degree k, O(n k) work and memory)
        differentiated by autograd, which is stable for any spread and double-backward correct.
    ``"exp"``: threshold ``p = min(1, exp(x - lambda))`` with ``sum p = k``; closed form after a partial sort.
        ``k = 1`` is exactly softmax.
    ``"sigmoid"``: threshold ``p = sigmoid(x - lambda)``; ``lambda`` by safeguarded Newton (bracketed, with a
        bisection fallback) to the precision of the dtype.
    ``"laplace"``: threshold with the Laplace CDF ``f(t) = 1 - exp(-t)/2`` (t >= 0), ``exp(t)/2`` (t < 0);
        closed form, covering the branch ``lambda < min x`` (k > n/2) and ties that the article's code misses.

The three threshold methods share one custom autograd Function whose backward is the implicit-function-theorem
VJP ``g -> w * (g - (w . g) / sum w)`` with ``w = f'(x - lambda)`` (O(n), no n x n Jacobian), written in
terms of the saved output so that double backward is correct.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["METHODS", "SoftTopK", "soft_topk"]

Method = Literal["iterative", "gradtopk", "exp", "sigmoid", "laplace"]
METHODS: tuple[str, ...] = ("iterative", "gradtopk", "exp", "sigmoid", "laplace")
_THRESHOLD = ("exp", "sigmoid", "laplace")


# ----------------------------------------------------------------------------------------------------------
# input validation


def _check_inputs(x: Any, k: Any, method: str, temperature: Any, dim: Any) -> tuple[int, Tensor | int]:
    """Validate arguments; return the normalised ``dim`` and ``k`` (int or int64 tensor of batch shape)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"soft_topk: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"soft_topk: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError("soft_topk: x must have at least one dimension, got a 0-d tensor")
    if method not in METHODS:
        raise ValueError(f"soft_topk: method must be one of {METHODS}, got {method!r}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"soft_topk: dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"soft_topk: dim={dim} is out of range for x with {x.dim()} dimensions")
    dim = dim % x.dim()
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"soft_topk: temperature must be a float, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"soft_topk: temperature must be a finite float > 0, got {temperature}")
    # one reduction in the common case: NaN / inf propagate into the sum (overflow only costs the full check)
    if not bool(torch.isfinite(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        if bool(torch.isnan(x).any()):
            raise ValueError("soft_topk: x contains NaN")
        raise ValueError("soft_topk: x contains +-inf; expected finite scores")
    n = x.shape[dim]
    batch_shape = x.shape[:dim] + x.shape[dim + 1 :]
    if isinstance(k, Tensor):
        if k.is_floating_point():
            if not torch.equal(k, k.round()):
                raise ValueError(f"soft_topk: k must hold integers, got non-integer values {k.flatten()[:5].tolist()}")
        elif k.dtype == torch.bool or k.is_complex():
            raise TypeError(f"soft_topk: k must be an int or an integer tensor, got dtype {k.dtype}")
        try:
            kt = torch.broadcast_to(k.to(device=x.device, dtype=torch.long), batch_shape)
        except RuntimeError:
            raise ValueError(
                f"soft_topk: tensor k of shape {tuple(k.shape)} does not broadcast to the batch shape "
                f"{tuple(batch_shape)} (x.shape {tuple(x.shape)} without dim={dim})"
            ) from None
        if kt.numel() and (int(kt.min()) < 0 or int(kt.max()) > n):
            raise ValueError(f"soft_topk: k must lie in [0, {n}] (size of dim {dim}), got values outside it")
        return dim, kt
    if isinstance(k, bool) or not isinstance(k, int):
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        else:
            raise TypeError(f"soft_topk: k must be an int or an integer tensor, got {k!r} ({type(k).__name__})")
    if not 0 <= k <= n:
        raise ValueError(f"soft_topk: k must lie in [0, {n}] (size of dim {dim}), got k={k}")
    return dim, k


# ----------------------------------------------------------------------------------------------------------
# threshold constructions: lambda solvers (no autograd) and the shared implicit-gradient Function


def _head(z: Tensor, h: int) -> tuple[Tensor, Tensor]:
    """The ``h`` largest values of each row, descending, and the logsumexp of the remaining ``n - h`` values.

    Args:
        z: (R, n) scores.
        h: 1 <= h <= n.

    Returns:
        s: (R, h) descending; rest: (R,) logsumexp of the other entries (-inf when h == n).
    """
    n = z.shape[-1]
    if h >= n:
        s = torch.sort(z, dim=-1, descending=True).values
        return s, torch.full_like(z[:, 0], -math.inf)
    s, idx = torch.topk(z, h, dim=-1, largest=True, sorted=True)
    rest = z.scatter(-1, idx, -math.inf).logsumexp(-1)
    return s, rest


def _suffix_lse(s: Tensor, rest: Tensor) -> Tensor:
    """``out[:, m] = log(sum_{i >= m} exp(s_i) + exp(rest))`` for m = 0..h (the last column is ``rest``)."""
    full = torch.cat([s, rest[:, None]], dim=-1)  # (R, h + 1)
    return full.flip(-1).logcumsumexp(-1).flip(-1)


def _first_true(cond: Tensor) -> Tensor:
    """Index of the first True along the last dim (cond is guaranteed to hold somewhere)."""
    return cond.to(torch.int8).argmax(-1, keepdim=True)


def _lambda_exp(z: Tensor, k: Tensor, kmax: int, *, head: int = 16) -> Tensor:
    """Threshold for f(t) = min(1, e^t), Su's closed form (article eq. for C1); rows have 1 <= k < n.

    With the m largest saturated, ``lambda_m = log sum_{i>=m} e^{s_i} - log(k - m)``. The right m is the
    smallest one with ``lambda_m >= s_m`` (for smaller m the ansatz over-counts, because e^t >= min(1, e^t));
    choosing it this way is tie-safe and robust to rounding. At most k - 1 entries saturate, so the top kmax
    values suffice; usually far fewer saturate, so the top ``head`` values are tried first and the full top
    kmax is taken only when some row's consistent m is not among them.
    """
    h = min(kmax, head) if head > 0 else kmax
    while True:
        s, rest = _head(z, h)  # (R, h)
        suf = _suffix_lse(s, rest)[:, :h]  # (R, h): lse of every entry outside the top m, m = 0..h-1
        m = torch.arange(h, device=z.device)
        kk = k[:, None].to(z.dtype)
        lam = suf - torch.log((kk - m).clamp_min(1))
        cond = (lam >= s) | (m >= k[:, None] - 1)  # m = k - 1 always satisfies the condition exactly
        if h == kmax or bool(cond.any(-1).all()):
            return lam.gather(-1, _first_true(cond)).squeeze(-1)
        h = kmax


def _lambda_laplace(z: Tensor, k: Tensor, kmax: int) -> Tensor:
    """Threshold for the Laplace CDF: Su's closed form with both reference-code bugs fixed; rows 1 <= k < n.

    With m entries above lambda, A = sum_{i<m} e^{-s_i}, B = sum_{i>=m} e^{s_i}, c = k - m, the condition
    ``k = m - e^lambda A / 2 + e^{-lambda} B / 2`` is a quadratic in e^lambda whose positive root is
    ``lambda = log B - log(c + sqrt(c^2 + AB))`` (c >= 0) or, without cancellation for c < 0,
    ``lambda = -log A + log(|c| + sqrt(c^2 + AB))``. Candidates m = 0..n include m = n (lambda < min x,
    reachable only when k > n/2, the case the article's code misses); the smallest m with ``lambda_m >= s_m``
    is the consistent one (tie-safe: the article's code broadcasts several candidates under ties). Since
    entries above lambda exceed 1/2, m < 2k, so only the top min(n, 2 kmax) values are needed.
    """
    n = z.shape[-1]
    h = min(n, 2 * kmax)
    s, rest = _head(z, h)  # (R, h)
    log_b = _suffix_lse(s, rest)  # (R, h + 1), m = 0..h
    neg = torch.cat([torch.full_like(s[:, :1], -math.inf), -s], dim=-1)
    log_a = neg.logcumsumexp(-1)  # (R, h + 1): lse_{i<m} (-s_i)
    m = torch.arange(h + 1, device=z.device)
    c = k[:, None].to(z.dtype) - m
    log_abs_c = c.abs().log()
    half_log_ab = 0.5 * (log_a + log_b)
    # log(|c| + sqrt(c^2 + AB)), computed in log space so that huge AB does not overflow
    log_root = torch.logaddexp(log_abs_c, 0.5 * torch.logaddexp(2 * log_abs_c, 2 * half_log_ab))
    lam = torch.where(c >= 0, log_b - log_root, log_root - log_a)
    s_next = torch.cat([s, torch.full_like(s[:, :1], -math.inf)], dim=-1)  # s_m, with s_n = -inf
    cond = lam >= s_next
    cond[:, -1] = True  # unreachable fallback when h < n (m* < 2k <= h), exact when h == n
    return lam.gather(-1, _first_true(cond)).squeeze(-1)


def _lambda_sigmoid(z: Tensor, k: Tensor, *, k_int: int | None = None, max_iter: int = 100) -> Tensor:
    """``p = sigmoid(z - lambda)`` with ``sum p = k`` by safeguarded Newton; rows have 1 <= k < n.

    The bracket ``[min z - logit(k/n), max z - logit(k/n)]`` (article) always holds the root. Each step takes
    the Newton update ``lambda + F / sum p(1-p)`` when it stays inside the current bracket and bisects
    otherwise; the bracket shrinks with the sign of F. Returns p at the final lambda (not lambda itself).
    """
    n = z.shape[-1]
    kk = k.to(z.dtype)
    logit = torch.log(kk) - torch.log(n - kk)
    lo = z.amin(-1) - logit
    hi = z.amax(-1) - logit
    # start from the exp-tail guess (good when k << n) or its mirror (k close to n), clamped into the bracket
    if k_int is not None and 2 * k_int <= n:
        guess = z.logsumexp(-1) - torch.log(kk)
    elif k_int is not None:
        guess = -((-z).logsumexp(-1) - torch.log(n - kk))
    else:
        guess = torch.where(kk <= n / 2, z.logsumexp(-1) - torch.log(kk), -((-z).logsumexp(-1) - torch.log(n - kk)))
    lam = torch.minimum(torch.maximum(guess, lo), hi)
    eps = torch.finfo(z.dtype).eps
    tol_f = 4 * eps * (kk + 1)  # rounding level of sum p = k
    done = torch.zeros_like(lam, dtype=torch.bool)
    p = z
    for _ in range(max_iter):
        p = torch.sub(z, lam[:, None]).sigmoid_()
        s1 = p.sum(-1)
        f = s1 - kk  # decreasing in lambda
        w = s1 - torch.linalg.vecdot(p, p)  # -F'(lambda) = sum p (1 - p)
        pos = f > 0
        lo = torch.where(pos, lam, lo)
        hi = torch.where(pos, hi, lam)
        newton = lam + f / w  # inf / NaN when w underflows: rejected by the bracket test below
        new = torch.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
        # a row is converged when the sum is k up to its own rounding (f is then noise: its sign must not
        # drive a bisection, and with a saturated entry w is tiny so f / w is noise too) or when the update is
        # below the resolution of lambda; converged rows keep their lambda, so p belongs to the final lambda
        done = done | (f.abs() <= tol_f) | ((new - lam).abs() <= 8 * eps * (1.0 + lam.abs()))
        if bool(done.all()):
            return p
        lam = torch.where(done, lam, new)
    return torch.sub(z, lam[:, None]).sigmoid_()


def _threshold_forward(z: Tensor, k: Tensor, method: str, k_int: int | None = None) -> Tensor:
    """p = f(z - lambda(z)) on (R, n) rows, exact 0 / 1 for rows with k = 0 / k = n. No autograd.

    ``k_int`` is the common k when every row has the same 1 <= k < n (skips the per-row bookkeeping).
    """
    n = z.shape[-1]
    if n == 1:  # every row is degenerate
        return torch.where(k[:, None] == n, torch.ones_like(z), torch.zeros_like(z))
    if k_int is None:
        degenerate = (k == 0) | (k == n)
        kc = k.clamp(1, n - 1)
        kmax = int(kc.max()) if kc.numel() else 1
    else:
        kc, kmax = k, k_int
    if method == "exp":
        lam = _lambda_exp(z, kc, kmax)
        p = torch.sub(z, lam[:, None]).exp_().clamp_max_(1.0)
    elif method == "laplace":
        lam = _lambda_laplace(z, kc, kmax)
        t = z - lam[:, None]
        # Laplace CDF, each branch evaluated only where its exponent is <= 0 (no overflow)
        e = torch.exp(-t.abs())
        p = torch.where(t >= 0, 1 - 0.5 * e, 0.5 * e)
    else:
        p = _lambda_sigmoid(z, kc, k_int=k_int)
    if k_int is None and bool(degenerate.any()):
        full = (k == n)[:, None].to(z.dtype).expand_as(z)
        p = torch.where(degenerate[:, None], full, p)
    return p


def _threshold_weight(p: Tensor, method: str) -> Tensor:
    """w = f'(z - lambda) expressed through p = f(z - lambda), differentiably (for double backward)."""
    if method == "sigmoid":
        return p * (1 - p)
    if method == "exp":
        return torch.where(p < 1, p, 0.0)
    return torch.minimum(p, 1 - p)  # Laplace: f' = min(f, 1 - f)


def _threshold_vjp(p: Tensor, g: Tensor, method: str) -> Tensor:
    """Implicit-function VJP ``w * (g - (w . g) / sum w)`` (spec 8.4 C2), O(n) per row."""
    w = _threshold_weight(p, method)
    sw = w.sum(-1, keepdim=True)
    wg = torch.linalg.vecdot(w, g)[:, None]
    # rows where every w vanished (k = 0, k = n, or fully saturated) have zero gradient
    return w * (g - wg / sw.clamp_min(torch.finfo(p.dtype).tiny))


class _ThresholdTopK(torch.autograd.Function):
    """p = f(z - lambda(z)) with sum f(z - lambda) = k; backward by the implicit function theorem.

    The backward is written with differentiable torch ops of the saved output ``p`` and ``grad_output``, so
    that autograd differentiates it again (double backward) through this same Function.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, k: Tensor, method: str, k_int: int | None) -> Tensor:
        with torch.no_grad():
            p = _threshold_forward(z, k, method, k_int)
        ctx.method = method
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None, None]:
        (p,) = ctx.saved_tensors
        return _threshold_vjp(p, grad_output, ctx.method), None, None, None


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


def _gradtopk(z: Tensor, k: Tensor) -> Tensor:
    """GradTopK marginals ``grad_z log e_k(exp z)`` per row (rows (R, n), k: (R,) in [1, n-1]).

    Rows with k > n/2 use the complement identity ``e_k(e^z) = e^{sum z} e_{n-k}(e^{-z})``, i.e.
    ``ST_k(z) = 1 - ST_{n-k}(-z)``: exact, O(n min(k, n-k)), and entries near 1 come out as 1 - (small), which
    keeps their rounding error relative to the small side.
    """
    n = z.shape[-1]
    flip = k > n // 2
    k_eff = torch.where(flip, n - k, k)
    z_eff = torch.where(flip[:, None], -z, z)
    kmax = int(k_eff.max())
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


def _iterative(z: Tensor, k: Tensor) -> Tensor:
    """Su's 2019 soft k-max (https://kexue.fm/archives/6620): z <- z - min z; p <- p + softmax((1 - p) z), k
    times.

    Kept verbatim as a baseline: the sum is exactly k, but p can exceed 1 and is not monotone in z. Its
    Jacobian is a product of k factors that scale with the spread of z, so for a large spread and large k the
    gradient itself overflows (e.g. spread 1e4, k=990 of n=1000 in float32); the forward value stays finite.
    """
    z = z - z.amin(-1, keepdim=True)
    p = torch.zeros_like(z)
    kmax = int(k.max()) if k.numel() else 0
    for i in range(kmax):
        step = torch.softmax((1 - p) * z, dim=-1)
        p = p + torch.where((i < k)[:, None], step, torch.zeros_like(step))
    return p


# ----------------------------------------------------------------------------------------------------------
# public API


def _hard_mask(z: Tensor, k: Tensor) -> Tensor:
    """Exact multi-hot of the k largest entries per row ((R, n), per-row k)."""
    n = z.shape[-1]
    kmax = int(k.max()) if k.numel() else 0
    out = torch.zeros_like(z)
    if kmax == 0:
        return out
    idx = torch.topk(z.detach(), min(kmax, n), dim=-1).indices
    keep = (torch.arange(idx.shape[-1], device=z.device)[None, :] < k[:, None]).to(z.dtype)
    return out.scatter(-1, idx, keep)


def _soft_topk_core(x: Tensor, k: Tensor | int, method: str, temperature: float, dim: int, hard: bool) -> Tensor:
    """Shared core: move ``dim`` last, flatten to (R, n) rows, dispatch, restore the shape."""
    orig_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # solvers and log-space sums need at least float32
    xt = x.movedim(dim, -1)
    shape = xt.shape
    n = shape[-1]
    z = xt.reshape(-1, n)  # (R, n)
    if temperature != 1.0:
        z = z / temperature
    rows = z.shape[0]
    if rows == 0 or n == 0:
        return x.new_zeros(x.shape).to(orig_dtype)
    if not isinstance(k, Tensor):
        if k in (0, n):  # exact 0 / 1 with zero gradient, no solver
            p = z * 0 + (1.0 if k == n else 0.0)
            if hard:
                p = _hard_mask(z, torch.full((rows,), k, dtype=torch.long, device=x.device)) + (p - p.detach())
            return p.reshape(shape).movedim(-1, dim).to(orig_dtype)
        if k == 1 and method in ("exp", "gradtopk") and not hard:
            # both are exactly softmax for k = 1 (article); skip the sort / DP
            return torch.softmax(z, dim=-1).reshape(shape).movedim(-1, dim).to(orig_dtype)
    kr = k.reshape(-1) if isinstance(k, Tensor) else torch.full((rows,), k, dtype=torch.long, device=x.device)
    if method in _THRESHOLD:
        k_int = k if isinstance(k, int) else None  # k in (0, n) here: 0 and n returned early
        p = _ThresholdTopK.apply(z, kr, method, k_int)
    else:
        degenerate = (kr == 0) | (kr == n)
        kc = kr.clamp(1, max(n - 1, 1))
        if n == 1:
            p = z * 0
        elif method == "gradtopk":
            p = _gradtopk(z, kc)
        else:
            p = _iterative(z, kc)
        if bool(degenerate.any()):
            # exact 0 / 1 and zero gradient for k = 0 / k = n
            p = torch.where(degenerate[:, None], (kr == n)[:, None].to(z.dtype).expand_as(z), p)
    if hard:
        # straight-through: forward value is the exact multi-hot, backward is the smooth operator's
        p = _hard_mask(z, kr) + (p - p.detach())
    return p.reshape(shape).movedim(-1, dim).to(orig_dtype)


def soft_topk(
    x: Tensor,
    k: int | Tensor,
    *,
    method: Method = "sigmoid",
    temperature: float = 1.0,
    dim: int = -1,
    hard: bool = False,
) -> Tensor:
    """Smooth top-k mask: entries in [0, 1] summing to ``k`` along ``dim``, tending to the top-k multi-hot.

    Implements the constructions of https://kexue.fm/archives/10373 (``ST_k(x / temperature)``): the iterative
    recursion (section "迭代构造"), GradTopK ``grad log e_k(e^x)`` and the threshold construction
    ``f(x - lambda)`` with ``sum f(x_i - lambda) = k`` for ``f`` in {min(1, e^t), sigmoid, Laplace CDF}.

    Args:
        x: (..., n, ...) floating-point scores; ``dim`` indexes the n items. Any rank; float64 works.
        k: number of items to select, an int in [0, n] or an integer tensor broadcastable to the shape of ``x``
            without ``dim`` (one k per row). k = 0 gives exact zeros and k = n exact ones (zero gradient).
        method: ``"sigmoid"`` (default; smooth, strictly monotone, exact sum), ``"exp"`` (closed form, k=1 is
            softmax, saturates at 1), ``"laplace"`` (closed form, C^1), ``"gradtopk"`` (k-subset marginals,
            O(n k) memory), ``"iterative"`` (2019 baseline; may leave [0, 1]).
        temperature: > 0; scores are divided by it. Small values approach the hard mask.
        dim: the item dimension.
        hard: straight-through estimator: the forward returns the exact top-k multi-hot (ties broken by
            ``torch.topk``), the backward is that of the smooth operator.

    Returns:
        Tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: ``x`` not floating point, ``k`` not an integer, bad argument types.
        ValueError: ``k`` outside [0, n], ``temperature <= 0``, ``dim`` out of range, NaN or inf in ``x``,
            unknown ``method``.

    Example:
        >>> x = torch.tensor([3.0, 2.0, 1.0, 4.0])
        >>> p = soft_topk(x, 2, method="sigmoid", temperature=0.01)
        >>> p.round(decimals=3)
        tensor([1., 0., 0., 1.])
        >>> float(soft_topk(x, 2, method="gradtopk").sum())
        2.0
    """
    dim, kk = _check_inputs(x, k, method, temperature, dim)
    return _soft_topk_core(x, kk, method, float(temperature), dim, hard)


class SoftTopK(nn.Module):
    """Module form of :func:`soft_topk` (https://kexue.fm/archives/10373).

    Args:
        k: items to select (int, or an integer tensor broadcastable to the batch shape).
        method: see :func:`soft_topk`.
        temperature: > 0.
        dim: the item dimension.
        hard: straight-through multi-hot forward.

    Example:
        >>> m = SoftTopK(2, method="exp")
        >>> m(torch.tensor([[0.0, 1.0, 2.0]])).sum().item()
        2.0
    """

    def __init__(
        self,
        k: int | Tensor,
        *,
        method: Method = "sigmoid",
        temperature: float = 1.0,
        dim: int = -1,
        hard: bool = False,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"SoftTopK: method must be one of {METHODS}, got {method!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"SoftTopK: temperature must be a float > 0, got {temperature!r}")
        self.k = k
        self.method: Method = method
        self.temperature = float(temperature)
        self.dim = dim
        self.hard = hard

    def forward(self, x: Tensor) -> Tensor:
        """Apply the smooth top-k to ``x`` (any shape; output same shape)."""
        return soft_topk(x, self.k, method=self.method, temperature=self.temperature, dim=self.dim, hard=self.hard)

    def extra_repr(self) -> str:
        k = f"tensor{tuple(self.k.shape)}" if isinstance(self.k, Tensor) else str(self.k)
        return f"k={k}, method={self.method!r}, temperature={self.temperature}, dim={self.dim}, hard={self.hard}"
