"""`verifiers` (0.4, its ``verifiers.v1`` stack) tasks as lit-reason problems and episodes.

verifiers 0.4 splits an environment into a ``Taskset`` (rows -> ``Task`` objects: prompt, system
prompt, fields such as ``answer``), the ``Task``'s scoring (``@vf.reward`` functions, weighted;
``@vf.stop`` predicates on the trace), ``Toolset`` tool servers (``@vf.tool`` methods, served over
MCP) and an ``Env`` whose ``run(task, agents)`` drives agent harness programs that reach the model
over an HTTP interception server. The adapter takes the first three, in process:

- :class:`VerifiersProblem`: a task as a problem (its prompt as chat messages; ``score`` = the
  task's own weighted reward of a one-turn trace), so single-turn GRPO trains on a taskset;
- :class:`VerifiersEnvironment` (``model.episodes.environment: verifiers``): the episode's
  conversation is kept as a verifiers ``Trace``; the tools of the task's and the taskset's Toolsets
  are served by the same MCP server class verifiers registers them on (without HTTP) and called
  in the ``<tool_call>`` format (:mod:`lit_reason.tasks.tools`); a tool's result is the next turn;
  the task's trace stops end the episode; every turn is rewarded with the task's score of the
  trace so far (use ``reward: last``), so an episode cut at ``max_turns`` still has its score.

Not run: an ``Env``'s own control flow (harness programs launched through ``uv`` in a runtime,
user-simulator agents), judges (they call a model client), rewards that need a runtime (skipped,
as verifiers does when scoring without one), request/response stops and interceptors (no HTTP
requests here), and per-rollout ``State`` of a Toolset (verifiers syncs it over its HTTP channel).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import weakref
from functools import partial
from typing import Any, Iterable

from lit_reason.tasks.environment import Observation
from lit_reason.tasks.problem import safe_score
from lit_reason.tasks.tools.calls import parse_tool_calls
from lit_reason.tasks.tools.environment import ToolUse
from lit_reason.tasks.tools.registry import Tool, ToolRegistry
from lit_reason.utils.imports import import_path


def _vf() -> Any:
    try:
        import verifiers.v1 as vf
    except ImportError as err:
        raise ImportError("verifiers environments need the verifiers package: pip install 'lit-reason[environments]'") from err
    return vf


def run_async(coroutine: Any) -> Any:
    """verifiers' scoring and tools are coroutines; the trainer is synchronous."""
    return asyncio.run(coroutine)


def check_task(task: Any) -> None:
    """One line before training for what would fail or score 0 silently later: verifiers 0.4
    awaits every ``@vf.reward`` / ``@vf.metric`` function (a plain ``def`` one raises when scored);
    a reward that needs a runtime (a sandbox) is skipped without one; judges call a model."""
    name = type(task).__name__
    for kind in ("reward", "metric"):
        for fn in task.hooks(kind):
            if not inspect.iscoroutinefunction(fn):
                raise ValueError(f"verifiers task {name}: @vf.{kind} {fn.__name__!r} must be 'async def' (verifiers 0.4 "
                                 f"awaits every {kind} function)")
            runtime = inspect.signature(fn).parameters.get("runtime")
            if kind == "reward" and runtime is not None and runtime.default is inspect.Parameter.empty:
                raise ValueError(f"verifiers task {name}: @vf.reward {fn.__name__!r} needs a runtime (a sandbox), which "
                                 "lit-reason does not start: it would be skipped and score 0; give runtime a default")
    if task.config.judges:
        raise ValueError(f"verifiers task {name}: judges ({len(task.config.judges)}) call a model client, which is not "
                         "run here: score with @vf.reward functions")


def task_messages(task: Any) -> list[dict[str, str]]:
    """The chat messages a task opens with: its system prompt, then its prompt."""
    vf, data = _vf(), task.data
    if data.prompt is None:
        raise ValueError(f"verifiers task {type(task).__name__} (idx {data.idx}) has no prompt (the user opens it, as "
                         "in a user-simulator env): only tasks with a prompt run here")
    messages = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    if isinstance(data.prompt, str):
        return messages + [{"role": "user", "content": data.prompt}]
    return messages + [{"role": m.role, "content": vf.types.content_text(m.content)} for m in data.prompt]


class VerifiersProblem:
    """A verifiers task as a problem; ``toolsets``: the taskset's shared tool servers."""

    def __init__(self, task: Any, toolsets: list[Any] | None = None) -> None:
        check_task(task)
        self.task, self.toolsets = task, list(toolsets or [])
        self.prompt = task_messages(task)
        self.answer = str(getattr(task.data, "answer", "") or "")
        self.metadata = {"task": type(task).__name__, "idx": task.data.idx}

    def new_trace(self) -> Any:
        """An empty trace of this task, as verifiers starts a rollout's."""
        vf = _vf()
        from verifiers.v1.state import state_cls

        task = self.task
        return vf.Trace(task=vf.TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                        state=state_cls(type(task))(), agent=vf.AgentInfo(config=vf.AgentConfig()))

    def reward(self, trace: Any) -> float:
        """The task's weighted reward of ``trace`` (its ``@vf.reward`` functions, run by verifiers)."""
        trace.rewards.clear()
        run_async(self.task.score(trace))
        return float(trace.reward)

    def score(self, completion: str) -> float:
        def one_turn(text: str) -> float:
            trace = self.new_trace()
            for message in self.prompt + [{"role": "assistant", "content": text}]:
                append_message(trace, message, sampled=message["role"] == "assistant")
            return self.reward(trace)

        return safe_score(one_turn, completion)


