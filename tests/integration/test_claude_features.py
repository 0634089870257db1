"""Thinking and tool use from the real (trained) tiny model, through the anthropic SDK."""

import sys

import anthropic
import pytest

from tests.integration.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import tiny_model_data

pytestmark = pytest.mark.integration

MAIN = "claude-sonnet-4-6"
GREEDY = {"temperature": 0}  # the SDK no longer takes temperature as an argument; Hearth still honours it
# The tool schemas the tiny model was trained with, in Anthropic's shape: a 2-layer
# model cannot generalize to arbitrary tools, and the plumbing is what is under test.
TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
          "input_schema": t["function"]["parameters"]} for t in tiny_model_data.CLAUDE_CODE_TOOLS]


@pytest.fixture
def sdk(hearth):
    return anthropic.Anthropic(base_url=hearth.base_url, api_key="unused", max_retries=0, timeout=120)


def test_thinking_then_text_through_the_stream_helper(sdk):
    with sdk.messages.stream(model=MAIN, max_tokens=200, extra_body=GREEDY,
                             thinking={"type": "enabled", "budget_tokens": 100},
                             messages=[{"role": "user", "content": "hello"}]) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.strip() and message.content[0].signature
    assert message.content[1].text.strip()
    assert "thinking" in kinds and "signature" in kinds and "text" in kinds
    assert message.stop_reason == "end_turn"


def test_a_request_to_list_files_becomes_a_tool_call(sdk):
    with sdk.messages.stream(model=MAIN, max_tokens=200, extra_body=GREEDY,
                             thinking={"type": "adaptive"}, tools=TOOLS,
                             messages=[{"role": "user", "content": "List the files in src."}]) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    call = message.content[1]
    assert call.id.startswith("toolu_") and call.name in {"LS", "Bash", "Read"} and isinstance(call.input, dict)
    assert message.stop_reason == "tool_use"


def test_tool_results_are_rendered_and_answered(sdk):
    history = [
        {"role": "user", "content": "List the files in src."},
        # As Claude Code does, the earlier turn comes back with its thinking block.
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "The user wants me to use the LS tool. I will call it.", "signature": "s"},
            {"type": "tool_use", "id": "toolu_1", "name": "LS", "input": {"path": "src"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "main.py\nREADME.md"}]},
    ]
    message = sdk.messages.create(model=MAIN, max_tokens=200, extra_body=GREEDY,
                             thinking={"type": "adaptive"}, tools=TOOLS,
                                  messages=history)
    assert message.content[-1].type == "text" and message.content[-1].text.strip()
    assert message.stop_reason == "end_turn"


def test_a_spent_thinking_budget_forces_an_answer(sdk):
    message = sdk.messages.create(model=MAIN, max_tokens=200, extra_body=GREEDY,
                             thinking={"type": "enabled", "budget_tokens": 3},
                                  messages=[{"role": "user", "content": "What is recursion?"}])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert len(message.content[0].thinking.split()) <= 4
    assert message.content[1].text.strip()


def test_stop_sequences_end_the_turn(sdk):
    message = sdk.messages.create(model=MAIN, max_tokens=200, extra_body=GREEDY,
                             stop_sequences=["help"],
                                  messages=[{"role": "user", "content": "hello"}])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "help"


def test_the_qwen3_coder_variant_calls_tools_in_xml(sdk):
    """Served under an alias (see conftest): no thinking, XML tool calls parsed with the tool schema."""
    with sdk.messages.stream(model="qwen3-coder", max_tokens=200, extra_body=GREEDY, tools=TOOLS,
                             messages=[{"role": "user", "content": "List the files in src."}]) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    assert message.model == "qwen3-coder"
    calls = [b for b in message.content if b.type == "tool_use"]
    assert calls and calls[0].name in {"LS", "Bash", "Read"} and isinstance(calls[0].input, dict) and calls[0].input
    assert message.stop_reason == "tool_use"
    assert "input_json" in events
    plain = sdk.messages.create(model="qwen3-coder", max_tokens=100, extra_body=GREEDY,
                                messages=[{"role": "user", "content": "hello"}])
    assert [b.type for b in plain.content] == ["text"] and plain.stop_reason == "end_turn"


