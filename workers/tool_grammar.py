"""The grammar of one tool call's body, written for llguidance from the tools a request offers.

The body is what follows `<tool_call>`, in the model's own format (the one its
chat template teaches), up to and including `</tool_call>`:

- Qwen3 (JSON): `\\n{"name": "Bash", "arguments": {"command": "ls"}}\\n</tool_call>`:
  the name one of the offered tools', the arguments that tool's input schema
  (keys in the order the schema lists them: llguidance's way, and the
  models'), with the separators the template's `tojson` writes. The
  arguments are the parameters the tool declares: where a schema leaves more
  keys open (JSON Schema's default), the grammar does not, or a small model's
  invented keys run on until its tokens are spent. For the same reason a
  number has at most 16 digits before its point and 6 after, unless its
  schema bounds it.
- Qwen3-Coder (XML): `\\n<function=Bash>\\n<parameter=command>\\nls\\n</parameter>\\n</function>\\n</tool_call>`:
  the function one of the offered tools', its required parameters present and
  every parameter one the schema names, in the schema's order; a value is any
  text that does not close its parameter (mlx-lm's parser coerces it to the
  schema's type).

Grammars are Lark text (llguidance's dialect, with `%json` for JSON Schema
and `<[id]>` for a single token). Nothing here touches MLX.
"""

import json

# What Qwen3's template writes between items and after keys (Jinja's tojson is json.dumps).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ",
                # Claude Code's schemas carry keywords a grammar cannot enforce (format: uri, ...): ignore them.
                "lenient": True}

# Where a schema leaves a number unbounded: its digits end (see the docstring).
NUMBER_LIMIT = 10**15
NUMBER_STEP = 1e-6
# Keywords whose values are data, not schemas.
DATA_KEYWORDS = ("const", "enum", "default", "examples")

# A Qwen3-Coder parameter's value and its end: any text, then "\n</parameter>\n", which it holds only there.
# One lexeme, as a lexer takes the longest match: a value apart from its end would swallow the end.
# An empty value is the template's "\n</parameter>": one that starts "</parameter>" (a slip of small
# models) would otherwise be text of the value, which then runs on.
XML_VALUE = (r"/(.|\n)*\n<\/parameter>\n/ & ~/(.|\n)*\n<\/parameter>(.|\n)*\n<\/parameter>\n/"
             r" & ~/<\/parameter>(.|\n)*/")


def tool_name(tool: dict) -> str:
    return tool.get("function", tool)["name"]


def tool_schema(tool: dict) -> dict:
    """Its input schema (chat-template tools carry it as `parameters`); an object of anything if none."""
    function = tool.get("function", tool)
    schema = function.get("parameters") or function.get("input_schema") or {}
    return schema if isinstance(schema, dict) else {}


def call_body_grammar(tools: list, tool_format: str, close: str) -> str:
    """Lark text for what follows `<tool_call>`; `close` is the Lark for `</tool_call>` (a token or a string)."""
    if tool_format == "xml":
        return _xml_grammar(tools, close)
    return _json_grammar(tools, close)


def _json_grammar(tools: list, close: str) -> str:
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
              "properties": {"name": {"const": tool_name(tool)}, "arguments": _object_schema(tool_schema(tool))}}
             for tool in tools]
    schema = dict(calls[0] if len(calls) == 1 else {"anyOf": calls}, **{"x-guidance": JSON_OPTIONS})
    return f'start: "\\n" call "\\n" {close}\ncall: %json {json.dumps(schema)}\n'


def _object_schema(schema: dict) -> dict:
    """Arguments are always an object, of the declared parameters when the schema declares any."""
    schema = {key: value for key, value in schema.items() if key != "$schema"}
    schema.setdefault("type", "object")
    if schema.get("properties"):
        schema.setdefault("additionalProperties", False)
    return _bounded_numbers(schema)


def _bounded_numbers(schema):
    """A copy of `schema` whose unbounded numbers are bounded: the digits a model writes must end."""
    if isinstance(schema, list):
        return [_bounded_numbers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value if key in DATA_KEYWORDS else _bounded_numbers(value) for key, value in schema.items()}
    if out.get("type") in ("number", "integer"):
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -NUMBER_LIMIT
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = NUMBER_LIMIT
        if out["type"] == "number":
            out.setdefault("multipleOf", NUMBER_STEP)
    return out


def _xml_grammar(tools: list, close: str) -> str:
    lines = [f'start: "\\n" ({" | ".join(f"function_{i}" for i in range(len(tools)))}) "\\n" {close}',
             f"VALUE: {XML_VALUE}"]
    for i, tool in enumerate(tools):
        schema = tool_schema(tool)
        required = set(schema.get("required") or [])
        parameters = []
        for j, name in enumerate(schema.get("properties") or {}):
            lines.append(f'parameter_{i}_{j}: {_literal(f"<parameter={name}>" + chr(10))} VALUE')
            parameters.append(f"parameter_{i}_{j}" + ("" if name in required else "?"))
        head = _literal(f"<function={tool_name(tool)}>\n")
        lines.append(f'function_{i}: {head} {" ".join(parameters)} "</function>"')
    return "\n".join(lines) + "\n"


def _literal(text: str) -> str:
    """A Lark string literal (JSON's escapes are Lark's)."""
    return json.dumps(text)
