import json

import pytest

from hearth.contract import BLOCK_START, BLOCK_STOP, DELTA, Event
from hearth.message import MessageAssembler
from workers.stream_parser import BlockDelta, BlockStart, BlockStop, StreamParser

# The tools the calls below name, as the chat template gets them.
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
         for name in ("Bash", "LS", "Read", "Write")]


def assemble(pieces, cut_off=False, **options):
    """Feed pieces; return the assembled blocks, checking the event order as a client would."""
    parser = StreamParser(**{"tools": TOOLS, **options})
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish(cut_off=cut_off)
    assembler, open_index, seq = MessageAssembler(), None, 0
    for item in events:
        seq += 1
        if isinstance(item, BlockStart):
            assert open_index is None, "a block started before the previous one stopped"
            open_index = item.index
            assembler.apply(Event(seq, BLOCK_START, {"index": item.index, "block": item.block}))
        elif isinstance(item, BlockDelta):
            assert item.index == open_index
            assembler.apply(Event(seq, DELTA, {"index": item.index, "delta": item.delta}))
        else:
            assert isinstance(item, BlockStop) and item.index == open_index
            open_index = None
            assembler.apply(Event(seq, BLOCK_STOP, {"index": item.index}))
    assert open_index is None
    return assembler.blocks, parser


def split_at(text, cut):
    return [text[:cut], text[cut:]]


ANSWER = "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?"


@pytest.mark.parametrize("cut", range(len(ANSWER) + 1))
def test_think_tags_split_at_every_position(cut):
    blocks, _ = assemble(split_at(ANSWER, cut))
    assert [b["type"] for b in blocks] == ["thinking", "text"]
    assert blocks[0]["thinking"].strip() == "The user greets me."
    assert blocks[0]["signature"]
    assert blocks[1]["text"] == "Hello! How can I help?"


def test_one_character_at_a_time():
    blocks, _ = assemble(list(ANSWER))
    assert [b["type"] for b in blocks] == ["thinking", "text"]
    assert blocks[1]["text"] == "Hello! How can I help?"


def test_output_that_starts_inside_thinking():
    blocks, _ = assemble(["I should answer.", "\n</thi", "nk>\n\nYes."], in_thinking=True)
    assert blocks[0] == {"type": "thinking", "thinking": "I should answer.\n", "signature": "hearth-local"}
    assert blocks[1] == {"type": "text", "text": "Yes."}


def test_model_that_never_thinks():
    blocks, _ = assemble(["Just ", "an answer", " with a < sign"])
    assert blocks == [{"type": "text", "text": "Just an answer with a < sign"}]


def test_a_second_close_of_thinking_is_dropped():
    blocks, _ = assemble(["<think>\nHmm.\n</think>\n\n", "</think>\n\n", "Hello."])
    assert blocks[1:] == [{"type": "text", "text": "Hello."}]


def test_think_tags_in_the_answer_outside_code_are_the_models_markup():
    blocks, _ = assemble(["Use the ", "<think>", " tag", "</th", "ink> now"])
    assert blocks == [{"type": "text", "text": "Use the  tag now"}]


def test_a_tool_call_close_that_closes_no_call_is_dropped():
    blocks, parser = assemble(["Sure.", "\n</tool", "_call> Done", " and `</tool_call>` in code."])
    assert blocks == [{"type": "text", "text": "Sure.\n Done and `</tool_call>` in code."}]
    assert parser.tool_calls == 0 and parser.garbled_calls == 0 and not parser.ended


def test_thinking_disabled_drops_the_tags_the_model_writes_anyway():
    blocks, _ = assemble(["<think>x</think>y"], thinking_enabled=False)
    assert blocks == [{"type": "text", "text": "xy"}]


CODE = ('Here is a parser:\n```python\ndef strip(text):\n    return text.split("</think>")[-1]\n```\n'
        'It drops everything up to `</think>` and keeps `<tool_call>` too.')


@pytest.mark.parametrize("cut", range(len(CODE) + 1))
def test_tags_in_code_the_user_asked_for_come_through_split_anywhere(cut):
    blocks, parser = assemble(["<think>\nwrite it\n</think>\n\n"] + split_at(CODE, cut))
    assert blocks[1] == {"type": "text", "text": CODE}
    assert parser.tool_calls == 0 and not parser.ended


def test_code_ends_where_its_backticks_close():
    blocks, _ = assemble(["`a`</think> and ``b`` <think>c\n```\nx\n```</think>!"])
    assert blocks == [{"type": "text", "text": "`a` and ``b`` c\n```\nx\n```!"}]


