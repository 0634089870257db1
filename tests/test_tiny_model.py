"""The bundled model's manners, greedy, on requests its training never saw (scripts/evaluate_tiny_model.py).

The first ten minutes of a new user: a thinking-off answer is plain text, a
thinking-on answer thinks first, a plain question gets an answer and a
request to act gets a call to an offered tool.
"""

import json
from pathlib import Path
import re
import sys

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import build_tiny_model  # noqa: E402 - the scripts are not a package
import evaluate_tiny_model  # noqa: E402
import interpolate_weights  # noqa: E402
import long_prompts  # noqa: E402
import pretraining_corpus  # noqa: E402
import tiny_model_data  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    from workers.engine import Engine

    return Engine(str(evaluate_tiny_model.DEFAULT_MODEL), cache_bytes=1 << 26)


@pytest.fixture(scope="module")
def cases():
    return tiny_model_data.held_out_cases()


@pytest.fixture(scope="module", params=[True, False], ids=["thinking on", "thinking off"])
def answers(request, engine, cases):
    return request.param, evaluate_tiny_model.answer(engine, cases, thinking=request.param)


def test_the_held_out_set_is_held_out(cases):
    """No held-out request, tool name or required parameter occurs in the training conversations."""
    # With Claude Code-sized conversations too (build_tiny_model.py --long-share), their tools among them.
    training = build_tiny_model.training_conversations("qwen3", long_share=0.05)
    prompts = {m["content"] for example in training for m in example["messages"] if m["role"] == "user"}
    tools = [tool["function"] for example in training for tool in example["tools"] or []]
    names, parameters = {t["name"] for t in tools}, {p for t in tools for p in t["parameters"]["properties"]}
    assert not {case.prompt for case in cases} & prompts
    for tool in (tool["function"] for case in cases for tool in case.tools):
        assert tool["name"] not in names and not set(tool["parameters"]["required"]) & parameters
    assert sum(bool(case.expected_tool) for case in cases) == 40 and len(cases) == 60


def test_what_the_model_reads_leaves_out_what_held_out_requests_are_made_of(cases):
    """The docstrings it reads before its chat training (scripts/pretraining_corpus.py) keep no
    paragraph holding a held-out phrasing, compound tool name or parameter name, command or address;
    single ordinary words (a verb, a subject) stay, as a pretrained model has read them."""
    holds_held_out = pretraining_corpus.held_out_matcher()
    for case in cases:
        # "Kindly {verb} {value}." is the one phrasing of a single word: ordinary English, so it stays.
        assert holds_held_out(f"An example: {case.prompt} That is all.") or case.prompt.startswith("Kindly "), \
            case.prompt
        for tool in case.tools:
            name, required = tool["function"]["name"], tool["function"]["parameters"]["required"]
            if name.lower() not in {verb for verb, _, _ in tiny_model_data.HELD_OUT.actions}:
                assert holds_held_out(f"See {name} for details."), name
            for parameter in (p for p in required if "_" in p):  # "location" or "root" are ordinary words
                assert holds_held_out(f"The {parameter} argument."), parameter
    for command in ("cargo test", "docker ps", "go vet ./...", "npm run lint", "ruff check ."):
        assert holds_held_out(f"Run `{command}` first.")
    assert holds_held_out("Fetched from https://pypi.org/simple/rq today.")
    for ordinary in ("Return the tail of the list.", "Compress the data with zlib.",
                     "A semaphore manages an internal counter.", "The base directory of the build.",
                     "Check the security of the scheme during setup."):
        assert not holds_held_out(ordinary), ordinary


