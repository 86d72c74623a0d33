"""The contract every public op, loss, regularizer, module and method of kexue honours, as a registry of entries.

Each :class:`Entry` says how to call one public callable on small inputs, which of its arguments are floating or
integer tensors, which hyperparameters it takes (and their valid range), whether it has a module twin (or an
independent reference) and a ``reduction`` argument, and which gradient checks apply. ``tests/test_contract.py``
runs the same battery over every entry:

- functional == module (same inputs, same output);
- reduction laws (``"mean" == "none".mean()``, ``"sum" == "none".sum()``);
- output dtype == input dtype for float32 and float64 (or the documented dtype), finite output;
- the documented output dtype under ``torch.autocast("cpu", dtype=torch.bfloat16)``, close to the float32 answer;
- float64 ``gradcheck`` (and ``gradgradcheck`` where the op may sit inside a gradient penalty);
- bad input -> ``ValueError``/``TypeError`` whose message names the argument: int/bool/complex dtypes, NaN, inf,
  empty, wrong rank, mismatched batch, integer arguments given as floats, negative or out of range, and
  non-finite, out-of-range or wrongly typed hyperparameters (through the functional and its module twin);
- extreme valid input -> finite and correct: inputs scaled by 1e4, 1e30 and 1e-30 where the output is homogeneous
  in them; spread by 1e4 and 1e30 where it is not (float32 against float64 on the same values); all ties; tiny
  and huge temperature (against the twin or reference, and the known limit, e.g. soft top-k -> the hard mask).

Every name exported by the library layers must be registered here or listed in ``EXEMPT`` with the reason; a new
export that is in neither fails ``test_registry_covers_every_export``. Known defects in code that is being fixed
elsewhere are listed in ``KNOWN_FAILURES`` (test id -> reason) and run as strict xfails, so a fix shows up as an
unexpected pass and its line is removed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import kexue.losses as L
import kexue.losses.multitask as MT
import kexue.methods as ME
import kexue.modules as MO
import kexue.ops as O
import kexue.regularizers as R

# Library layers whose exports the contract covers (``train``, ``data``, ``experiments`` and ``report`` are
# tested by their own suites: they touch files, devices and processes rather than tensors).
LAYERS = ("kexue.ops", "kexue.losses", "kexue.losses.multitask", "kexue.regularizers", "kexue.modules", "kexue.methods")

NAN, INF = float("nan"), float("inf")

# hyperparameter kinds -> values that must be rejected, with the exception type expected
BAD_VALUES: dict[str, list[tuple[Any, type[Exception]]]] = {
    "positive": [
        (0.0, ValueError),
        (-1.0, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (True, TypeError),
        ("1", TypeError),
    ],
    "nonneg": [(-1.0, ValueError), (NAN, ValueError), (INF, ValueError), ("1", TypeError)],
    "unit": [(-0.1, ValueError), (1.5, ValueError), (NAN, ValueError), ("0.5", TypeError)],  # [0, 1]
    "unit_open": [(-0.1, ValueError), (1.0, ValueError), (NAN, ValueError)],  # [0, 1)
    "probability": [(0.0, ValueError), (1.0, ValueError), (NAN, ValueError), ("0.5", TypeError)],  # (0, 1)
    "finite": [(NAN, ValueError), (INF, ValueError), (-INF, ValueError)],
    "gamma": [(NAN, ValueError), ("1", TypeError), (True, TypeError)],  # any real, +-inf included
    "posint": [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)],
    "nonnegint": [(-1, ValueError), (1.5, TypeError), (True, TypeError)],
    "int_ge2": [(1, ValueError), (1.5, TypeError), (True, TypeError)],
    "index3": [(3, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)],  # an index into 3 items
    "reduction": [("avg", ValueError), (None, ValueError)],
    "choice": [("bogus", ValueError), (None, ValueError)],
    "flag": [(1, TypeError), ("yes", TypeError)],
    "nonneg3": [
        ([1.0, -1.0, 1.0], ValueError),
        ([1.0, NAN, 1.0], ValueError),
        ([1.0, 1.0], ValueError),
        ("abc", TypeError),
    ],
    "positive3": [
        ([1.0, 0.0, 1.0], ValueError),
        ([1.0, NAN, 1.0], ValueError),
        ([1.0, 1.0], ValueError),
        ("abc", TypeError),
    ],
    "image_size": [(30, ValueError), (28.0, TypeError), (True, TypeError)],
    "token_ids": [([1, 1], ValueError), ([-1], ValueError), ([99], ValueError), (["a"], TypeError)],
    "shape": [((2, -1), ValueError), ((2, 1.5), TypeError)],
    "float_dtype": [(torch.int64, TypeError), (torch.bool, TypeError)],
}

# Valid extreme temperatures every temperature-taking entry must handle (finite and, where a twin or a limit
# is known, correct).
TEMPERATURES = (1e-6, 1e6)


@dataclasses.dataclass
class Call:
    """Positional and keyword arguments of one call."""

    args: list[Any]
    kwargs: dict[str, Any]


@dataclasses.dataclass
class Entry:
    """How to exercise one public callable.

    Attributes:
        name: the exported name(s) this entry covers (a functional and its module twin may share one entry);
            ``name[0]`` is the test id, ``"x[variant]"`` covers export ``x``.
        fn: the call under test: ``fn(*call.args, **call.kwargs)``; a tuple result is read through its first
            element, a dict through ``"loss"``, a Python float as a float64 scalar.
        make: ``make(dtype, generator) -> Call`` building valid inputs in ``dtype`` (models included).
        float_args: positional indices (int) or keyword names (str) of the floating tensor inputs, with the
            argument's public name used in error messages.
        int_args: the same for integer tensor inputs (labels, token ids, indices).
        hparams: keyword hyperparameter -> kind in ``BAD_VALUES``.
        module: ``module(call) -> result`` computing the same thing through the ``nn.Module`` twin; it must
            reject bad hyperparameters too.
        reference: ``reference(call) -> result``, an independent computation of the same answer (a formula, a
            torch function, the pure rule behind a strategy); compared like the module, not given bad input.
        reduction: the callable takes ``reduction=`` in ``("mean", "sum", "none")``.
        grad: ``None``, ``"gradcheck"`` or ``"gradgradcheck"``; ``grad_args`` as ``float_args``;
            ``grad_kwargs`` override the call's keywords for the gradient checks only (an ablation that makes
            the value's derivative the gradient); ``grad_fast`` uses gradcheck's fast mode (large inputs).
        differentiable: the output carries an autograd graph back to the float inputs.
        wrong_rank: arg -> a function making a tensor of a rank the callable must reject (integer args default
            to ``unsqueeze(0)``).
        batch_args: args whose size along dim 0 must match (dropping one row of one must be rejected).
        empty_ok: an empty batch is valid input (then it is not tested as bad input): ``True`` for every arg, or
            the args for which it is. An empty batch empties every arg of ``batch_args`` together.
        skip_bad: corruption kinds that do not apply to this entry (see ``test_contract._corrupt``).
        scale: the output is homogeneous of this degree in the float inputs (0: invariant, 1: equivariant, 2:
            quadratic) and must stay so at scales 1e4, 1e30 and 1e-30; ``None``: not tested.
        ties_ok: all-equal inputs (every entry ``tie_value``) are valid and must give a finite answer (and finite
            gradients).
        allow_inf: float args where ``-inf`` is valid input (masked logits); ``+inf`` is not injected there.
        out_dtype: ``"input"`` (the dtype given to ``make``), a fixed ``torch.dtype``, or ``"float"`` (a Python
            float).
        autocast: the documented output dtype under bf16 autocast on float32 inputs; ``None``: not tested.
        temperature_check: ``check(call, out, temperature)`` asserting the known limit at an extreme temperature.
        spread: the float inputs may be multiplied by 1e4 and 1e30 (values that far apart are valid input, the
            output is not homogeneous): the float32 answer must be finite and equal the float64 answer on the
            same values (and the temperature limit hold at ``temperature / scale``).
    """

    name: tuple[str, ...]
    fn: Callable[..., Any]
    make: Callable[[torch.dtype, torch.Generator], Call]
    float_args: dict[int | str, str]
    int_args: dict[int | str, str] = dataclasses.field(default_factory=dict)
    hparams: dict[str, str] = dataclasses.field(default_factory=dict)
    module: Callable[[Call], Any] | None = None
    reference: Callable[[Call], Any] | None = None
    reduction: bool = False
    grad: str | None = "gradcheck"
    grad_args: tuple[int | str, ...] | None = None
    grad_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    grad_fast: bool = False
    differentiable: bool = True
    wrong_rank: dict[int | str, Callable[[Tensor], Tensor]] = dataclasses.field(default_factory=dict)
    batch_args: tuple[int | str, ...] = ()
    empty_ok: bool | tuple[int | str, ...] = False
    skip_bad: frozenset[str] = frozenset()
    scale: int | None = None
    ties_ok: bool = True
    tie_value: float = 0.5
    allow_inf: tuple[int | str, ...] = ()
    out_dtype: str | torch.dtype = "input"
    autocast: torch.dtype | None = None
    temperature_check: Callable[[Call, Tensor, float], None] | None = None
    spread: bool = False


def get_arg(call: Call, key: int | str) -> Any:
    return call.args[key] if isinstance(key, int) else call.kwargs[key]


def with_arg(call: Call, key: int | str, value: Any) -> Call:
    args, kwargs = list(call.args), dict(call.kwargs)
    if isinstance(key, int):
        args[key] = value
    else:
        kwargs[key] = value
    return Call(args, kwargs)


def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _unsq(x: Tensor) -> Tensor:
    return x.unsqueeze(0)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1)


def _float_dtype(x: Any) -> torch.dtype:
    """The dtype to build a model in for input ``x`` (float32 when ``x`` is not floating: the call must fail)."""
    return x.dtype if isinstance(x, Tensor) and x.is_floating_point() else torch.float32


@contextmanager
def _seed(seed: int = 0) -> Iterator[None]:
    """Seed the global RNG inside the block and restore it afterwards (the callers' draws stay theirs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _built(build: Callable[[], nn.Module], dtype: torch.dtype) -> nn.Module:
    """A module built under a fixed seed, in ``dtype``: every call gets the same weights."""
    with _seed():
        return build().to(dtype)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    key = entry.name[0]
    assert key not in REGISTRY, key
    REGISTRY[key] = entry
    return entry


# ---------------------------------------------------------------------------------------------------- ops


def _topk_limits(hard_limit: bool) -> Callable[[Call, Tensor, float], None]:
    """Every soft top-k sums to k; the converging methods are the hard mask at a tiny temperature."""

    def check(c: Call, out: Tensor, temperature: float) -> None:
        x, k = c.args[0], c.args[1]
        torch.testing.assert_close(out.sum(-1), torch.full_like(out.sum(-1), float(k)), atol=1e-4, rtol=1e-4)
        if hard_limit and temperature <= min(TEMPERATURES):
            hard = torch.zeros_like(x).scatter(-1, x.topk(k, dim=-1).indices, 1.0)
            torch.testing.assert_close(out, hard, atol=1e-4, rtol=0)

    return check


for _method in O.TOPK_METHODS:
    register(
        Entry(
            name=("soft_topk", "SoftTopK") if _method == "sigmoid" else (f"soft_topk[{_method}]",),
            fn=lambda x, k, _m=_method, **kw: O.soft_topk(x, k, method=_m, **kw),
            make=lambda dt, g: Call([_randn(g, 3, 7, dtype=dt), 3], {"temperature": 0.7}),
            float_args={0: "x"},
            hparams={"temperature": "positive"},
            module=lambda c, _m=_method: O.SoftTopK(c.args[1], method=_m, **c.kwargs)(c.args[0]),
            grad="gradgradcheck" if _method in ("sigmoid", "gradtopk", "laplace", "exp") else "gradcheck",
            wrong_rank={0: lambda x: x[0, 0]},  # a 0-d tensor has no top-k
            empty_ok=True,  # an empty batch of rows gives an empty mask, like torch.topk
            autocast=torch.float32,  # elementwise: the input dtype
            temperature_check=_topk_limits(hard_limit=_method != "iterative"),  # the 2019 baseline's flaws
            spread=True,
        )
    )

register(
    Entry(
        name=("effective_rank",),
        fn=O.effective_rank,
        make=lambda dt, g: Call([_randn(g, 8, 5, dtype=dt)], {}),
        float_args={0: "z"},
        hparams={"eps": "nonneg"},  # a relative threshold: 0 is valid
        wrong_rank={0: _flat},
        scale=0,
        grad=None,  # a collapse monitor computed on the detached embedding (documented)
        differentiable=False,
    )
)
register(
    Entry(
        name=("normalized_std",),
        fn=O.normalized_std,
        make=lambda dt, g: Call([_randn(g, 8, 5, dtype=dt)], {}),
        float_args={0: "z"},
        hparams={"eps": "positive"},
        wrong_rank={0: _flat},
        scale=0,
        grad="gradcheck",
    )
)

# The sparse router: the gate weights (gathered from the smooth mask, so exactly differentiable) are the output
# under test; test_router.py checks the indices (torch.topk's), dispatch and the load-balancing statistics.


def _router_logits(dt: torch.dtype, g: torch.Generator) -> Call:
    return Call([_randn(g, 6, 5, dtype=dt), 2], {"temperature": 0.7})


register(
    Entry(
        name=("soft_topk_router",),
        fn=lambda logits, k, **kw: O.soft_topk_router(logits, k, **kw).weights,
        make=_router_logits,
        float_args={0: "logits"},
        hparams={"temperature": "positive"},
        grad="gradcheck",
        wrong_rank={0: lambda x: x[0, 0]},
    )
)


def _router_module(c: Call) -> Tensor:
    torch.manual_seed(0)
    x = c.args[0]
    router = MO.SoftTopKRouter(4, num_experts=5, k=2, **c.kwargs)
    if isinstance(x, Tensor) and x.is_floating_point():
        router = router.to(x.dtype)
    return router(x).weights


register(
    Entry(
        name=("SoftTopKRouter",),
        fn=lambda x, **kw: _router_module(Call([x], kw)),
        make=lambda dt, g: Call([_randn(g, 6, 4, dtype=dt)], {"temperature": 0.7}),
        float_args={0: "x"},
        hparams={"temperature": "positive"},
        grad="gradcheck",
        wrong_rank={0: lambda x: x[0, 0]},
    )
)

# ------------------------------------------------------------------------------------------------- losses


def _pair(dt: torch.dtype, g: torch.Generator, b: int = 6, d: int = 5) -> Call:
    return Call([_randn(g, b, d, dtype=dt), _randn(g, b, d, dtype=dt)], {})


for _name, _fn, _mod in (
    ("negative_cosine_similarity", L.negative_cosine_similarity, L.NegativeCosineSimilarity),
    ("normalized_mse", L.normalized_mse, L.NormalizedMSELoss),
):
    register(
        Entry(
            name=(_name, _mod.__name__),
            fn=_fn,
            make=_pair,
            float_args={0: "prediction", 1: "target"},
            hparams={"eps": "positive", "reduction": "reduction"},
            module=lambda c, _m=_mod: _m(**c.kwargs)(*c.args),
            reduction=True,
            grad="gradgradcheck",
            batch_args=(0, 1),
            scale=0,
            ties_ok=False,  # identical rows are fine, but all-equal entries make a zero-variance target direction
            autocast=torch.float32,
        )
    )

for _stable in (False, True):
    register(
        Entry(
            name=("info_nce", "InfoNCELoss") if not _stable else ("info_nce[stable]",),
            fn=lambda q, k, _s=_stable, **kw: L.info_nce(q, k, stable=_s, **kw),
            make=_pair,
            float_args={0: "query", 1: "key"},
            hparams={"temperature": "positive", "eps": "positive", "reduction": "reduction"},
            module=lambda c, _s=_stable: L.InfoNCELoss(stable=_s, **c.kwargs)(*c.args),
            reduction=True,
            grad="gradgradcheck",
            wrong_rank={0: _flat, 1: _unsq},
            batch_args=(0, 1),
            scale=0,
            autocast=torch.float32,
        )
    )

register(
    Entry(
        name=("flat_nce", "FlatNCELoss"),
        fn=L.flat_nce,
        make=_pair,
        float_args={0: "query", 1: "key"},
        hparams={"temperature": "positive", "eps": "positive", "reduction": "reduction"},
        module=lambda c: L.FlatNCELoss(**c.kwargs)(*c.args),
        reduction=True,
        grad="gradgradcheck",
        wrong_rank={0: _flat, 1: _unsq},
        batch_args=(0, 1),
        scale=0,
        autocast=torch.float32,
    )
)


def _logits_target(dt: torch.dtype, g: torch.Generator) -> Call:
    return Call([_randn(g, 6, 5, dtype=dt), torch.randint(0, 5, (6,), generator=g)], {})


register(
    Entry(
        name=("info_nce_from_logits",),
        fn=L.info_nce_from_logits,
        spread=True,
        make=_logits_target,
        float_args={0: "logits"},
        int_args={1: "target"},
        hparams={"reduction": "reduction"},
        reduction=True,
        grad="gradgradcheck",
        wrong_rank={0: _flat},
        batch_args=(0, 1),
        allow_inf=(0,),
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("flat_nce_from_logits",),
        fn=L.flat_nce_from_logits,
        spread=True,
        make=_logits_target,
        float_args={0: "logits"},
        int_args={1: "target"},
        hparams={"reduction": "reduction"},
        reduction=True,
        grad="gradgradcheck",
        wrong_rank={0: _flat},
        batch_args=(0, 1),
        allow_inf=(0,),
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("tailr_loss", "TaiLrLoss"),
        fn=L.tailr_loss,
        spread=True,
        make=lambda dt, g: Call([_randn(g, 6, 5, dtype=dt), torch.randint(0, 5, (6,), generator=g)], {"gamma": 0.5}),
        float_args={0: "logits"},
        int_args={1: "target"},
        # label_smoothing in [0, 1] as F.cross_entropy (documented): TaiLr at gamma = 0 is a drop-in for it, so
        # 1.0 (the uniform target) is valid here, unlike noisy_loss's label noise, which must leave a label
        hparams={"gamma": "unit", "min_weight": "unit", "label_smoothing": "unit", "reduction": "reduction"},
        module=lambda c: L.TaiLrLoss(**c.kwargs)(*c.args),
        reduction=True,
        # The TaiLr weight is a stop-gradient, so the loss's value and its gradient differ by design;
        # test_tailr.py checks the gradient against weight.detach() * cross-entropy gradient.
        grad=None,
        allow_inf=(0,),
        wrong_rank={0: _flat},
        batch_args=(0, 1),
        autocast=torch.float32,  # like F.cross_entropy
    )
)
register(
    Entry(
        name=("tailr_weight",),
        fn=L.tailr_weight,
        make=lambda dt, g: Call([torch.log_softmax(_randn(g, 6, 5, dtype=dt), -1)], {"gamma": 0.5}),
        float_args={0: "logp"},
        hparams={"gamma": "unit", "min_weight": "unit"},
        tie_value=-0.5,  # a log-probability
        grad="gradcheck",
        empty_ok=True,
    )
)

register(
    Entry(
        name=("TaiLrLossFunc",),  # the Trainer(compute_loss_func=...) form
        fn=lambda logits, labels, **kw: L.TaiLrLossFunc(**{"gamma": 0.5, "causal": False, **kw})(
            {"logits": logits}, labels
        ),
        make=_logits_target,
        float_args={0: "logits"},
        int_args={1: "labels"},
        hparams={"gamma": "unit", "min_weight": "unit", "label_smoothing": "unit", "causal": "flag"},  # as tailr_loss
        # without a token count: the mean TaiLr loss over the batch
        reference=lambda c: L.tailr_loss(*c.args, gamma=0.5),
        grad=None,  # TaiLr's weight is a stop-gradient (see tailr_loss)
        allow_inf=(0,),
        wrong_rank={0: _flat},
        batch_args=(0, 1),
        autocast=torch.float32,  # logits upcast to at least float32, as transformers' causal-LM loss
        spread=True,
    )
)

# ------------------------------------------------------------------------------- chunked and tiled losses
# Memory-lean twins of tailr_loss / info_nce / flat_nce: the reference is the dense loss on the same inputs.


def _hidden_weight_target(dt: torch.dtype, g: torch.Generator) -> Call:
    # 7 tokens in chunks of 3 (a chunk size that does not divide N), vocabulary 5, hidden 4
    return Call(
        [_randn(g, 7, 4, dtype=dt), _randn(g, 5, 4, dtype=dt), torch.randint(0, 5, (7,), generator=g)],
        {"chunk_size": 3},
    )


register(
    Entry(
        name=("chunked_tailr_loss", "ChunkedTaiLrLoss"),
        fn=lambda h, w, t, **kw: L.chunked_tailr_loss(h, w, t, **{"gamma": 0.5, **kw}),
        make=_hidden_weight_target,
        float_args={0: "hidden", 1: "weight"},
        int_args={2: "target"},
        hparams={
            "gamma": "unit",
            "min_weight": "unit",
            "label_smoothing": "unit",
            "chunk_size": "posint",
            "reduction": "reduction",
        },
        module=lambda c: L.ChunkedTaiLrLoss(**{"gamma": 0.5, **c.kwargs})(*c.args),
        reference=lambda c: L.tailr_loss(c.args[0] @ c.args[1].T, c.args[2], gamma=0.5),
        reduction=True,
        grad=None,  # TaiLr's weight is a stop-gradient (see tailr_loss); test_chunked.py checks the gradients
        wrong_rank={0: _flat, 1: _unsq},
        batch_args=(0, 2),
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("chunked_cross_entropy",),
        fn=L.chunked_cross_entropy,
        make=_hidden_weight_target,
        float_args={0: "hidden", 1: "weight"},
        int_args={2: "target"},
        hparams={"label_smoothing": "unit", "chunk_size": "posint", "reduction": "reduction"},
        reference=lambda c: torch.nn.functional.cross_entropy(c.args[0] @ c.args[1].T, c.args[2]),
        reduction=True,
        grad="gradcheck",  # first derivatives only: the fused backward is not differentiable again (documented)
        wrong_rank={0: _flat, 1: _unsq},
        batch_args=(0, 2),
        autocast=torch.float32,
    )
)
for _tname, _tfn, _tmod, _dense in (
    ("tiled_info_nce", L.tiled_info_nce, L.TiledInfoNCELoss, L.info_nce),
    ("tiled_flat_nce", L.tiled_flat_nce, L.TiledFlatNCELoss, L.flat_nce),
):
    register(
        Entry(
            name=(_tname, _tmod.__name__),
            fn=lambda q, k, _f=_tfn, **kw: _f(q, k, **{"tile_size": 4, **kw}),  # 6 rows in tiles of 4
            make=_pair,
            float_args={0: "query", 1: "key"},
            hparams={"temperature": "positive", "eps": "positive", "tile_size": "posint", "reduction": "reduction"},
            module=lambda c, _m=_tmod: _m(**{"tile_size": 4, **c.kwargs})(*c.args),
            reference=lambda c, _d=_dense: _d(*c.args, **{k: v for k, v in c.kwargs.items() if k != "tile_size"}),
            reduction=True,
            grad="gradcheck",  # first derivatives only (documented): tiles are recomputed in backward
            wrong_rank={0: _flat, 1: _unsq},
            batch_args=(0, 1),
            scale=0,
            autocast=torch.float32,
        )
    )

# --------------------------------------------------------------------------------------- multi-task losses
# Loss-level weightings take ``losses`` as an (n,) tensor; the strategy modules are their twins.

_N = 3  # tasks


def _task_losses(dt: torch.dtype, g: torch.Generator, **kw: Any) -> Call:
    return Call([torch.rand(_N, generator=g, dtype=dt) + 0.5], kw)  # positive losses in [0.5, 1.5)


_LOSSES = {0: "losses"}
_LOSS_RANK = {0: _unsq}  # a (1, n) tensor of losses is not a list of scalars

register(
    Entry(
        name=("weighted_sum", "WeightedSum"),
        fn=MT.weighted_sum,
        make=lambda dt, g: _task_losses(dt, g, weights=[0.2, 0.3, 0.5]),
        float_args=_LOSSES,
        hparams={"weights": "nonneg3"},
        module=lambda c: MT.WeightedSum(_N, **c.kwargs)(*c.args),
        wrong_rank=_LOSS_RANK,
        scale=1,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("normalized_sum", "PriorLossWeighting"),
        fn=MT.normalized_sum,
        make=lambda dt, g: _task_losses(dt, g, normalizers=[1.0, 2.0, 4.0], eps=0.0),
        float_args=_LOSSES,
        hparams={"normalizers": "positive3", "eps": "nonneg"},
        reference=lambda c: MT.PriorLossWeighting(_N, prior=c.kwargs["normalizers"], eps=c.kwargs["eps"])(*c.args),
        wrong_rank=_LOSS_RANK,
        scale=1,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("normalized_sum[initial]", "InitialLossWeighting"),
        fn=MT.normalized_sum,
        make=lambda dt, g: _task_losses(dt, g, normalizers=[1.0, 2.0, 4.0], eps=0.0),
        float_args=_LOSSES,
        hparams={"normalizers": "positive3", "eps": "nonneg"},
        reference=lambda c: MT.InitialLossWeighting(_N, initial=c.kwargs["normalizers"], eps=c.kwargs["eps"])(*c.args),
        wrong_rank=_LOSS_RANK,
        scale=1,
    )
)
register(
    Entry(
        name=("realtime_weighting", "RealTimeWeighting"),
        fn=MT.realtime_weighting,
        make=lambda dt, g: _task_losses(dt, g, eps=0.0),
        float_args=_LOSSES,
        hparams={"eps": "nonneg"},
        module=lambda c: MT.RealTimeWeighting(_N, **c.kwargs)(*c.args),
        # value sum_i L_i / sg(L_i) = n, gradient sum_i grad L_i / L_i: a stop-gradient by design, checked
        # against grad sum_i log L_i in test_multitask.py
        grad=None,
        wrong_rank=_LOSS_RANK,
        scale=0,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("realtime_weighting[denominators]",),  # given denominators (the module keeps its own EMA instead)
        fn=MT.realtime_weighting,
        make=lambda dt, g: _task_losses(dt, g, denominators=[1.0, 2.0, 3.0]),
        float_args=_LOSSES,
        hparams={"denominators": "nonneg3", "eps": "nonneg"},
        reference=lambda c: MT.weighted_sum(c.args[0], [1 / (d + 1e-8) for d in c.kwargs["denominators"]]),
        wrong_rank=_LOSS_RANK,
        scale=1,
    )
)
register(
    Entry(
        name=("log_sum", "LogSum"),
        fn=MT.log_sum,
        spread=True,
        make=_task_losses,
        float_args=_LOSSES,
        hparams={"eps": "nonneg"},
        module=lambda c: MT.LogSum(_N, **c.kwargs)(*c.args),
        wrong_rank=_LOSS_RANK,
        autocast=torch.float32,
    )
)
for _gamma, _suffix in ((2.0, ""), (0.0, "[geometric]"), (INF, "[max]"), (-INF, "[min]")):
    register(
        Entry(
            name=("power_mean" + _suffix, "PowerMean") if not _suffix else ("power_mean" + _suffix,),
            fn=MT.power_mean,
            make=lambda dt, g, _g=_gamma: _task_losses(dt, g, gamma=_g),
            float_args=_LOSSES,
            hparams={"gamma": "gamma"},
            module=lambda c: MT.PowerMean(_N, **c.kwargs)(*c.args),
            wrong_rank=_LOSS_RANK,
            scale=1,
            ties_ok=not math.isinf(_gamma),  # the max of tied losses has no derivative; its value is still finite
            autocast=torch.float32,
        )
    )
register(
    Entry(
        name=("uncertainty_weighting", "UncertaintyWeighting"),
        fn=MT.uncertainty_weighting,
        make=lambda dt, g: Call([torch.rand(_N, generator=g, dtype=dt) + 0.5, _randn(g, _N, dtype=dt)], {}),
        float_args={0: "losses", 1: "log_vars"},
        module=lambda c: functional_call(MT.UncertaintyWeighting(_N), {"log_vars": c.args[1]}, (c.args[0],)),
        wrong_rank={0: _unsq, 1: _unsq},
        batch_args=(0, 1),
        autocast=torch.float32,
    )
)

_DWA_EPOCHS = ([1.0, 2.0, 3.0], [2.0, 2.0, 1.0])  # epoch-mean losses fed to DWA before the call under test


def _dwa(losses: Tensor, **kw: Any) -> Any:
    strategy = MT.DynamicWeightAverage(kw.pop("num_tasks", _N), **kw)
    for epoch in _DWA_EPOCHS:
        strategy(torch.tensor(epoch, dtype=_float_dtype(losses)))
        strategy.end_epoch()
    return strategy(losses)


def _dwa_reference(c: Call) -> Any:
    # Liu et al.'s weights: n softmax(r / T), r = Lbar(t-1) / Lbar(t-2)
    r = torch.tensor(_DWA_EPOCHS[1], dtype=torch.float64) / torch.tensor(_DWA_EPOCHS[0], dtype=torch.float64)
    w = _N * torch.softmax(r / c.kwargs.get("temperature", 2.0), dim=0)
    return MT.weighted_sum(c.args[0], w.tolist())


register(
    Entry(
        name=("DynamicWeightAverage",),
        fn=_dwa,
        make=_task_losses,
        float_args=_LOSSES,
        hparams={"temperature": "positive", "num_tasks": "posint"},
        reference=_dwa_reference,
        wrong_rank=_LOSS_RANK,
        scale=1,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("make_strategy",),
        fn=lambda losses, **kw: MT.make_strategy(kw.pop("name", "power_mean"), _N, **kw)(losses),
        make=lambda dt, g: _task_losses(dt, g, gamma=2.0),
        float_args=_LOSSES,
        hparams={"name": "choice", "gamma": "gamma"},
        reference=lambda c: MT.PowerMean(_N, **c.kwargs)(*c.args),
        wrong_rank=_LOSS_RANK,
        scale=1,
    )
)

# Gradient-level strategies write ``.grad``: the entry builds a tiny 3-task model (shared trunk, one head per
# task) whose task losses are multiplied by the float argument ``m`` (so NaN, inf, int, bool or complex losses,
# an empty list or non-scalar losses reach the strategy), runs ``strategy.backward(losses, trunk)`` and returns
# the flattened gradient written into the trunk. The twin computes the task gradients with autograd and applies
# the pure combination rule.


def _mt_model(dtype: torch.dtype) -> tuple[nn.ModuleDict, Tensor, Tensor]:
    model = _built(
        lambda: nn.ModuleDict(
            {
                "trunk": nn.Sequential(nn.Linear(4, 5), nn.Tanh()),
                "heads": nn.ModuleList(nn.Linear(5, 1) for _ in range(_N)),
            }
        ),
        dtype,
    )
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64).to(dtype)
    y = (torch.randn(6, _N, generator=g, dtype=torch.float64) + 2.0).to(dtype)
    return model, x, y


