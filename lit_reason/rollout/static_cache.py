"""A rollout engine for CUDA: a static KV cache and a compiled (CUDA-graph) decode step.

``model.generate`` and the plain :class:`~lit_reason.rollout.RolloutEngine` grow the KV cache by
one position per token, so every decoding step has new shapes and pays the Python/kernel-launch
cost of the whole model. Here the cache is allocated once at its final length and the decode step
sees the same shapes at every token (the attention mask covers the whole cache; slots not yet
written are hidden by the causal mask), which lets ``torch.compile(mode="reduce-overhead")``
replay one CUDA graph per token.

The decode step's shapes are the cache's: ``rows x (max_prompt_length + max_new_tokens)``. Given
``max_prompt_length`` (GRPO passes its own), the cache is allocated once at that length and at the
largest batch seen, and a smaller batch rides in it with idle rows, so the decode step compiles
once per engine, whatever the prompt lengths and batch sizes (Dynamo falls back to eager, silently,
after 8 recompiles of one function). Without it the length is rounded up to ``cache_bucket``.

Sampling, EOS/stop handling and the returned :class:`~lit_reason.rollout.Rollout` are those of the
plain engine. Rows that finish keep riding along as padding (a static cache cannot shrink). On devices not in ``static_on`` (CPU by default) it simply runs
the plain engine, so CPU behaviour is unchanged.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import Tensor
from transformers import StaticCache

from lit_reason.rollout.contract import Rollout, SamplingConfig, positions_from_mask
from lit_reason.rollout.kv_cache import RolloutEngine


class StaticCacheRolloutEngine(RolloutEngine):
    """Plain-token sampling with a preallocated KV cache and an optionally compiled decode step.

    Args:
        model, tokenizer, config, eos_token_ids: as for :class:`RolloutEngine`.
        static_on: device types that take the static path; elsewhere the plain engine runs.
        compile: compile the decode step (default: on CUDA only; inductor needs a GPU to pay off).
        compile_mode: ``torch.compile`` mode for inductor; ``reduce-overhead`` records CUDA graphs.
        compile_backend: ``inductor``, or e.g. ``eager`` to check on CPU that the step traces.
        fullgraph: fail on a graph break instead of running the broken pieces eagerly.
        cache_bucket: cache lengths are rounded up to a multiple of this, so prompts of slightly
            different lengths reuse one cache and one compiled graph.
        sync_every: check "all rows finished" every this many tokens (each check is a host sync).
        max_prompt_length: the longest prompt (tokens) the cache must hold; then one cache (and one
            compiled decode step) serves every rollout. A longer prompt grows it (one recompile).
    """

    # The static path never drops rows (a static cache cannot shrink: finished rows ride along as
    # padding); the fallback path is the plain engine, compaction included.
    compact_finished_rows = None

    def __init__(self, model, tokenizer, config: SamplingConfig, eos_token_ids: Sequence[int] = (),
                 static_on: Sequence[str] = ("cuda",), compile: bool | None = None,
                 compile_mode: str = "reduce-overhead", compile_backend: str = "inductor", fullgraph: bool = False,
                 cache_bucket: int = 64, sync_every: int = 8, max_prompt_length: int | None = None) -> None:
        super().__init__(model, tokenizer, config, eos_token_ids)
        if type(self).next_inputs_embeds is not RolloutEngine.next_inputs_embeds:
            raise TypeError("StaticCacheRolloutEngine decodes plain token ids; latent-mixing engines keep RolloutEngine")
        self.static_on = tuple(static_on)
        self.compile, self.compile_mode, self.compile_backend = compile, compile_mode, compile_backend
        self.fullgraph = fullgraph
        self.cache_bucket, self.sync_every = max(int(cache_bucket), 1), max(int(sync_every), 1)
        self.max_prompt_length = max_prompt_length
        self._cache: StaticCache | None = None
        self._cache_key: tuple | None = None
        self._decode_fn = None

    # -- pieces ------------------------------------------------------------------------------
    def cache_shape(self, batch: int, prompt_len: int) -> tuple[int, int]:
        """(rows, positions) of the cache for this rollout: the current cache's when it holds it
        (idle rows fill a smaller batch), else grown to fit; never shrunk."""
        need = prompt_len + self.config.max_new_tokens
        if self.max_prompt_length is not None:
            length = max(self.max_prompt_length + self.config.max_new_tokens, need)
        else:
            length = -(-need // self.cache_bucket) * self.cache_bucket
        if self._cache_key is not None:
            rows, cached_len = self._cache_key[:2]
            if rows >= batch and cached_len >= need:
                return rows, cached_len
            return max(rows, batch), max(cached_len, length)
        return batch, length

    def _static_cache(self, batch: int, length: int, device: torch.device) -> StaticCache:
        """A zeroed cache for ``batch`` rows of ``length`` positions, reused while the key matches."""
        dtype = next(self.model.parameters()).dtype
        key = (batch, length, device, dtype)
        if self._cache is None or self._cache_key != key:
            self._cache = StaticCache(config=self.model.config, max_cache_len=length)
            self._cache_key = key
        else:
            self._cache.reset()
        return self._cache

    def _decode(self, tokens: Tensor, attention: Tensor, positions: Tensor, cache: StaticCache) -> Tensor:
        """One token per row through the model; returns next-token logits ``[B, V]``."""
        out = self.model(input_ids=tokens, attention_mask=attention, position_ids=positions, use_cache=True,
                         **{self.cache_arg: cache})
        return out.logits[:, -1]

    def _decode_step(self, device: torch.device):
        use_compile = self.compile if self.compile is not None else device.type == "cuda"
        if not use_compile:
            return self._decode
        if self._decode_fn is None:
            options = {"mode": self.compile_mode} if self.compile_backend == "inductor" else {}
            self._decode_fn = torch.compile(self._decode, backend=self.compile_backend, fullgraph=self.fullgraph,
                                            dynamic=False, **options)
        return self._decode_fn

    # -- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor, generator: torch.Generator | None = None) -> Rollout:
        device = prompt_ids.device
        if device.type not in self.static_on:
            return super().generate(prompt_ids, prompt_mask, generator)
        start = time.perf_counter()
        cfg, model = self.config, self.model
        real, prompt_len = prompt_ids.shape
        batch, length = self.cache_shape(real, prompt_len)
        if batch > real:  # idle rows (copies of the last one, done from the start) keep the compiled shapes
            prompt_ids = torch.cat([prompt_ids, prompt_ids[-1:].expand(batch - real, -1)])
            prompt_mask = torch.cat([prompt_mask, prompt_mask[-1:].expand(batch - real, -1)])
        state: dict = {"active": torch.arange(batch, device=device)}
        self.begin(batch, state)
        cache = self._static_cache(batch, length, device)
        # one mask for the whole cache: the prompt's padding is hidden here, unwritten slots by causality
        attention = torch.ones(batch, length, dtype=torch.long, device=device)
        attention[:, :prompt_len] = prompt_mask.long()
        prefill = model(input_ids=prompt_ids, attention_mask=attention[:, :prompt_len],
                        position_ids=positions_from_mask(attention[:, :prompt_len]), use_cache=True, logits_to_keep=1,
                        **{self.cache_arg: cache})
        logits = prefill.logits[:, -1]
        positions = attention[:, :prompt_len].sum(-1, keepdim=True)
        decode = self._decode_step(device)

        eos = torch.tensor(self.eos_ids, device=device)
        tokens_out = torch.full((batch, cfg.max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logps_out = torch.zeros(batch, cfg.max_new_tokens, dtype=torch.float32, device=device)
        mask_out = torch.zeros(batch, cfg.max_new_tokens, dtype=torch.long, device=device)
        done = torch.arange(batch, device=device) >= real
        pad = torch.full((batch,), self.pad_id, dtype=torch.long, device=device)
        for step in range(cfg.max_new_tokens):
            tokens, logp = self._sample(logits, generator)
            running = ~done
            tokens = torch.where(running, tokens, pad)
            tokens_out[:, step] = tokens
            logps_out[:, step] = torch.where(running, logp, torch.zeros_like(logp))
            mask_out[:, step] = running.long()
            finished = torch.isin(tokens, eos) & running
            if self.stops:
                finished |= self.stops.rows_hit(tokens_out, state["active"], tokens, running & ~finished, step)
            done |= finished
            if step + 1 == cfg.max_new_tokens or ((step + 1) % self.sync_every == 0 and bool(done.all())):
                break
            if device.type == "cuda" and decode is not self._decode:
                torch.compiler.cudagraph_mark_step_begin()
            logits = decode(tokens[:, None], attention, positions, cache)
            positions = positions + 1

        if batch > real:
            prompt_ids, prompt_mask, tokens_out, mask_out, logps_out, done = (
                t[:real] for t in (prompt_ids, prompt_mask, tokens_out, mask_out, logps_out, done))
            state["active"] = state["active"][:real]
        width = max(int(mask_out.sum(-1).max()), 1)  # the plain engine stops at the last row's end
        return self.assemble(prompt_ids, prompt_mask, tokens_out, mask_out, logps_out, done, width, start, state)
