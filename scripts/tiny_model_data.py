"""Synthetic conversations that teach the bundled tiny model its manners.

The model is far too small to know anything; what it must learn is the shape
of a Qwen3 answer: think in `<think>` (or, with thinking off, answer after the
template's empty think block), answer briefly, end the turn with
`<|im_end|>`, and, when asked to act on a path, a command, an address or some
text, call one of the tools offered with the arguments its schema requires.

Tools vary per conversation (names in several styles, descriptions,
parameter names, optional parameters, order, Claude Code's own among them).
The words come from tiny_model_words.py, in two parts: TRAINING feeds the build, HELD_OUT only
`held_out_cases` (what scripts/evaluate_tiny_model.py measures): tool names,
parameter names, request phrasings, subjects and values the model never saw.

Everything here is deterministic for a given seed.
"""

from dataclasses import dataclass
import json
import random

from tiny_model_words import HELD_OUT, TRAINING

# Claude Code's own tools, as the integration tests offer them.
CLAUDE_CODE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "Bash",
            "description": "Executes a bash command in a persistent shell session and returns its output.",
            "parameters": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command to execute"},
                    "timeout": {"type": "number", "description": "Optional timeout in milliseconds"},
                },
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "Read",
            "description": "Reads a file from the local filesystem and returns its contents with line numbers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "The absolute path to the file to read"},
                    "limit": {"type": "integer", "description": "The number of lines to read"},
                },
                "required": ["file_path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "LS",
            "description": "Lists files and directories in a given path.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "The absolute path to the directory"}},
                "required": ["path"],
            },
        },
    },
]
# The verb a user asks each of them with, and the kind of value it takes.
CLAUDE_CODE_ACTIONS = {"Bash": ("run", "command"), "Read": ("read", "path"), "LS": ("list", "dir")}


NAME_STYLES = (
    lambda verb, noun: f"{verb}_{noun}",
    lambda verb, noun: verb[0].upper() + verb[1:] + noun[0].upper() + noun[1:],
    lambda verb, noun: verb + noun[0].upper() + noun[1:],
    lambda verb, noun: verb[0].upper() + verb[1:],
)
DESCRIPTIONS = (
    "{Verb}s a {noun}.", "Use this tool to {verb} a {noun}.", "{Verb} the given {noun} and return the result.",
    "A tool that can {verb} a {noun}. Results may be truncated.",
    "Usage notes: call this to {verb} a {noun}; prefer it over asking the user.",
)
OPTIONAL_PARAMETERS = (("limit", "integer"), ("timeout", "number"), ("verbose", "boolean"), ("encoding", "string"))
ANSWERS = (
    "{S} is a common idea in programming. It keeps code simple when used with care.",
    "In short, {s} helps you structure a program. Use it when it makes the code clearer.",
    "{S} is worth knowing well. Start small, test it, and read the documentation.",
    "Think of {s} as a tool: it solves one problem well and adds cost when overused.",
)
QUESTION_THOUGHTS = (
    "The user asks about {s}. I should answer briefly and clearly.",
    "This is a question about {s}. A short explanation is enough.",
    "The user wants to know about {s}. Keep the answer to a sentence or two.",
)
ACTION_THOUGHTS = (
    "The user asks me to act on something. I will call one of my tools.",
    "This is a request to act, not a question. I will call a tool.",
)
SYSTEM_PROMPTS = (None, None, "You are a helpful coding assistant.", "You are Hearth, a local assistant.",
                  "You are an agent. Use the tools when the user asks you to act.")


def _capitalized(text):
    return text[0].upper() + text[1:]


@dataclass
class Tool:
    schema: dict
    verb: str
    kind: str

    @property
    def name(self):
        return self.schema["function"]["name"]

    @property
    def required(self):
        return self.schema["function"]["parameters"]["required"]


def make_tool(rng, words, verb, noun, kind):
    """A tool schema for this action: its name, description and parameters drawn from `words`."""
    name = rng.choice(NAME_STYLES)(verb, noun)
    if rng.random() < 0.15:
        name = f"mcp__{rng.choice(words.mcp_servers)}__{verb}_{noun}"
    value_kinds = {"pair_text_path": ("text", "path"), "pair_path_path": ("source", "destination")}.get(kind, (kind,))
    required = []
    for value_kind in value_kinds:
        choices = [p for p in words.parameters[value_kind] if p not in required]
        required.append(rng.choice(choices))
    properties = {p: {"type": "string", "description": f"The {p.replace('_', ' ')}"} for p in required}
    for extra, kind_of in rng.sample(OPTIONAL_PARAMETERS, rng.randrange(0, 3)):
        properties[extra] = {"type": kind_of, "description": f"Optional {extra}"}
    description = rng.choice(DESCRIPTIONS).format(verb=verb, Verb=_capitalized(verb), noun=noun)
    schema = {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}
    return Tool(schema, verb, kind)