def _mt_losses(model: nn.ModuleDict, x: Tensor, y: Tensor, m: Tensor) -> list[Tensor]:
    h = model["trunk"](x)
    base = [((head(h).squeeze(-1) - y[:, i]) ** 2).mean() for i, head in enumerate(model["heads"])]
    # .to(m.dtype): an integer or bool m makes integer or bool losses, which the strategy must reject
    return [base[i % _N].to(m.dtype) * m[i] for i in range(m.shape[0])]


def _shared_grad(cls: type[MT.MultiTaskStrategy]) -> Callable[..., Tensor]:
    def fn(m: Tensor, **kw: Any) -> Tensor:
        model, x, y = _mt_model(_float_dtype(m))
        strategy = cls(kw.pop("num_tasks", _N), **kw)
        shared = list(model["trunk"].parameters())
        strategy.backward(_mt_losses(model, x, y, m), shared)
        return torch.cat([p.grad.reshape(-1) for p in shared])  # type: ignore[union-attr]

    return fn


def _rule_reference(rule: Callable[[Tensor, list[Tensor], dict[str, Any]], Tensor]) -> Callable[[Call], Tensor]:
    def ref(c: Call) -> Tensor:
        m = c.args[0]
        model, x, y = _mt_model(m.dtype)
        shared = list(model["trunk"].parameters())
        losses = _mt_losses(model, x, y, m)
        G = torch.stack(
            [torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, shared, retain_graph=True)]) for li in losses]
        )
        theta = torch.cat([p.detach().reshape(-1) for p in shared])
        return rule(G, [theta], c.kwargs)

    return ref


