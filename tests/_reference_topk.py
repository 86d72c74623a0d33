"""Naive references for the smooth top-k tests, written straight from https://kexue.fm/archives/10373.

Everything here is 1-D, float64, loop-based and slow on purpose: brute-force enumeration of k-subsets for
GradTopK, plain bisection for the thresholds, and faithful transcriptions of the article's own numpy snippets
(whose bugs the tests pin as facts).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor


def gradtopk_bruteforce(x: Tensor, k: int) -> Tensor:
    """Inclusion marginals of the log-linear distribution over k-subsets: Z_{k,i} / Z_k by enumeration."""
    xs = x.double().tolist()
    n = len(xs)
    num = [0.0] * n
    den = 0.0
    shift = max(xs) * k  # avoid overflow; cancels in the ratio
    for subset in itertools.combinations(range(n), k):
        w = math.exp(sum(xs[i] for i in subset) - shift)
        den += w
        for i in subset:
            num[i] += w
    return torch.tensor([v / den for v in num], dtype=torch.float64)


def iterative_loop(x: Tensor, k: int) -> Tensor:
    """Su 2019 (kexue.fm/archives/6620): x <- x - min x; p <- p + softmax((1 - p) * x), k times."""
    xs = np.asarray(x.double().tolist())
    xs = xs - xs.min()
    p = np.zeros_like(xs)
    for _ in range(k):
        y = (1 - p) * xs
        e = np.exp(y - y.max())
        p = p + e / e.sum()
    return torch.tensor(p)


def stackexchange_iteration(x: Tensor, k: int) -> Tensor:
    """stats.stackexchange.com/a/454788: p <- p + softmax(x; weights 1 - p), k times (the article's
    counterexample)."""
    xs = np.asarray(x.double().tolist())
    p = np.zeros_like(xs)
    for _ in range(k):
        w = (1 - p) * np.exp(xs - xs.max())
        p = p + w / w.sum()
    return torch.tensor(p)


def _f(method: str, t: float) -> float:
    if method == "exp":
        return min(1.0, math.exp(min(t, 0.0)))
    if method == "sigmoid":
        return 1 / (1 + math.exp(-t)) if t >= 0 else math.exp(t) / (1 + math.exp(t))
    if method == "laplace":
        return 1 - 0.5 * math.exp(-t) if t >= 0 else 0.5 * math.exp(t)
    raise ValueError(method)


def threshold_bisection(x: Tensor, k: int, method: str, *, iters: int = 200) -> tuple[Tensor, float]:
    """p = f(x - lambda) with sum p = k by plain bisection on the article's bracket, widened to cover every
    f."""
    xs = x.double().tolist()
    n = len(xs)
    if k == 0:
        return torch.zeros(n, dtype=torch.float64), math.inf
    if k == n:
        return torch.ones(n, dtype=torch.float64), -math.inf
    lo = min(xs) - 60.0 - math.log(n)
    hi = max(xs) + 60.0 + math.log(n)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if sum(_f(method, v - mid) for v in xs) > k:
            lo = mid
        else:
            hi = mid
    lam = 0.5 * (lo + hi)
    return torch.tensor([_f(method, v - lam) for v in xs], dtype=torch.float64), lam


def threshold_jacobian(p: Tensor, method: str) -> Tensor:
    """Implicit-function Jacobian diag(w) - w w^T / sum w with w = f'(x - lambda) expressed through p."""
    if method == "sigmoid":
        w = p * (1 - p)
    elif method == "exp":
        w = torch.where(p < 1, p, torch.zeros_like(p))
    else:
        w = torch.minimum(p, 1 - p)
    return torch.diag(w) - torch.outer(w, w) / w.sum()


def sigmoid_sg_trick(x: Tensor, k: int) -> Tensor:
    """The article's stop-gradient injection: lambda -> x . sg[grad lambda] + sg[lambda - x . grad lambda]."""
    p0, lam = threshold_bisection(x.detach(), k, "sigmoid")
    w = p0 * (1 - p0)
    dlam = (w / w.sum()).to(x.dtype)  # implicit function theorem: d lambda / d x_j = sigma'_j / sum sigma'
    lam_t = (x * dlam.detach()).sum() + (lam - (x * dlam).sum()).detach()
    return torch.sigmoid(x - lam_t)


# ----------------------------------------------------------------------------------------------------------
# transcriptions of the article's numpy code (its bugs included)


def article_gradtopk(x: np.ndarray, k: int) -> np.ndarray:
    """Article snippet 1: the log-space recursion log Z_{k,i} = x_i + log(Z_{k-1} - Z_{k-1,i}) without
    log1mexp."""
    log_zs = x.copy()
    log_z = 0.0
    with np.errstate(all="ignore"):
        for i in range(1, k + 1):
            log_zs = x.copy() if i == 1 else x + log_z + np.log(1 - np.exp(log_zs - log_z))
            log_z = np.logaddexp.reduce(log_zs) - np.log(i)
        return np.exp(log_zs - log_z)