def _value(rng, words, kind):
    if kind == "pair_text_path":
        return words.values["text"](rng), words.values["path"](rng)
    if kind == "pair_path_path":
        return words.values["path"](rng), words.values["path"](rng)
    return (words.values[kind](rng),)


def offered_tools(rng, words, count, include_claude_code=False):
    """`count` tools for distinct actions, in any order; Claude Code's own among them now and then."""
    tools = []
    if include_claude_code:
        for schema in rng.sample(CLAUDE_CODE_TOOLS, rng.randrange(1, 4)):
            verb, kind = CLAUDE_CODE_ACTIONS[schema["function"]["name"]]
            tools.append(Tool(schema, verb, kind))
    verbs = {tool.verb for tool in tools}
    actions = rng.sample(words.actions, len(words.actions))
    while len(tools) < count:
        verb, noun, kind = actions.pop()
        if verb not in verbs:
            verbs.add(verb)
            tools.append(make_tool(rng, words, verb, noun, kind))
    rng.shuffle(tools)
    return tools


def action_request(rng, words, tool):
    """What a user says to have `tool` used, and the arguments the call should carry."""
    values = _value(rng, words, tool.kind)
    if len(values) == 2:
        text = rng.choice(words.pair_requests).format(verb=tool.verb, Verb=_capitalized(tool.verb),
                                                      first=values[0], second=values[1])
    else:
        template = rng.choice(words.requests)
        text = template.format(verb=tool.verb, Verb=_capitalized(tool.verb), value=values[0])
    return text, {name: value.strip('"') for name, value in zip(tool.required, values)}


def question(rng, words):
    """A plain question (or a greeting) and the short answer it gets."""
    if rng.random() < 0.2:
        return rng.choice(words.greetings), "The user greets me. I should greet them back.", \
            "Hello! How can I help you today?"
    subject = rng.choice(words.subjects)
    return (rng.choice(words.questions).format(s=subject), rng.choice(QUESTION_THOUGHTS).format(s=subject),
            rng.choice(ANSWERS).format(s=subject, S=_capitalized(subject)))


# Questions about what an offered tool does: they name its verb, and still want words, not a call.
TOOL_QUESTIONS = (
    "What does it mean to {verb} a {noun}?", "Why would I {verb} a {noun}?", "Is it safe to {verb} a {noun}?",
    "How do people usually {verb} a {noun}?", "When should one {verb} a {noun}?",
    "Is it slow to {verb} a {noun}?", "What happens when you {verb} a {noun}?", "Can you explain how to {verb} a {noun}?",
)
# What each kind of value is called in a question about the tool that takes it.
KIND_NOUNS = {"path": "file", "dir": "folder", "command": "command", "url": "web page", "query": "search",
              "text": "note", "pair_text_path": "note", "pair_path_path": "file"}


def question_about_a_tool(rng, tool):
    """A plain question about what `tool` does, and the short answer it gets."""
    subject = f"how to {tool.verb} a {KIND_NOUNS[tool.kind]}"
    prompt = rng.choice(TOOL_QUESTIONS).format(verb=tool.verb, noun=KIND_NOUNS[tool.kind])
    return (prompt, rng.choice(QUESTION_THOUGHTS).format(s=subject),
            rng.choice(ANSWERS).format(s=subject, S=_capitalized(subject)))


def _leading_system_turns(system, tools):
    """As Hearth renders them (workers/engine.py): with tools, an empty system turn leads, for the tools."""
    if not system:
        return []
    if tools:
        return [{"role": "system", "content": ""}, {"role": "system", "content": system}]
    return [{"role": "system", "content": system}]


def _with_thinking(thinking, thought, text=""):
    return f"<think>\n{thought}\n</think>\n\n{text}" if thinking else text