def test_claude_code_sized_prompts_keep_the_request_and_the_answer_and_hold_nothing_held_out(cases):
    """Long prompts (scripts/long_prompts.py): Claude Code's shape around the same request and answer,
    their filler free of held-out material, the held-out requests' filler apart from the training's."""
    training, held_out = long_prompts.filler(), long_prompts.filler(held_out=True)
    assert training and held_out and not set(training) & set(held_out)
    holds_held_out = pretraining_corpus.held_out_matcher()
    assert not any(holds_held_out(paragraph) for paragraph in training + held_out)

    def after_the_request(messages):
        return [m for m in messages if m["role"] != "system"][1:]

    short = tiny_model_data.chat_examples(seed=2, count=200)
    lengthened = [(s, long) for s, long in zip(short, long_prompts.lengthen_some(short, 0.5, seed=4)) if long != s]
    assert 60 < len(lengthened) < 140
    for example, long in lengthened:
        system, turns = long["messages"][:2], long["messages"][2:]
        assert [m["role"] for m in system] == ["system", "system"] and len(system[1]["content"]) > 800
        asked = next(m for m in example["messages"] if m["role"] == "user")["content"]
        assert turns[0]["role"] == "user" and turns[0]["content"].startswith("<system-reminder>")
        assert turns[0]["content"].endswith("</system-reminder>\n\n" + asked)
        assert after_the_request(long["messages"]) == after_the_request(example["messages"])  # the answer
        assert set(map(str, example["tools"] or [])) <= set(map(str, long["tools"]))
        assert len(long["tools"]) - len(example["tools"] or []) >= long_prompts.TOOL_COUNT[0]

    long_case = long_prompts.long_cases(cases[:1], seed=7)[0]
    assert long_case.messages()[0]["content"].endswith(cases[0].prompt) and long_case.system
    assert {t["function"]["name"] for t in cases[0].tools} < {t["function"]["name"] for t in long_case.tools}


def test_conversations_that_stop_at_a_call_can_go_on_to_its_result_and_a_reply_in_words():
    """build_tiny_model.py --result-share: after a call's result, the answer says what came back."""
    short = tiny_model_data.chat_examples(seed=2, count=300)
    stopping = [e for e in short if e["messages"][-1].get("tool_calls")]
    every = tiny_model_data.going_on_after_results(short, 0.5, seed=11)
    # Added, not put in their place: every conversation that stops at a call still teaches it.
    assert every[:len(short)] == short and 0.3 * len(stopping) < len(every) - len(short) < 0.7 * len(stopping)
    changed = [(next(b for b in stopping if b["messages"][:-1] == after["messages"][:-3]), after)
               for after in every[len(short):]]
    for before, after in changed:
        call, result, reply = after["messages"][-3:]
        assert call["tool_calls"] == before["messages"][-1]["tool_calls"] and result["role"] == "tool"
        assert reply["role"] == "assistant" and "tool_calls" not in reply and "Done: " in reply["content"]
        assert reply["content"].startswith("<think>") == before["thinking"]
    # A client sends back earlier thinking whatever this turn's mode: thinking off, some calls still carry it.
    thought = {(before["thinking"], after["messages"][-3]["content"].startswith("<think>")) for before, after in changed}
    assert thought == {(True, True), (False, True), (False, False)}


def test_some_training_questions_name_what_an_offered_tool_does_and_are_answered_in_words():
    """A question that names an offered tool's verb ("Why would I fetch a page?") still wants words:
    a call is for a value to act on, not for a verb."""
    nouns = "|".join(map(re.escape, set(tiny_model_data.KIND_NOUNS.values())))
    shapes = [re.compile(re.escape(t).replace(r"\{verb\}", r"(?P<verb>\w+)").replace(r"\{noun\}", f"(?:{nouns})"))
              for t in tiny_model_data.TOOL_QUESTIONS]
    found = 0
    for example in tiny_model_data.chat_examples(seed=2, count=500):
        prompt = next(m["content"] for m in example["messages"] if m["role"] == "user")
        asking = next((match for shape in shapes if (match := shape.fullmatch(prompt))), None)
        if not asking:
            continue
        verb = asking["verb"]
        offered = {t["function"]["name"]: t["function"]["description"] for t in example["tools"] or []}
        verbs = {tiny_model_data.CLAUDE_CODE_ACTIONS.get(name, (None,))[0] for name in offered}
        assert verb in verbs or any(verb.lower() in description.lower() for description in offered.values()), \
            (prompt, offered)
        answer = example["messages"][-1]
        assert answer["role"] == "assistant" and "tool_calls" not in answer and answer["content"].strip()
        found += 1
    assert found > 20


