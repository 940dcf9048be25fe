"""The README walked as a new user would: every command in its ```bash blocks is run and its answer checked.

The commands are parsed from README.md itself, so the two cannot drift: a command or flag the code no longer has
fails here, and so does an answer that says nothing (a zero cost or zero GPU-hours for a real model, "not found" with
exit code 0). Kept fast for CI: the tiny runs train 3 steps (`--set train.max_steps=3`), runs of the GPU recipes stop
after the plan (`--dry-run`), `make` lines are checked to be Makefile targets, and every file a command writes goes
under tmp_path (`--out`, `--report` and `runs/...` paths are rewritten; `runs/*` globs match the runs this test made).
"""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
TINY_STEPS = ["--set", "train.max_steps=3", "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0"]
# What a README command may honestly refuse, and the one line it must then print: calibration fits GPU runs, and the
# runs this test can make are CPU runs.
EXPECTED_REFUSALS = {("calibrate",): "needs runs measured on a catalogued GPU"}


def readme_commands(text: str) -> list[str]:
    """Every command line of the README's ```bash blocks, comments stripped, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


COMMANDS = readme_commands(README.read_text())
ADVISOR = [c for c in COMMANDS if c.startswith("advisor ")]


def is_tiny_run(command: str) -> bool:
    words = shlex.split(command)
    return words[1] == "run" and Path(words[2]).name.startswith("tiny-cpu-")


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def rewrite(command: str, work: Path) -> list[str]:
    """The argv to run: paths the command writes moved under `work`, `runs/*` globs expanded there, tiny runs cut to
    a few steps and runs of GPU recipes stopped after the plan."""
    words = shlex.split(command)[1:]
    argv: list[str] = []
    for i, word in enumerate(words):
        if word.startswith("runs/") and "*" in word:
            matches = sorted(str(p) for p in work.glob(word))
            assert matches, f"{command}: {word} matches none of this test's runs"
            argv += matches
        elif word.startswith("runs/") or (i and words[i - 1] in ("--out", "--report")):
            argv.append(str(work / word))
        else:
            argv.append(word)
    if argv[0] == "run":
        argv += TINY_STEPS if is_tiny_run(command) else ([] if "--dry-run" in argv else ["--dry-run"])
    return argv


CHAT_INPUT = "Add 65 and 62.\n"  # what the walk types into `advisor chat` (then end of input)


def run_advisor(argv: list[str]) -> tuple[int, str, str]:
    """The advisor in this process (as tests.conftest.run_cli, without capsys, so a module fixture can call it);
    `advisor chat` reads its standard input, so it runs as a process with a line typed in."""
    if argv[0] == "chat":
        import subprocess
        import sys
        proc = subprocess.run([sys.executable, "-m", "advisor.cli", *argv], input=CHAT_INPUT, capture_output=True,
                              text=True, timeout=600)
        return proc.returncode, proc.stdout, proc.stderr
    from advisor.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def meaningless(code: int, out: str, err: str) -> list[str]:
    """Why an answer with exit code 0 says nothing to a new user (empty when it is meaningful)."""
    problems = []
    text = out + err
    if code == 0 and not out.strip():
        problems.append("printed nothing")
    if code == 0 and re.search(r"not found|no such file|does not exist", text, flags=re.I):
        problems.append("says something was not found, with exit code 0")
    if "Traceback" in text or "internal error" in text:
        problems.append("crashed")
    if "$0.00" in text:
        problems.append("a zero cost ($0.00)")
    for value in re.findall(r"GPU-hours: ([\d.,]+)", text):
        if float(value.replace(",", "")) == 0:
            problems.append(f"zero GPU-hours (GPU-hours: {value})")
    for value in re.findall(r"cost: \$([\d.,]+)", text):
        if float(value.replace(",", "")) == 0:
            problems.append(f"a zero cost (cost: ${value})")
    return problems


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Where the README's commands write; its tiny runs are made first, so `runs/*` means them."""
    work = tmp_path_factory.mktemp("readme")
    results = {}
    with pytest.MonkeyPatch.context() as env:  # no developer calibration leaks into the runs' estimates
        env.setenv("RIGHTSIZE_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
        for command in ADVISOR:
            if is_tiny_run(command) and "--resume" not in command:
                results[command] = run_advisor(rewrite(command, work))
    return work, results


def test_readme_has_the_walk():
    """The parse found the README's commands (a broken parse would make every other test here vacuous)."""
    names = {tuple(shlex.split(c)[1:3]) if c.startswith("advisor scaling") or c.startswith("advisor catalog")
             else tuple(shlex.split(c)[1:2]) for c in ADVISOR}
    for expected in [("recommend",), ("estimate",), ("validate",), ("run",), ("compare",), ("calibrate",),
                     ("scaling", "optimal"), ("catalog", "gpus")]:
        assert expected in names, expected
    assert len(COMMANDS) >= 20
    assert all(c.split()[0] in ("advisor", "make") for c in COMMANDS), "a README command this test cannot run"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_is_copyable(command):
    """No placeholder a user would have to replace, no `a|b` alternatives a shell would pipe."""
    assert not re.search(r"\b[A-Z]{3,}\b", command), f"{command}: placeholder in a command meant to be copied"
    assert "|" not in command and "<" not in command and ">" not in command, command


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make ")])
def test_readme_make_targets_exist(command):
    for target in shlex.split(command)[1:]:
        assert target in makefile_targets(), f"README runs `{command}` but the Makefile has no {target} target"


@pytest.mark.parametrize("command", ADVISOR)
def test_readme_command_answers(command, work):
    """Exit code 0 and a meaningful answer (or, for a refusal the README states, one clear line)."""
    work_dir, made = work
    argv = rewrite(command, work_dir)
    code, out, err = made[command] if command in made else run_advisor(argv)
    refusal = next((needle for prefix, needle in EXPECTED_REFUSALS.items() if tuple(argv[:len(prefix)]) == prefix), None)
    if "--resume" in argv:  # the walk resumes a run it finished: there is nothing to resume, refused in one line
        refusal = "nothing to resume"
    if refusal and code == 2:
        assert refusal in err and len(err.strip().splitlines()) == 1, (command, err)
        return
    assert code == 0, f"{command} -> {argv}: exit {code}\n{out[-2000:]}\n{err[-2000:]}"
    assert not meaningless(code, out, err), (command, meaningless(code, out, err), out[-2000:])
    if argv[0] == "run" and "--dry-run" in argv:
        assert "fits in" in out and "Plan only" in out, out
    if argv[0] == "estimate":
        assert "Tokens:" in out and "GPU-hours:" in out and "cost: " in out, out
    for flag in ("--out", "--report"):
        if flag in argv and argv[0] != "run":
            assert Path(argv[argv.index(flag) + 1]).is_file(), f"{command}: wrote no {flag} file"
    if argv[0] == "run" and "--dry-run" not in argv:
        assert (Path(argv[argv.index("--out") + 1]) / "report.json").is_file()
    if "--resume" in argv:  # the walk resumes a run it finished: there is nothing to resume, and it says so
        assert "nothing to resume" in err, err


@pytest.mark.parametrize("out, problem", [
    ("Estimate: ...\n  GPU-hours: 0.0 at efficiency 0.25\n  cost: $0.00\n", "zero GPU-hours"),
    ("  cost: $0.00\n", "$0.00"),
    ("Tokens: 0 (data not found)\n", "not found"),
    ("", "printed nothing"),
])
def test_the_walk_would_catch_an_empty_answer(out, problem):
    """The checker itself: the answers the issue found (zero cost, zero hours, "not found" with exit 0) fail it."""
    assert any(problem in p for p in meaningless(0, out, "")), (out, meaningless(0, out, ""))
    assert not meaningless(0, "  GPU-hours: 0.026 (1.6 GPU-minutes)\n  cost: $0.03\n", "")