def append_message(trace: Any, message: dict[str, Any], sampled: bool = False) -> None:
    """Append a chat message (a dict in verifiers' message shape) to the trace's one branch."""
    from pydantic import TypeAdapter
    from verifiers.v1.graph import MessageNode

    parsed = TypeAdapter(_vf().Message).validate_python(message)
    trace.nodes.append(MessageNode(parent=len(trace.nodes) - 1 if trace.nodes else None, message=parsed, sampled=sampled))


class ServedToolset:
    """A Toolset's ``@vf.tool`` methods registered on the MCP server class verifiers serves them
    with, called in process: the tool names, descriptions and argument schemas the model is shown,
    and the argument validation, are MCP's."""

    def __init__(self, toolset: Any) -> None:
        from mcp.server.mcpserver import MCPServer

        run_async(toolset.setup())
        self.server = MCPServer(toolset.server_name or type(toolset).__name__)
        toolset.register(self.server)

    def tools(self) -> list[Tool]:
        return [Tool(t.name, partial(self.call, t.name),
                     {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                       "parameters": t.input_schema}})
                for t in run_async(self.server.list_tools())]

    def call(self, tool: str, /, **arguments: Any) -> str:
        result = run_async(self.server.call_tool(tool, arguments))
        text = "\n".join(getattr(part, "text", "") for part in result.content)
        return f"error: {text}" if result.is_error else text


#: the taskset's shared toolsets, served once per process (verifiers reuses them across rollouts)
_SHARED: "weakref.WeakKeyDictionary[Any, list[Tool]]" = weakref.WeakKeyDictionary()


def served_tools(shared: Iterable[Any], per_rollout: Iterable[Any]) -> list[Tool]:
    tools = []
    for toolset in shared:
        if toolset not in _SHARED:
            _SHARED[toolset] = ServedToolset(toolset).tools()
        tools += _SHARED[toolset]
    tools += [tool for toolset in per_rollout for tool in ServedToolset(toolset).tools()]
    names = [t.name for t in tools]
    if len(set(names)) < len(names):
        raise ValueError(f"verifiers toolsets: two tools share a name ({sorted(n for n in names if names.count(n) > 1)[0]!r})")
    return tools


class VerifiersEnvironment(ToolUse):
    """``environment: verifiers``: a :class:`VerifiersProblem` played as an episode (module docstring)."""

    def __init__(self, problem: Any, tool_role: str = "tool") -> None:
        if not isinstance(problem, VerifiersProblem):
            raise ValueError("environment: verifiers plays verifiers tasks: use data: VerifiersDataModule "
                             f"(got a {type(problem).__name__})")
        task = problem.task
        tools = served_tools(problem.toolsets, type(task).toolsets(task.config))  # the task's: one per rollout
        super().__init__(problem, tool_role=tool_role, registry=ToolRegistry(tools))
        self.stops = [fn for fn in task.hooks("stop") if _trace_stop(fn)]
        self.trace: Any = None  # the episode's conversation, from reset()

    def reset(self) -> list[dict[str, str]]:
        self.trace = self.problem.new_trace()
        for message in self.problem.prompt:
            append_message(self.trace, message)
        return self.with_tools(self.problem.prompt) if self.registry.tools else self.problem.prompt

    def step(self, assistant_text: str) -> Observation:
        calls = parse_tool_calls(assistant_text) if self.registry.tools else []
        ids = [f"call_{len(self.trace.nodes)}_{i}" for i in range(len(calls))]  # the readable calls go on the trace
        append_message(self.trace, {"role": "assistant", "content": assistant_text, "tool_calls": [
            {"id": cid, "name": c.name, "arguments": json.dumps(c.arguments)} for cid, c in zip(ids, calls)
            if c.error is None] or None}, sampled=True)
        results = self.answer_calls(calls)
        for cid, call, result in zip(ids, calls, results):
            if call.error is None:
                append_message(self.trace, {"role": "tool", "tool_call_id": cid, "name": call.name, "content": result})
        done = not calls or self.stopped()
        return Observation([] if done else [{"role": self.tool_role, "content": r} for r in results],
                           reward=self.problem.reward(self.trace), done=done)

    def stopped(self) -> bool:
        """Whether one of the task's ``@vf.stop`` trace predicates fires (run by verifiers' hook caller)."""
        from verifiers.v1.session import call_hook

        vf = _vf()
        for stop in self.stops:
            if run_async(call_hook(stop, {vf.Trace: self.trace})) is True:
                self.trace.stop(stop.__name__)
                return True
        return False


def _trace_stop(fn: Any) -> bool:
    from verifiers.v1.session import hook_boundary

    return hook_boundary(fn, allow_trace=True) is _vf().Trace


def load_taskset(taskset: str, taskset_args: dict | None = None) -> Any:
    """A Taskset by verifiers id (an installed taskset package, as ``--env.taskset.id``) or by
    ``package.module:Class``, built with its own config type from ``taskset_args``."""
    vf = _vf()
    from verifiers.v1.utils.generic import concrete_type

    if ":" in taskset:
        cls = import_path(taskset, "data.taskset")
        config_type = concrete_type(cls, vf.TasksetConfig, origin=vf.Taskset) or vf.TasksetConfig
        return cls(config_type.model_validate(dict(taskset_args or {})))
    config_type = vf.taskset_config_type(taskset)
    return vf.load_taskset(config_type.model_validate({**dict(taskset_args or {}), "id": taskset}))


def taskset_problems(taskset: Any, limit: int | None = None) -> list[VerifiersProblem]:
    """The taskset's tasks (at most ``limit``) as problems, sharing the taskset's tool servers."""
    toolsets = list(type(taskset).toolsets(taskset.config))
    view = taskset if limit is None else taskset.take(limit)
    return [VerifiersProblem(task, toolsets) for task in view]
