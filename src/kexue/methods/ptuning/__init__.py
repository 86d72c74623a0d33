"""PET and P-tuning on any transformers causal or masked LM: templates, verbalizers, prompts via ``inputs_embeds``.

Article: Su Jianlin, "P-tuning：自动构建模版，释放语言模型潜能", https://kexue.fm/archives/8295; paper: Liu et al.,
*GPT Understands, Too* (arXiv 2103.10385); PET: Schick & Schütze (arXiv 2001.07676).

A classification example becomes a cloze: a :class:`Template` lays out literal words, the input ``{text}``,
continuous prompt vectors ``{pN}`` and the label slot ``{label}`` in any order; the LM's distribution at the slot,
restricted to the verbalizer words (one per class), gives the class scores. For a masked LM the slot is
``[MASK]`` (one per label token); for a causal LM the slot must come last and the label word is predicted from
the preceding position. :class:`PTuning` owns the LM (frozen or tuned) and the prompt parameters
(:class:`~kexue.modules.PromptEncoder` free/MLP/BiLSTM+MLP vectors, or Su's few trainable embedding rows
:class:`~kexue.modules.TokenRows`), and optionally adds Su's auxiliary LM / MLM loss on the rest of the sequence.

Files: ``template`` (the pattern language, no torch), ``layout`` (texts -> ids, prompt and slot positions, no
model), ``causal`` and ``mlm`` (one forward path per LM kind), ``_scoring`` (the LM trunk and the slot scores
they share), ``model`` (:class:`PTuning`: parameters, forward dispatch, predict, state and adapter folders),
``adapter`` (the PEFT-style folder format), ``features`` (the linear-probe baseline's features).

Design notes:

* Prompt vectors enter through ``inputs_embeds`` (:func:`~kexue.modules.splice_prompts`), so any
  ``AutoModelForCausalLM`` / ``AutoModelForMaskedLM`` works, at any position, without touching the model.
* Scoring computes the LM head only at the slot positions when the model exposes ``base_model`` plus a head
  (``lm_head`` or BERT's ``cls``): the vocabulary projection is as expensive as a small encoder's body. Models
  without those attributes fall back to the full forward (same numbers, tested).
* Class score = log-probability of the verbalizer word under the full-vocabulary softmax (sum over its tokens for
  multi-token words); the label loss is the cross-entropy over these class scores, i.e. PET's loss restricted to
  the verbalizer. Multi-token verbalizers need one forward per class (each class fills the slot with its own
  number of tokens; the masked-LM tokens are scored in parallel, PET's simple variant).
* With a frozen LM, its parameters get ``requires_grad=False``; ``state_dict()`` (hence a ``transformers.Trainer``
  checkpoint) and :meth:`PTuning.save_pretrained` hold the prompt parameters alone.
"""

from .features import extract_features
from .layout import PromptLayout
from .model import PTuning
from .template import LMKind, Template, lm_kind

__all__ = ["LMKind", "PTuning", "PromptLayout", "Template", "extract_features", "lm_kind"]