@pytest.fixture(scope="module", params=[True, False], ids=["thinking on", "thinking off"])
def after_results(request, engine, cases):
    histories = evaluate_tiny_model.after_a_result(cases)
    return histories, evaluate_tiny_model.answer(engine, histories, thinking=request.param)


def test_after_a_result_the_model_answers_in_words_rather_than_calling_again(after_results):
    """A client runs every call and sends its result back: a model that calls again may never end its turn."""
    histories, answers = after_results
    assert [m["role"] for m in histories[0].messages()] == ["user", "assistant", "tool"]
    assert {bool(h.messages()[1].get("reasoning_content")) for h in histories} == {True, False}
    figures = evaluate_tiny_model.after_result_figures(answers)
    assert figures["calls_again"] <= 0.05, figures
    assert figures["in_words"] >= 0.9, figures


def test_requests_to_act_become_good_calls_and_plain_questions_are_answered(answers):
    """What the model does on the held-out set, its calls held to their grammar as the worker
    holds them (the figures are printed by the script and recorded in BENCHMARKS.md)."""
    thinking, answers = answers
    figures = evaluate_tiny_model.figures(answers, thinking)
    assert figures["parsed_calls"] >= 0.85, figures  # the first weights: one in ten
    # Every call it makes names a tool it was offered, with the arguments that tool requires.
    assert figures["good_calls"] == figures["parsed_calls"], figures
    assert figures["questions_calling"] <= 0.10, figures


def test_a_share_comes_with_its_95_percent_interval():
    """Wilson's score interval, which the script prints beside good calls and questions calling."""
    interval = evaluate_tiny_model.interval
    # At the edges it has a closed form: none of n lies in [0, z²/(n + z²)].
    assert interval(0, 20) == (0.0, pytest.approx(1.96 ** 2 / (20 + 1.96 ** 2)))
    assert interval(20, 20) == (pytest.approx(20 / (20 + 1.96 ** 2)), 1.0)
    low, high = interval(35, 40)
    assert low < 35 / 40 < high
    assert interval(5, 40) == (pytest.approx(1 - high), pytest.approx(1 - low))
    # Twelve times the draws, the same share: about a third as wide.
    many_low, many_high = interval(35 * 12, 40 * 12)
    assert (many_high - many_low) == pytest.approx((high - low) / 12 ** 0.5, rel=0.15)
    assert many_low > low and many_high < high


def test_deep_in_a_claude_code_sized_prompt_the_model_leaves_its_thinking_and_answers(engine, cases):
    """Claude Code's prompts are thousands of tokens; weights trained only on short ones never
    left their thinking there (5% answered), and Claude Code shows a reply of thinking alone as nothing."""
    long = long_prompts.long_cases(cases[::4], seed=tiny_model_data.HELD_OUT_SEED)
    assert min(len(c.system) for c in long) > 800
    answers = evaluate_tiny_model.answer(engine, long, thinking=True)
    assert all(a.answered() for a in answers), [a.raw for a in answers if not a.answered()]


def test_thinking_off_answers_are_plain_and_thinking_on_answers_think_first(answers):
    thinking, answers = answers
    for answer in answers:
        kinds = [block["type"] for block in answer.blocks]
        assert not answer.markup_in_answer(), answer.raw
        if thinking:
            assert kinds[:1] == ["thinking"], answer.raw
        else:
            assert "thinking" not in kinds and kinds, answer.raw
    questions = [a for a in answers if not a.case.expected_tool and not a.calls()]
    assert all(a.blocks[-1]["type"] == "text" and a.blocks[-1]["text"].strip() for a in questions)