def _task_scales(dt: torch.dtype, g: torch.Generator, **kw: Any) -> Call:
    return Call([torch.tensor([1.0, 0.5, 2.0], dtype=dt)], kw)


_GRADIENT_LEVEL: list[tuple[str, type[MT.MultiTaskStrategy], dict[str, Any], dict[str, str], Any, int]] = [
    (
        "GradientNormalization",
        MT.GradientNormalization,
        {},
        {"eps": "nonneg", "rescale": "choice", "batched": "flag", "num_tasks": "posint"},
        lambda G, th, kw: MT.gradient_normalization(G, eps=kw.get("eps", 0.0))[0],
        0,
    ),
    (
        "GradientNormalization[batched]",
        MT.GradientNormalization,
        {"batched": True},
        {},
        lambda G, th, kw: MT.gradient_normalization(G)[0],
        0,
    ),
    (
        "MGDA",
        MT.MGDA,
        {},
        {"max_iter": "posint", "batched": "flag", "num_tasks": "posint"},
        lambda G, th, kw: MT.mgda_direction(G)[0],
        1,
    ),
    (
        "PrimaryAuxiliaryProjection",
        MT.PrimaryAuxiliaryProjection,
        {"primary": 1},
        {"primary": "index3", "batched": "flag", "num_tasks": "int_ge2"},
        lambda G, th, kw: MT.primary_auxiliary_projection(G[1], G[[0, 2]])[0],
        1,
    ),
    (
        "L2DecayAuxiliary",
        MT.L2DecayAuxiliary,
        {},
        {"eps": "nonneg", "num_tasks": "posint"},
        lambda G, th, kw: MT.l2_auxiliary_projection(G.sum(0), th[0]),
        1,
    ),
    # first step: the learned weights start at 1, so the written gradient is grad sum_i L_i
    (
        "GradNorm",
        MT.GradNorm,
        {},
        {"alpha": "nonneg", "lr": "positive", "layer": "choice", "num_tasks": "posint"},
        lambda G, th, kw: G.sum(0),
        1,
    ),
]

