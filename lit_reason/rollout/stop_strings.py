"""Stop-string detection that decodes only the rows whose newest token could complete a stop string.

Decoding every running row's tail at every step costs B tokenizer calls per token. But appending a
token whose text shares no character with any stop string cannot make one appear: the decoded tail
is the previous tail followed by the token's text, and any new occurrence would have to contain a
character of that text. So a table over the vocabulary, built once, says which tokens may complete
a stop string, and only rows that sampled one are decoded, in one batched call. The result is the
same as decoding every row (the window of the last ``max(len) + 8`` tokens is unchanged).

Tokens whose standalone text does not simply concatenate are always decoded: empty text, partial
UTF-8 bytes (``\\ufffd``), SentencePiece pieces whose leading space a standalone decode drops (when a
stop string contains whitespace), and every token when the tokenizer's space clean-up
(``clean_up_tokenization_spaces``, which joins `` .``/`` 's``... across tokens) could touch a stop string.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: characters HF's ``clean_up_tokenization`` rewrites a preceding space around
CLEANUP_CHARS = set(".?!,'")


def completing_tokens(tokenizer, strings: Sequence[str], vocab_size: int) -> Tensor:
    """``[vocab_size]`` bool: which token ids, appended to a tail, could make one of ``strings`` appear
    in its decoded text (ids the tokenizer does not know count as True)."""
    known = min(len(tokenizer), vocab_size)
    chars = set("".join(strings))
    if getattr(tokenizer, "clean_up_tokenization_spaces", False) and chars & CLEANUP_CHARS:
        return torch.ones(vocab_size, dtype=torch.bool)
    texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=False)
    spaced = any(c.isspace() for c in chars)
    pieces = tokenizer.convert_ids_to_tokens(list(range(known))) if spaced else [""] * known
    flags = torch.ones(vocab_size, dtype=torch.bool)
    flags[:known] = torch.tensor([
        not text or "\ufffd" in text or bool(chars.intersection(text)) or (spaced and str(piece).startswith("\u2581"))
        for text, piece in zip(texts, pieces)
    ], dtype=torch.bool)
    return flags


class StopStringMatcher:
    """Finds rows whose decoded tail (the last ``window`` tokens) contains one of ``strings``."""

    def __init__(self, tokenizer, strings: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.strings = tuple(s for s in strings if s)
        self.window = max((len(s) for s in self.strings), default=0) + 8
        self._flags: Tensor | None = None

    def __bool__(self) -> bool:
        return bool(self.strings)

    def may_complete(self, tokens: Tensor) -> Tensor:
        """``[b]`` bool, on ``tokens``' device: which newest tokens could complete a stop string."""
        if self._flags is None or self._flags.device != tokens.device:
            size = max(len(self.tokenizer), int(tokens.max()) + 1 if tokens.numel() else 0)
            self._flags = completing_tokens(self.tokenizer, self.strings, size).to(tokens.device)
        inside = tokens < self._flags.numel()
        return torch.where(inside, self._flags[tokens.clamp_max(self._flags.numel() - 1)], torch.ones_like(inside))

    def found(self, tails: list[list[int]]) -> list[bool]:
        """One batched decode of ``tails`` (token ids, the last ``window`` of each row)."""
        if not tails:
            return []
        texts = self.tokenizer.batch_decode([tail[-self.window:] for tail in tails], skip_special_tokens=False)
        return [any(s in text for s in self.strings) for text in texts]

    def rows_hit(self, history: Tensor, rows: Tensor, tokens: Tensor, open_rows: Tensor, step: int) -> Tensor:
        """``[b]`` bool: which batch rows now end in a stop string.

        Args:
            history: ``[B_full, max_new_tokens]`` sampled ids; ``rows`` ``[b]``: each batch row's index there.
            tokens: ``[b]`` the ids just sampled (already in ``history[:, step]``).
            open_rows: ``[b]`` bool, rows still decoding that did not just end (EOS).
        """
        hit = torch.zeros_like(open_rows)
        candidates = (open_rows & self.may_complete(tokens)).nonzero().flatten()
        if candidates.numel() == 0:
            return hit
        start = max(0, step + 1 - self.window)
        tails = history[rows[candidates], start : step + 1].tolist()
        found = [i for i, yes in zip(candidates.tolist(), self.found(tails)) if yes]
        if found:
            hit[torch.tensor(found, device=hit.device)] = True
        return hit