def test_forced_close_of_thinking():
    parser = StreamParser(in_thinking=True)
    events = parser.feed("a long thought")
    events += parser.close_thinking()
    events += parser.feed("The answer.")
    events += parser.finish()
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["BlockStart", "BlockDelta", "BlockDelta", "BlockStop", "BlockStart", "BlockDelta", "BlockStop"]
    assert events[-2].delta == {"type": "text_delta", "text": "The answer."}


CALLS = (
    '<think>\nI will call it.\n</think>\n\n<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call>'
    '\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "a.py"}}\n</tool_call>'
)


@pytest.mark.parametrize("cut", range(0, len(CALLS) + 1, 3))
def test_json_tool_calls_split_anywhere(cut):
    blocks, parser = assemble(split_at(CALLS, cut))
    assert [b["type"] for b in blocks] == ["thinking", "tool_use", "tool_use"]
    assert blocks[1]["name"] == "Bash" and blocks[1]["input"] == {"command": "ls"}
    assert blocks[2]["name"] == "Read" and blocks[2]["input"] == {"file_path": "a.py"}
    assert blocks[1]["id"].startswith("toolu_") and blocks[1]["id"] != blocks[2]["id"]
    assert parser.tool_calls == 2


def test_text_before_a_tool_call():
    blocks, _ = assemble(['Let me look.\n<tool_call>{"name": "LS", "arguments": "{\\"path\\": \\".\\"}"}</tool_call>'])
    assert blocks[0] == {"type": "text", "text": "Let me look.\n"}
    assert blocks[1]["input"] == {"path": "."}


def test_an_unterminated_tool_call_is_kept_as_text():
    blocks, parser = assemble(['<tool_call>{"name": "Bash", "argu'])
    assert blocks == [{"type": "text", "text": '<tool_call>{"name": "Bash", "argu'}]
    assert parser.tool_calls == 0


GARBLED = '<tool_call>\n{"name": "Read", "arguments": "arguments": "docs"}}\n</tool_call>'


@pytest.mark.parametrize("cut", range(0, len(GARBLED) + 1, 4))
def test_a_call_that_does_not_parse_comes_back_as_text_exactly_as_written(cut):
    blocks, parser = assemble(["Let me read it.\n"] + split_at(GARBLED, cut))
    assert blocks == [{"type": "text", "text": "Let me read it.\n" + GARBLED}]
    assert parser.garbled_calls == 1 and parser.tool_calls == 0


READ_CALL = '<tool_call>\n{"name": "Read", "arguments": {"file_path": "a.py"}}\n</tool_call>'


@pytest.mark.parametrize("tools", [None, []], ids=["none", "empty"])
@pytest.mark.parametrize("cut", [0, 20, len(READ_CALL) - 3])
def test_offered_no_tools_a_call_comes_back_as_text(tools, cut):
    """A client that offered no tools has nothing to run a tool_use with."""
    blocks, parser = assemble(["Let me read it.\n"] + split_at(READ_CALL, cut), tools=tools)
    assert blocks == [{"type": "text", "text": "Let me read it.\n" + READ_CALL}]
    assert parser.garbled_calls == 1 and parser.tool_calls == 0
    cut_off = READ_CALL[:READ_CALL.index("a.py")]
    blocks, parser = assemble([cut_off], cut_off=True, tools=tools)
    assert blocks == [{"type": "text", "text": cut_off}] and not parser.cut_call


def test_a_call_to_another_tool_than_those_offered_is_still_a_call():
    """The client answers it with an error ("No such tool available"), and the model can try again."""
    blocks, parser = assemble(['<tool_call>\n{"name": "Deploy", "arguments": {}}\n</tool_call>'], tools=TOOLS[:1])
    assert blocks[0]["type"] == "tool_use" and blocks[0]["name"] == "Deploy" and parser.tool_calls == 1


def test_a_call_without_arguments_object_is_not_a_call():
    blocks, parser = assemble(['<tool_call>{"name": "Bash", "arguments": ["ls"]}</tool_call>'])
    assert blocks[0]["type"] == "text" and parser.garbled_calls == 1


def test_input_json_deltas_join_into_the_arguments():
    parser = StreamParser(tools=TOOLS)
    events = parser.feed('<tool_call>{"name": "Bash", "arguments": {"command": "echo \\"hi\\""}}</tool_call>')
    deltas = "".join(e.delta["partial_json"] for e in events if isinstance(e, BlockDelta))
    assert json.loads(deltas) == {"command": 'echo "hi"'}