for _name, _cls, _kw, _hp, _rule, _degree in _GRADIENT_LEVEL:
    register(
        Entry(
            name=(_name,),
            fn=_shared_grad(_cls),
            make=lambda dt, g, _kw=_kw: _task_scales(dt, g, **_kw),
            float_args=_LOSSES,
            hparams=_hp,
            reference=_rule_reference(_rule),
            grad=None,  # writes .grad (no graph to check); the twin checks the written direction
            differentiable=False,
            wrong_rank=_LOSS_RANK,
            scale=_degree,
        )
    )

# Combination rules: pure functions of (n, D) task gradients or their Gram matrix.


def _grads(dt: torch.dtype, g: torch.Generator) -> Call:
    return Call([_randn(g, _N, 5, dtype=dt)], {})


def _gram(dt: torch.dtype, g: torch.Generator) -> Call:
    G = _randn(g, _N, 5, dtype=dt)
    return Call([G @ G.T], {})


register(
    Entry(
        name=("gradient_normalization",),
        fn=MT.gradient_normalization,
        make=_grads,
        float_args={0: "grads"},
        hparams={"eps": "nonneg"},
        wrong_rank={0: _flat},
        scale=0,
    )
)
register(
    Entry(
        name=("mgda_direction",),
        fn=MT.mgda_direction,
        make=_grads,
        float_args={0: "grads"},
        hparams={"max_iter": "posint", "tol": "nonneg"},
        grad=None,  # alpha is the Frank-Wolfe solution (float64 NumPy), not differentiated; u = alpha @ grads
        wrong_rank={0: _flat},
        scale=1,
    )
)
for _name, _fn, _hp in (
    ("min_norm_coefficients", MT.min_norm_coefficients, {"max_iter": "posint", "tol": "nonneg"}),
    ("primary_auxiliary_coefficients", MT.primary_auxiliary_coefficients, {"max_sweeps": "posint", "tol": "nonneg"}),
):
    register(
        Entry(
            name=(_name,),
            fn=_fn,
            make=_gram,
            float_args={0: "gram"},
            hparams=_hp,
            grad=None,  # a solver on the CPU in float64: coefficients without a graph
            differentiable=False,
            wrong_rank={0: _flat},
            scale=0,
        )
    )
