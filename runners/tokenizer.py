"""The tokenizer: a model's own (hub id or local path), or Rightsize's byte-level one for inline/random models."""

from pathlib import Path

from advisor.plan.recipe import Recipe

BYTE_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>")
# A plain chat template (role header, content, end-of-turn) so chat-format data works with the byte tokenizer.
BYTE_CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def byte_tokenizer():
    """A 259-token byte-level tokenizer (256 bytes + pad/bos/eos) built in code: nothing to download or ship."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=BYTE_SPECIALS[0], bos_token=BYTE_SPECIALS[1],
                                  eos_token=BYTE_SPECIALS[2], model_max_length=1_000_000)
    tok.chat_template = BYTE_CHAT_TEMPLATE
    return tok


def load_tokenizer(recipe: Recipe):
    """The recipe's tokenizer, with a pad token (the eos token when the model has none)."""
    from transformers import AutoTokenizer

    source = recipe.model.tokenizer
    if source is None and (recipe.model.arch is not None or recipe.model.random_init):
        tok = byte_tokenizer()
    elif source == "byte":
        tok = byte_tokenizer()
    else:
        source = source or recipe.model.name
        assert source is not None, "ModelSection: a model without arch or random_init has a name"
        local = Path(source).expanduser()
        tok = AutoTokenizer.from_pretrained(str(local) if local.exists() else source,
                                            trust_remote_code=recipe.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_identity(tok) -> str:
    """A stable description of a tokenizer, for the tokenized-data cache key."""
    import hashlib
    import json
    core = tok.backend_tokenizer.to_str() if hasattr(tok, "backend_tokenizer") else repr(tok.get_vocab())
    extra = json.dumps([tok.chat_template, tok.bos_token, tok.eos_token, tok.pad_token], default=str)
    return hashlib.sha256((core + extra).encode()).hexdigest()[:16]


# Tokens kept beyond data.seq_len before a text is cut: cutting can change how the last word before the cut splits,
# and those tokens then lie past what the Packer keeps.
CLIP_MARGIN_TOKENS = 16


def max_token_chars(tok) -> int:
    """The most characters one token can stand for: the longest vocabulary entry, special tokens included. Byte-level
    BPE entries spell one character per byte (a character is at least one byte), SentencePiece and WordPiece entries
    spell their text plus a marker (`▁`, `##`), so no token covers more characters of the text than this."""
    return max(1, max((len(entry) for entry in tok.get_vocab()), default=1))


def max_text_chars(tok, seq_len: int) -> int:
    """Characters of one text field that hold more than seq_len tokens whatever the text (seq_len + margin tokens of
    at most max_token_chars each): the runner cuts every text to this before tokenizing it, so a row's cost is
    bounded by the sequence length and not by its size. A normalizer that deletes characters (BERT-style accent
    stripping) can leave such a cut text shorter than seq_len tokens."""
    return (seq_len + CLIP_MARGIN_TOKENS) * max_token_chars(tok)
