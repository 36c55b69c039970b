"""The offline tokenizer of the built-in presets: printable ASCII characters, one token each.

Built in code (nothing to download), deterministic, and small (~110 ids), which keeps a tiny
model's embedding table and softmax cheap. The answer tags and chat markers are single tokens so
that a completion like ``<answer>42</answer>`` is 4 tokens long.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD, EOS, BOS = "<|pad|>", "<|im_end|>", "<|endoftext|>"
CHAT_START = "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, CHAT_START, EOS]
ADDED_TOKENS = ["<answer>", "</answer>", "<think>", "</think>"]
CHARACTERS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]

#: Qwen-style chat template: the same markers as the real chat models, so chat prompts work offline.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A fast character-level tokenizer with pad / eos / chat markers and answer tags."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        additional_special_tokens=[CHAT_START],
        padding_side="left",
    )
    tokenizer.add_tokens(ADDED_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