register(
    Entry(
        name=("primary_auxiliary_projection",),
        fn=MT.primary_auxiliary_projection,
        make=lambda dt, g: Call([_randn(g, 5, dtype=dt), _randn(g, 2, 5, dtype=dt)], {}),
        float_args={0: "primary", 1: "auxiliary"},
        hparams={"max_sweeps": "posint", "tol": "nonneg"},
        grad=None,  # lambda is the coordinate-descent solution (not differentiated); u is linear for fixed lambda
        wrong_rank={0: _unsq, 1: lambda x: x.unsqueeze(0)},
        batch_args=(0,),  # a primary of another length than the auxiliary rows
        scale=1,
    )
)
register(
    Entry(
        name=("l2_auxiliary_projection",),
        fn=MT.l2_auxiliary_projection,
        make=lambda dt, g: Call([_randn(g, 2, 3, dtype=dt), _randn(g, 2, 3, dtype=dt)], {}),
        float_args={0: "grad", 1: "param"},
        hparams={"eps": "nonneg"},
        grad_args=(0,),  # theta is a constant of the projection (it is the parameter, detached)
        batch_args=(0, 1),
        scale=1,
    )
)

# Priors: theoretical constants, returned as Python floats.
register(
    Entry(
        name=("classification_initial_loss",),
        fn=MT.classification_initial_loss,
        make=lambda dt, g: Call([], {"num_classes": 4}),
        float_args={},
        hparams={"num_classes": "int_ge2"},
        reference=lambda c: math.log(c.kwargs["num_classes"]),
        grad=None,
        differentiable=False,
        ties_ok=False,
        out_dtype="float",
    )
)
register(
    Entry(
        name=("classification_prior_loss",),
        fn=MT.classification_prior_loss,
        make=lambda dt, g: Call([torch.tensor([0, 1, 1, 2, 2, 2])], {"num_classes": 3}),
        float_args={},
        int_args={0: "labels"},
        hparams={"num_classes": "posint", "min_value": "positive"},
        # the label entropy, written out
        reference=lambda c: -sum(p * math.log(p) for p in (1 / 6, 2 / 6, 3 / 6)),
        grad=None,
        differentiable=False,
        ties_ok=False,
        out_dtype="float",
    )
)
register(
    Entry(
        name=("regression_initial_loss",),
        fn=MT.regression_initial_loss,
        make=lambda dt, g: Call([_randn(g, 6, 2, dtype=dt)], {}),
        float_args={0: "targets"},
        reference=lambda c: float(F.mse_loss(c.args[0].double(), torch.zeros_like(c.args[0].double()))),
        grad=None,
        differentiable=False,
        scale=2,
        out_dtype="float",
    )
)
register(
    Entry(
        name=("regression_prior_loss",),
        fn=MT.regression_prior_loss,
        make=lambda dt, g: Call([_randn(g, 6, 2, dtype=dt)], {"min_value": 1e-300}),
        float_args={0: "targets"},
        hparams={"min_value": "positive"},
        reference=lambda c: float(c.args[0].double().var(0, unbiased=False).mean()),
        grad=None,
        differentiable=False,
        wrong_rank={0: lambda x: x[0, 0]},
        scale=2,
        ties_ok=False,  # a constant target is clamped to min_value on purpose
        out_dtype="float",
    )
)

# ------------------------------------------------------------------------------------------- regularizers
# Every regularizer takes (model, inputs, ...): the model is a tiny MLP built under a fixed seed in the dtype of
# the inputs; the float argument is ``inputs`` (the perturbed site), the integer one ``target``.


def _mlp(x: Any) -> nn.Module:
    return _built(lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), _float_dtype(x))


def _xy(dt: torch.dtype, g: torch.Generator, **kw: Any) -> Call:
    return Call([_randn(g, 5, 4, dtype=dt), torch.randint(0, 3, (5,), generator=g)], kw)


def _x(dt: torch.dtype, g: torch.Generator, **kw: Any) -> Call:
    return Call([_randn(g, 5, 4, dtype=dt)], kw)


def _seeded_call(f: Callable[[], Any]) -> Any:
    """Run ``f`` with the global RNG seeded (and restored), so a functional and its module twin, which cannot
    take a generator, draw the same noise."""
    with _seed(1):
        return f()


_INPUTS = {0: "inputs"}
_TARGET = {1: "target"}
# The model, not the regularizer, decides which ranks of ``inputs`` it accepts.
_MODEL_INPUT = frozenset({"rank"})
# Inputs that only a user's model reads (its backbone may take token ids, any rank, and answers for NaN itself).
_BACKBONE_INPUT = frozenset({"int", "bool", "complex", "nan", "inf", "rank"})

register(
    Entry(
        name=("noisy_loss", "NoisyLoss"),
        fn=lambda x, y, **kw: _seeded_call(lambda: R.noisy_loss(_mlp(x), x, y, **kw)),
        make=lambda dt, g: _xy(dt, g, sigma=0.1, k=2),
        float_args=_INPUTS,
        int_args=_TARGET,
        hparams={
            "sigma": "nonneg",
            "k": "posint",
            "label_smoothing": "unit_open",
            "kind": "choice",
            "distribution": "choice",
        },
        module=lambda c: _seeded_call(lambda: R.NoisyLoss(**c.kwargs)(_mlp(c.args[0]), *c.args)),
        batch_args=(0, 1),
        skip_bad=_MODEL_INPUT,
        spread=True,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("noise_consistency_loss", "NoiseConsistencyLoss"),
        fn=lambda x, **kw: _seeded_call(lambda: R.noise_consistency_loss(_mlp(x), x, **kw)),
        make=lambda dt, g: _x(dt, g, sigma=0.1),
        float_args=_INPUTS,
        hparams={"sigma": "positive", "k": "posint", "reduction": "reduction", "loss": "choice"},
        module=lambda c: _seeded_call(lambda: R.NoiseConsistencyLoss(**c.kwargs)(_mlp(c.args[0]), *c.args)),
        reduction=True,
        grad=None,  # the clean prediction is a detached target by design (as in VAT)
        skip_bad=_MODEL_INPUT,
        spread=True,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("consistency_divergence",),
        fn=R.consistency_divergence,
        spread=True,
        make=_pair,
        float_args={0: "logits", 1: "clean_logits"},
        hparams={"reduction": "reduction", "loss": "choice"},
        reduction=True,
        wrong_rank={0: _flat, 1: _flat},
        batch_args=(0, 1),
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("conditional_entropy",),
        fn=R.conditional_entropy,
        spread=True,
        make=lambda dt, g: Call([_randn(g, 5, 3, dtype=dt)], {}),
        float_args={0: "logits"},
        hparams={"reduction": "reduction"},
        reduction=True,
        wrong_rank={0: _flat},
        scale=None,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("perturb",),
        fn=lambda v, **kw: R.perturb(v, generator=torch.Generator().manual_seed(0), **kw),
        make=lambda dt, g: Call([_randn(g, 5, 4, dtype=dt)], {"sigma": 0.1}),
        float_args={0: "value"},
        hparams={"sigma": "nonneg", "kind": "choice", "distribution": "choice"},
        empty_ok=True,  # noise on an empty tensor is an empty tensor
        spread=True,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("smoothness_penalty", "SmoothnessPenalty"),
        fn=lambda x, **kw: R.smoothness_penalty(_mlp(x), x, **kw),
        make=_x,
        float_args=_INPUTS,
        hparams={"n_samples": "posint", "reduction": "reduction", "loss": "choice", "estimator": "choice"},
        module=lambda c: R.SmoothnessPenalty(**c.kwargs)(_mlp(c.args[0]), *c.args),
        reduction=True,
        # KL's Gauss-Newton weights lambda = 1/p are detached by design; MSE's lambda = 2 is a constant
        grad_kwargs={"loss": "mse"},
        skip_bad=_MODEL_INPUT,
        spread=True,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("gradient_penalty_loss", "GradientPenaltyLoss"),
        fn=lambda x, y, **kw: R.gradient_penalty_loss(_mlp(x), x, y, **kw),
        make=lambda dt, g: _xy(dt, g, eps=0.5),
        float_args=_INPUTS,
        int_args=_TARGET,
        hparams={"eps": "positive", "fd_step": "positive", "form": "choice", "scope": "choice", "method": "choice"},
        module=lambda c: R.GradientPenaltyLoss(**c.kwargs)(_mlp(c.args[0]), *c.args),
        batch_args=(0, 1),
        skip_bad=_MODEL_INPUT,
        spread=True,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("gradient_penalty_loss[finite_difference]",),
        fn=lambda x, y, **kw: R.gradient_penalty_loss(_mlp(x), x, y, method="finite_difference", **kw),
        make=lambda dt, g: _xy(dt, g, eps=0.5),
        float_args=_INPUTS,
        int_args=_TARGET,
        hparams={"eps": "positive", "fd_step": "positive"},
        grad=None,  # the value is exact, the parameter gradient a finite-difference estimate by design
        batch_args=(0, 1),
        skip_bad=_MODEL_INPUT,
        spread=True,
        autocast=torch.float32,
    )
)
for _name, _fn, _mod, _kw, _hp in (
    ("fgm_loss", R.fgm_loss, R.FGM, {"eps": 0.1}, {"eps": "positive", "norm": "choice", "scope": "choice"}),
    (
        "pgd_loss",
        R.pgd_loss,
        R.PGD,
        {"eps": 0.1, "steps": 2},
        {"eps": "positive", "alpha": "positive", "steps": "posint", "norm": "choice", "scope": "choice"},
    ),
):
    register(
        Entry(
            name=(_name, _mod.__name__),
            fn=lambda x, y, _f=_fn, **kw: _f(_mlp(x), x, y, **kw),
            make=lambda dt, g, _kw=_kw: _xy(dt, g, **_kw),
            float_args=_INPUTS,
            int_args=_TARGET,
            hparams=_hp,
            module=lambda c, _m=_mod: _m(**c.kwargs)(_mlp(c.args[0]), *c.args),
            # the perturbation is detached and the clean parameter gradient rides on a zero-valued surrogate:
            # the value's derivative is not the returned gradient, by design (test_regularizers.py checks it)
            grad=None,
            batch_args=(0, 1),
            skip_bad=_MODEL_INPUT,
            autocast=torch.float32,
        )
    )