def test_a_json_call_opens_its_block_only_once_it_parses():
    parser = StreamParser(tools=TOOLS)
    events = []
    for piece in ['<tool_call>\n{"name": "Write", "arguments": {"path": "a.py", ', '"content": "print(1)\\n', 'print(2)"', "}}"]:
        events += parser.feed(piece)
    assert events == [], "held: a garbled end would leave the client a tool_use it cannot parse"
    events += parser.feed("\n</tool_call>")
    assert isinstance(events[0], BlockStart) and events[0].block["name"] == "Write"
    arguments = "".join(e.delta["partial_json"] for e in events if isinstance(e, BlockDelta))
    assert json.loads(arguments) == {"path": "a.py", "content": "print(1)\nprint(2)"}
    assert isinstance(events[-1], BlockStop)


@pytest.mark.parametrize("after", ["\nDone! I listed them.", "\n</think>Now the answer.", " ok"])
def test_the_turn_ends_at_a_complete_call_whatever_the_model_writes_after_it(after):
    call = '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call>'
    blocks, parser = assemble(["I will look.\n", call, after, " and more"])
    assert [b["type"] for b in blocks] == ["text", "tool_use"]
    assert parser.ended and parser.dropped > 0 and parser.tool_calls == 1


def test_whitespace_and_further_calls_after_a_call_keep_the_turn_going():
    blocks, parser = assemble([CALLS, "\n\n"])
    assert [b["type"] for b in blocks] == ["thinking", "tool_use", "tool_use"] and not parser.ended


XML_TOOLS = [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object", "properties": {
    "file_path": {"type": "string"}, "limit": {"type": "integer"}, "recursive": {"type": "boolean"}}}}}]
XML_CALL = ("<think>\nreading\n</think>\n\n<tool_call>\n<function=Read>\n<parameter=file_path>\nsrc/a.py\n</parameter>\n"
            "<parameter=limit>\n20\n</parameter>\n<parameter=recursive>\ntrue\n</parameter>\n</function>\n</tool_call>")


@pytest.mark.parametrize("cut", range(0, len(XML_CALL) + 1, 5))
def test_qwen3_coder_xml_calls_split_anywhere_with_schema_types(cut):
    blocks, parser = assemble(split_at(XML_CALL, cut), tool_format="xml", tools=XML_TOOLS)
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"]
    assert blocks[1]["name"] == "Read"
    assert blocks[1]["input"] == {"file_path": "src/a.py", "limit": 20, "recursive": True}
    assert parser.tool_calls == 1


@pytest.mark.parametrize("cut_off", [False, True])
def test_offered_no_tools_an_xml_call_never_opens_a_block(cut_off):
    call = XML_CALL[:XML_CALL.index("</function>")] if cut_off else XML_CALL
    blocks, parser = assemble([call], tool_format="xml", tools=None, cut_off=cut_off)
    assert [b["type"] for b in blocks] == ["thinking", "text"]
    assert blocks[1]["text"] == call[call.index("<tool_call>"):]
    assert parser.garbled_calls == 1 and parser.tool_calls == 0 and not parser.cut_call


def test_xml_parameters_stream_one_by_one():
    parser = StreamParser(tool_format="xml", tools=XML_TOOLS)
    events = parser.feed("<tool_call>\n<function=Read>\n<parameter=file_path>\nsrc/a.py\n</parameter>\n")
    partial = [e.delta["partial_json"] for e in events if isinstance(e, BlockDelta)]
    assert partial == ['{"file_path": "src/a.py"']
    events += parser.feed("</function>\n</tool_call>")
    assert json.loads("".join(e.delta["partial_json"] for e in events if isinstance(e, BlockDelta))) == {
        "file_path": "src/a.py"}


def test_a_json_call_the_model_left_unfinished_comes_back_as_text():
    unfinished = '<tool_call>{"name": "Bash", "arguments": {"command": "ls -'
    blocks, parser = assemble([unfinished])
    assert blocks == [{"type": "text", "text": unfinished}] and parser.tool_calls == 0 and not parser.cut_call


def streamed_arguments(events) -> str:
    return "".join(e.delta["partial_json"] for e in events if isinstance(e, BlockDelta)
                   and e.delta["type"] == "input_json_delta")


