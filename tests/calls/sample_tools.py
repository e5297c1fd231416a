"""An operator tool module, as TOOL_MODULES would name it (used by the tests)."""

from __future__ import annotations

from typing import Any

from app.calls.tools import AgentTool, ToolContext, ToolRegistry


async def lookup_order(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return {"order": arguments["order_id"], "status": "shipped", "call": context.call_sid}


def register(registry: ToolRegistry) -> None:
    registry.add(
        AgentTool(
            name="lookup_order",
            description="Find an order's status by its number.",
            parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
            handler=lookup_order,
        )
    )
