"""Step time of GRPO on CPU: where a step goes, and how far it is from the raw model compute.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/step_time.py                  # SmolLM2-135M, 2 x G 8, 48 tokens
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/step_time.py --model tiny --steps 2    # smoke check, seconds

The GRPO module (the config of ``configs/smollm2/grpo.yaml``: chat prompts of easy synthetic math
with the default system prompt, rewards correct + format) is trained for ``--warmup + --steps``
steps inside a real ``lightning.Trainer``, and each step is split into

  * generation: the rollout engine (``module.engine.generate``: prefill + KV-cache decode + sampling);
  * old pass:   ``old_policy_pass`` (no-grad old / reference log-probs; empty unless mu > 1,
                minibatches or beta != 0);
  * training:   ``update`` (forward + loss + backward per micro-batch, grad norm, clipping, AdamW);
  * other:      the rest of the wall time of the step: prompt encoding, rewards, advantages,
                ``log_step``, Lightning's loop (data fetch, hooks, logger, progress bar).

and each part into what it spends the time on (timers around the policy's forward, ``_sample``,
``token_logps`` / ``token_entropy`` / ``policy_loss``, ``manual_backward``, ``_grad_norm``,
``clip_gradients``, the optimizer's ``step`` and ``zero_grad``); what is left is the loop's own
bookkeeping. The CPU used by other processes meanwhile is printed too: on a shared 2-core machine a
second busy process slows a 2-thread step several-fold (docs/step_time.md), so compare runs only
when it is near 0.

The full step is wall time from the end of one step's hook to the next (so Lightning's own work
is in it). After each step, and outside its timing, the RAW parts of the same shapes run on a
separate copy of the model (so they do not change the training run):

  (a) raw decode: a minimal KV-cache loop (HF forward with a DynamicCache, softmax + multinomial)
      over the same prompt ids that runs exactly the engine's schedule: the same number of decode
      forwards, each with as many rows as the engine still had decoding at that position (the engine
      drops finished rows). Same tokens processed, nothing but model compute and sampling.
  (b) raw fwd/bwd + AdamW: one forward of the same token ids (prompt + completion, same mask and
      logits_to_keep), masked cross-entropy of the completion tokens, backward, one AdamW step.

Raw and full runs alternate in one process, so both see the same load; the ratio
``full step / (raw decode + raw fwd/bwd/AdamW)`` is computed per step and its median reported.
``--hf-generate`` also times ``model.generate`` for all rows x the step's width (min = max new
tokens), an upper bound for the decode (no dropping of finished rows).
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import json
import os
import platform
import statistics
import time
from collections import defaultdict


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


class Clock:
    """Accumulates wall time per label for the step in progress."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

        self.phase = "other"

    def wrap(self, fn, label, phase: str | None = None):
        """``fn`` timed under ``label`` (a callable label is given the current phase); ``phase``
        is set while it runs, so nested timers know whether they run in generation or training."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            name = label(self.phase) if callable(label) else label
            before, start = self.phase, time.perf_counter()
            if phase is not None:
                self.phase = phase
            try:
                return fn(*args, **kwargs)
            finally:
                self.phase = before
                self.current[name] += time.perf_counter() - start
                self.counts[name] += 1
        return timed

    def take(self) -> dict[str, float]:
        out, self.current = dict(self.current), defaultdict(float)
        return out


class LoadMeter:
    """CPU used by OTHER processes over an interval, in cores (from /proc/stat minus this process).

    Timings on a shared 2-core machine are only comparable when this stays near 0: with OpenMP
    threads spinning on busy cores, one competing process can slow a step several-fold.
    """

    def __init__(self, include_children: bool = False) -> None:
        # include_children: the measuring process's finished subprocesses are not "other" load
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.include_children = include_children
        self.start = self._read()

    def _read(self):
        try:
            with open("/proc/stat") as handle:
                fields = [int(x) for x in handle.readline().split()[1:]]
        except OSError:
            return None
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        t = os.times()
        own = t.user + t.system + ((t.children_user + t.children_system) if self.include_children else 0.0)
        return time.perf_counter(), busy / self.tick, own

    def take(self) -> float | None:
        now = self._read()
        start, self.start = self.start, now
        if now is None or start is None or now[0] <= start[0]:
            return None
        return max(((now[1] - start[1]) - (now[2] - start[2])) / (now[0] - start[0]), 0.0)


def _cache_kwarg(model) -> str:
    """The name of the KV-cache argument of ``model.forward`` (``cache`` since transformers 5.24)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1, help="steps run first and left out of the medians")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--G", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight (> 0 adds the reference pass)")
    parser.add_argument("--num-iterations", type=int, default=1, help="mu (> 1 adds the old pass)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hf-generate", action="store_true", help="also time model.generate (all rows, fixed width)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw parts (full step split only)")
    parser.add_argument("--json", help="write per-step figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from datamodules import MathDataModule
    from lit_reason.algorithms import objectives as obj
    from lit_reason.modules.grpo import GRPO
    from lit_reason.rollout import positions_from_mask

    L.seed_everything(args.seed, verbose=False)
    module = GRPO(model=args.model, prompt_format="auto", max_prompt_length=256, num_generations=args.G,
                  max_new_tokens=args.new_tokens, temperature=1.0, lr=1e-5, rewards={"correct": 1.0, "format": 0.5},
                  beta=args.beta, num_iterations=args.num_iterations, sampling_seed=args.seed)
    chat = bool(getattr(module.tokenizer, "chat_template", None))
    data = MathDataModule(source="synthetic", difficulty="easy", prompt_format="chat" if chat else "plain",
                          system_prompt="default", num_val=2, batch_size=args.prompts, seed=args.seed)
    raw_model = copy.deepcopy(module.policy).train()
    raw_opt = torch.optim.AdamW([p for p in raw_model.parameters() if p.requires_grad], lr=1e-5)
    cache_kw = _cache_kwarg(raw_model)

    clock = Clock()
    # the parts of the step ...
    module.engine.generate = clock.wrap(module.engine.generate, "generation", phase="gen")
    module.old_policy_pass = clock.wrap(module.old_policy_pass, "old_pass", phase="old")
    module.update = clock.wrap(module.update, "training", phase="train")
    module._micro_step = clock.wrap(module._micro_step, "train_fwd_bwd")
    module.log_step = clock.wrap(module.log_step, "log_step")
    module.compute_rewards = clock.wrap(module.compute_rewards, "rewards")
    module.score_rollout = clock.wrap(module.score_rollout, "rewards")  # the verifier and reward sources, run once
    module.training_step = clock.wrap(module.training_step, "training_step")
    # ... and what they spend it on (model forwards, sampling, log-prob / entropy math, backward, clipping)
    module.policy.forward = clock.wrap(module.policy.forward, lambda phase: f"{phase}_model")
    module.engine._sample = clock.wrap(module.engine._sample, "gen_sampling")
    module.manual_backward = clock.wrap(module.manual_backward, "train_backward")
    module._grad_norm = clock.wrap(module._grad_norm, "train_grad_norm")
    module.clip_gradients = clock.wrap(module.clip_gradients, "train_clip")
    for name in ("token_logps", "token_entropy", "policy_loss"):
        setattr(obj, name, clock.wrap(getattr(obj, name), lambda phase, name=name: f"{phase}_{name}"))
    seen: dict = {}
    inner_generate = module.engine.generate

    def generate_and_keep(prompt_ids, prompt_mask, generator=None):
        seen["threads"] = torch.get_num_threads()
        rollout = inner_generate(prompt_ids, prompt_mask, generator)
        seen["rollout"] = rollout
        return rollout

    module.engine.generate = generate_and_keep

    @torch.no_grad()
    def raw_decode(rollout) -> tuple[float, int]:
        """The engine's decode schedule with nothing but HF forwards and plain sampling."""
        ids, mask = rollout.prompt_ids, rollout.prompt_mask.long()
        width = rollout.completion_ids.shape[1]
        schedule = rollout.completion_mask.sum(0).tolist()  # rows decoding at each position
        gen = torch.Generator().manual_seed(args.seed)
        raw_model.eval()
        start = time.perf_counter()
        out = raw_model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=True,
                        logits_to_keep=1)
        cache, logits = _out_cache(out), out.logits[:, -1]
        pos = mask.sum(-1, keepdim=True)
        rows_fed = 0
        for t in range(1, width):
            tokens = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen)
            n = int(schedule[t])
            if n < tokens.shape[0]:
                cache.batch_select_indices(torch.arange(n))
                tokens, mask, pos = tokens[:n], mask[:n], pos[:n]
            mask = torch.cat([mask, mask.new_ones(n, 1)], dim=-1)
            out = raw_model(input_ids=tokens, attention_mask=mask, position_ids=pos, use_cache=True,
                            **{cache_kw: cache})
            cache, logits = _out_cache(out), out.logits[:, -1]
            pos = pos + 1
            rows_fed += n
        torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen)  # the last sampled token
        raw_model.train()
        return time.perf_counter() - start, rows_fed

    @torch.no_grad()
    def hf_generate(rollout) -> float:
        width = rollout.completion_ids.shape[1]
        raw_model.eval()
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        raw_model.generate(input_ids=rollout.prompt_ids, attention_mask=rollout.prompt_mask, do_sample=True,
                           temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=width, min_new_tokens=width,
                           pad_token_id=module.tokenizer.pad_token_id)
        raw_model.train()
        return time.perf_counter() - start

    def raw_train(rollout) -> tuple[float, float]:
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
        t = rollout.completion_ids.shape[1]
        cmask = rollout.completion_mask.float()
        start = time.perf_counter()
        out = raw_model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                        logits_to_keep=t + 1)
        logits = out.logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                rollout.completion_ids.reshape(-1), reduction="none")
        loss = (nll.view_as(cmask) * cmask).sum() / cmask.sum().clamp_min(1)
        loss.backward()
        mid = time.perf_counter()
        raw_opt.step()
        raw_opt.zero_grad(set_to_none=True)
        return mid - start, time.perf_counter() - mid

    steps: list[dict] = []
    load = LoadMeter()

    class StepClock(Callback):
        def __init__(self) -> None:
            self.resume = None

        def _raw(self) -> None:
            rollout = seen.get("rollout")
            if rollout is None or args.no_raw:
                return
            rec = steps[-1]
            rec["raw_decode"], rec["raw_rows_fed"] = raw_decode(rollout)
            rec["raw_fwd_bwd"], rec["raw_adamw"] = raw_train(rollout)
            if args.hf_generate:
                rec["hf_generate"] = hf_generate(rollout)

        def _close_step(self) -> None:
            now = time.perf_counter()
            rollout = seen["rollout"]
            rec = clock.take()
            rec["full"] = now - self.resume
            rec["others_cpu_full"] = load.take()
            rec["width"] = rollout.completion_ids.shape[1]
            rec["tokens"] = rollout.num_tokens
            rec["rows"] = rollout.completion_ids.shape[0]
            rec["engine_rows_fed"] = int(rollout.completion_mask[:, 1:].sum())
            rec["threads_in_trainer"] = seen["threads"]
            steps.append(rec)
            load.take()
            self._raw()
            steps[-1]["others_cpu_raw"] = load.take()
            self.resume = time.perf_counter()

        def on_train_start(self, trainer, pl_module) -> None:
            optimizer = trainer.optimizers[0]  # the torch optimizer behind the LightningOptimizer
            optimizer.step = clock.wrap(optimizer.step, "train_optimizer_step")
            optimizer.zero_grad = clock.wrap(optimizer.zero_grad, "train_zero_grad")

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if self.resume is None:
                self.resume = time.perf_counter()
                load.take()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if len(steps) < clock.counts["training_step"]:
                self._close_step()

        def on_train_end(self, trainer, pl_module) -> None:
            if len(steps) < clock.counts["training_step"]:
                self._close_step()

    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=args.warmup + args.steps,
                        logger=False,
                        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                        log_every_n_steps=1, callbacks=[StepClock()], enable_model_summary=False)
    trainer.fit(module, datamodule=data)

    measured = steps[args.warmup:] or steps
    for rec in measured:
        other = rec["full"] - rec.get("generation", 0.0) - rec.get("old_pass", 0.0) - rec.get("training", 0.0)
        rec["other"] = other
        rec["lightning"] = rec["full"] - rec.get("training_step", 0.0)
        rec["gen_loop"] = rec.get("generation", 0.0) - rec.get("gen_model", 0.0) - rec.get("gen_sampling", 0.0)
        rec["train_rest"] = rec.get("training", 0.0) - sum(rec.get(f"train_{k}", 0.0) for k in (
            "model", "token_logps", "token_entropy", "policy_loss", "backward", "grad_norm", "clip", "optimizer_step",
            "zero_grad"))
        if "raw_decode" in rec:
            rec["raw_total"] = rec["raw_decode"] + rec["raw_fwd_bwd"] + rec["raw_adamw"]
            rec["ratio"] = rec["full"] / rec["raw_total"]
            rec["gen_ratio"] = rec["generation"] / rec["raw_decode"]
            rec["train_ratio"] = rec["training"] / (rec["raw_fwd_bwd"] + rec["raw_adamw"])

    med = {k: _median([r[k] for r in measured if k in r]) for k in measured[0] if isinstance(measured[0][k], (int, float))}
    full = med["full"]
    print(f"\nGRPO step time: {args.model}, {args.prompts} prompts x G {args.G}, {args.new_tokens} new tokens, "
          f"{next(module.policy.parameters()).dtype}, torch {torch.__version__} on {platform.machine()} "
          f"({os.cpu_count()} cores), threads {args.threads} (inside the Trainer: {med['threads_in_trainer']:.0f}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"medians over {len(measured)} steps after {args.warmup} warm-up; decode width {med['width']:.0f}, "
          f"{med['tokens']:.0f} completion tokens, {med['engine_rows_fed']:.0f} row-forwards after the prefill")
    print(f"\n{'part':<34}{'seconds':>9}{'% step':>8}")
    rows = [("generation (rollout engine)", "generation"), ("  model forwards (prefill + decode)", "gen_model"),
            ("  sampling (_sample)", "gen_sampling"), ("  loop bookkeeping", "gen_loop"),
            ("old / ref pass", "old_pass"), ("  policy forwards", "old_model"),
            ("training (update)", "training"), ("  model forward", "train_model"),
            ("  token log-probs", "train_token_logps"), ("  entropy (logged)", "train_token_entropy"),
            ("  policy loss", "train_policy_loss"), ("  backward", "train_backward"),
            ("  grad norm (logged)", "train_grad_norm"), ("  clip_gradients", "train_clip"),
            ("  AdamW step", "train_optimizer_step"), ("  zero_grad", "train_zero_grad"),
            ("  rest of update", "train_rest"),
            ("other", "other"), ("  rewards", "rewards"), ("  log_step", "log_step"),
            ("  Lightning (outside training_step)", "lightning"), ("full step", "full")]
    for label, key in rows:
        if key in med:
            print(f"{label:<34}{med[key]:>9.2f}{100 * med[key] / full:>7.1f}%")
    busy = [r.get(k) for r in measured for k in ("others_cpu_full", "others_cpu_raw") if r.get(k) is not None]
    if busy:
        print(f"CPU used by other processes during the runs: max {max(busy):.2f} cores "
              f"(near 0 = a quiet machine; above ~0.2 the figures are inflated)")
    if "raw_total" in med:
        print(f"\n{'raw part (same shapes)':<34}{'seconds':>9}")
        for label, key in (("raw decode (schedule-matched)", "raw_decode"), ("raw forward + backward", "raw_fwd_bwd"),
                           ("raw AdamW step", "raw_adamw"), ("raw total", "raw_total"),
                           ("HF generate (all rows, width)", "hf_generate")):
            if key in med:
                print(f"{label:<34}{med[key]:>9.2f}")
        print(f"\ngeneration / raw decode            {med['gen_ratio']:.3f}")
        print(f"training / raw fwd+bwd+AdamW       {med['train_ratio']:.3f}")
        print(f"full step / (raw decode + raw fwd/bwd/AdamW) = {med['ratio']:.3f}   "
              f"(per step: {', '.join(format(r['ratio'], '.3f') for r in measured)})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "steps": steps, "median": med}, handle, indent=1)


if __name__ == "__main__":
    main()