def article_laplace(x: np.ndarray, k: int) -> np.ndarray:
    """Article snippet 4: vectorised Laplace-CDF closed form over m = 0..n-1 with an interval mask.

    Misses the branch lambda < min(x) (k > n/2) and breaks under ties (several candidates pass the mask),
    exactly as the article's code does: returns an array of the wrong shape or raises.
    """
    x_sort = np.sort(x)  # ascending
    lse1 = np.logaddexp.accumulate(x_sort)  # lse of the smallest j+1 entries
    lse2 = np.logaddexp.accumulate(-x_sort[::-1])[::-1]  # lse of -x over entries >= position j
    lse2 = np.concatenate([lse2[1:], [-np.inf]])  # over strictly larger entries
    m = np.arange(len(x) - 1, -1, -1)  # entries above
    c = k - m
    lam = lse1 - np.log(np.sqrt(c**2 + np.exp(lse1 + lse2)) + c)
    upper = np.concatenate([x_sort[1:], [np.inf]])
    mask = (x_sort <= lam) & (lam <= upper)
    lam = lam[mask]
    if lam.size != 1:
        raise ValueError(f"article Laplace code: {lam.size} consistent candidates")
    t = x - lam
    return np.where(t >= 0, 1 - np.exp(-t) / 2, np.exp(t) / 2)


# ----------------------------------------------------------------------------------------------------------
# a threshold reference valid at any temperature


def _f_small_side(method: str, t: float) -> tuple[float, float, float]:
    """(f(t), 1 - f(t), f'(t)), each evaluated so that it keeps full relative precision when it is tiny."""
    if method == "exp":
        if t >= 0:
            return 1.0, 0.0, 0.0
        return math.exp(t), -math.expm1(t), math.exp(t)
    if method == "sigmoid":
        lo = math.exp(-abs(t)) / (1 + math.exp(-abs(t)))  # sigmoid(-|t|)
        hi = 1 / (1 + math.exp(-abs(t)))
        return (hi, lo, hi * lo) if t >= 0 else (lo, hi, hi * lo)
    if method == "laplace":
        lo = 0.5 * math.exp(-abs(t))
        return (1 - lo, lo, lo) if t >= 0 else (lo, 1 - lo, lo)
    raise ValueError(method)


def threshold_any_temperature(x: Tensor, k: int, method: str, temperature: float) -> tuple[Tensor, Tensor]:
    """p = f(z - lambda) and w = f'(z - lambda) for z = (x - a) / temperature, by plain bisection in float64.

    1-D, 1 <= k < n. ``a`` is the k-th largest entry (the result is shift invariant), which keeps the entries
    near the threshold small numbers. The residual ``sum f - k`` is summed as ``sum_{not top k} f - sum_{top k}
    (1 - f)`` with ``math.fsum``, each term from the small side of f, so that it stays exact where every p rounds
    to 0 or 1 (there ``sum p - k`` is 0 over a wide plateau and would not locate lambda). Bisection runs until
    the bracket is 1e-15 wide relative to lambda (even near 0) or the residual is exactly 0.
    """
    xs = [float(v) for v in x.double().tolist()]
    n = len(xs)
    order = sorted(range(n), key=lambda i: -xs[i])
    top = set(order[:k])
    a = xs[order[k - 1]]
    z = [(v - a) / temperature for v in xs]

    def residual(lam: float) -> float:
        terms = []
        for i, zi in enumerate(z):
            f, fbar, _ = _f_small_side(method, zi - lam)
            terms.append(-fbar if i in top else f)
        return math.fsum(terms)

    lo = min(z) - 800.0 - math.log(n)
    hi = max(z) + 800.0 + math.log(n)
    # relative to lambda even near 0: exp's threshold can sit e^-60 above the k-th score, just below its kink
    while hi - lo > max(1e-15 * max(abs(lo), abs(hi)), 1e-300):
        mid = 0.5 * (lo + hi)
        r = residual(mid)
        if r == 0:  # on the plateau where every term underflows: any lambda there gives the same p and w
            lo = hi = mid
        elif r > 0:
            lo = mid
        else:
            hi = mid
    lam = 0.5 * (lo + hi)
    p, w = [], []
    for zi in z:
        f, _, df = _f_small_side(method, zi - lam)
        p.append(f)
        w.append(df)
    return torch.tensor(p, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)


def threshold_vjp(w: Tensor, g: Tensor, temperature: float) -> Tensor:
    """d(p . g) / dx for the threshold construction: ``w_i (g_i - (w . g) / sum w) / temperature``.

    ``g_i - (w . g) / sum w`` is summed as ``sum_j w_j (g_i - g_j) / sum w`` (O(n^2), exact with ``math.fsum``): when
    one entry carries nearly all the weight the mean is nearly g there and the direct difference cancels.
    """
    ws, gs = [float(v) for v in w.tolist()], [float(v) for v in g.tolist()]
    sw = math.fsum(ws)
    if sw == 0.0:
        return torch.zeros_like(w)
    out = [
        wi
        * (math.fsum(wj * (gi - gj) for wj, gj in zip(ws, gs, strict=True)) / sw)
        / temperature  # no w_i w_j underflow
        for wi, gi in zip(ws, gs, strict=True)
    ]
    return torch.tensor(out, dtype=torch.float64)
