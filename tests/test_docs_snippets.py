"""Every YAML block and every lit-reason command in README.md and docs/ is parsed by the CLI
(docs/your_own_task.md's commands are also run, in tests/test_your_own_task.py)."""

import re
import shlex
from pathlib import Path

import pytest

from lit_reason.app.cli import main

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def snippets(language):  # your_own_task.md's blocks need its files: tests/test_your_own_task.py parses them
    return [(page, block) for page in PAGES if page.name != "your_own_task.md"
            for block in re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)]


def commands():
    found = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("lit-reason ") and "X.yaml" not in line and "my_callbacks.yaml" not in line:
                found.append((page, shlex.split(line, comments=True)[1:]))
    return found


@pytest.mark.parametrize("page, block", snippets("yaml"), ids=lambda x: x.name if isinstance(x, Path) else "")
def test_yaml_block_parses(tmp_path, capsys, page, block):
    path = tmp_path / "block.yaml"
    path.write_text(block)
    with pytest.raises(SystemExit) as done:  # a block may set only part: the rest from the short defaults
        main(["fit", "--model=GRPO", "--data=ToyDataModule", "--config", str(path), "--print_config"])
    assert done.value.code in (0, None), f"{page.name}: {capsys.readouterr().err}"


@pytest.mark.parametrize("page, argv", commands(), ids=lambda x: x.name if isinstance(x, Path) else " ".join(x)[:60])
def test_command_parses(capsys, page, argv):
    if argv[0] in ("fit", "validate", "test", "predict"):
        with pytest.raises(SystemExit) as done:
            main([*argv, "--print_config"])
        assert done.value.code in (0, None), f"{page.name}: {capsys.readouterr().err}"
        return
    with pytest.raises(SystemExit) as done:  # export / evaluate / gallery: every option named exists
        main([argv[0], "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("-")):
        assert re.search(rf"{re.escape(option)}\b", usage), f"{page.name}: {argv[0]} has no option {option}"