def test_a_good_call_names_an_offered_tool_and_carries_every_argument_it_requires(cases):
    case = next(c for c in cases if c.expected_tool)
    tool = next(t["function"] for t in case.tools if t["function"]["name"] == case.expected_tool)
    full = {name: "x" for name in tool["parameters"]["required"]}

    def judged(*blocks):
        return evaluate_tiny_model.Answer(case, list(blocks))

    def call(name, arguments):
        return {"type": "tool_use", "name": name, "input": arguments}

    assert judged(call(tool["name"], full)).good_call()
    assert judged(call(tool["name"], case.expected_arguments)).expected_call()
    assert not judged(call(tool["name"], dict(full, **{next(iter(full)): ""}))).good_call()
    assert not judged(call(tool["name"], {})).good_call()
    assert judged(call(tool["name"], dict(full, **{next(iter(full)): 1000}))).good_call()  # a number is a value
    assert not judged(call("Read", full)).good_call()  # a tool it was not offered
    assert not judged({"type": "text", "text": "<tool_call>{garbled"}).good_call()

    other = next(t["function"]["name"] for t in case.tools if t["function"]["name"] != case.expected_tool)
    renamed = {f"other_{name}": value for name, value in case.expected_arguments.items()}
    assert judged(call(other, renamed)).expected_values() and not judged(call(other, renamed)).expected_tool()
    assert judged(call(tool["name"], full)).expected_tool() and not judged(call(tool["name"], full)).expected_values()
    assert not judged(call(other, renamed)).expected_call()


def test_a_grown_model_answers_as_the_smaller_one_until_it_trains(tmp_path, monkeypatch):
    """`--init-from` a build with fewer layers adds layers that start as the identity."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load

    smaller = Path(evaluate_tiny_model.DEFAULT_MODEL)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (tmp_path / name).write_bytes((smaller / name).read_bytes())
    layers = build_tiny_model.MODEL_CONFIG["num_hidden_layers"] + 2
    monkeypatch.setitem(build_tiny_model.MODEL_CONFIG, "num_hidden_layers", layers)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=layers)))
    build_tiny_model.init_weights(tmp_path, init_from=smaller)

    (small_model, tokenizer), (grown_model, _) = load(str(smaller)), load(str(tmp_path))
    assert len(grown_model.model.layers) == layers
    prompt = mx.array(tokenizer.encode("Read the file src/app.py and tell me what it does."))[None]
    assert mx.allclose(grown_model(prompt), small_model(prompt), atol=1e-5).item()
    new_layer = dict(tree_flatten(grown_model.model.layers[-1].parameters()))
    assert mx.any(new_layer["self_attn.q_proj.weight"] != 0).item(), "the new layers train from random weights"


def test_weights_part_of_the_way_from_a_build_to_its_fine_tune():
    import mlx.core as mx

    start, tuned = {"w": mx.array([0.0, 2.0])}, {"w": mx.array([4.0, -2.0])}
    assert interpolate_weights.interpolate(start, tuned, 0.25)["w"].tolist() == [1.0, 1.0]
    assert interpolate_weights.interpolate(start, tuned, 1.0)["w"].tolist() == [4.0, -2.0]
    with pytest.raises(SystemExit, match="same weights"):
        interpolate_weights.interpolate(start, {"v": mx.array([1.0])}, 0.5)


def test_the_training_loss_unweighted_is_mlx_lms_and_weighting_moves_it():
    """The answer-window loss gathers only the answer's positions; with its decision tokens
    unweighted it must be mlx-lm's `default_loss` over the whole batch."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.tuner.trainer import default_loss

    model, tokenizer = load(str(evaluate_tiny_model.DEFAULT_MODEL))
    rows = [tokenizer.encode("Read src/app.py please.<|im_end|>\nThe file holds the app's routes.<|im_end|>"),
            tokenizer.encode("hi<|im_end|>\nHello! How can I help you today?<|im_end|>")]
    width = max(map(len, rows)) + 1  # mlx-lm's batches are one longer than their longest row
    batch = mx.array([row + [0] * (width - len(row)) for row in rows])
    # mlx-lm's [prompt length, whole length]: the loss counts the tokens after the prompt.
    lengths = mx.array([[8, len(rows[0])], [4, len(rows[1])]])
    expected, expected_tokens = default_loss(model, batch, lengths)
    loss, tokens = build_tiny_model.answer_window_loss(model, batch, lengths, decision_weight=1.0)
    assert tokens.item() == expected_tokens.item()
    assert abs(loss.item() - expected.item()) < 1e-4
    weighted, _ = build_tiny_model.answer_window_loss(model, batch, lengths, decision_weight=5.0)
    assert abs(weighted.item() - expected.item()) > 1e-3
