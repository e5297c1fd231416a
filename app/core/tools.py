"""Built-in agent tools as Realtime function definitions (the handlers live in app/calls)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

END_CALL = "end_call"
TRANSFER_TO_HUMAN = "transfer_to_human"
OPT_OUT = "opt_out"

BUILTIN_TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": END_CALL,
        "description": ("Hang up the call. Say a short goodbye first; the line is cut once your words have played."),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why the call is ending."}},
            "required": [],
            "additionalProperties": False,
        },
    },
    {
        "type": "function",
        "name": OPT_OUT,
        "description": (
            "The caller does not want to be called again (stop, quit, end, revoke, opt out, cancel, unsubscribe, "
            "do not call me). Call this at once; then confirm in one sentence that they will not be called again."
        ),
        "parameters": {
            "type": "object",
            "properties": {"words": {"type": "string", "description": "What the caller said."}},
            "required": [],
            "additionalProperties": False,
        },
    },
    {
        "type": "function",
        "name": TRANSFER_TO_HUMAN,
        "description": "Transfer the caller to a human agent when they ask for a person or you cannot help.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "What the caller needs."}},
            "required": [],
            "additionalProperties": False,
        },
    },
)


def greeting_text(business_name: str) -> str:
    return f"Thank you for calling {business_name}. How can I help you today?"


def greeting_instructions(business_name: str) -> str:
    return f'Greet the caller now, naming the business. Say: "{greeting_text(business_name)}"'


HANDOFF_INSTRUCTIONS = 'Tell the caller, in one short sentence: "Please hold while I transfer you to a colleague."'


def chat_tools(definitions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Realtime function definitions (``{"type": "function", "name", "description", "parameters"}``) as the
    chat completions API takes them (``{"type": "function", "function": {...}}``): the cascaded engine offers
    the chat model the same tools the Realtime model gets."""
    tools = []
    for d in definitions:
        function = {k: d[k] for k in ("name", "description", "parameters") if k in d}
        tools.append({"type": "function", "function": function})
    return tools
