"""CLIP's text tower and byte tokenizer: layout, round trip, truncation, causality, eot pooling."""
import pytest
import torch

from vitkit.models.text import ByteTokenizer, TextConfig, TextTransformer, causal_mask, text_transformer

TINY = dict(width=32, depth=2, num_heads=2, context_length=16)


def test_tokenizer_layout_and_round_trip():
    tok = ByteTokenizer(context_length=24)
    texts = ["a handwritten 7.", "", "ünï 字 €"]
    ids = tok(texts)
    assert ids.shape == (3, 24) and ids.dtype == torch.long
    row = ids[0].tolist()
    n = len(texts[0].encode())
    assert row[0] == tok.sot and row[1:1 + n] == [b + 1 for b in texts[0].encode()]
    assert row[1 + n] == tok.eot and set(row[2 + n:]) == {tok.pad}
    assert ids[1, :2].tolist() == [tok.sot, tok.eot]
    assert [tok.decode(r) for r in ids] == texts            # multi-byte characters survive
    assert int(ids.max()) < tok.vocab_size == 259
    assert (ids == tok.eot).int().argmax(-1).tolist() == ids.argmax(-1).tolist()  # eot is the highest id


def test_truncation_keeps_eot():
    tok = ByteTokenizer(context_length=8)
    fits = tok("abcdef")[0]                                  # 6 bytes + sot + eot = 8: not cut
    assert fits.tolist() == [tok.sot, *(b + 1 for b in b"abcdef"), tok.eot]
    cut = tok("abcdefghijk")[0]
    assert cut.tolist() == [tok.sot, *(b + 1 for b in b"abcdef"), tok.eot]
    assert tok.decode(cut) == "abcdef"
    assert tok.decode(tok("éééé")[0]).startswith("ééé")       # cut inside a character: U+FFFD, no error
    with pytest.raises(ValueError, match="context_length"):
        ByteTokenizer(2)


def test_text_tower_is_causal():
    """Changing token j changes the outputs at positions >= j and none before it."""
    model = text_transformer(**TINY).eval()
    tokens = torch.randint(1, 257, (2, 16))
    j = 9
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] % 250) + 3
    with torch.no_grad():
        a, b = model.forward_features(tokens), model.forward_features(changed)
    assert a.shape == (2, 16, 32)
    assert torch.equal(a[:, :j], b[:, :j])
    assert (a[:, j:] - b[:, j:]).abs().amax(dim=-1).min() > 1e-4  # every later position sees it


def test_causal_mask_values():
    m = causal_mask(3)
    assert torch.equal(m == 0, torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.isinf(m[0, 1]) and m[0, 1] < 0


def test_pools_the_eot_token_and_ignores_what_follows():
    model = text_transformer(**TINY).eval()
    tok = model.tokenizer
    ids = tok(["seven", "the digit 7"])
    with torch.no_grad():
        feats = model.forward_features(ids)
        pooled = model(ids)
        junk = ids.clone()
        junk[0, 7:] = 42                                     # after "seven"'s eot (position 6)
        pooled_junk = model(junk)
    eot = [len("seven") + 1, len("the digit 7") + 1]
    assert torch.equal(pooled, feats[torch.arange(2), eot])
    assert torch.equal(pooled_junk, pooled)                  # causal: text after eot cannot reach it
    assert pooled.shape == (2, model.width)


def test_argmax_pooling_and_shorter_inputs():
    model = text_transformer(**TINY, eot_id=None).eval()    # HF's legacy rule (eos_token_id == 2)
    ids = torch.tensor([[257, 5, 9, 258, 0], [5, 200, 3, 1, 0]])  # argmax at 3 and 1
    with torch.no_grad():
        out, feats = model(ids), model.forward_features(ids)
    assert torch.equal(out, feats[torch.arange(2), ids.argmax(-1)])
    assert feats.shape[1] == 5                               # shorter than context_length is fine


def test_input_errors():
    model = text_transformer(**TINY)
    with pytest.raises(ValueError, match="context_length 16"):
        model(torch.full((1, 17), 5))
    with pytest.raises(ValueError, match="eot token 258"):
        model(torch.full((1, 4), 5))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(1, 4))
    with pytest.raises(ValueError, match="divisible"):
        TextConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="activation"):
        TextConfig(act="relu6")
    with pytest.raises(ValueError, match="vocab_size"):
        TextConfig(vocab_size=100)
    with pytest.raises(TypeError, match="valid"):
        text_transformer(widht=32)
    no_tok = TextTransformer(TextConfig(**TINY, tokenizer="none"))
    with pytest.raises(ValueError, match="no tokenizer"):
        no_tok.tokenize(["a"])


def test_gradients_reach_every_parameter():
    model = text_transformer(**TINY)
    model(model.tokenize(["a handwritten 7.", "zero"])).square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert model.no_weight_decay() == {"positional_embedding"}
    assert model.config_dict()["kind"] == "transformer" and model.config_dict()["width"] == 32