register(
    Entry(
        name=("vat_loss", "VAT"),
        fn=lambda x, **kw: _seeded_call(lambda: R.vat_loss(_mlp(x), x, **kw)),
        make=lambda dt, g: _x(dt, g, eps=1.0, xi=1e-3),
        float_args=_INPUTS,
        hparams={
            "eps": "positive",
            "xi": "positive",
            "n_power": "nonnegint",
            "reduction": "reduction",
            "scope": "choice",
        },
        module=lambda c: _seeded_call(lambda: R.VAT(**c.kwargs)(_mlp(c.args[0]), *c.args)),
        reduction=True,
        grad=None,  # the clean target and the adversarial direction are detached by design
        skip_bad=_MODEL_INPUT,
        spread=True,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("vat_direction",),
        fn=lambda x, **kw: R.vat_direction(_mlp(x), x, generator=torch.Generator().manual_seed(0), **kw),
        make=lambda dt, g: _x(dt, g, xi=1e-3),
        float_args=_INPUTS,
        hparams={"xi": "positive", "n_power": "nonnegint", "scope": "choice"},
        grad=None,  # a detached unit direction
        differentiable=False,
        skip_bad=_MODEL_INPUT,
        spread=True,
    )
)

register(
    Entry(
        name=("probe_radius",),
        fn=R.probe_radius,
        make=lambda dt, g: Call([_randn(g, 5, 4, dtype=dt)], {"xi": 1e-6}),
        float_args={0: "v"},
        hparams={"xi": "positive", "scope": "choice"},
        # max(xi, sqrt(eps_dtype) ||v||): sqrt(eps) * ||v|| in the dtype's own epsilon
        reference=lambda c: (torch.finfo(c.args[0].dtype).eps ** 0.5 * c.args[0].norm(dim=1, keepdim=True)).clamp_min(
            c.kwargs["xi"]
        ),
        grad=None,  # a radius from the detached value
        differentiable=False,
    )
)

# ------------------------------------------------------------------------------------------------ modules


def _head(build: Callable[..., nn.Module], defaults: dict[str, Any]) -> Callable[..., Tensor]:
    def fn(x: Tensor, **kw: Any) -> Tensor:
        return _built(lambda: build(**{**defaults, **kw}), _float_dtype(x))(x)

    return fn


for _cls, _defaults, _hp, _width in (
    (
        MO.SimSiamProjectionHead,
        {"in_dim": 6, "hidden_dim": 8, "out_dim": 8, "num_layers": 2},
        {"hidden_dim": "posint", "out_dim": "posint", "num_layers": "posint"},
        6,
    ),
    (MO.SimSiamPredictionHead, {"dim": 8, "hidden_dim": 4}, {"dim": "posint", "hidden_dim": "posint"}, 8),
    (
        MO.BYOLProjectionHead,
        {"in_dim": 6, "hidden_dim": 8, "out_dim": 4},
        {"hidden_dim": "posint", "out_dim": "posint"},
        6,
    ),
    (MO.BYOLPredictionHead, {"dim": 4, "hidden_dim": 8}, {"dim": "posint", "hidden_dim": "posint"}, 4),
):
    register(
        Entry(
            name=(_cls.__name__,),
            fn=_head(_cls, _defaults),
            make=lambda dt, g, _w=_width: Call([_randn(g, 4, _w, dtype=dt)], {}),
            float_args={0: "x"},
            hparams=_hp,
            wrong_rank={0: _flat},
            autocast=torch.bfloat16,  # linear layers run in bf16 under autocast
        )
    )

register(
    Entry(
        name=("SyncBatchNorm1d",),
        fn=lambda x, **kw: _built(lambda: MO.SyncBatchNorm1d(6, **kw), _float_dtype(x))(x),
        make=lambda dt, g: Call([_randn(g, 4, 6, dtype=dt)], {}),
        float_args={0: "x"},
        hparams={"eps": "positive"},
        # one process: exactly nn.BatchNorm1d
        reference=lambda c: _built(lambda: nn.BatchNorm1d(6, **c.kwargs), c.args[0].dtype)(c.args[0]),
        wrong_rank={0: _flat},
        scale=None,
    )
)
register(
    Entry(
        name=("convert_sync_batchnorm",),
        fn=lambda x: MO.convert_sync_batchnorm(
            _built(lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), _float_dtype(x))
        )(x),
        make=lambda dt, g: Call([_randn(g, 4, 6, dtype=dt)], {}),
        float_args={0: "x"},
        reference=lambda c: _built(lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), c.args[0].dtype)(
            c.args[0]
        ),
        # it converts a module: the converted module's own layers (here nn.Linear) see the input first
        skip_bad=frozenset({"int", "bool", "complex", "nan", "inf", "empty", "rank"}),
    )
)
register(
    Entry(
        name=("SmallCNN",),
        fn=lambda x, **kw: _built(
            lambda: MO.SmallCNN(**{"num_classes": 3, "width": 2, "feature_dim": 4, "image_size": 16, **kw}),
            _float_dtype(x),
        )(x),
        make=lambda dt, g: Call([_randn(g, 2, 1, 16, 16, dtype=dt)], {}),
        float_args={0: "x"},
        hparams={
            "in_channels": "posint",
            "num_classes": "nonnegint",
            "width": "posint",
            "feature_dim": "posint",
            "image_size": "posint",
            "dropout": "unit",
        },
        wrong_rank={0: lambda x: x[:, 0]},
        grad_fast=True,
        empty_ok=True,  # no batch statistics: an empty batch gives empty logits
        autocast=torch.bfloat16,  # convolutions and linear layers run in bf16 under autocast
    )
)
register(
    Entry(
        name=("SmallBNCNN",),
        fn=lambda x, **kw: _built(lambda: MO.SmallBNCNN(**{"width": 2, **kw}), _float_dtype(x))(x),
        make=lambda dt, g: Call([_randn(g, 3, 1, 8, 8, dtype=dt)], {}),
        float_args={0: "x"},
        hparams={"in_channels": "posint", "width": "posint"},
        wrong_rank={0: lambda x: x[:, 0]},
        grad_fast=True,
        autocast=torch.bfloat16,  # convolutions run in bf16 under autocast
    )
)
register(
    Entry(
        name=("DCGANAutoencoder",),
        fn=lambda x, **kw: _built(lambda: MO.DCGANAutoencoder(**{"width": 2, "latent_dim": 4, **kw}), _float_dtype(x))(
            x
        ),
        make=lambda dt, g: Call([torch.rand(2, 1, 28, 28, generator=g, dtype=dt) * 2 - 1], {}),
        float_args={0: "x"},
        hparams={
            "in_channels": "posint",
            "width": "posint",
            "latent_dim": "posint",
            "norm": "choice",
            "image_size": "image_size",
        },
        wrong_rank={0: lambda x: x[:, 0]},
        grad_fast=True,
        autocast=torch.bfloat16,  # convolutions run in bf16 under autocast
    )
)