def chat_example(rng, variant="qwen3"):
    """One training conversation in the Hugging Face chat format, plus whether it thinks.

    The qwen3 variant thinks in half its conversations (the other half render,
    as Qwen3 does with thinking off, an empty think block); the coder variant
    never thinks.
    """
    thinking = variant == "qwen3" and rng.random() < 0.5
    system = rng.choice(SYSTEM_PROMPTS)
    roll = rng.random()
    tools = offered_tools(rng, TRAINING, rng.randrange(1, 5), include_claude_code=rng.random() < 0.3)
    if roll < 0.45:
        schemas = [t.schema for t in tools] if rng.random() < 0.7 else None
        if schemas and rng.random() < 0.3:
            prompt, thought, answer = question_about_a_tool(rng, rng.choice(tools))
        else:
            prompt, thought, answer = question(rng, TRAINING)
        messages = _leading_system_turns(system, schemas) + [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": _with_thinking(thinking, thought, answer)}]
        return {"messages": messages, "tools": schemas, "thinking": thinking}

    messages = _leading_system_turns(system, tools)
    tool = rng.choice(tools)
    prompt, arguments = action_request(rng, TRAINING, tool)
    # The thought names neither tool nor verb: a model this size cannot copy an unfamiliar
    # word out of the request or the schemas, and a thought that tries wanders off.
    thought = rng.choice(ACTION_THOUGHTS)
    call = {"type": "function", "function": {"name": tool.name, "arguments": arguments}}
    messages += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": _with_thinking(thinking, thought), "tool_calls": [call]}]
    if roll < 0.8:
        # Stop at the call: the model learns to emit it and end the turn.
        return {"messages": messages, "tools": [t.schema for t in tools], "thinking": thinking}
    messages.append({"role": "tool", "content": "ok\n" + "\n".join(arguments.values())})
    reply = f"Done: {tool.name} finished without errors."
    messages.append({"role": "assistant", "content": _with_thinking(
        thinking, "The tool returned its output. I will summarise it.", reply)})
    return {"messages": messages, "tools": [t.schema for t in tools], "thinking": thinking}


def chat_examples(seed, count, variant="qwen3"):
    rng = random.Random(seed)
    return [chat_example(rng, variant) for _ in range(count)]


# Thoughts before a call, as a history may hold them (a real model's, or Claude Code's record of one).
EARLIER_THOUGHTS = ("I should call {name} for this.", "Let me use {name}.", "{name} can do this; I will call it.",
                    "I need to run {name} first.", *ACTION_THOUGHTS)


def going_on_after_results(examples, share, seed):
    """`examples`, then for about `share` of those that stop at a call the same conversation going
    on: the call's result comes back and the answer says what it was, after an earlier thought of
    any kind, so that a result is answered in words, not with another call. Added rather than put
    in their place: only a conversation's last turn is learnt, so one that went on would no
    longer teach its call.

    With thinking off, half of the earlier calls still carry a thought: a client sends back
    the thinking of the turns that had it (Claude Code does), whatever the mode of this one.
    """
    rng = random.Random(seed)
    went_on = []
    for example in examples:
        last = example["messages"][-1]
        if last["role"] == "assistant" and last.get("tool_calls") and rng.random() < share:
            call, thinking = last["tool_calls"][0]["function"], example["thinking"]
            thought = rng.choice(EARLIER_THOUGHTS).format(name=call["name"])
            thought_before_call = thinking or rng.random() < 0.5
            went_on.append(dict(example, messages=example["messages"][:-1] + [
                dict(last, content=_with_thinking(thought_before_call, thought)),
                {"role": "tool", "content": "ok\n" + "\n".join(map(str, call["arguments"].values()))},
                {"role": "assistant", "content": _with_thinking(
                    thinking, "The tool returned its output. I will summarise it.",
                    f"Done: {call['name']} finished without errors.")}]))
    return examples + went_on


@dataclass
class HeldOutCase:
    prompt: str
    tools: list  # schemas
    # For an action: the tool it is about and its arguments; None for a plain question.
    expected_tool: str | None = None
    expected_arguments: dict | None = None
    # Claude Code-sized (scripts/long_prompts.py): a system prompt, and the turns around the request.
    system: str | None = None
    turns: list | None = None

    def messages(self) -> list:
        return self.turns or [{"role": "user", "content": self.prompt}]


HELD_OUT_SEED = 7  # the draw the tests and BENCHMARKS.md use


def held_out_cases(seed=HELD_OUT_SEED, actions=40, questions=20):
    """Requests in phrasings, with tool schemas, that the training data does not contain.

    Each offers two or three held-out tools; an action request is about one of them.
    """
    rng = random.Random(seed)
    cases = []
    for i in range(actions + questions):
        tools = offered_tools(rng, HELD_OUT, rng.randrange(2, 4))
        schemas = [t.schema for t in tools]
        if i < actions:
            tool = rng.choice(tools)
            prompt, arguments = action_request(rng, HELD_OUT, tool)
            cases.append(HeldOutCase(prompt, schemas, tool.name, arguments))
        else:
            cases.append(HeldOutCase(question(rng, HELD_OUT)[0], schemas))
    return cases


def tools_json():
    """The tool schemas as one JSON text, for the tokenizer corpus."""
    return json.dumps(CLAUDE_CODE_TOOLS, indent=2)
