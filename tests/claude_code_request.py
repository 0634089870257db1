"""A request shaped like Claude Code 2.x's own (see DESIGN.md: facts measured)."""

import copy

CLAUDE_CODE_REQUEST = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 64000,
    "stream": True,
    "thinking": {"type": "adaptive"},
    "metadata": {"user_id": "user_abc_account_def_session_123"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "medium"},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197; cch=8f3a2c91;"},
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks.",
         "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>Context for this session.</system-reminder>"},
            {"type": "text", "text": "list the files here", "cache_control": {"type": "ephemeral"}},
        ]},
        {"role": "system", "content": "The user switched to plan mode."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should list files.", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Listing."},
            {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": [
                {"type": "text", "text": "README.md"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            ]},
            {"type": "tool_result", "tool_use_id": "toolu_02", "content": "no such file", "is_error": True},
            {"type": "text", "text": "thanks"},
        ]},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command",
         "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
}


def claude_code_request(**changes):
    request = copy.deepcopy(CLAUDE_CODE_REQUEST)
    request.update(changes)
    return request
