"""P-tuning / PET: prompt placement, frozen-LM gradients, verbalizer scoring against manual log-probs,
save/load.

Unit tests use tiny random-init BERT / Llama models built from configs (with the real MiniLM tokenizer files,
which
load in well under a second); two tests load the real SmolLM2 and MiniLM files through the library loaders.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from kexue.data import DataError, load_minilm, load_smollm2, require  # noqa: E402
from kexue.methods import PTuning, Template, extract_features, lm_kind  # noqa: E402
from kexue.methods.ptuning.mlm import random_mask  # noqa: E402
from kexue.modules import PromptEncoder, TokenRows, splice_prompts  # noqa: E402

KEYS = ("input_ids", "attention_mask", "prompt_index", "slot_pos")
TEXTS = ["a fine film with a great cast", "terrible acting and a dull plot", "ok"]


@pytest.fixture(scope="module")
def tok() -> Any:
    try:
        return transformers.AutoTokenizer.from_pretrained(require("minilm"))
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))


def tiny_bert(tok: Any, dtype: torch.dtype = torch.float32) -> Any:
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=48,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForMaskedLM(cfg).to(dtype).eval()


def tiny_llama(tok: Any, dtype: torch.dtype = torch.float32) -> Any:
    cfg = transformers.LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=48,
    )
    return transformers.LlamaForCausalLM(cfg).to(dtype).eval()


def batch(enc: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [enc[k] for k in KEYS]


# ------------------------------------------------------------------------------------------------ frozen LM
@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("prompt", ["none", "mlp", "lstm"])
def test_frozen_lm_only_prompt_gets_gradients_and_lm_is_bitwise_unchanged(tok: Any, arch: str, prompt: str) -> None:
    lm = tiny_bert(tok) if arch == "bert" else tiny_llama(tok)
    pattern = "{p2}{label}{p2}{text}" if arch == "bert" else "{p2}{text}{p2} it was{label}"
    pt = PTuning(lm, tok, pattern, ["bad", "good"], prompt=prompt, max_length=40, aux_weight=0.5)  # type: ignore[arg-type]
    pt.train()
    before = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    opt = torch.optim.AdamW(pt.param_groups(lr_prompt=0.1, weight_decay=0.1))
    out = pt(*batch(pt.encode(TEXTS)), labels=torch.tensor([1, 0, 1]))
    out["loss"].backward()
    for name, p in pt.named_parameters():
        if name.startswith("lm."):
            assert p.grad is None, name
    grads = [p.grad for p in pt.prompt_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    opt.step()
    for k, v in lm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert pt.num_trainable() == sum(p.numel() for p in pt.prompt_parameters())


def test_tuned_lm_gets_its_own_learning_rate(tok: Any) -> None:
    pt = PTuning(tiny_bert(tok), tok, "{p2}{label}{text}", ["bad", "good"], freeze_lm=False, max_length=40)
    groups = pt.param_groups(lr_prompt=1e-2, lr_lm=1e-5)
    assert [g["lr"] for g in groups] == [1e-2, 1e-5]
    out = pt(*batch(pt.encode(TEXTS)), labels=torch.tensor([1, 0, 1]))
    out["loss"].backward()
    assert pt.lm.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_token_rows_variant_trains_only_those_rows_even_with_weight_decay(tok: Any) -> None:
    lm = tiny_bert(tok)
    unused = [f"[unused{i}]" for i in range(1, 5)]
    pattern = "".join(unused[:2]) + "{label}" + "".join(unused[2:]) + "{text}"
    pt = PTuning(lm, tok, pattern, ["bad", "good"], trainable_tokens=unused, max_length=40)
    emb_before = lm.get_input_embeddings().weight.detach().clone()
    rows_before = pt.rows.weight.detach().clone()  # type: ignore[union-attr]
    ids = [tok.convert_tokens_to_ids(t) for t in unused]
    torch.testing.assert_close(rows_before, emb_before[ids])
    opt = torch.optim.AdamW(pt.param_groups(lr_prompt=0.1, weight_decay=0.5))
    pt(*batch(pt.encode(TEXTS)), labels=torch.tensor([1, 0, 1]))["loss"].backward()
    opt.step()
    assert torch.equal(lm.get_input_embeddings().weight, emb_before)
    assert not torch.equal(pt.rows.weight, rows_before)  # type: ignore[union-attr]
    # the trainable rows are what the LM sees at the [unused] positions
    enc = pt.encode(TEXTS)
    x = enc["input_ids"][:, 0]
    e = pt.embed(x, enc["prompt_index"][:, 0])
    pos = (x == ids[1]).nonzero()[0]
    torch.testing.assert_close(e[pos[0], pos[1]], pt.rows.weight[1])  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ placement
@pytest.mark.parametrize(
    ("arch", "pattern"),
    [
        ("bert", "{p3}{label}{text}"),  # prefix
        ("bert", "{text} it was{p2}{label}{p2}."),  # infix around the slot
        ("bert", "{text} it was {label}.{p3}"),  # suffix
        ("llama", "{p2}{text}{p2} so{label}"),  # Su's GPT layout
        ("llama", "{text}{p3}{label}"),  # suffix-only
    ],
)
def test_prompt_vectors_land_at_template_positions(tok: Any, arch: str, pattern: str) -> None:
    lm = tiny_bert(tok) if arch == "bert" else tiny_llama(tok)
    pt = PTuning(lm, tok, pattern, ["bad", "good"], prompt="mlp", max_length=40)
    enc = pt.encode(TEXTS)
    seen: dict[str, torch.Tensor] = {}

    def grab(_m: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen["embeds"] = kwargs["inputs_embeds"].detach()

    handle = lm.base_model.register_forward_pre_hook(grab, with_kwargs=True)
    pt.predict(enc)
    handle.remove()
    ids, pidx = enc["input_ids"][:, 0], enc["prompt_index"][:, 0]
    vectors = pt.prompt().detach()
    tokens = lm.get_input_embeddings().weight.detach()
    # expected layout built from the pattern by hand: literal/text ids then prompt runs in template order
    for b, text in enumerate(TEXTS):
        expect_ids: list[int] = [tok.cls_token_id] if arch == "bert" else []
        expect_p: list[int] = [-1] * len(expect_ids)
        j = 0
        for kind, v in Template(pattern).parts:
            if kind == "prompt":
                expect_ids += [pt.pad_id] * int(v)
                expect_p += list(range(j, j + int(v)))
                j += int(v)
            elif kind == "label":
                if arch == "bert":
                    expect_ids.append(tok.mask_token_id)
                    expect_p.append(-1)
            else:
                t = tok(text if kind == "text" else str(v), add_special_tokens=False)["input_ids"]
                expect_ids += t
                expect_p += [-1] * len(t)
        if arch == "bert":
            expect_ids.append(tok.sep_token_id)
            expect_p.append(-1)
        n = len(expect_ids)
        assert ids[b, :n].tolist() == expect_ids
        assert pidx[b, :n].tolist() == expect_p
        assert enc["attention_mask"][b, 0, :n].all()
        assert not enc["attention_mask"][b, 0, n:].any()
        for pos in range(n):
            want = vectors[expect_p[pos]] if expect_p[pos] >= 0 else tokens[expect_ids[pos]]
            torch.testing.assert_close(seen["embeds"][b, pos], want)
        slot = int(enc["slot_pos"][b, 0, 0])
        if arch == "bert":
            assert expect_ids[slot] == tok.mask_token_id
        else:
            assert slot == n - 1  # the last real token predicts the label word


@given(st.integers(2, 5), st.integers(2, 9), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_splice_prompts_property(b: int, length: int, m: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(b, length, 3, generator=g, dtype=torch.float64)
    p = torch.randn(m, 3, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(-1, m, (b, length), generator=g)
    out = splice_prompts(e, p, idx)
    for i in range(b):
        for t in range(length):
            want = p[idx[i, t]] if idx[i, t] >= 0 else e[i, t]
            assert torch.equal(out[i, t], want)
    torch.autograd.gradcheck(lambda q: splice_prompts(e, q, idx), (p,))


# ------------------------------------------------------------------------------------------------ scoring
def _manual_full_logits(lm: Any, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return lm(inputs_embeds=embeds, attention_mask=mask).logits.double().log_softmax(-1)


def test_mlm_scores_equal_manual_log_probs(tok: Any) -> None:
    lm = tiny_bert(tok, torch.float64)
    pt = PTuning(lm, tok, "{p2}{label}{p2}{text}", ["bad", "good", "fine"], prompt="lstm", max_length=40).double()
    enc = pt.encode(TEXTS)
    got = pt.predict(enc).double()
    ids = enc["input_ids"][:, 0]
    embeds = pt.embed(ids, enc["prompt_index"][:, 0]).detach()
    logp = _manual_full_logits(lm, embeds, enc["attention_mask"][:, 0])
    word_ids = [tok.convert_tokens_to_ids(w) for w in ["bad", "good", "fine"]]
    for b in range(len(TEXTS)):
        mpos = int((ids[b] == tok.mask_token_id).nonzero()[0, 0])
        torch.testing.assert_close(got[b], logp[b, mpos, word_ids])
    # the fast path (head at the slot only) equals the full forward
    pt.head_name = None
    torch.testing.assert_close(pt.predict(enc).double(), got)


def test_causal_scores_equal_manual_log_probs_single_and_multi_token(tok: Any) -> None:
    lm = tiny_llama(tok, torch.float64)
    words = ["bad", "unwatchable"]  # the second is several word pieces
    assert len(tok(words[1], add_special_tokens=False)["input_ids"]) > 1
    pt = PTuning(lm, tok, "{p2}{text}{p2} it was{label}", words, single_token=False, max_length=40).double()
    got = pt.predict(pt.encode(TEXTS)).double()
    vectors = pt.prompt().detach()
    emb = lm.get_input_embeddings()
    for b, text in enumerate(TEXTS):
        t = tok(text, add_special_tokens=False)["input_ids"]
        lit = tok(" it was", add_special_tokens=False)["input_ids"]
        prefix = torch.cat([vectors[:2], emb(torch.tensor(t)), vectors[2:], emb(torch.tensor(lit))]).detach()
        for c, w in enumerate(words):
            w_ids = tok(w, add_special_tokens=False)["input_ids"]
            seq = torch.cat([prefix, emb(torch.tensor(w_ids)).detach()]).unsqueeze(0)
            logp = _manual_full_logits(lm, seq, torch.ones(1, seq.shape[1], dtype=torch.long))[0]
            n = prefix.shape[0]
            manual = sum(logp[n - 1 + i, w_ids[i]] for i in range(len(w_ids)))
            torch.testing.assert_close(got[b, c], manual)
    # single-token mode reads the last position: equals the multi-token path for one-piece words
    pt1 = PTuning(lm, tok, "{p2}{text}{p2} it was{label}", ["bad", "good"], max_length=40).double()
    pt1.prompt.load_state_dict(pt.prompt.state_dict())
    ptm = PTuning(lm, tok, "{p2}{text}{p2} it was{label}", ["bad", "good"], single_token=False, max_length=40)
    ptm.double().prompt.load_state_dict(pt.prompt.state_dict())
    ptm.layout.multi_token = True
    torch.testing.assert_close(pt1.predict(pt1.encode(TEXTS)), ptm.predict(ptm.encode(TEXTS)))


def test_label_loss_is_cross_entropy_over_verbalizer(tok: Any) -> None:
    pt = PTuning(tiny_bert(tok), tok, "{text} it was {label}.", ["bad", "good"], max_length=40)
    enc = pt.encode(TEXTS)
    y = torch.tensor([1, 0, 0])
    out = pt(*batch(enc), labels=y)
    restricted = out["logits"].log_softmax(-1)
    torch.testing.assert_close(out["loss"], -restricted[torch.arange(3), y].mean())


def test_aux_mlm_masking_spares_slot_prompt_and_specials(tok: Any) -> None:
    pt = PTuning(tiny_bert(tok), tok, "{p2}{label}{p2}{text}", ["bad", "good"], aux_weight=1.0, max_length=40)
    enc = pt.encode(TEXTS * 30)
    ids, mask, pidx = (enc[k][:, 0] for k in ("input_ids", "attention_mask", "prompt_index"))
    new, tgt = random_mask(
        ids.clone(),
        mask,
        pidx,
        enc["slot_pos"][:, 0],
        mask_id=tok.mask_token_id,
        special_ids=pt.layout.special_ids(),
        vocab_size=pt.vocab_size,
        probability=pt.mlm_probability,
    )
    hit = tgt >= 0
    assert not (hit & (pidx >= 0)).any()
    assert not (hit & (mask == 0)).any()
    assert not hit.gather(1, enc["slot_pos"][:, 0]).any()
    assert not (hit & ((ids == tok.cls_token_id) | (ids == tok.sep_token_id))).any()
    rate = float(hit.sum()) / float(((mask > 0) & (pidx < 0)).sum() - 3 * ids.shape[0])
    assert 0.08 < rate < 0.22
    assert torch.equal(tgt[hit], ids[hit])
    assert (new[hit] == tok.mask_token_id).float().mean() > 0.6
    pt.train()
    out = pt(*batch(enc), labels=torch.zeros(len(TEXTS) * 30, dtype=torch.long))
    assert float(out["aux_loss"]) > 0


# ------------------------------------------------------------------------------------------------ save/load
@pytest.mark.parametrize("prompt", ["none", "mlp", "lstm"])
def test_save_load_prompt_round_trip(tok: Any, tmp_path: Any, prompt: str) -> None:
    lm = tiny_bert(tok)
    pattern = "{p2}{label}{p2}{text}"
    a = PTuning(lm, tok, pattern, ["bad", "good"], prompt=prompt, max_length=40)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in a.prompt_parameters():
            p.add_(torch.randn_like(p))
    a.save_prompt(tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert not any(k.startswith("lm") for k in state)
    b = PTuning(lm, tok, pattern, ["bad", "good"], prompt=prompt, max_length=40)  # type: ignore[arg-type]
    enc = a.encode(TEXTS)
    assert not torch.equal(a.predict(enc), b.predict(enc))
    b.load_prompt(tmp_path / "p.pt")
    assert torch.equal(a.predict(enc), b.predict(enc))
    c = PTuning(lm, tok, "{p4}{label}{text}", ["bad", "good"], prompt=prompt, max_length=40)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="template"):
        c.load_prompt(tmp_path / "p.pt")


# ------------------------------------------------------------------------------------------------ errors
def test_bad_input_errors(tok: Any) -> None:
    bert, llama = tiny_bert(tok), tiny_llama(tok)
    with pytest.raises(ValueError, match="label slot"):
        Template("{p4}{text} it was good")
    with pytest.raises(ValueError, match="text"):
        Template("{p4}{label}")
    with pytest.raises(ValueError, match="unknown field"):
        Template("{text}{label}{foo}")
    with pytest.raises(ValueError, match="must end with"):
        PTuning(llama, tok, "{label} {text}", ["bad", "good"], max_length=40)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        PTuning(bert, tok, "{text}{label}", ["bad", "\u2603"], max_length=40)
    with pytest.raises(ValueError, match="single_token"):
        PTuning(bert, tok, "{text}{label}", ["bad", "unwatchable"], max_length=40)
    with pytest.raises(ValueError, match="exceeds the model"):
        PTuning(bert, tok, "{text}{label}", ["bad", "good"], max_length=100)
    with pytest.raises(ValueError, match="no room"):
        PTuning(bert, tok, "{p40}{text}{label}", ["bad", "good"], max_length=40).encode(TEXTS)
    pt = PTuning(bert, tok, "{text}{label}", ["bad", "good"], max_length=8)
    with pytest.raises(ValueError, match="truncate"):
        pt.encode(TEXTS, truncate=False)
    assert pt.encode(TEXTS)["input_ids"].shape[-1] == 8
    with pytest.raises(TypeError, match="unknown model type"):
        PTuning(bert.bert, tok, "{text}{label}", ["bad", "good"], max_length=40)
    with pytest.raises(TypeError, match="unknown model type"):
        lm_kind(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="kind"):
        PromptEncoder(2, 4, kind="gru")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token_ids"):
        TokenRows(torch.zeros(5, 2), [1, 1])
    with pytest.raises(ValueError, match="nothing to train"):
        PTuning(bert, tok, "{text}{label}", ["bad", "good"], max_length=40).param_groups(lr_prompt=1.0)


def test_prompt_encoder_shapes_and_float64() -> None:
    for kind in ("none", "mlp", "lstm"):
        enc = PromptEncoder(3, 8, kind=kind).double()  # type: ignore[arg-type]
        out = enc()
        assert out.shape == (3, 8)
        assert out.dtype == torch.float64
    lstm = PromptEncoder(3, 8, kind="lstm")
    assert lstm.lstm is not None
    assert lstm.lstm.num_layers == 2
    assert lstm.lstm.bidirectional
    assert lstm.lstm.hidden_size == 4


def test_extract_features_mean_pools_real_tokens(tok: Any) -> None:
    lm = tiny_bert(tok)
    f = extract_features(lm, tok, TEXTS, max_length=40)
    enc = tok(TEXTS[2:], return_tensors="pt")
    h = lm.bert(**enc)[0].mean(1)
    torch.testing.assert_close(f[2:], h)


# ------------------------------------------------------------------------------------------------ real files
def test_real_smollm2_loads_and_scores() -> None:
    try:
        lm, tk = load_smollm2()
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))
    assert type(lm).__name__ == "LlamaForCausalLM"
    assert lm.config.vocab_size == 49152
    assert lm.config.hidden_size == 576
    assert lm.config.num_hidden_layers == 30
    pt = PTuning(lm, tk, "{text} Overall, the movie was{label}", [" terrible", " great"], prompt="mlp", max_length=32)
    scores = pt.predict(pt.encode(["I loved every minute of this wonderful film."]))
    assert torch.isfinite(scores).all()
    assert float(scores[0, 1]) > float(scores[0, 0])


def test_real_minilm_loads_encoder_weights_with_tied_decoder() -> None:
    try:
        lm, tk = load_minilm()
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))
    from safetensors.torch import load_file

    ref = load_file(str(require("minilm") / "model.safetensors"))
    assert torch.equal(lm.bert.encoder.layer[5].output.dense.weight, ref["encoder.layer.5.output.dense.weight"])
    assert lm.cls.predictions.decoder.weight.data_ptr() == lm.bert.embeddings.word_embeddings.weight.data_ptr()
    pt = PTuning(lm, tk, "{p2}{label}{text}", ["bad", "good"], max_length=32)
    assert torch.isfinite(pt.predict(pt.encode(TEXTS))).all()


def test_aux_lm_loss_equals_manual_next_token_loss(tok: Any) -> None:
    lm = tiny_llama(tok, torch.float64)
    pt = PTuning(lm, tok, "{p2}{text} it was{label}", ["bad", "good"], aux_weight=1.0, max_length=40).double()
    pt.train()
    enc = pt.encode(TEXTS)
    y = torch.tensor([1, 0, 1])
    out = pt(*batch(enc), labels=y)
    ids, mask, pidx = (enc[k][:, 0] for k in ("input_ids", "attention_mask", "prompt_index"))
    logp = _manual_full_logits(lm, pt.embed(ids, pidx).detach(), mask)
    terms = [
        -logp[b, t - 1, ids[b, t]]
        for b in range(len(TEXTS))
        for t in range(1, ids.shape[1])
        if mask[b, t] and pidx[b, t] < 0
    ]
    torch.testing.assert_close(out["aux_loss"], torch.stack(terms).mean())
    torch.testing.assert_close(out["loss"], out["label_loss"] + out["aux_loss"])


# ------------------------------------------------------------------------------------------------ template start
@pytest.mark.parametrize("prompt", ["none", "mlp", "lstm"])
def test_ptuning_started_from_a_template_equals_it_at_step_0_then_moves(tok: Any, prompt: str) -> None:
    """``init_text`` = the template's own words: identical ``inputs_embeds``, hence bitwise-identical logits."""
    lm = tiny_llama(tok)
    head, tail = "review :", "all in all, it was"
    na, nb = (
        len(tok(head, add_special_tokens=False)["input_ids"]),
        len(tok(tail, add_special_tokens=False)["input_ids"]),
    )
    hand = PTuning(lm, tok, head + "{text}" + tail + "{label}", ["bad", "good"], max_length=40)
    torch.manual_seed(1)
    pt = PTuning(lm, tok, f"{{p{na}}}{{text}}{{p{nb}}}{{label}}", ["bad", "good"], prompt=prompt,  # type: ignore[arg-type]
                 max_length=40, init_text=[head, tail])  # fmt: skip
    ref = hand.predict(TEXTS)
    torch.testing.assert_close(pt.predict(TEXTS), ref, rtol=0, atol=0)
    # negative control: the paper's random start does not reproduce the template
    rand = PTuning(lm, tok, f"{{p{na}}}{{text}}{{p{nb}}}{{label}}", ["bad", "good"], prompt=prompt,  # type: ignore[arg-type]
                   max_length=40)  # fmt: skip
    assert not torch.allclose(rand.predict(TEXTS), ref)
    # and training moves it off the template (the residual encoders' zero last layer still gets gradient)
    pt.train()
    opt = torch.optim.Adam(pt.param_groups(lr_prompt=1e-2))
    for _ in range(2):
        opt.zero_grad()
        pt(*batch(pt.encode(TEXTS)), labels=torch.tensor([1, 0, 1]))["loss"].backward()
        opt.step()
    assert not torch.allclose(pt.predict(TEXTS), ref)