def test_the_openai_sdk_accumulates_reasoning_text_and_tool_calls(hearth):
    import openai

    client = openai.OpenAI(base_url=hearth.base_url + "/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="hearth-tiny", stream=True, temperature=0,
                                                 messages=[{"role": "user", "content": "hello"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert text.strip() and reasoning.strip()
    openai_tools = [{"type": "function", "function": t["function"]} for t in tiny_model_data.CLAUDE_CODE_TOOLS]
    with client.chat.completions.stream(model="hearth-tiny", temperature=0, tools=openai_tools,
                                        messages=[{"role": "user", "content": "List the files in src."}]) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name in {"LS", "Bash", "Read"}


@pytest.mark.parametrize("thinking", [None, {"type": "enabled", "budget_tokens": 60}], ids=["no thinking", "thinking"])
def test_offered_no_tools_a_request_to_act_is_answered_in_text(sdk, thinking):
    """Greedy and unguarded, the tiny model answers "Run ls." with a call even when no tool is offered."""
    extra = {"thinking": thinking} if thinking else {}
    for tools in ({}, {"tools": TOOLS, "tool_choice": {"type": "none"}}):
        body = dict(model=MAIN, max_tokens=200, extra_body=GREEDY, messages=[{"role": "user", "content": "Run ls."}],
                    **extra, **tools)
        with sdk.messages.stream(**body) as stream:
            streamed = stream.get_final_message()
        for message in (streamed, sdk.messages.create(**body)):
            assert [b.type for b in message.content] == (["thinking", "text"] if thinking else ["text"]), message
            assert "<tool_call>" not in message.content[-1].text and message.content[-1].text.strip()
            assert message.stop_reason == "end_turn"


def test_a_turn_with_tool_choice_none_reads_the_tools_from_the_prompt_cache(sdk):
    """The model sees the tools whatever tool_choice says, so the turn's prompt starts as the last one's."""
    turn = dict(model=MAIN, max_tokens=20, extra_body=GREEDY, tools=TOOLS,
                messages=[{"role": "user", "content": "What can you do with tool_choice none?"}])
    first = sdk.messages.create(**turn)
    none = sdk.messages.create(**turn, tool_choice={"type": "none"})
    assert [b.type for b in none.content] == ["text"] and none.stop_reason in ("end_turn", "max_tokens")
    prompt = first.usage.input_tokens + first.usage.cache_read_input_tokens
    assert none.usage.cache_read_input_tokens >= prompt - 8, (first.usage, none.usage)


def test_openai_tool_choice_none_is_answered_in_text(hearth):
    import openai

    client = openai.OpenAI(base_url=hearth.base_url + "/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "function": t["function"]} for t in tiny_model_data.CLAUDE_CODE_TOOLS]
    completion = client.chat.completions.create(model="hearth-tiny", temperature=0, tools=tools, tool_choice="none",
                                                messages=[{"role": "user", "content": "Run ls."}])
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content.strip() and "<tool_call>" not in choice.message.content


# Tools the tiny model never saw in training: only the worker's grammar makes its calls name them.
UNSEEN = [{"name": "fetch_page", "description": "Fetch a web page.", "input_schema": {
              "type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]}},
          {"name": "CompressFolder", "description": "Compress a folder.", "input_schema": {
              "type": "object", "properties": {"folder": {"type": "string"}, "level": {"type": "integer"}},
              "required": ["folder"]}}]


@pytest.mark.parametrize("thinking", [None, {"type": "enabled", "budget_tokens": 40}], ids=["no thinking", "thinking"])
def test_tool_choice_makes_even_a_greeting_call_the_tool_named(sdk, thinking):
    extra = {"thinking": thinking} if thinking else {}
    with sdk.messages.stream(model=MAIN, max_tokens=300, extra_body=GREEDY, tools=UNSEEN,
                             tool_choice={"type": "tool", "name": "CompressFolder"},
                             messages=[{"role": "user", "content": "hello"}], **extra) as stream:
        message = stream.get_final_message()
    kinds = [b.type for b in message.content]
    assert kinds == (["thinking", "tool_use"] if thinking else ["tool_use"]), message.content
    call = message.content[-1]
    assert call.name == "CompressFolder" and isinstance(call.input["folder"], str)
    assert set(call.input) <= {"folder", "level"}
    assert message.stop_reason == "tool_use"
    # `any`: one of the tools offered, whichever the model picks.
    anything = sdk.messages.create(model=MAIN, max_tokens=300, extra_body=GREEDY, tools=UNSEEN,
                                   tool_choice={"type": "any"}, messages=[{"role": "user", "content": "hello"}])
    assert anything.content[-1].type == "tool_use" and anything.content[-1].name in {"fetch_page", "CompressFolder"}
    assert anything.stop_reason == "tool_use"


def test_openai_tool_choice_required_and_named(hearth):
    import openai

    client = openai.OpenAI(base_url=hearth.base_url + "/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in UNSEEN]
    for choice, names in (("required", {"fetch_page", "CompressFolder"}),
                          ({"type": "function", "function": {"name": "fetch_page"}}, {"fetch_page"})):
        completion = client.chat.completions.create(model="hearth-tiny", temperature=0, tools=tools, tool_choice=choice,
                                                    messages=[{"role": "user", "content": "hello"}])
        message = completion.choices[0]
        assert message.finish_reason == "tool_calls", message
        assert message.message.tool_calls[0].function.name in names
