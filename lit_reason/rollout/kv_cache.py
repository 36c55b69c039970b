"""The built-in rollout engine: batched sampling with a KV cache, the rollout half of every RL step.

One prefill over the left-padded prompts, then one cached forward per new token. The input of
each decoding step is formed by :meth:`RolloutEngine.next_inputs_embeds`, the single method HRPO
overrides to mix latent vectors into the token embeddings.

Multi-turn episodes (:meth:`RolloutEngine.generate_turn`) keep each episode's KV cache between
turns (:class:`TurnCache`): the next turn prefills only what was appended since (the environment's
turn, and the last sampled token, which was never fed), at the positions that follow.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from lit_reason.rollout.contract import Rollout, SamplingConfig, end_of_sequence_ids, left_padded, positions_from_mask
from lit_reason.rollout.stop_strings import StopStringMatcher
from lit_reason.rollout.turn_cache import FinishedRows, TurnCache
from lit_reason.utils.faults import TrainingDiverged


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Tensor:
    """Set logits outside the top-k / nucleus / min-p set to -inf (the argmax always survives)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p  # mass before this token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def cache_argument(model) -> str:
    """The name under which ``model.forward`` takes its KV cache: ``cache`` from transformers 5.24
    on (which deprecates ``past_key_values`` with a FutureWarning), ``past_key_values`` before and
    for anything whose signature does not name ``cache``. Read once per engine, not per call."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any):
    """The KV cache a forward returned: ``out.cache`` (transformers >= 5.24) or ``out.past_key_values``."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class RolloutEngine:
    """Samples completions for a batch of tokenized prompts.

    Args:
        model: a Hugging Face causal LM (anything accepting ``inputs_embeds`` and a cache).
        tokenizer: its tokenizer (decoding, pad and eos ids).
        config: a :class:`SamplingConfig`.
        eos_token_ids: extra ids that end a completion (the tokenizer's eos is always one).
    """

    def __init__(self, model, tokenizer, config: SamplingConfig, eos_token_ids: Sequence[int] = ()) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.eos_ids, self.pad_id = end_of_sequence_ids(tokenizer, model, eos_token_ids)
        self.stops = StopStringMatcher(tokenizer, config.stop_strings)
        self.cache_arg = cache_argument(model)

    # -- the overridable step --------------------------------------------------------------
    def begin(self, batch_size: int, state: dict) -> None:
        """Called once before decoding; subclasses initialise per-row state here."""

    def next_inputs_embeds(self, tokens: Tensor, logits: Tensor, step: int, state: dict) -> Tensor:
        """The input embedding ``[B, 1, H]`` for the next position, given the token just sampled
        (``[B]``) and the logits it was sampled from (``[B, V]``). Plain decoding: its embedding."""
        return self.model.get_input_embeddings()(tokens[:, None])

    def finish(self, rollout: Rollout, state: dict) -> None:
        """Called once after decoding; subclasses move their per-position state into ``rollout.extras``."""

    # -- decoding --------------------------------------------------------------------------
    def _sample(self, logits: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        cfg = self.config
        logits = logits.float()
        if cfg.greedy:
            tokens = logits.argmax(-1)
            logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
            return tokens, logp
        scaled = logits / cfg.temperature
        logp_all = torch.log_softmax(scaled, -1)
        filtered = filter_logits(scaled, cfg.top_k, cfg.top_p, cfg.min_p)
        probs = torch.softmax(filtered, -1)
        try:
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        except RuntimeError as err:  # NaN / inf logits: the weights diverged (lit_reason.modules.divergence)
            if "probability tensor" not in str(err):
                raise
            raise TrainingDiverged("training diverged: the policy's next-token probabilities are not finite "
                                   "(its weights blew up); stopped, the last checkpoint is intact: lower model.lr "
                                   "and resume from an earlier checkpoint") from err
        return tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1)

    def _hit_stop_string(self, ids: list[int]) -> bool:
        """Whether the decoded tail of ``ids`` contains a stop string (one row; the loop uses
        :meth:`StopStringMatcher.rows_hit`, which decodes only rows that may have completed one)."""
        return self.stops.found([ids])[0] if self.stops else False

    @property
    def compacts(self) -> bool:
        """Finished rows leave the model batch (and KV cache) as soon as they end, so long tails of
        a few unfinished completions cost a few rows, not the whole batch. Engines that keep
        per-row decoding state (HRPO) override ``next_inputs_embeds`` and opt in only by setting
        ``compact_finished_rows = True`` and reading ``state["active"]`` (rows still decoding)."""
        plain = type(self).next_inputs_embeds is RolloutEngine.next_inputs_embeds
        return self.compact_finished_rows if not plain else self.compact_finished_rows is not False

    compact_finished_rows: bool | None = None  # None: compact only with the plain embedding step
    #: ``all_ranks_done(local_done) -> bool``: set when the weights are sharded (FSDP): every decode
    #: step is then a collective, so a rank whose rows all ended keeps stepping (its finished rows as
    #: padding, no compaction) until every rank's have; None: stop as soon as this rank's rows end
    all_ranks_done: Callable[[bool], bool] | None = None

    turn_cache: bool = True  # False: every turn of an episode recomputes its prefix (benchmarks/episodes.py)

    @property
    def keeps_turn_cache(self) -> bool:
        """Whether :meth:`generate_turn` keeps the KV cache across an episode's turns: the plain
        engine only (one that overrides generation or the decoding input keeps state it does not carry)."""
        return (self.turn_cache and type(self).generate is RolloutEngine.generate
                and type(self).next_inputs_embeds is RolloutEngine.next_inputs_embeds)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor, generator: torch.Generator | None = None) -> Rollout:
        """Sample one completion per row of ``prompt_ids`` (repeat rows G times for groups)."""
        return self._generate(prompt_ids, prompt_mask, generator)[0]

    @torch.no_grad()
    def generate_turn(self, rows: Sequence[Sequence[int]], past: TurnCache | None, generator: torch.Generator | None,
                      device: Any, keep: bool = True) -> tuple[Rollout, TurnCache | None]:
        """One turn of a batch of episodes: ``rows`` are each episode's token ids so far, ``past`` what
        the previous turn left (rows selected to these episodes, in this order; None on the first).
        Only the ids after those ``past`` holds are prefilled. ``keep``: return the cache for the next
        turn (:mod:`lit_reason.rollout.turn_cache`); else None. The rollout's ``prompt_ids`` are the
        prefilled ids (left-padded)."""
        fed = past.fed.tolist() if past is not None else [0] * len(rows)
        new = [list(row[n:]) for row, n in zip(rows, fed)]
        if past is not None and not all(new):  # nothing appended to some row: no logits to sample from
            past, new = None, [list(row) for row in rows]
        ids, mask = left_padded(new, self.pad_id, device)
        return self._generate(ids, mask, generator, past, keep)

    def _generate(self, prompt_ids: Tensor, prompt_mask: Tensor, generator: torch.Generator | None,
                  past: TurnCache | None = None, keep_cache: bool = False) -> tuple[Rollout, TurnCache | None]:
        start = time.perf_counter()
        cfg, model = self.config, self.model
        batch, device = prompt_ids.shape[0], prompt_ids.device
        eos = torch.tensor(self.eos_ids, device=device)
        compact = self.compacts and self.all_ranks_done is None
        active = torch.arange(batch, device=device)  # rows (of the full batch) still in the model batch
        state: dict = {"active": active}
        self.begin(batch, state)

        attention = prompt_mask.long()
        positions, cached = positions_from_mask(attention), {}
        if past is not None:  # the prompt continues rows already in the cache
            positions = positions + past.fed[:, None]
            attention, cached = torch.cat([past.attention, attention], dim=-1), {self.cache_arg: past.cache}
        out = model(input_ids=prompt_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                    logits_to_keep=1, **cached)
        cache, logits = output_cache(out), out.logits[:, -1]
        next_pos = positions[:, -1:] + 1  # position id of the next token
        prefilled, prefilled_pos = attention, next_pos
        finished_rows = FinishedRows() if keep_cache else None  # rows that leave the batch keep their cache
        if keep_cache and not FinishedRows.can_keep(cache):
            compact = False  # finished rows ride along instead
        left_at = torch.full((batch,), cfg.max_new_tokens, device=device)  # decoded tokens a row had when it left

        tokens_out = torch.full((batch, cfg.max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logps_out = torch.zeros(batch, cfg.max_new_tokens, dtype=torch.float32, device=device)
        mask_out = torch.zeros(batch, cfg.max_new_tokens, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        steps = 0
        for step in range(cfg.max_new_tokens):
            tokens, logp = self._sample(logits, generator)
            running = ~done[active]  # without compaction, finished rows ride along as padding
            tokens = torch.where(running, tokens, torch.full_like(tokens, self.pad_id))
            tokens_out[active, step] = tokens
            logps_out[active, step] = torch.where(running, logp, torch.zeros_like(logp))
            mask_out[active, step] = running.long()
            finished = torch.isin(tokens, eos) & running
            if self.stops:
                finished |= self.stops.rows_hit(tokens_out, active, tokens, running & ~finished, step)
            done[active[finished]] = True
            steps = step + 1
            if step + 1 == cfg.max_new_tokens:
                break
            all_done = bool(done.all())
            if self.all_ranks_done is not None:  # sharded weights: stop only when every rank is done
                all_done = self.all_ranks_done(all_done)
            if all_done:
                break
            if compact and bool(finished.any()):
                keep = (~finished).nonzero().flatten()
                if finished_rows is not None:
                    gone = finished.nonzero().flatten()
                    finished_rows.keep(cache, gone, active[gone])
                    left_at[active[gone]] = step
                cache.batch_select_indices(keep)
                active, tokens, logits = active[keep], tokens[keep], logits[keep]
                attention, next_pos = attention[keep], next_pos[keep]
                state["active"] = active
            embeds = self.next_inputs_embeds(tokens, logits, step, state)
            attention = torch.cat([attention, torch.ones(len(active), 1, dtype=attention.dtype, device=device)], dim=-1)
            out = model(inputs_embeds=embeds, attention_mask=attention, position_ids=next_pos, use_cache=True,
                        **{self.cache_arg: cache})
            cache, logits = output_cache(out), out.logits[:, -1]
            next_pos = next_pos + 1

        rollout = self.assemble(prompt_ids, prompt_mask, tokens_out, mask_out, logps_out, done, steps, start, state)
        if not keep_cache:
            return rollout, None
        finished_rows.rejoin(cache, active, batch)
        width = steps - 1  # the token sampled at the last step was never fed
        fed = mask_out[:, :width] * (torch.arange(width, device=device) < left_at[:, None])
        return rollout, TurnCache(cache, torch.cat([prefilled, fed], dim=-1), prefilled_pos[:, 0] + fed.sum(-1))

    def assemble(self, prompt_ids: Tensor, prompt_mask: Tensor, tokens: Tensor, mask: Tensor, logps: Tensor,
                 done: Tensor, width: int, start: float, state: dict) -> Rollout:
        """Pack the decoding buffers (cut to ``width`` positions) into a Rollout and call :meth:`finish`."""
        completion_ids, completion_mask, logprobs = tokens[:, :width], mask[:, :width], logps[:, :width]
        texts = self.tokenizer.batch_decode(
            [row[: int(m.sum())].tolist() for row, m in zip(completion_ids, completion_mask)], skip_special_tokens=True
        )
        rollout = Rollout(prompt_ids, prompt_mask.long(), completion_ids, completion_mask, logprobs, ~done, texts,
                          time.perf_counter() - start)
        self.finish(rollout, state)
        return rollout
