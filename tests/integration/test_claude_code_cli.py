"""The real Claude Code CLI against Hearth, at the release pinned since the start and at the newest.

Each release is installed with npm into .cache/claude-code-<version> on first
use. To try another release: CLAUDE_CODE_VERSIONS=2.1.340 python -m pytest
tests/integration/test_claude_code_cli.py (a comma-separated list).

This Hearth has fault injection on, so a test can script the model's reply:
the bundled tiny model cannot be relied on to write a tool call deep in
Claude Code's 20K-token prompt, and what is under test is that the CLI runs
a tool_use Hearth sends and completes the turn.
"""

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from hearth.contract import FAULT_KEY
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

PINNED = ["2.1.197", "2.1.332"]  # the first release Hearth served, and the newest (2026-11-24)
VERSIONS = [v for v in os.environ.get("CLAUDE_CODE_VERSIONS", ",".join(PINNED)).split(",") if v]


def install(version: str) -> Path:
    prefix = REPO / ".cache" / f"claude-code-{version}"
    binary = prefix / "node_modules" / ".bin" / "claude"
    if not binary.exists():
        if shutil.which("npm") is None:
            pytest.fail("npm is needed to install the Claude Code CLI (apt-get install nodejs npm)")
        subprocess.run(["npm", "install", "--silent", "--prefix", str(prefix), f"@anthropic-ai/claude-code@{version}"],
                       check=True, timeout=600)
    return binary


@pytest.fixture(scope="module")
def hearth(private_hearth):
    return private_hearth(HEARTH_FAULT_INJECTION="1")


def run_claude(command: list, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Claude Code, its debug log written next to it: a run that hangs fails with what it was doing.

    Its stdin is /dev/null, as in a script. With -p it reads piped input first: it waits 3 s for
    any, and once some comes, for the end; a stdin inherited from whatever runs the tests may
    never end (CI's hung here once, 600 s with no output).
    """
    debug_log = cwd / "claude-debug.log"
    try:
        return subprocess.run([*command, "--debug-file", str(debug_log)], env=env, cwd=cwd, check=False,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        lines = debug_log.read_text(errors="replace").splitlines() if debug_log.exists() else ["(no debug log)"]
        pytest.fail("Claude Code did not exit in 600 s; its debug log ends:\n" + "\n".join(lines[-60:]))


def the_turn(result: dict) -> str:
    """What a failed assertion shows of Claude Code's JSON result (pytest would cut the dict short)."""
    keys = ("subtype", "is_error", "num_turns", "stop_reason", "result", "permission_denials")
    return json.dumps({key: result.get(key) for key in keys}, indent=1)


@pytest.fixture(params=VERSIONS)
def claude(request, hearth, tmp_path):
    """run(*args) -> the finished `claude` process, pointed at this Hearth, in an empty directory."""
    binary = install(request.param)
    env = dict(os.environ, ANTHROPIC_BASE_URL=hearth.base_url, ANTHROPIC_API_KEY="local",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", HOME=str(tmp_path), DISABLE_AUTOUPDATER="1")

    def run(*args):
        return run_claude([str(binary), *args], env, tmp_path)

    run.binary = binary
    run.cwd = tmp_path
    return run


# The first run installs the CLI with npm, which can take minutes on a cold npm cache.
@pytest.mark.timeout(900)
def test_claude_code_prints_a_reply_and_exits_0(claude):
    done = claude("-p", "hello")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "Claude Code printed no reply"


@pytest.mark.timeout(900)
def test_claude_code_runs_a_tool_hearth_asks_for_and_finishes_the_turn(claude, hearth):
    call = {"name": "Bash", "arguments": {"command": "echo ran > tool-ran.txt", "description": "Write a file"}}
    hearth.redis.set(FAULT_KEY, "reply:<tool_call>\n" + json.dumps(call) + "\n</tool_call>")
    done = claude("-p", "Write a file", "--allowedTools", "Bash", "--output-format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert not result["is_error"] and result["num_turns"] >= 2, the_turn(result)
    assert (claude.cwd / "tool-ran.txt").read_text().strip() == "ran", "Claude Code did not run the tool call"


@pytest.mark.timeout(900)
def test_claude_code_does_not_run_a_call_cut_off_by_a_token_cap_and_finishes_the_turn(claude, hearth):
    """The bundled model's own cap (256 tokens) cuts the call mid-command: Hearth sends it as Anthropic
    does, unclosed under max_tokens, and Claude Code answers the model that its input was not whole."""
    command = "echo ran > cut-ran.txt && echo " + "word " * 300
    call = {"name": "Bash", "arguments": {"command": command, "description": "Write a file"}}
    hearth.redis.set(FAULT_KEY, "reply:<tool_call>\n" + json.dumps(call) + "\n</tool_call>")
    done = claude("-p", "Write a file", "--allowedTools", "Bash", "--output-format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["num_turns"] >= 2, the_turn(result)
    assert not (claude.cwd / "cut-ran.txt").exists(), "Claude Code ran a call cut short"


@pytest.mark.timeout(900)
def test_hearth_claude_starts_claude_code_pointed_at_this_hearth(claude, hearth):
    env = dict(os.environ, HEARTH_HOST="127.0.0.1", HEARTH_PORT=hearth.env["HEARTH_PORT"],
               PATH=f"{claude.binary.parent}:{os.environ['PATH']}", HOME=str(claude.cwd), DISABLE_AUTOUPDATER="1")
    env.pop("ANTHROPIC_BASE_URL", None)
    done = run_claude([sys.executable, "-m", "hearth.cli", "claude", "-p", "hello"], env, claude.cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_hearth_claude_says_how_to_get_claude_code_when_it_is_missing(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "hearth.cli", "claude", "-p", "hello"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "npm install -g @anthropic-ai/claude-code" in done.stderr
