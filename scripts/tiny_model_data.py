"""Synthetic conversations that teach the bundled tiny model its manners.

The model is far too small to know anything; what it must learn is the shape
of a Qwen3 answer: open a `<think>` block, close it, answer briefly, and end
the turn with `<|im_end|>`; call a tool when asked to run, list or read
something. Everything here is deterministic for a given seed.
"""

import json
import random

TOOLS = [
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

SUBJECTS = [
    "a linked list", "recursion", "a hash map", "the event loop", "a unit test", "a race condition",
    "garbage collection", "a binary search", "dependency injection", "a Redis stream", "a REST API",
    "a git rebase", "a memory leak", "a closure", "type hints", "a context manager", "a decorator",
    "an HTTP header", "a database index", "a merge conflict", "a Python generator", "a mutex",
]
GREETINGS = ["hello", "hi", "hey there", "good morning", "hello, who are you?", "hi! are you there?"]
QUESTIONS = [
    "What is {s}?", "Explain {s} in one sentence.", "Can you tell me about {s}?",
    "Why would I use {s}?", "How does {s} work?", "Give me a short note on {s}.",
]
ANSWERS = [
    "{S} is a common idea in programming. It keeps code simple when used with care.",
    "In short, {s} helps you structure a program. Use it when it makes the code clearer.",
    "{S} is worth knowing well. Start small, test it, and read the documentation.",
    "Think of {s} as a tool: it solves one problem well and adds cost when overused.",
]
THOUGHTS = [
    "The user asks about {s}. I should answer briefly and clearly.",
    "This is a question about {s}. A short explanation is enough.",
    "The user wants to know about {s}. Keep the answer to a sentence or two.",
]
FILES = ["README.md", "setup.py", "main.py", "app/server.py", "docs/index.md", "tests/test_api.py", "Makefile"]
DIRS = ["src", "tests", "docs", "app", "scripts", "."]
COMMANDS = ["pytest -q", "ls -la", "git status", "make test", "python main.py", "npm test", "git log -n 3"]


def _tool_turn(rng):
    """A user request that calls for a tool: (prompt, tool name, arguments, result, reply)."""
    kind = rng.choice(["run", "list", "read"])
    if kind == "run":
        command = rng.choice(COMMANDS)
        prompt = rng.choice(["Run `{c}`.", "Please run {c} for me.", "Can you run {c}?"]).format(c=command)
        return prompt, "Bash", {"command": command}, "exit code 0", f"I ran `{command}`. It finished without errors."
    if kind == "list":
        path = rng.choice(DIRS)
        prompt = rng.choice(["List the files in {p}.", "What files are in {p}?", "Show me the directory {p}."]).format(p=path)
        return prompt, "LS", {"path": path}, "main.py\nREADME.md\ntests", f"The directory {path} holds main.py, README.md and tests."
    path = rng.choice(FILES)
    prompt = rng.choice(["Read {p}.", "Show me what is in {p}.", "Open the file {p} and read it."]).format(p=path)
    return prompt, "Read", {"file_path": path}, "1  print('hello')", f"The file {path} prints a greeting."


EXTRA_TOOLS = ["Write", "Edit", "Grep", "Glob", "WebFetch", "TodoWrite", "Task", "NotebookEdit"]
DESCRIPTIONS = [
    "Use this tool when the task needs it.", "A tool of the coding agent.",
    "Performs an operation on the user's workspace and returns the result as text.",
    "Usage notes: always prefer this tool over asking the user. Results may be truncated.",
]


def _think(text):
    return f"<think>\n{text}\n</think>\n\n"


def _tool_set(rng):
    """The three tools the model must use, with varied descriptions, among others, in any order."""
    tools = []
    for tool in TOOLS:
        function = dict(tool["function"])
        if rng.random() < 0.5:
            function["description"] = rng.choice(DESCRIPTIONS) + " " + function["description"]
        tools.append({"type": "function", "function": function})
    for name in rng.sample(EXTRA_TOOLS, rng.randrange(0, 4)):
        tools.append({"type": "function", "function": {
            "name": name, "description": rng.choice(DESCRIPTIONS),
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}})
    rng.shuffle(tools)
    return tools


def chat_example(rng, thinking=True):
    """One training conversation in the Hugging Face chat format.

    `thinking=False` is for the Qwen3-Coder variant, which answers without thinking.
    """
    think = _think if thinking else (lambda text: "")
    # The thinking variant keeps the data its committed weights were trained on;
    # the coder variant sees varied tool sets (descriptions, extra tools, order).
    tool_set = (lambda _: TOOLS) if thinking else _tool_set
    system = rng.choice([None, "You are a helpful coding assistant.", "You are Hearth, a local assistant."])
    messages = [{"role": "system", "content": system}] if system else []
    roll = rng.random()
    if roll < 0.45:
        subject = rng.choice(SUBJECTS)
        question = rng.choice(QUESTIONS + GREETINGS).format(s=subject)
        if question in GREETINGS:
            thought, answer = "The user greets me. I should greet them back.", "Hello! How can I help you today?"
        else:
            thought = rng.choice(THOUGHTS).format(s=subject)
            answer = rng.choice(ANSWERS).format(s=subject, S=subject[0].upper() + subject[1:])
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": think(thought) + answer}]
        return {"messages": messages, "tools": tool_set(rng) if rng.random() < 0.15 else None}

    prompt, name, arguments, result, reply = _tool_turn(rng)
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    messages.append({"role": "user", "content": prompt})
    thought = f"The user wants me to use the {name} tool. I will call it."
    messages.append({"role": "assistant", "content": think(thought), "tool_calls": [call]})
    tools = tool_set(rng)
    if roll < 0.75:
        # Stop at the call: the model learns to emit it and end the turn.
        return {"messages": messages, "tools": tools}
    messages.append({"role": "tool", "content": result})
    messages.append({"role": "assistant", "content": think("The tool returned its output. I will summarise it.") + reply})
    return {"messages": messages, "tools": tools}


def chat_examples(seed, count, thinking=True):
    rng = random.Random(seed)
    return [chat_example(rng, thinking) for _ in range(count)]


def tools_json():
    """The tool schemas as one JSON text, for the tokenizer corpus."""
    return json.dumps(TOOLS, indent=2)
