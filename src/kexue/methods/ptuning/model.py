""":class:`PTuning`: a PET / P-tuning classifier around a pretrained transformers LM.

Article: https://kexue.fm/archives/8295 (Su); paper: arXiv 2103.10385 (P-tuning); PET: arXiv 2001.07676.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import kexue
from kexue._validate import check_choice, check_int, check_real
from kexue.modules.prompt import PromptEncoder, PromptKind, TokenRows, splice_prompts

from . import adapter
from ._scoring import head_name
from .causal import causal_forward
from .layout import PromptLayout
from .mlm import mlm_forward
from .template import LMKind, Template, lm_kind

__all__ = ["PTuning"]

_ENCODING_KEYS = ("input_ids", "attention_mask", "prompt_index", "slot_pos")


def _check_labels(labels: Tensor, batch: int, num_classes: int) -> None:
    # F.cross_entropy would take -100 as "ignore" and fail with an IndexError (a device assert on CUDA) for other
    # ids out of range, and with a RuntimeError for float labels
    if (
        not isinstance(labels, Tensor)
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        what = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"labels must be an integer tensor of class indices, got {what}")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    lo, hi = (int(labels.min()), int(labels.max())) if batch else (0, 0)
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes}), got values in [{lo}, {hi}]")


def _max_positions(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


class PTuning(nn.Module):
    """PET / P-tuning classifier around a pretrained LM.

    Article: https://kexue.fm/archives/8295 (Su), arXiv 2103.10385 (P-tuning), arXiv 2001.07676 (PET).

    Its ``state_dict()`` holds what training changes and nothing else: the prompt parameters, plus the LM's
    parameters that require grad (all of them with ``freeze_lm=False``, tied weights once). So a
    ``transformers.Trainer`` checkpoint of a ``PTuning`` is prompt-sized, and ``load_state_dict`` does not count
    the frozen LM's entries as missing. :meth:`save_pretrained` / :meth:`from_pretrained` write and read the same
    tensors as a PEFT-style adapter folder.

    Args:
        model: a transformers ``*ForCausalLM`` or ``*ForMaskedLM`` (anything with ``get_input_embeddings()`` and
            an ``inputs_embeds`` forward returning ``.logits``).
        tokenizer: its tokenizer (a ``PreTrainedTokenizer(Fast)``).
        template: a :class:`Template` or its pattern string.
        verbalizer: one label word per class, written as the tokenizer should see it (``" great"`` with its
            leading space for byte-level BPE).
        prompt: ``"none"`` (free vectors), ``"mlp"`` or ``"lstm"`` (paper), the parameterisation of ``{pN}``.
        trainable_tokens: Su's variant: these vocabulary tokens (e.g. ``["[unused1]", ...]`` written literally
            in the template) get trainable input-embedding rows (a separate parameter).
        freeze_lm: freeze every LM parameter (P-tuning's few-label regime). ``False`` tunes LM and prompt
            jointly (use :meth:`param_groups` for separate learning rates).
        single_token: require each verbalizer word to be exactly one token (one forward scores all classes).
        aux_weight: weight of Su's auxiliary loss (``0`` = label loss only): causal LM: next-token loss on every
            non-prompt token; masked LM: 15% random masking (80/10/10) of the other text tokens, in the same
            forward. The label slot is never overwritten.
        mlm_probability: masking rate of the auxiliary MLM loss.
        max_length: maximum sequence length; the text is truncated (from the end) to fit the template.
        kind: ``"causal"`` or ``"mlm"``; inferred from the model class when ``None``.
        add_bos: prepend the tokenizer's BOS token (causal LMs; default: no). Masked LMs always get
            ``[CLS] ... [SEP]``.
        init_text: start the prompt vectors at the LM's input embeddings of real words: one string per ``{pN}``
            group in template order (a single string when there is one group), each tokenising to exactly ``N``
            tokens. With the literal words of a hand-written template, P-tuning equals that template at step 0
            (same ``inputs_embeds``, so the same logits). ``"mlp"`` / ``"lstm"`` encoders then take the residual
            form ``init + MLP(...)`` with a zero-initialised last layer (see :class:`~kexue.modules.PromptEncoder`).
            Default: random prompts (the paper's initialisation).
        init_ids: the same with the ``m`` vocabulary ids given directly (not together with ``init_text``).

    Raises:
        ValueError: causal LM with the label slot not last; verbalizer word unknown/empty/multi-token when
            ``single_token``; ``max_length`` below 1, above the model's position limit or too short for the
            template; an unknown ``prompt``; ``aux_weight`` negative or non-finite; ``mlm_probability`` outside
            ``(0, 1)``; ``init_text`` / ``init_ids`` of the wrong count or length, or ids outside the vocabulary;
            in ``forward``, ``labels`` of another shape than ``(B,)`` or outside ``[0, C)``.
        TypeError: unknown model type; a hyperparameter of the wrong type; in ``forward``, ``labels`` that are
            not an integer tensor.

    Example:
        >>> pt = PTuning(lm, tok, "{p4}{label}{p4}{text}", ["bad", "good"])  # doctest: +SKIP
        >>> pt.predict(["a fine film"]).shape  # doctest: +SKIP
        torch.Size([1, 2])
    """

    label_ids: Tensor

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        template: Template | str,
        verbalizer: list[str],
        *,
        prompt: PromptKind = "lstm",
        trainable_tokens: list[str] | None = None,
        freeze_lm: bool = True,
        single_token: bool = True,
        aux_weight: float = 0.0,
        mlm_probability: float = 0.15,
        max_length: int = 128,
        kind: LMKind | None = None,
        add_bos: bool = False,
        init_text: str | Sequence[str] | None = None,
        init_ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        kind = kind if kind is not None else lm_kind(model)
        template = template if isinstance(template, Template) else Template(template)
        check_choice("prompt", prompt, ("none", "mlp", "lstm"))
        check_real("aux_weight", aux_weight, low=0.0)
        check_real("mlm_probability", mlm_probability, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        check_int("max_length", max_length, low=1)
        limit = _max_positions(model)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's {limit} positions")
        emb = cast(Any, model).get_input_embeddings()
        if not isinstance(emb, nn.Embedding):
            raise TypeError(f"model.get_input_embeddings() must be an nn.Embedding, got {type(emb).__name__}")
        self.layout = PromptLayout(
            tokenizer,
            template,
            verbalizer,
            kind=kind,
            vocab_size=emb.num_embeddings,
            max_length=max_length,
            single_token=single_token,
            trainable_tokens=trainable_tokens,
            add_bos=add_bos,
        )
        self.lm: Any = model  # a transformers PreTrainedModel (typed loosely: no stubs for its attributes)
        self.kind: LMKind = kind
        self.template = template
        self.aux_weight = aux_weight
        self.mlm_probability = mlm_probability
        self.freeze_lm = freeze_lm
        self.trainable_tokens = list(trainable_tokens) if trainable_tokens else None
        # derived from the tokenizer at construction: not state (and not in checkpoints)
        self.register_buffer("label_ids", self.layout.label_tensor(), persistent=False)
        # a template without {pN} (plain PET) gets an empty prompt: no encoder parameters at all
        m = template.num_prompts
        self.init_ids = self._init_ids(init_text, init_ids, m)
        start = emb.weight.detach()[torch.tensor(self.init_ids, dtype=torch.long)].clone() if self.init_ids else None
        self.prompt = PromptEncoder(m, emb.embedding_dim, kind=prompt if m else "none", output_init=start)
        self.rows: TokenRows | None = None
        if self.layout.row_tokens:
            self.rows = TokenRows(emb.weight, list(self.layout.row_tokens.values()))
        if freeze_lm:
            self.lm.requires_grad_(False)
        # the head is looked up by name at each forward, never registered twice (that duplicated its weight in
        # state_dict and broke safetensors checkpoints)
        self.head_name = head_name(model)
        self.register_state_dict_post_hook(_trained_state_only)
        self.register_load_state_dict_post_hook(_allow_unsaved_keys)

    def _init_ids(
        self, init_text: str | Sequence[str] | None, init_ids: Sequence[int] | None, m: int
    ) -> list[int] | None:
        """The ``m`` vocabulary ids whose embeddings start the prompt vectors (``None``: random start)."""
        if init_text is not None and init_ids is not None:
            raise ValueError("pass init_text or init_ids, not both")
        if init_text is not None:
            groups = [int(v) for k, v in self.template.parts if k == "prompt"]
            texts = [init_text] if isinstance(init_text, str) else list(init_text)
            if len(texts) != len(groups):
                raise ValueError(
                    f"init_text needs one string per prompt group {groups} of {self.template.pattern!r}, got "
                    f"{len(texts)}: {texts!r}"
                )
            ids: list[int] = []
            for i, (piece, n) in enumerate(zip(texts, groups)):
                got = self.layout.tokenize(piece)
                if len(got) != n:
                    raise ValueError(
                        f"init_text[{i}]={piece!r} tokenises to {len(got)} tokens {got}, its group has {n}"
                    )
                ids += got
            return ids
        if init_ids is None:
            return None
        if isinstance(init_ids, (str, bytes)) or not isinstance(init_ids, Sequence):
            raise TypeError(f"init_ids must be a sequence of ints, got {type(init_ids).__name__}")
        if len(init_ids) != m:
            raise ValueError(f"init_ids needs {m} ids (one per prompt vector), got {len(init_ids)}")
        for i, t in enumerate(init_ids):
            check_int(f"init_ids[{i}]", t, low=0, high=self.vocab_size - 1)
        return [int(t) for t in init_ids]

    # ----------------------------------------------------------------------------------------- layout
    @property
    def tokenizer(self) -> Any:
        return self.layout.tokenizer

    @property
    def verbalizer(self) -> list[str]:
        return self.layout.verbalizer

    @property
    def max_length(self) -> int:
        return self.layout.max_length

    @property
    def single_token(self) -> bool:
        return self.layout.single_token

    @property
    def add_bos(self) -> bool:
        return self.layout.add_bos

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    @property
    def pad_id(self) -> int:
        return self.layout.pad_id

    @property
    def mask_id(self) -> int | None:
        return self.layout.mask_id

    @property
    def multi_token(self) -> bool:
        return self.layout.multi_token

    def encode(self, texts: list[str], *, truncate: bool = True) -> dict[str, Tensor]:
        """Tokenise ``texts`` into the template (see :meth:`PromptLayout.encode`): ``input_ids``,
        ``attention_mask``, ``prompt_index`` ``(B, G, L)`` and ``slot_pos`` ``(B, G, S)``.

        ``G = 1`` when every label word is one token, ``G = C`` (one sequence per class) otherwise.
        """
        return self.layout.encode(texts, truncate=truncate)

    # ----------------------------------------------------------------------------------------- forward
    def embed(self, input_ids: Tensor, prompt_index: Tensor) -> Tensor:
        """LM input embeddings with prompt vectors / trainable rows spliced in: ``(N, L, H)``."""
        emb = self.lm.get_input_embeddings()(input_ids)
        if self.rows is not None:
            emb = self.rows.splice(input_ids, emb)
        return splice_prompts(emb, self.prompt(), prompt_index)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        prompt_index: Tensor,
        slot_pos: Tensor,
        labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Class scores, and the loss when ``labels`` are given.

        Args:
            input_ids: ``(B, G, L)`` from :meth:`encode` (so are ``attention_mask`` and ``prompt_index``).
            attention_mask: ``(B, G, L)``.
            prompt_index: ``(B, G, L)``.
            slot_pos: ``(B, G, S)`` from :meth:`encode`.
            labels: ``(B,)`` class indices.

        Returns:
            ``{"logits": (B, C) log p(label word)}``; with ``labels`` also ``loss`` (label cross-entropy over the
            verbalizer + ``aux_weight * aux_loss``), ``label_loss``, ``aux_loss`` and ``acc``.
        """
        B, G = input_ids.shape[:2]
        flat = [t.reshape(B * G, -1) for t in (input_ids, attention_mask, prompt_index, slot_pos)]
        aux_labels = labels if labels is not None and self.aux_weight > 0 and self.training else None
        path = mlm_forward if self.kind == "mlm" else causal_forward
        scores, aux = path(self, *flat, G=G, aux_labels=aux_labels)
        out: dict[str, Tensor] = {"logits": scores}
        if labels is None:
            return out
        _check_labels(labels, scores.shape[0], scores.shape[1])
        label_loss = F.cross_entropy(scores, labels)
        aux = scores.new_zeros(()) if aux is None else aux
        out["loss"] = label_loss + self.aux_weight * aux
        out["label_loss"] = label_loss.detach()
        out["aux_loss"] = aux.detach()
        out["acc"] = (scores.argmax(-1) == labels).float().mean()
        return out

    @torch.no_grad()
    def predict(self, inputs: list[str] | Mapping[str, Tensor], *, batch_size: int = 32) -> Tensor:
        """Class scores ``(B, C)`` (CPU), in eval mode and batches.

        Args:
            inputs: texts (encoded here with the tokenizer given at construction, batch by batch), or an
                :meth:`encode` result.
            batch_size: examples per forward.
        """
        if isinstance(inputs, str):
            raise TypeError("inputs must be a list of texts or an encode() result, got a single str")
        check_int("batch_size", batch_size, low=1)
        was = self.training
        self.eval()
        dev = self.label_ids.device
        texts = None if isinstance(inputs, Mapping) else list(inputs)
        n = len(texts) if texts is not None else int(cast(Mapping[str, Tensor], inputs)["input_ids"].shape[0])
        outs = []
        for i in range(0, n, batch_size):
            if texts is not None:
                enc = self.encode(texts[i : i + batch_size])
                args = [enc[k].to(dev) for k in _ENCODING_KEYS]
            else:
                args = [cast(Mapping[str, Tensor], inputs)[k][i : i + batch_size].to(dev) for k in _ENCODING_KEYS]
            outs.append(self(*args)["logits"].cpu())
        self.train(was)
        return torch.cat(outs) if outs else torch.zeros(0, self.label_ids.shape[0])

    # ----------------------------------------------------------------------------------------- parameters
    def prompt_parameters(self) -> list[nn.Parameter]:
        """The prompt encoder's and the trainable rows' parameters."""
        ps = [p for p in self.prompt.parameters() if p.numel() > 0]
        if self.rows is not None:
            ps += list(self.rows.parameters())
        return ps

    def param_groups(
        self, *, lr_prompt: float, lr_lm: float | None = None, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimiser groups: the prompt parameters at ``lr_prompt``, the LM (when tuned) at ``lr_lm``.

        The paper tunes the LM jointly with a larger learning rate for the prompt; a frozen LM contributes no
        group. Example: ``torch.optim.AdamW(pt.param_groups(lr_prompt=6e-4, lr_lm=1e-5))``.

        Raises:
            ValueError: nothing is trainable.
        """
        groups: list[dict[str, Any]] = []
        prompt = [p for p in self.prompt_parameters() if p.requires_grad]
        if prompt:
            groups.append({"params": prompt, "lr": lr_prompt, "weight_decay": weight_decay})
        lm = [p for p in self.lm.parameters() if p.requires_grad]
        if lm:
            groups.append({"params": lm, "lr": lr_lm if lr_lm is not None else lr_prompt, "weight_decay": weight_decay})
        if not groups:
            raise ValueError("nothing to train: the LM is frozen and the template has no prompt vectors or rows")
        return groups

    def num_trainable(self) -> int:
        """Number of trainable scalars (prompt parameters, plus the LM when tuned)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----------------------------------------------------------------------------------------- adapter folders
    def _unsaved_keys(self) -> set[str]:
        """State keys that :meth:`state_dict` leaves out: the frozen LM, and second names of tied tensors."""
        lm_state = self.lm.state_dict(keep_vars=True)
        trained = {n for n, p in self.lm.named_parameters(remove_duplicate=False) if p.requires_grad}
        if not trained:
            return {"lm." + k for k in lm_state}
        params = {n for n, _ in self.lm.named_parameters(remove_duplicate=False)}
        out = {"lm." + n for n in params - trained}
        # tied weights (input embedding = output layer) are kept under their first name: safetensors refuses two
        # names for one storage, and loading the first name fills both
        seen: set[tuple[Any, ...]] = set()
        for k, v in lm_state.items():
            if "lm." + k in out or v.numel() == 0:
                continue
            ident = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), v.dtype, tuple(v.shape))
            if ident in seen:
                out.add("lm." + k)
            seen.add(ident)
        return out

    def adapter_config(self) -> dict[str, Any]:
        """The JSON-able settings that :meth:`from_pretrained` rebuilds this model from (plus checks)."""
        cfg = getattr(self.lm, "config", None)
        return {
            "kexue_version": kexue.__version__,
            "base_model_class": type(self.lm).__name__,
            "base_model_name_or_path": getattr(cfg, "name_or_path", None) or None,
            "kind": self.kind,
            "template": self.template.pattern,
            "verbalizer": self.verbalizer,
            "prompt": self.prompt.kind,
            "num_prompts": self.prompt.num_tokens,
            "hidden_size": self.prompt.hidden_size,
            "trainable_tokens": self.trainable_tokens,
            "freeze_lm": self.freeze_lm,
            "single_token": self.single_token,
            "aux_weight": self.aux_weight,
            "mlm_probability": self.mlm_probability,
            "max_length": self.max_length,
            "add_bos": self.add_bos,
            "init_ids": self.init_ids,
            "vocab_size": self.vocab_size,
            "label_token_ids": self.layout.label_ids,
        }

    def save_pretrained(self, save_directory: str | Path, *, is_main_process: bool = True) -> None:
        """Write a PEFT-style adapter folder: ``adapter_config.json`` and ``adapter_model.safetensors``.

        The weights are :meth:`state_dict`: the prompt parameters only when the LM is frozen (kilobytes to a few
        MB), never a frozen LM's weights. Reload with :meth:`from_pretrained`.

        Args:
            save_directory: the folder (created if needed).
            is_main_process: write only when ``True`` (pass ``False`` on the other ranks of a distributed run).
        """
        if is_main_process:
            adapter.write_adapter(save_directory, self.adapter_config(), self.state_dict())

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        pretrained_path: str | Path,
        tokenizer: Any = None,
        *,
        is_trainable: bool = False,
    ) -> PTuning:
        """Rebuild a :class:`PTuning` around ``model`` from a :meth:`save_pretrained` folder.

        As PEFT's ``PeftModel.from_pretrained``: the result is in eval mode with nothing trainable unless
        ``is_trainable=True`` (then the prompt, and the LM if it was tuned, train as before).

        Args:
            model: the same base LM the adapter was trained on.
            pretrained_path: the adapter folder.
            tokenizer: the LM's tokenizer; ``None`` loads it with ``transformers.AutoTokenizer`` from
                ``model.config.name_or_path``.
            is_trainable: keep the adapter trainable (to continue training).

        Raises:
            FileNotFoundError: not an adapter folder.
            ValueError: not a kexue P-tuning adapter; the model's width or vocabulary, or the tokenizer's ids of
                the label words, differ from the ones it was saved with; no tokenizer to load.
        """
        config, state = adapter.read_adapter(pretrained_path)
        if tokenizer is None:
            name = getattr(getattr(model, "config", None), "name_or_path", "")
            if not name:
                raise ValueError("the model has no config.name_or_path to load its tokenizer from: pass tokenizer=")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(name)
        emb = cast(Any, model).get_input_embeddings()
        got = {"hidden_size": emb.embedding_dim, "vocab_size": emb.num_embeddings}
        for key, value in got.items():
            if config[key] != value:
                raise ValueError(
                    f"adapter {str(pretrained_path)!r} was saved for {key}={config[key]}, the model has {value} "
                    f"({config['base_model_class']} expected)"
                )
        pt = cls(
            model,
            tokenizer,
            config["template"],
            config["verbalizer"],
            prompt=config["prompt"],
            trainable_tokens=config["trainable_tokens"],
            freeze_lm=config["freeze_lm"],
            single_token=config["single_token"],
            aux_weight=config["aux_weight"],
            mlm_probability=config["mlm_probability"],
            max_length=config["max_length"],
            kind=config["kind"],
            add_bos=config["add_bos"],
            init_ids=config.get("init_ids"),
        )
        if pt.layout.label_ids != config["label_token_ids"]:
            raise ValueError(
                f"the tokenizer maps the verbalizer {pt.verbalizer!r} to {pt.layout.label_ids}, the adapter was "
                f"saved with {config['label_token_ids']}: a different tokenizer"
            )
        pt.load_state_dict(state)
        if not is_trainable:
            pt.requires_grad_(False)
            pt.eval()
        return pt

    # ----------------------------------------------------------------------------------------- legacy files
    def prompt_state_dict(self) -> dict[str, Any]:
        """The prompt parameters alone (no LM weights), with the template and sizes for checking on load."""
        state: dict[str, Any] = {
            "template": self.template.pattern,
            "verbalizer": self.verbalizer,
            "prompt": {k: v.detach().cpu().clone() for k, v in self.prompt.state_dict().items()},
            "prompt_kind": self.prompt.kind,
        }
        if self.rows is not None:
            state["rows"] = {k: v.detach().cpu().clone() for k, v in self.rows.state_dict().items()}
        return state

    def load_prompt_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`prompt_state_dict` output; raises ``ValueError`` on a template / encoder mismatch."""
        if state.get("template") != self.template.pattern or state.get("prompt_kind") != self.prompt.kind:
            raise ValueError(
                f"prompt state is for template {state.get('template')!r} / {state.get('prompt_kind')!r}, this "
                f"model has {self.template.pattern!r} / {self.prompt.kind!r}"
            )
        self.prompt.load_state_dict(state["prompt"])
        if ("rows" in state) != (self.rows is not None):
            raise ValueError("prompt state and model disagree on trainable_tokens")
        if self.rows is not None:
            self.rows.load_state_dict(state["rows"])

    def save_prompt(self, path: str | Path) -> None:
        """Write :meth:`prompt_state_dict` to one ``torch.save`` file (see :meth:`save_pretrained` for folders)."""
        torch.save(self.prompt_state_dict(), Path(path))

    def load_prompt(self, path: str | Path) -> None:
        """Read a file written by :meth:`save_prompt`."""
        self.load_prompt_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))

    # ----------------------------------------------------------------------------------------- repr
    def __repr__(self) -> str:
        # nn.Module's repr prints every child, i.e. the whole LM: name it instead
        n_lm = sum(p.numel() for p in self.lm.parameters())
        lm_state = "frozen" if not any(p.requires_grad for p in self.lm.parameters()) else "tuned"
        lines = [
            f"lm={type(self.lm).__name__} ({lm_state}, {n_lm:,} parameters)",
            f"kind={self.kind!r}, template={self.template.pattern!r}, verbalizer={self.verbalizer!r}",
            f"prompt=PromptEncoder({self.prompt.extra_repr()})",  # its layers are implied by kind
        ]
        if self.rows is not None:
            lines.append(f"rows=TokenRows({self.rows.extra_repr()})")
        lines.append(f"aux_weight={self.aux_weight}, trainable={self.num_trainable():,}")
        return "PTuning(\n  " + ",\n  ".join(lines) + "\n)"


def _trained_state_only(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """``state_dict`` post-hook: drop the frozen LM's entries and tied duplicates (see ``PTuning``)."""
    for key in cast(PTuning, module)._unsaved_keys():
        state_dict.pop(prefix + key, None)


def _allow_unsaved_keys(module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: entries that ``state_dict`` never writes are not missing."""
    unsaved = cast(PTuning, module)._unsaved_keys()

    def unsaved_key(key: str) -> bool:
        # the key carries the prefix of any parent module: match it from each '.' boundary on
        start = 0
        while True:
            if key[start:] in unsaved:
                return True
            start = key.find(".", start) + 1
            if start == 0:
                return False

    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not unsaved_key(k)]
