"""The grammar a tool call is held to (workers/tool_grammar.py), checked by llguidance on the bundled tokenizer."""

import json
from pathlib import Path

import llguidance
import llguidance.hf
import pytest
from transformers import AutoTokenizer

from hearth.settings import BUNDLED_MODEL
from workers.tool_grammar import call_body_grammar

BASH = {"type": "function", "function": {"name": "Bash", "description": "Run a command.", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
    "required": ["command"]}}}
# As Claude Code sends it: a draft-07 schema, closed, with an enum and an integer.
GREP = {"type": "function", "function": {"name": "Grep", "description": "Search files.", "parameters": {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
    "properties": {"pattern": {"type": "string"}, "output_mode": {"type": "string", "enum": ["content", "count"]},
                   "head_limit": {"type": "integer"}, "path": {"type": "string", "format": "uri"}},
    "required": ["pattern"]}}}
TOOLS = [BASH, GREP]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def guidance(tokenizer):
    return llguidance.hf.from_tokenizer(tokenizer)


def accepts(tokenizer, guidance, tool_format: str, body: str, tools=TOOLS) -> bool:
    """Whether the whole body, tokenized as the model would write it, is a complete call under the grammar."""
    close = f"<[{tokenizer.convert_tokens_to_ids('</tool_call>')}]>"
    matcher = llguidance.LLMatcher(guidance, llguidance.LLMatcher.grammar_from_lark(
        call_body_grammar(tools, tool_format, close)), log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(tokenizer.encode(body, add_special_tokens=False)) and matcher.is_stopped()


def json_body(name: str, arguments: dict) -> str:
    return f"\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.mark.parametrize("name, arguments", [
    ("Bash", {"command": "ls -la"}),
    ("Bash", {"command": "sleep 1", "timeout": 2.5}),
    ("Grep", {"pattern": "deprecated", "output_mode": "count", "head_limit": 20}),
    ("Grep", {"pattern": "a \"quoted\" \\ word\nnext line"}),
])
def test_a_well_formed_call_to_an_offered_tool_is_accepted(tokenizer, guidance, name, arguments):
    assert accepts(tokenizer, guidance, "json", json_body(name, arguments))


@pytest.mark.parametrize("body", [
    json_body("Read", {"file_path": "a.py"}),  # a tool it was not offered
    json_body("Bash", {}),  # a required argument missing
    json_body("Bash", {"command": "ls", "cwd": "/tmp"}),  # an argument the tool does not declare
    json_body("Grep", {"pattern": "x", "output_mode": "lines"}),  # outside the enum
    json_body("Grep", {"pattern": "x", "head_limit": 2.5}),  # not an integer
    json_body("Bash", {"command": "ls", "timeout": 10 ** 16}),  # digits beyond any bound
    json_body("Bash", {"command": "ls", "timeout": 0.1234567}),
    '\n{"name": "Bash", "arguments": {"command": "ls"}\n</tool_call>',  # not closed
    '\n{"name": "Bash", "arguments": "{\\"command\\": \\"ls\\"}"}\n</tool_call>',  # arguments as a string
    '\n{"name": "Bash", "arguments": {"command": "ls"}}\n',  # no </tool_call>
])
def test_what_would_not_parse_or_name_an_offered_tool_is_refused(tokenizer, guidance, body):
    assert not accepts(tokenizer, guidance, "json", body)


def xml_body(name: str, parameters: dict) -> str:
    written = "".join(f"<parameter={key}>\n{value}\n</parameter>\n" for key, value in parameters.items())
    return f"\n<function={name}>\n{written}</function>\n</tool_call>"


def test_qwen3_coder_calls_are_held_to_the_offered_functions_and_their_parameters(tokenizer, guidance):
    assert accepts(tokenizer, guidance, "xml", xml_body("Bash", {"command": "ls -la\necho </param>"}))
    assert accepts(tokenizer, guidance, "xml", xml_body("Grep", {"pattern": "deprecated", "head_limit": 20}))
    assert not accepts(tokenizer, guidance, "xml", xml_body("Read", {"file_path": "a.py"}))
    assert not accepts(tokenizer, guidance, "xml", xml_body("Bash", {}))
    assert not accepts(tokenizer, guidance, "xml", xml_body("Bash", {"cwd": "/tmp"}))


def test_a_tool_without_parameters_takes_an_empty_object(tokenizer, guidance):
    ping = {"type": "function", "function": {"name": "Ping", "parameters": {"type": "object", "properties": {}}}}
    assert accepts(tokenizer, guidance, "json", json_body("Ping", {}), tools=[ping])
    assert accepts(tokenizer, guidance, "xml", xml_body("Ping", {}), tools=[ping])


def claude_code_tools() -> list:
    """Claude Code 2.1.332's own tools as it sent them (input schemas kept, descriptions dropped),
    in the chat-template shape the API makes of them (deferred tools left out)."""
    from api.anthropic_request import chat_tools

    return chat_tools(json.loads((Path(__file__).parent / "claude_code_tools.json").read_text()))


@pytest.mark.parametrize("tool_format", ["json", "xml"])
def test_claude_codes_own_tools_compile_and_its_usual_calls_pass(tokenizer, guidance, tool_format):
    tools = claude_code_tools()
    assert {"Bash", "Edit", "Read", "Write", "Agent"} <= {t["function"]["name"] for t in tools}
    calls = [("Bash", {"command": "ls -la", "description": "List the files"}),
             ("Read", {"file_path": "/repo/api/app.py", "limit": 200}),
             ("Edit", {"file_path": "/repo/a.py", "old_string": "x = 1", "new_string": "x = 2"}),
             ("Write", {"file_path": "/repo/notes.md", "content": "# Notes\n\nfirst line\n"}),
             ("Agent", {"description": "Find the parser", "prompt": "Where is the stream parser?"})]
    body = json_body if tool_format == "json" else xml_body
    for name, arguments in calls:
        assert accepts(tokenizer, guidance, tool_format, body(name, arguments), tools=tools), name
    assert not accepts(tokenizer, guidance, tool_format, body("Edit", {"file_path": "/repo/a.py"}), tools=tools)


def test_arguments_come_in_the_schemas_order(tokenizer, guidance):
    """llguidance holds an object's keys to the order its schema lists them (optional ones may be left out)."""
    assert accepts(tokenizer, guidance, "json", json_body("Grep", {"pattern": "x", "head_limit": 3}))
    assert not accepts(tokenizer, guidance, "json", json_body("Grep", {"head_limit": 3, "pattern": "x"}))


def test_a_coder_value_is_closed_the_templates_way(tokenizer, guidance):
    """Empty is "\\n</parameter>"; a value that starts "</parameter>" would be text, running on."""
    assert accepts(tokenizer, guidance, "xml", xml_body("Bash", {"command": ""}))
    slip = "\n<function=Bash>\n<parameter=command>\n</parameter>\n</function>\n</tool_call>"
    assert not accepts(tokenizer, guidance, "xml", slip)