def test_a_json_call_cut_off_by_a_token_cap_streams_its_arguments_as_written_and_unclosed():
    """Anthropic's shape for a tool_use cut by max_tokens: Claude Code does not run such a call."""
    parser = StreamParser(tools=TOOLS)
    events = parser.feed("I will look.\n") + parser.feed('<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -')
    events += parser.feed('l", "timeout": 5, "description": "List fi') + parser.finish(cut_off=True)
    assert streamed_arguments(events) == '{"command": "ls -l", "timeout": 5, "description": "List fi'
    blocks, parser = assemble(["I will look.\n", '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -',
                               'l", "timeout": 5, "description": "List fi'], cut_off=True)
    assert blocks[0] == {"type": "text", "text": "I will look.\n"}
    # Its input, as the anthropic SDK reads the stream: the values that were whole.
    assert blocks[1]["type"] == "tool_use" and blocks[1]["name"] == "Bash"
    assert blocks[1]["input"] == {"command": "ls -l", "timeout": 5}
    assert parser.cut_call and parser.tool_calls == 0 and parser.garbled_calls == 0


CUT_CALL = '<tool_call>\n{"name": "Write", "arguments": {"file_path": "a.py", "content": "x = [1, 2]\\n", "lines": 3}}'
NAME_END, ARGUMENTS_AT = CUT_CALL.index('"Write"') + len('"Write"'), CUT_CALL.index('{"file_path"')


@pytest.mark.parametrize("cut", range(len("<tool_call>"), len(CUT_CALL) + 1))
def test_a_json_call_cut_anywhere_is_text_until_its_name_is_whole_then_a_tool_use_of_what_was_written(cut):
    parser = StreamParser(tools=TOOLS)
    written = CUT_CALL[:cut]
    events = parser.feed(written[:cut // 2]) + parser.feed(written[cut // 2:]) + parser.finish(cut_off=True)
    if cut < NAME_END:
        assert [e.delta["text"] for e in events if isinstance(e, BlockDelta)] == [written]
        assert not parser.cut_call and parser.garbled_calls == 1
        return
    assert [e.block["name"] for e in events if isinstance(e, BlockStart)] == ["Write"]
    whole = json.loads(CUT_CALL[len("<tool_call>"):])["arguments"]
    raw = streamed_arguments(events)
    if cut == len(CUT_CALL):
        # Cut only of its `</tool_call>`: a whole call, run as any other (stop_reason tool_use).
        assert raw == json.dumps(whole) and parser.tool_calls == 1 and not parser.cut_call
    else:
        # Unclosed (even when nothing of the arguments was written: "{"), so that no client runs it.
        assert raw == (written[ARGUMENTS_AT:] or "{") and parser.cut_call and parser.tool_calls == 0
    blocks, _ = assemble(split_at(written, cut // 2), cut_off=True)
    assert blocks[0]["input"] == {key: whole[key] for key in list(whole)[:len(blocks[0]["input"])]}


def test_an_xml_call_cut_off_closes_with_the_parameters_it_has():
    cut = ("<tool_call>\n<function=Read>\n<parameter=file_path>\nsrc/a.py\n</parameter>\n"
           "<parameter=limit>\n2")
    blocks, parser = assemble([cut], cut_off=True, tool_format="xml", tools=XML_TOOLS)
    assert blocks[0]["type"] == "tool_use" and blocks[0]["input"] == {"file_path": "src/a.py"}
    assert parser.cut_call and parser.tool_calls == 0
    parser = StreamParser(tool_format="xml", tools=XML_TOOLS)
    events = parser.feed("<tool_call>\n<function=Read>\n<parameter=file_path>\nsrc/a.py\n</parameter>\n"
                         "<parameter=limit>\n2") + parser.finish(cut_off=True)
    assert streamed_arguments(events) == '{"file_path": "src/a.py"', "unclosed: a client must not run it"


def test_an_xml_call_cut_off_only_of_its_closing_tag_is_a_whole_call():
    whole = XML_CALL[:XML_CALL.index("</tool_call>")]
    blocks, parser = assemble([whole], cut_off=True, tool_format="xml", tools=XML_TOOLS)
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"]
    assert blocks[1]["input"] == {"file_path": "src/a.py", "limit": 20, "recursive": True}
    assert parser.tool_calls == 1 and not parser.cut_call


def test_an_xml_call_the_model_left_unfinished_closes_with_the_parameters_it_has():
    blocks, parser = assemble(["<tool_call>\n<function=Read>\n<parameter=file_path>\nsrc/a.py\n</parameter>\n"],
                              tool_format="xml", tools=XML_TOOLS)
    assert blocks[0]["input"] == {"file_path": "src/a.py"} and parser.tool_calls == 1 and not parser.cut_call