def _bag(ids: Tensor, **kw: Any) -> Tensor:
    dtype = kw.pop("_dtype", torch.float32)
    model = _built(
        lambda: MO.EmbeddingBagClassifier(**{"vocab_size": 20, "num_classes": 3, "dim": 4, "hidden": 5, **kw}), dtype
    )
    return model(ids)


register(
    Entry(
        name=("EmbeddingBagClassifier",),
        fn=_bag,
        make=lambda dt, g: Call([torch.randint(0, 20, (3, 5), generator=g)], {"_dtype": dt}),
        float_args={},
        int_args={0: "ids"},
        hparams={
            "vocab_size": "int_ge2",
            "num_classes": "int_ge2",
            "dim": "posint",
            "hidden": "nonnegint",
            "pad_id": "nonnegint",
            "dropout": "unit",
        },
        grad=None,  # integer input; the float path is the [classify] entry
        differentiable=False,
        ties_ok=False,
        empty_ok=True,
    )
)


def _bag_classify(embeds: Tensor, mask: Tensor) -> Tensor:
    model = _built(lambda: MO.EmbeddingBagClassifier(20, 3, dim=4, hidden=5), _float_dtype(embeds))
    return model.classify(embeds, mask)


register(
    Entry(
        name=("EmbeddingBagClassifier[classify]",),
        fn=_bag_classify,
        make=lambda dt, g: Call([_randn(g, 3, 5, 4, dtype=dt), torch.rand(3, 5, generator=g) > 0.3], {}),
        float_args={0: "embeds"},
        wrong_rank={0: lambda x: x[0]},
        batch_args=(0,),
        empty_ok=True,
    )
)

for _kind in ("lstm", "mlp", "none"):
    register(
        Entry(
            name=("PromptEncoder",) if _kind == "lstm" else (f"PromptEncoder[{_kind}]",),
            # the encoder's output as a function of its input table, through torch.func (the module itself
            # copies ``init``): gradients reach ``init`` and the value must equal the module's
            fn=lambda init, _k=_kind, **kw: functional_call(
                _built(
                    lambda: MO.PromptEncoder(**{"num_tokens": 3, "hidden_size": 4, "kind": _k, **kw}, init=init),
                    _float_dtype(init),
                ),
                {"weight" if _k == "none" else "embedding.weight": init},
                (),
            ),
            make=lambda dt, g: Call([_randn(g, 3, 4, dtype=dt)], {}),
            float_args={0: "init"},
            hparams={"hidden_size": "posint", "num_tokens": "nonnegint", "kind": "choice", "lstm_dropout": "unit"},
            module=lambda c, _k=_kind: _built(
                lambda: MO.PromptEncoder(**{"num_tokens": 3, "hidden_size": 4, "kind": _k, **c.kwargs}, init=c.args[0]),
                _float_dtype(c.args[0]),
            )(),
            wrong_rank={0: _flat},
        )
    )


def _splice_call(dt: torch.dtype, g: torch.Generator) -> Call:
    index = torch.tensor([[-1, 0, 1, -1, 2], [2, -1, -1, 0, -1]])
    return Call([_randn(g, 2, 5, 4, dtype=dt), _randn(g, 3, 4, dtype=dt), index], {})


register(
    Entry(
        name=("splice_prompts",),
        fn=MO.splice_prompts,
        make=_splice_call,
        float_args={0: "inputs_embeds", 1: "prompts"},
        int_args={2: "prompt_index"},
        reference=lambda c: torch.where((c.args[2] >= 0).unsqueeze(-1), c.args[1][c.args[2].clamp(min=0)], c.args[0]),
        wrong_rank={0: lambda x: x[0], 1: _unsq},
        batch_args=(0, 2),
        empty_ok=(0, 2),  # an empty batch splices nothing
        scale=1,
    )
)


def _token_rows(weight: Tensor, embeds: Tensor, ids: Tensor, **kw: Any) -> Tensor:
    rows = MO.TokenRows(weight, **{"token_ids": [1, 2], **kw})
    return rows.splice(ids, embeds)


def _token_rows_reference(c: Call) -> Tensor:
    weight, embeds, ids = c.args
    out = embeds.clone()
    for t in (1, 2):
        out[ids == t] = weight[t]
    return out


register(
    Entry(
        name=("TokenRows",),
        fn=_token_rows,
        make=lambda dt, g: Call(
            [_randn(g, 6, 4, dtype=dt), _randn(g, 2, 5, 4, dtype=dt), torch.tensor([[1, 3, 2, 0, 1], [4, 2, 5, 0, 0]])],
            {},
        ),
        float_args={0: "embedding_weight", 1: "inputs_embeds"},
        int_args={2: "input_ids"},
        hparams={"token_ids": "token_ids"},
        reference=_token_rows_reference,
        grad_args=(1,),  # the rows are a copy of embedding_weight (a new parameter), by design
        wrong_rank={0: _unsq, 1: lambda x: x[0]},
        batch_args=(1, 2),
        empty_ok=(1, 2),  # an empty batch splices nothing
        # token ids outside token_ids (any value) are left to the LM's embedding, which owns the vocabulary
        skip_bad=frozenset({"negative", "large"}),
        scale=1,
    )
)

# ------------------------------------------------------------------------------------------------ methods


def _backbone() -> nn.Module:
    return nn.Linear(6, 5)


def _views(dt: torch.dtype, g: torch.Generator, **kw: Any) -> Call:
    return Call([_randn(g, 4, 6, dtype=dt), _randn(g, 4, 6, dtype=dt)], kw)


_SIMSIAM = {"dim": 8, "hidden_dim": 8, "num_proj_layers": 2}
register(
    Entry(
        name=("SimSiam",),
        fn=lambda x1, x2, **kw: _built(lambda: ME.SimSiam(_backbone(), 5, **{**_SIMSIAM, **kw}), _float_dtype(x1))(
            x1, x2
        ),
        make=_views,
        float_args={0: "x1", 1: "x2"},
        hparams={
            "dim": "posint",
            "hidden_dim": "posint",
            "pred_hidden_dim": "posint",
            "num_proj_layers": "posint",
            "predictor": "choice",
        },
        grad_kwargs={"stop_gradient": False},  # the Fig. 2 ablation: the loss's value is then differentiated as is
        batch_args=(0, 1),
        skip_bad=_BACKBONE_INPUT,
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("BYOL",),
        fn=lambda x1, x2, **kw: _built(
            lambda: ME.BYOL(_backbone(), 5, **{"hidden_dim": 8, "dim": 4, **kw}), _float_dtype(x1)
        )(x1, x2),
        make=_views,
        float_args={0: "x1", 1: "x2"},
        hparams={"dim": "posint", "hidden_dim": "posint", "tau_base": "unit", "buffers": "choice"},
        grad=None,  # the target network runs under no_grad by design
        batch_args=(0, 1),
        skip_bad=_BACKBONE_INPUT,
        autocast=torch.float32,
    )
)


def _lrs(**kw: Any) -> Tensor:
    p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [q], "fix_lr": True}], lr=1.0)
    sched = ME.cosine_schedule(opt, **kw)
    out = []
    for _ in range(int(kw.get("total_steps", 1))):
        opt.step()
        sched.step()
        out.append([g["lr"] for g in opt.param_groups])
    return torch.tensor(out, dtype=torch.float64)


register(
    Entry(
        name=("cosine_schedule",),
        fn=_lrs,
        make=lambda dt, g: Call([], {"total_steps": 4}),
        float_args={},
        hparams={"total_steps": "posint"},
        reference=lambda c: torch.tensor(
            [[0.5 * (1 + math.cos(math.pi * k / c.kwargs["total_steps"])), 1.0] for k in range(1, 5)],
            dtype=torch.float64,
        ),
        grad=None,
        differentiable=False,
        ties_ok=False,
        out_dtype=torch.float64,
    )
)
register(
    Entry(
        name=("cosine_tau",),
        fn=lambda **kw: torch.tensor([ME.cosine_tau(k, **kw) for k in range(6)], dtype=torch.float64),
        make=lambda dt, g: Call([], {"total_steps": 4, "base": 0.99}),
        float_args={},
        hparams={"total_steps": "posint", "base": "unit"},
        reference=lambda c: torch.tensor(
            [1 - (1 - 0.99) * (math.cos(math.pi * min(k, 4) / 4) + 1) / 2 for k in range(6)], dtype=torch.float64
        ),
        grad=None,
        differentiable=False,
        ties_ok=False,
        out_dtype=torch.float64,
    )
)


def _ema(target_w: Tensor, online_w: Tensor, **kw: Any) -> Tensor:
    target, online = nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        target.weight = nn.Parameter(target_w.clone())
        online.weight = nn.Parameter(online_w.clone())
    ME.ema_update_(target, online, **kw)
    return target.weight.detach()


