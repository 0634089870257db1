"""Synthetic request traces shaped like a real Claude Code session.

- a static prefix of system text and ~24 tools' JSON schemas (>= 16K tokens);
- a billing-header first system block with a fresh nonce in every request;
- a main conversation whose history grows by a tool call and result per turn,
  with a `role: system` message injected mid-history;
- subagents with their own system prompts and histories, sharing the tools,
  interleaved turn by turn with the main conversation;
- short haiku side calls (titles, checks) in between.

The text comes from the tokenizer corpus (real English, Python and JSON), so
token counts resemble a real tokenizer's. Deterministic for a given seed.
"""

from dataclasses import dataclass
from pathlib import Path
import random
import secrets

CORPUS = Path(__file__).resolve().parent.parent / "models" / "tokenizer_corpus.txt"
TOOL_NAMES = ["Bash", "Read", "Write", "Edit", "MultiEdit", "Glob", "Grep", "LS", "NotebookRead", "NotebookEdit",
              "WebFetch", "WebSearch", "TodoWrite", "Task", "ExitPlanMode", "BashOutput", "KillShell",
              "SlashCommand", "ListMcpResources", "ReadMcpResource", "AskUserQuestion", "Skill", "LSP", "Diff"]


@dataclass
class TraceRequest:
    kind: str  # main | subagent | haiku
    body: dict  # an Anthropic Messages request
    restart_before: bool = False


class Text:
    """Consecutive slices of the corpus, so no two pieces of the trace repeat each other."""

    def __init__(self, seed: int):
        self.corpus = CORPUS.read_text(encoding="utf-8")
        self.position = random.Random(seed).randrange(len(self.corpus) // 2)

    def take(self, chars: int) -> str:
        if self.position + chars > len(self.corpus):
            self.position = 0
        piece = self.corpus[self.position:self.position + chars]
        self.position += chars
        return piece


def tools(text: Text, description_chars: int) -> list:
    return [{
        "name": name,
        "description": text.take(description_chars),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": text.take(160)},
                "pattern": {"type": "string", "description": text.take(120)},
                "limit": {"type": "integer", "description": text.take(80)},
            },
            "required": ["path"],
        },
    } for name in TOOL_NAMES]


def billing_header() -> dict:
    return {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.197; cch={secrets.token_hex(4)};"}


def system_blocks(text: str) -> list:
    return [billing_header(), {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


class Conversation:
    def __init__(self, name: str, system: str, text: Text, result_chars: int):
        self.name = name
        self.system = system
        self.text = text
        self.result_chars = result_chars
        self.messages = []
        self.turn = 0

    def next_request(self, tool_list, model: str, mid_history_system: bool = False) -> dict:
        if self.messages:
            # Last turn's answer was a tool call; its result comes back with the next question.
            call_id = f"toolu_{self.name}_{self.turn}"
            self.messages.append({"role": "assistant", "content": [
                {"type": "text", "text": self.text.take(120)},
                {"type": "tool_use", "id": call_id, "name": "Read", "input": {"path": f"src/{self.turn}.py"}},
            ]})
            self.messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call_id, "content": self.text.take(self.result_chars)},
                {"type": "text", "text": self.text.take(200)},
            ]})
        else:
            self.messages.append({"role": "user", "content": self.text.take(300)})
        if mid_history_system:
            self.messages.append({"role": "system", "content": "The user switched to plan mode. " + self.text.take(200)})
        self.turn += 1
        return {"model": model, "max_tokens": 1, "system": system_blocks(self.system), "tools": tool_list,
                "messages": [dict(m) for m in self.messages], "stream": False}


def claude_code_trace(seed=0, main_turns=20, subagents=4, subagent_turns=2, haiku_every=5,
                      tool_description_chars=1800, main_system_chars=14000, result_chars=1200) -> list:
    text = Text(seed)
    tool_list = tools(text, tool_description_chars)
    main = Conversation("main", text.take(main_system_chars), text, result_chars)
    subs = [Conversation(f"sub{i}", "You are a subagent. " + text.take(3000), text, result_chars)
            for i in range(subagents)]
    trace = []
    for turn in range(main_turns):
        trace.append(TraceRequest("main", main.next_request(tool_list, "claude-opus-4-6",
                                                            mid_history_system=turn == main_turns // 3)))
        for sub in subs:
            if sub.turn < subagent_turns and turn >= 1 and (turn - 1) % max(1, main_turns // subagent_turns) == 0:
                trace.append(TraceRequest("subagent", sub.next_request(tool_list, "claude-opus-4-6")))
        if haiku_every and turn % haiku_every == haiku_every - 1:
            trace.append(TraceRequest("haiku", {
                "model": "claude-haiku-4-5", "max_tokens": 1, "stream": False,
                "system": system_blocks("Summarize this coding conversation in a title of five words."),
                "messages": [{"role": "user", "content": text.take(400)}]}))
    trace[len(trace) // 2].restart_before = True
    return trace


def stable_conversation(seed=1, turns=6, **sizes) -> list:
    """One conversation, no nonce: the case where a single-slot cache is already at the limit."""
    trace = claude_code_trace(seed=seed, main_turns=turns, subagents=0, haiku_every=0, **sizes)
    for request in trace:
        request.restart_before = False
        request.body["system"] = request.body["system"][1:]
    return trace