def test_init_ids_round_trip_through_adapter_and_errors(tok: Any, tmp_path: Any) -> None:
    lm = tiny_llama(tok)
    ids = tok("it was", add_special_tokens=False)["input_ids"]
    pt = PTuning(lm, tok, f"{{text}}{{p{len(ids)}}}{{label}}", ["bad", "good"], prompt="mlp", max_length=40,
                 init_ids=ids)  # fmt: skip
    torch.testing.assert_close(pt.prompt(), lm.get_input_embeddings().weight[ids], rtol=0, atol=0)
    assert "residual=True" in repr(pt)
    pt.save_pretrained(tmp_path)
    again = PTuning.from_pretrained(lm, tmp_path, tok)
    torch.testing.assert_close(again.predict(TEXTS), pt.predict(TEXTS), rtol=0, atol=0)
    with pytest.raises(ValueError, match="one string per prompt group"):
        PTuning(lm, tok, "{p1}{text}{p1}{label}", ["bad", "good"], max_length=40, init_text="it")
    with pytest.raises(ValueError, match=r"init_text\[0\]"):
        PTuning(lm, tok, "{text}{p1}{label}", ["bad", "good"], max_length=40, init_text="it was")
    with pytest.raises(ValueError, match="init_ids needs 2"):
        PTuning(lm, tok, "{text}{p2}{label}", ["bad", "good"], max_length=40, init_ids=[5])
    with pytest.raises(ValueError, match="not both"):
        PTuning(lm, tok, "{text}{p1}{label}", ["bad", "good"], max_length=40, init_ids=[5], init_text="it")
    with pytest.raises(ValueError, match="output_init"):
        PromptEncoder(2, 4, kind="none", init=torch.zeros(2, 4), output_init=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="output_init must have shape"):
        PromptEncoder(2, 4, kind="lstm", output_init=torch.zeros(3, 4))
