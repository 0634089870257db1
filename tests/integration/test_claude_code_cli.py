"""The real Claude Code CLI against Hearth: `claude -p "hello"` prints a reply and exits 0.

The CLI is installed with npm into .cache/claude-code on first use.
"""

import os
from pathlib import Path
import shutil
import subprocess

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.197"
PREFIX = REPO / ".cache" / "claude-code"


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    binary = PREFIX / "node_modules" / ".bin" / "claude"
    if not binary.exists():
        if shutil.which("npm") is None:
            pytest.fail("npm is needed to install the Claude Code CLI (apt-get install nodejs npm)")
        subprocess.run(["npm", "install", "--silent", "--prefix", str(PREFIX), CLAUDE_CODE], check=True,
                       timeout=600)
    return binary


# The first run installs the CLI with npm, which can take minutes on a cold npm cache.
@pytest.mark.timeout(900)
def test_claude_code_prints_a_reply_and_exits_0(hearth, claude_bin, tmp_path):
    env = dict(os.environ, ANTHROPIC_BASE_URL=hearth.base_url, ANTHROPIC_API_KEY="local",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", HOME=str(tmp_path), DISABLE_AUTOUPDATER="1")
    done = subprocess.run([str(claude_bin), "-p", "hello"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "Claude Code printed no reply"
