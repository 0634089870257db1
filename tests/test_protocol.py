"""The protocol stays exact whatever the model writes: scripted model output, through the API and the SDKs.

For each case: the exact block sequence and stop_reason, streamed (the
anthropic SDK's stream helper, a strict parser, must accept every event) and
not streamed alike; then the same through OpenAI chat completions.
"""

import json
import logging

import anthropic
import openai
import pytest

from tests.conftest import ScriptedEngine

TOOLS = [{"name": "Bash", "description": "Run a command", "input_schema": {
             "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
         {"name": "ReadFile", "description": "Read a file", "input_schema": {
             "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]
THINK = ["<think>", "\nLet me", " see.", "\n</think>", "\n\n"]
CALL = ['<tool_call>\n{"name": "Bash", ', '"arguments": {"command": "ls"}}', "\n</tool_call>"]
READ = ['<tool_call>\n{"name": "ReadFile", "arguments": {"path": "setup.cfg"}}\n</tool_call>']
GARBLED = ['<tool_call>\n{"name": "Read", "arguments": ', '"arguments": "docs"}}', "\n</tool_call>"]
UNOFFERED = ['<tool_call>\n{"name": "Deploy", "arguments": {"target": "prod"}}\n</tool_call>']
CUT = ['<tool_call>\n{"name": "Bash", ', '"arguments": {"command": "ls", "description": "Li', 'st"}}', "\n</tool_call>"]
CODE = ["Here:\n```python\n", 'print(text.split("</think>")[-1])\n', "```"]

CASES = {
    # name: (model output, extra request fields, block types, stop_reason, a check on the blocks)
    "a tool call at the end": (THINK + ["I will list them.\n"] + CALL, {},
                               ["thinking", "text", "tool_use"], "tool_use",
                               lambda b: b[2]["name"] == "Bash" and b[2]["input"] == {"command": "ls"}),
    "a tool call then more text": (CALL + ["\nThe files are listed above.", " Anything else?"], {},
                                   ["tool_use"], "tool_use", lambda b: b[0]["input"] == {"command": "ls"}),
    "two tool calls": (CALL + ["\n"] + READ, {}, ["tool_use", "tool_use"], "tool_use",
                       lambda b: [x["name"] for x in b] == ["Bash", "ReadFile"] and b[0]["id"] != b[1]["id"]),
    "an unparseable call": (["Reading.\n"] + GARBLED, {}, ["text"], "end_turn",
                            lambda b: b[0]["text"] == "Reading.\n" + "".join(GARBLED)),
    "a call to a tool not offered": (UNOFFERED, {}, ["tool_use"], "tool_use",
                                     lambda b: b[0]["name"] == "Deploy" and b[0]["input"] == {"target": "prod"}),
    "a duplicate </think>": (THINK + ["</think>", "\n\nHello."], {}, ["thinking", "text"], "end_turn",
                             lambda b: b[1]["text"] == "Hello."),
    "a </think> in code the user asked for": (THINK + CODE, {}, ["thinking", "text"], "end_turn",
                                              lambda b: "</think>" in b[1]["text"] and b[1]["text"].endswith("```")),
    "display omitted": (THINK + ["Hello."], {"thinking": {"type": "adaptive", "display": "omitted"}},
                        ["thinking", "text"], "end_turn",
                        lambda b: b[0]["thinking"] == "" and b[0]["signature"] and b[1]["text"] == "Hello."),
    "the budget closing thinking": (["<think>", "\nhm"] + [" hm"] * 20, {"thinking": {
                                        "type": "enabled", "budget_tokens": 4}},
                                    ["thinking", "text"], "end_turn", lambda b: b[1]["text"] == "Fine."),
    "max_tokens": (["one ", "two ", "three ", "four"], {"max_tokens": 2}, ["text"], "max_tokens",
                   lambda b: b[0]["text"] == "one two "),
    # Anthropic's shape: the block as far as it went, and max_tokens (a client must not run it).
    "a call cut off by max_tokens": (CUT, {"max_tokens": 2, "thinking": {"type": "disabled"}}, ["tool_use"],
                                     "max_tokens", lambda b: b[0]["input"] == {"command": "ls"}),
    "a stop sequence": (["Yes.", " END", " more"], {"stop_sequences": [" END"]}, ["text"], "stop_sequence",
                        lambda b: b[0]["text"] == "Yes."),
}


def request(extra: dict) -> dict:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 200, "tools": TOOLS,
            "thinking": {"type": "enabled", "budget_tokens": 128},
            "messages": [{"role": "user", "content": "List the files."}]}
    return dict(body, **extra)


@pytest.fixture
def sdk(client):
    return anthropic.Anthropic(base_url=str(client.base_url), api_key="unused", http_client=client, max_retries=0)


@pytest.mark.parametrize("case", CASES)
def test_the_message_is_exact_streamed_and_not(case, sdk, running_worker):
    pieces, extra, kinds, stop_reason, check = CASES[case]
    running_worker(ScriptedEngine(pieces, then=["Fine."]))
    with sdk.messages.stream(**request(extra)) as stream:
        events = [event.type for event in stream]
        streamed = stream.get_final_message()
    created = sdk.messages.create(**request(extra))
    for message in (streamed, created):
        blocks = [block.model_dump(exclude_none=True) for block in message.content]
        assert [b["type"] for b in blocks] == kinds, (case, blocks)
        assert message.stop_reason == stop_reason, case
        assert check(blocks), (case, blocks)
        assert message.stop_sequence == (" END" if stop_reason == "stop_sequence" else None)
    assert events[-1] == "message_stop"
    if case == "display omitted":
        assert "thinking" not in events, "no thinking_delta is sent when display is omitted"


@pytest.mark.parametrize("case, finish_reason", [("two tool calls", "tool_calls"), ("an unparseable call", "stop"),
                                                 ("max_tokens", "length"), ("a tool call then more text", "tool_calls"),
                                                 ("a call cut off by max_tokens", "length")])
def test_openai_finish_reasons_follow_the_same_rules(case, finish_reason, client, running_worker):
    pieces, extra, _, _, _ = CASES[case]
    running_worker(ScriptedEngine(pieces))
    sdk = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client, max_retries=0)
    tools = [{"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}} for t in TOOLS]
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "List the files."}], "tools": tools,
            "max_tokens": extra.get("max_tokens", 200)}
    chunks = list(sdk.chat.completions.create(stream=True, **body))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish_reason
    if finish_reason == "tool_calls":  # the SDK's stream helper assembles the calls
        with sdk.chat.completions.stream(**body) as stream:
            for _ in stream:
                pass
            assert stream.get_final_completion().choices[0].finish_reason == finish_reason
    created = sdk.chat.completions.create(**body)
    assert created.choices[0].finish_reason == finish_reason
    if finish_reason == "tool_calls" or case == "a call cut off by max_tokens":
        assert all(json.loads(call.function.arguments) for call in created.choices[0].message.tool_calls)


def test_a_call_to_a_tool_not_offered_and_text_after_it_are_logged_with_the_job(sdk, running_worker, caplog):
    caplog.set_level(logging.INFO, logger="workers.jobs")
    running_worker(ScriptedEngine(UNOFFERED + ["\nDone."]))
    message = sdk.messages.create(**request({}))
    job_id = message.id.removeprefix("msg_")
    assert f"job {job_id}: the model called 'Deploy', a tool the request did not offer" in caplog.text
    assert f"job {job_id}: the turn ends at its tool call" in caplog.text


def test_a_garbled_call_is_logged_with_the_job(sdk, running_worker, caplog):
    running_worker(ScriptedEngine(GARBLED))
    job_id = sdk.messages.create(**request({})).id.removeprefix("msg_")
    assert f"job {job_id}: 1 tool call(s) did not parse and were returned as text" in caplog.text
