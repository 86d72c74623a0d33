"""The contract every public op, loss, regularizer and method of kexue honours, as a registry of entries.

Each :class:`Entry` says how to call one public callable on small random inputs, which of its arguments are
floating tensors, which hyperparameters it takes (and their valid range), whether it has a module twin and a
``reduction`` argument, and which gradient checks apply. ``tests/test_contract.py`` runs the same battery over every
entry:

- functional == module (same inputs, same output);
- reduction laws (``"mean" == "none".mean()``, ``"sum" == "none".sum()``);
- output dtype == input dtype for float32 and float64, finite output;
- float64 ``gradcheck`` (and ``gradgradcheck`` where the op may sit inside a gradient penalty);
- bad input -> ``ValueError``/``TypeError`` whose message names the argument: int/bool/complex dtypes, NaN, inf,
  empty, wrong rank, mismatched batch, and non-finite or out-of-range hyperparameters;
- extreme valid input (scaled by 1e4 and 1e30 where the op is scale-free or scale-equivariant, all ties) -> finite
  and equal to the unscaled answer.

Every name exported by the library layers must be registered here or listed in ``EXEMPT`` with the reason; a new
export that is in neither fails ``test_registry_covers_every_export``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import kexue.losses as L
import kexue.ops as O

# Library layers whose exports the contract covers (``train``, ``data``, ``experiments`` and ``report`` are
# tested by their own suites: they touch files, devices and processes rather than tensors).
LAYERS = ("kexue.ops", "kexue.losses", "kexue.losses.multitask", "kexue.regularizers", "kexue.modules", "kexue.methods")

# hyperparameter kinds -> values that must be rejected, with the exception type expected
BAD_VALUES: dict[str, list[tuple[Any, type[Exception]]]] = {
    "positive": [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                 (True, TypeError), ("1", TypeError)],  # fmt: skip
    "nonneg": [(-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError)],
    "unit": [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), ("0.5", TypeError)],
    "unit_open": [(-0.1, ValueError), (1.0, ValueError), (float("nan"), ValueError)],  # [0, 1)
    "finite": [(float("nan"), ValueError), (float("inf"), ValueError), (float("-inf"), ValueError)],
    "posint": [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)],
    "reduction": [("avg", ValueError), (None, ValueError)],
}


@dataclasses.dataclass
class Call:
    """Positional and keyword arguments of one call; ``tensors`` names the float tensor arguments."""

    args: list[Any]
    kwargs: dict[str, Any]


@dataclasses.dataclass
class Entry:
    """How to exercise one public callable.

    Attributes:
        name: the exported name(s) this entry covers (a functional and its module twin may share one entry).
        fn: the call under test: ``fn(*call.args, **call.kwargs) -> Tensor``.
        make: ``make(dtype, generator) -> Call`` building valid inputs.
        float_args: positional indices (int) or keyword names (str) of the floating tensor inputs, with the
            argument's public name used in error messages.
        hparams: keyword hyperparameter -> kind in ``BAD_VALUES``.
        module: ``module(call) -> Tensor`` computing the same thing through the ``nn.Module`` twin.
        reduction: the callable takes ``reduction=`` in ``("mean", "sum", "none")``.
        grad: ``None``, ``"gradcheck"`` or ``"gradgradcheck"``; ``grad_args`` as ``float_args``.
        wrong_rank: float arg -> a function making a tensor of a rank the callable must reject.
        batch_args: float args whose size along dim 0 must match (dropping one row of one must be rejected).
        empty_ok: an empty batch is valid input (then it is not tested as bad input).
        scale: how the output reacts to multiplying every float input by ``c``: ``"invariant"`` (unchanged),
            ``None`` (not tested).
        ties_ok: all-equal inputs are valid and must give a finite answer.
        allow_inf: float args where ``-inf`` is valid input (masked logits); ``+inf`` is not injected there.
    """

    name: tuple[str, ...]
    fn: Callable[..., Any]
    make: Callable[[torch.dtype, torch.Generator], Call]
    float_args: dict[int | str, str]
    hparams: dict[str, str] = dataclasses.field(default_factory=dict)
    module: Callable[[Call], Any] | None = None
    reduction: bool = False
    grad: str | None = "gradcheck"
    grad_args: tuple[int | str, ...] | None = None
    wrong_rank: dict[int | str, Callable[[Tensor], Tensor]] = dataclasses.field(default_factory=dict)
    batch_args: tuple[int | str, ...] = ()
    empty_ok: bool = False
    scale: str | None = None
    ties_ok: bool = True
    allow_inf: tuple[int | str, ...] = ()


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


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    key = entry.name[0]
    assert key not in REGISTRY, key
    REGISTRY[key] = entry
    return entry


# ---------------------------------------------------------------------------------------------------- ops

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
        )
    )

register(
    Entry(
        name=("effective_rank",),
        fn=O.effective_rank,
        make=lambda dt, g: Call([_randn(g, 8, 5, dtype=dt)], {}),
        float_args={0: "z"},
        hparams={"eps": "positive"},
        wrong_rank={0: _flat},
        scale="invariant",
        grad="gradcheck",
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
        scale="invariant",
        grad="gradcheck",
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
            scale="invariant",
            ties_ok=False,  # identical rows are fine, but all-equal entries make a zero-variance target direction
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
            scale="invariant",
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
        scale="invariant",
    )
)


def _logits_target(dt: torch.dtype, g: torch.Generator) -> Call:
    return Call([_randn(g, 6, 5, dtype=dt), torch.randint(0, 5, (6,), generator=g)], {})


register(
    Entry(
        name=("info_nce_from_logits",),
        fn=L.info_nce_from_logits,
        make=_logits_target,
        float_args={0: "logits"},
        hparams={"reduction": "reduction"},
        reduction=True,
        grad="gradgradcheck",
        wrong_rank={0: _flat},
        batch_args=(0, 1),
        allow_inf=(0,),
    )
)
register(
    Entry(
        name=("flat_nce_from_logits",),
        fn=L.flat_nce_from_logits,
        make=_logits_target,
        float_args={0: "logits"},
        hparams={"reduction": "reduction"},
        reduction=True,
        grad="gradgradcheck",
        wrong_rank={0: _flat},
        batch_args=(0, 1),
        allow_inf=(0,),
    )
)
register(
    Entry(
        name=("tailr_loss", "TaiLrLoss"),
        fn=L.tailr_loss,
        make=lambda dt, g: Call([_randn(g, 6, 5, dtype=dt), torch.randint(0, 5, (6,), generator=g)], {"gamma": 0.5}),
        float_args={0: "logits"},
        hparams={"gamma": "unit", "min_weight": "unit", "label_smoothing": "unit_open", "reduction": "reduction"},
        module=lambda c: L.TaiLrLoss(**c.kwargs)(*c.args),
        reduction=True,
        # The TaiLr weight is a stop-gradient, so the loss's value and its gradient differ by design;
        # test_tailr.py checks the gradient against weight.detach() * cross-entropy gradient.
        grad=None,
        allow_inf=(0,),
        wrong_rank={0: _flat},
        batch_args=(0, 1),
    )
)
register(
    Entry(
        name=("tailr_weight",),
        fn=L.tailr_weight,
        make=lambda dt, g: Call([torch.log_softmax(_randn(g, 6, 5, dtype=dt), -1)], {"gamma": 0.5}),
        float_args={0: "logp"},
        hparams={"gamma": "unit", "min_weight": "unit"},
        grad="gradcheck",
        empty_ok=True,
    )
)

# Names that are not tensor -> tensor callables, with the reason; everything else must be in REGISTRY.
EXEMPT: dict[str, str] = {
    "TOPK_METHODS": "a tuple of method names",
    "multitask": "a sub-package, covered through its own exports",
    "gather_with_grad": "cross-rank identity, tested with 2 gloo processes in test_contrastive.py",
}

# Exports whose entries are still to be written. Must be empty: ``test_registry_covers_every_export`` lists them.
PENDING: set[str] = set()
