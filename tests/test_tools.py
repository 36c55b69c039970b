"""Tools: schemas from type hints, calls parsed from model text (bounded, malformed ones reported),
the calculator by hand, the tool-use environment, and the sandbox against hostile programs (each
bounded in time and reported; nothing reaches the trainer's process, files or variables)."""

from __future__ import annotations

import os
import time

import pytest

from lit_reason.tasks.environment import resolve_environment
from lit_reason.tasks.problem import TextProblem
from lit_reason.tasks.tools.calculator import calculator
from lit_reason.tasks.tools.calls import parse_tool_calls
from lit_reason.tasks.tools.registry import ToolRegistry, resolve_tool, tool_from_function
from lit_reason.tasks.tools.sandbox import SandboxLimits, network_namespace_prefix, run_python


def lookup(city: str, year: int = 2020) -> str:
    """Population of a city.

    Args:
        city: the city's name
        year: the census year
    """
    return f"{city}:{year}"


def test_a_type_hinted_function_becomes_the_schema_shown_to_the_model():
    tool = tool_from_function(lookup)
    params = tool.schema["function"]["parameters"]
    assert tool.name == "lookup" and params["required"] == ["city"]
    assert params["properties"]["year"]["type"] == "integer" and params["properties"]["city"]["description"] == "the city's name"
    assert resolve_tool("tests.test_tools:lookup").name == "lookup"
    with pytest.raises(ValueError, match="unknown tool 'no_such_tool': use one of"):
        resolve_tool("no_such_tool")
    with pytest.raises(ValueError, match="unknown tool 'calculater': did you mean 'calculator'"):
        resolve_tool("calculater")
    with pytest.raises(ValueError, match="type hint"):
        tool_from_function(lambda x: x)


@pytest.mark.parametrize("expression,expected", [("(3 + 4) * 2 / 7", "2"), ("2 ** 10 - 1", "1023"), ("7 / 2", "7/2 (= 3.5)"),
                                                 ("-3 % 5", "2"), ("1.5 * 4", "6")])
def test_calculator_by_hand(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize("expression,error", [("__import__('os')", "unsupported"), ("9 ** 9 ** 9", "exponents"),
                                              ("1 / 0", "division by zero"), ("1+" * 150 + "1", "longer than")])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression, error):
    assert error in ToolRegistry.from_names(["calculator"]).call("calculator", {"expression": expression})


def test_tool_calls_are_parsed_bounded_and_malformed_ones_reported():
    text = 'a <tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call> b <tool_call>{oops</tool_call>'
    good, bad = parse_tool_calls(text)
    assert (good.name, good.arguments, good.error) == ("calculator", {"expression": "1+1"}, None)
    assert bad.name is None and "not valid JSON" in bad.error
    assert "without its" in parse_tool_calls("<tool_call>{")[0].error
    assert len(parse_tool_calls('<tool_call>{"name": "x"}</tool_call>' * 50)) == 4
    assert parse_tool_calls("no calls here") == []
    registry = ToolRegistry.from_names(["calculator"])
    assert "unknown tool 'rm'" in registry.call("rm", {})
    assert "must be a JSON object" in registry.call("calculator", [1])
    assert "TypeError" in registry.call("calculator", {"expr": "1"})


def test_the_tool_use_environment_answers_calls_then_scores_the_answer():
    env = resolve_environment("tools")(TextProblem("What is 37*91?", "3367", lambda c: 1.0 if "3367" in c else 0.0),
                                       tools=["calculator", "tests.test_tools:lookup"])
    first = env.reset()
    assert first[0]["role"] == "system" and '"name": "calculator"' in first[0]["content"] and "<tool_call>" in first[0]["content"]
    obs = env.step('<tool_call>{"name": "calculator", "arguments": {"expression": "37*91"}}</tool_call>')
    assert obs.messages == [{"role": "tool", "content": "3367"}] and not obs.done and obs.reward is None
    assert env.step("<tool_call>nope</tool_call>").messages[0]["content"].startswith("error: the tool call is not valid JSON")
    assert env.malformed_calls == 1
    final = env.step("<answer>3367</answer>")
    assert final.done and final.reward == 1.0


# ------------------------------------------------------------------ the sandbox, against hostile programs
LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=3.0, memory_mb=256, max_output_bytes=1000)


def run(code):
    start = time.perf_counter()
    result = run_python(code, LIMITS)
    assert time.perf_counter() - start < LIMITS.wall_seconds + 3  # bounded, whatever the code does
    return result


@pytest.mark.integration
def test_sandbox_runs_code_in_its_own_directory():
    result = run("import os\nopen('note.txt', 'w').write('hi')\nprint(open('note.txt').read(), os.getcwd() != %r)" % os.getcwd())
    assert result.ok and result.stdout.strip() == "hi True"


@pytest.mark.integration
@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(60)"])
def test_an_endless_program_is_killed_and_reported(code):
    result = run(code)
    assert not result.ok and (result.timed_out or result.exit_code < 0)
    assert "killed" in result.report() or "SIGXCPU" in result.report() or "SIGKILL" in result.report()


@pytest.mark.integration
@pytest.mark.parametrize("code", ["import os\nwhile True: os.fork()",
                                  "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])",
                                  "import multiprocessing as mp\nmp.Process(target=print).start()"])
def test_a_fork_bomb_cannot_start_a_process(code):
    result = run(code)
    assert result.exit_code != 0 and "PermissionError" in result.report()


@pytest.mark.integration
def test_a_huge_allocation_fails_inside_the_sandbox():
    result = run("x = bytearray(8 * 10**9)\nprint('allocated')")
    assert "MemoryError" in result.report() and "allocated" not in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize("code", ["import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
                                  "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 22))"])
def test_a_socket_connect_is_refused(code):
    result = run(code)
    assert result.exit_code == 1 and "socket" in result.report() and "PermissionError" in result.report()


@pytest.mark.integration
def test_without_the_audit_hook_there_is_still_no_network_where_namespaces_exist():
    if not network_namespace_prefix():
        pytest.skip("no unprivileged network namespace on this machine: the audit hook alone refuses sockets")
    import subprocess
    probe = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    out = subprocess.run([*network_namespace_prefix(), "python3", "-c", probe], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "['lo']"  # only a (down) loopback device inside


@pytest.mark.integration
def test_writing_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    for code in [f"open({str(target)!r}, 'w').write('x')", f"import os\nos.rename('code.py', {str(target)!r})",
                 f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')"]:
        result = run(code)
        assert result.exit_code == 1 and "PermissionError" in result.report()
    assert not target.exists()


@pytest.mark.integration
def test_the_trainers_environment_variables_do_not_reach_the_sandbox(monkeypatch):
    monkeypatch.setenv("LIT_REASON_TEST_SECRET", "s3cret-value")
    result = run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('LIT_REASON_TEST_SECRET'))")
    assert result.ok and "s3cret" not in result.stdout and "LIT_REASON_TEST_SECRET" not in result.stdout
    stolen = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert "s3cret" not in stolen.stdout and "PermissionError" in stolen.report()


@pytest.mark.integration
def test_huge_output_is_cut_and_flagged():
    result = run("print('x' * 10**7)")
    assert result.output_truncated and len(result.stdout) <= LIMITS.max_output_bytes and "truncated" in result.report()
