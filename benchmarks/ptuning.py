"""P-tuning training step vs PEFT's ``PromptEncoder`` (MLP and LSTM reparameterisation), frozen causal LM.

Same model (a random-init Llama with SmolLM2's 49,152-token vocabulary, 4 layers, width 256), same batch (8),
same
sequence (64 text tokens + 8 prompt vectors), one full step each: forward, backward, Adam step on the prompt
parameters. PEFT's step is its standard causal-LM loss (full-vocabulary logits at every position); kexue's
classification step computes the LM head only at the label slot; "kexue + aux LM" adds Su's full-sequence LM
loss,
which does the same vocabulary work as PEFT. Trainable parameter counts are printed beside the times (PEFT's
encoders are wider: LSTM hidden H per direction and a 3-layer MLP, vs the paper's H/2 and 2 layers).

Run: ``python benchmarks/ptuning.py`` (PEFT from ``.venv-bench``; a missing peer prints "not installed").
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import copy
from typing import Any

import torch

from _timing import Bench, Case
from kexue.methods import PTuning

B, L, M, H, LAYERS, VOCAB = 8, 64, 8, 256, 4, 49152


class _Tok:
    """A stand-in tokenizer over integer-word strings (the benchmark feeds ids, not text)."""

    pad_token_id = 0
    unk_token_id = None
    mask_token_id = None
    bos_token_id = None

    def __call__(self, s: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [int(w) for w in s.split()]}


def main() -> None:
    bench = Bench("ptuning", "P-tuning training step vs PEFT's PromptEncoder")
    bench.peer("peft", "transformers")
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=4 * H,
        max_position_embeddings=256,
    )
    base = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(10, VOCAB, (B, L))
    y = torch.randint(0, 2, (B,))
    texts = [" ".join(map(str, row.tolist())) for row in ids]
    print(f"Llama {LAYERS}x{H}, vocab {VOCAB}, batch {B}, {L} tokens + {M} prompt vectors, LM frozen, Adam.\n")
    try:
        import peft
    except ImportError:
        peft = None

    for kind, peft_kind in (("mlp", "MLP"), ("lstm", "LSTM")):
        cases = []
        params: dict[str, int] = {}
        for aux in (0.0, 1.0):
            pt = PTuning(
                copy.deepcopy(base),
                _Tok(),
                f"{{p{M}}}{{text}}{{label}}",
                ["1", "2"],
                prompt=kind,
                max_length=L + M + 1,
                kind="causal",
                aux_weight=aux,
            )
            pt.train()
            enc = pt.encode(texts)
            args = [enc[k] for k in ("input_ids", "attention_mask", "prompt_index", "slot_pos")]
            opt = torch.optim.Adam(pt.param_groups(lr_prompt=1e-3))

            def step(pt: PTuning = pt, opt: torch.optim.Optimizer = opt, args: list = args) -> None:
                opt.zero_grad(set_to_none=True)
                pt(*args, labels=y)["loss"].backward()
                opt.step()

            name = "kexue PTuning" + (" + aux LM" if aux else "")
            cases.append(Case(name, step))
            params[name] = pt.num_trainable()
        if peft is None:
            print(f"PEFT PromptEncoder ({peft_kind}): not installed\n")
            bench.compare(kind, f"P-tuning step, {kind} encoder", cases, baseline=cases[0].name, warmup=1, budget_s=60)
        else:
            pcfg = peft.PromptEncoderConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=M,
                encoder_reparameterization_type=peft_kind,
                encoder_hidden_size=H,
            )
            pm = peft.get_peft_model(copy.deepcopy(base), pcfg)
            pm.train()
            popt = torch.optim.Adam([p for p in pm.parameters() if p.requires_grad], lr=1e-3)
            labels = ids.clone()
            mask = torch.ones_like(ids)

            def pstep(pm: Any = pm, popt: Any = popt, mask: Any = mask, labels: Any = labels) -> None:
                popt.zero_grad(set_to_none=True)
                pm(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
                popt.step()

            params["PEFT PromptEncoder"] = sum(p.numel() for p in pm.parameters() if p.requires_grad)
            bench.compare(
                kind,
                f"P-tuning step, {kind} encoder",
                [Case("PEFT PromptEncoder", pstep), *cases],
                baseline="PEFT PromptEncoder",
                warmup=1,
                budget_s=60,
                note="trainable parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()),
            )
            bench.target(f"{kind}_vs_peft", f"{kind} P-tuning ≤ 1.0× PEFT", table=kind, case="kexue PTuning", limit=1.0)
    bench.summary = {
        "technique": "P-tuning",
        "doc": "docs/ptuning.md",
        "what": f"one training step × PEFT `PromptEncoder`, Llama {LAYERS}×{H}, vocab {VOCAB}, batch {B}",
        "headlines": [
            {"label": "MLP encoder", "case": "kexue PTuning", "tables": ["mlp"]},
            {"label": "LSTM encoder", "case": "kexue PTuning", "tables": ["lstm"]},
            {"label": "MLP + auxiliary LM loss", "case": "kexue PTuning + aux LM", "tables": ["mlp"]},
            {"label": "LSTM + auxiliary LM loss", "case": "kexue PTuning + aux LM", "tables": ["lstm"]},
        ],
        "target": "no slower than PEFT (without the auxiliary loss)",
    }
    bench.save()


if __name__ == "__main__":
    main()