register(
    Entry(
        name=("ema_update_",),
        fn=_ema,
        make=lambda dt, g: Call([_randn(g, 2, 3, dtype=dt), _randn(g, 2, 3, dtype=dt)], {"tau": 0.9}),
        float_args={0: "target", 1: "online"},
        hparams={"tau": "unit", "buffers": "choice"},
        reference=lambda c: c.kwargs["tau"] * c.args[0] + (1 - c.kwargs["tau"]) * c.args[1],
        grad=None,  # an in-place no_grad update
        differentiable=False,
        # the tensors live in modules: their dtype is the modules'; a NaN online weight gives a NaN target
        # weight, which is what an EMA of it is
        skip_bad=frozenset({"int", "bool", "complex", "nan", "inf", "empty"}),
        scale=1,
    )
)


def _ign_model(x: Any) -> nn.Module:
    return _built(lambda: nn.Sequential(nn.Linear(4, 4), nn.Tanh()), _float_dtype(x))


register(
    Entry(
        name=("ign_loss", "IGN"),
        fn=lambda x, z, **kw: ME.ign_loss(_ign_model(x), x, z, **kw),
        make=lambda dt, g: Call([torch.rand(4, 4, generator=g, dtype=dt) * 2 - 1, _randn(g, 4, 4, dtype=dt)], {}),
        float_args={0: "x", 1: "z"},
        hparams={
            "lambda_rec": "nonneg",
            "lambda_idem": "nonneg",
            "lambda_tight": "nonneg",
            "tight_clamp": "positive",
            "distance": "choice",
            "clamp_denominator": "choice",
            "form": "choice",
        },
        module=lambda c: ME.IGN(_ign_model(c.args[0]), **c.kwargs)(*c.args),
        # idempotence and tightness differentiate through one f each (frozen copy / stop-gradient) by design;
        # the reconstruction term alone is an ordinary function of x
        grad_kwargs={"lambda_idem": 0.0, "lambda_tight": 0.0},
        wrong_rank={0: _flat, 1: _flat},
        batch_args=(0, 1),
        autocast=torch.float32,
    )
)
register(
    Entry(
        name=("ign_iterate",),
        fn=lambda x, **kw: ME.ign_iterate(_ign_model(x), x, **kw)[-1],
        make=lambda dt, g: Call([_randn(g, 4, 4, dtype=dt)], {"steps": 2}),
        float_args={0: "x"},
        hparams={"steps": "posint"},
        reference=lambda c: _ign_model(c.args[0])(_ign_model(c.args[0])(c.args[0])),
        grad=None,  # sampling: runs under no_grad by design
        differentiable=False,
        skip_bad=_BACKBONE_INPUT,
    )
)
register(
    Entry(
        name=("FrequencyNoise",),
        fn=lambda images, **kw: ME.FrequencyNoise(images).sample(
            **{"n": 3, **kw}, generator=torch.Generator().manual_seed(0)
        ),
        make=lambda dt, g: Call([torch.rand(4, 1, 6, 6, generator=g, dtype=dt) * 2 - 1], {}),
        float_args={0: "images"},
        hparams={"n": "posint"},
        grad=None,  # the statistics are buffers of detached images
        differentiable=False,
        wrong_rank={0: lambda x: x[:, 0]},
        scale=1,
    )
)
register(
    Entry(
        name=("gaussian_noise",),
        fn=lambda **kw: ME.gaussian_noise(**{"shape": (2, 3), **kw}, generator=torch.Generator().manual_seed(0)),
        make=lambda dt, g: Call([], {"dtype": dt}),
        float_args={},
        hparams={"shape": "shape", "dtype": "float_dtype"},
        grad=None,
        differentiable=False,
        ties_ok=False,
    )
)

# P-tuning on a tiny BERT built from a config, with a word-level tokenizer built in memory (no files).

_WORDS = ["good", "bad", "a", "fine", "film", "with", "great", "cast", "dull", "plot", "ok", "it", "was"]
_TEXTS = ["a fine film with a great cast", "a dull plot", "ok"]


@functools.cache
def _tokenizer() -> Any:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@functools.cache
def _tiny_bert(dtype: torch.dtype) -> nn.Module:
    """Built once per dtype (the first build imports BERT's modelling code, a few seconds)."""
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=len(_tokenizer()),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    with _seed():
        return transformers.BertForMaskedLM(cfg).to(dtype).eval()


_PT_KEYS = ("input_ids", "attention_mask", "prompt_index", "slot_pos")


def _ptuning(prompt_vectors: Tensor, labels: Tensor, **kw: Any) -> Any:
    pt = ME.PTuning(
        _tiny_bert(_float_dtype(prompt_vectors)),
        _tokenizer(),
        "{p2}{label}{text}",
        ["good", "bad"],
        **{"prompt": "none", **kw},
    )
    enc = pt.encode(_TEXTS)
    # the prompt vectors as an argument (torch.func), so that gradients reach them
    return functional_call(pt, {"prompt.weight": prompt_vectors}, tuple(enc[k] for k in _PT_KEYS), {"labels": labels})


def _ptuning_module(c: Call) -> Any:
    prompt, labels = c.args
    pt = ME.PTuning(
        _tiny_bert(_float_dtype(prompt)),
        _tokenizer(),
        "{p2}{label}{text}",
        ["good", "bad"],
        **{"prompt": "none", **c.kwargs},
    )
    with torch.no_grad():
        pt.prompt.weight.copy_(prompt)
    enc = pt.encode(_TEXTS)
    return pt(*(enc[k] for k in _PT_KEYS), labels=labels)


register(
    Entry(
        name=("PTuning",),
        fn=_ptuning,
        make=lambda dt, g: Call([_randn(g, 2, 8, dtype=dt), torch.tensor([0, 1, 1])], {"max_length": 24}),
        float_args={0: "prompt"},
        int_args={1: "labels"},
        hparams={
            "aux_weight": "nonneg",
            "mlm_probability": "probability",
            "max_length": "posint",
            "prompt": "choice",
        },
        module=_ptuning_module,
        # the prompt vectors are parameters, not user input: only their dtype and gradient are checked here
        skip_bad=frozenset({"int", "bool", "complex", "nan", "inf", "empty", "rank"}),
        autocast=torch.float32,  # the scores' log-softmax runs in at least float32
    )
)
register(
    Entry(
        name=("extract_features",),
        fn=lambda texts, _dtype=torch.float32, **kw: ME.extract_features(_tiny_bert(_dtype), _tokenizer(), texts, **kw),
        make=lambda dt, g: Call([_TEXTS], {"_dtype": dt}),
        float_args={},
        hparams={"max_length": "posint", "batch_size": "posint"},
        grad=None,  # features of a frozen LM, under no_grad
        differentiable=False,
        ties_ok=False,
        out_dtype=torch.float32,  # documented: float32 on the CPU whatever the LM's dtype
    )
)

# Names that are not tensor -> tensor callables, with the reason; everything else must be in REGISTRY.
EXEMPT: dict[str, str] = {
    "TOPK_METHODS": "a tuple of method names",
    "multitask": "a sub-package, covered through its own exports",
    "gather_with_grad": "cross-rank identity, tested with 2 gloo processes in test_contrastive.py",
    "STRATEGIES": "a name -> class table; every class in it has its own entry",
    "MultiTaskStrategy": "the abstract base class of the strategies; every subclass has its own entry",
    "BackwardResult": "a TypedDict (the result type of MultiTaskStrategy.backward)",
    "WeightedLoss": "a NamedTuple (the result type of the loss-level weightings)",
    "DoubleBackwardError": "an exception class",
    "dropout_disabled": "a context manager over a module's mode; test_regularizers.py checks it",
    "frozen_batchnorm_stats": "a context manager over BatchNorm buffers; test_regularizers.py checks it",
    "find_embedding": "returns a submodule (no tensor math); test_regularizers.py checks its errors",
    "PromptKind": "a typing alias",
    "LMKind": "a typing alias",
    "Template": "a frozen dataclass of strings (no tensors); test_ptuning.py checks its parsing and errors",
    "lm_kind": "maps a model's class name to 'causal'/'mlm' (no tensors); test_ptuning.py checks it",
    "ITERATIVE_MAX_K": "an int constant (the largest k the iterative construction accepts)",
    "ChunkedTaiLrLossFunc": "a Trainer hook over a model's outputs (hidden states + output layer); its math is "
    "chunked_tailr_loss's entry, and test_chunked_hf.py checks it against the dense loss, through the Trainer "
    "and for its errors",
    "hidden_states_collator": "wraps a data collator (no tensor math); test_chunked_hf.py uses it in the Trainer",
    "RouterOutput": "a NamedTuple (the result type of soft_topk_router); its fields are checked through the router",
}

# Exports whose entries are still to be written. Must be empty: ``test_registry_covers_every_export`` lists them.
PENDING: set[str] = set()

# Test id -> why it fails today. Each is a defect in a file being fixed elsewhere; the tests run as strict
# xfails, so a fix makes them pass unexpectedly and its lines must then be removed.
# fmt: off
KNOWN_FAILURES: dict[str, str] = {
}
# fmt: on
