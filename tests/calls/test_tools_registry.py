"""Operator tool registration and execution (the bridge decides when; the registry runs them)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.calls.tools import AgentTool, ToolContext, ToolRegistry, load_tool_modules
from app.core.tools import BUILTIN_TOOLS

CONTEXT = ToolContext(call_sid="CA1", direction="inbound", custom_parameters={})


async def _noop(arguments: dict[str, Any], context: ToolContext) -> None:
    return None


def test_tool_modules_register_their_tools_beside_the_builtins() -> None:
    registry = ToolRegistry()
    load_tool_modules(registry, ["tests.calls.sample_tools"])
    names = [d["name"] for d in registry.definitions()]
    assert names == [t["name"] for t in BUILTIN_TOOLS] + ["lookup_order"]
    assert registry.names == frozenset({"lookup_order"})


async def test_a_registered_tool_runs_with_the_call_context() -> None:
    registry = ToolRegistry()
    load_tool_modules(registry, ["tests.calls.sample_tools"])
    ok, output = await registry.run("lookup_order", {"order_id": "A-17"}, CONTEXT)
    assert ok and orjson.loads(output) == {"order": "A-17", "status": "shipped", "call": "CA1"}


async def test_a_tool_returning_nothing_reports_ok_and_an_unknown_tool_an_error() -> None:
    registry = ToolRegistry()
    registry.add(AgentTool("noop", "Does nothing", {"type": "object", "properties": {}}, _noop))
    assert await registry.run("noop", {}, CONTEXT) == (True, '{"ok":true}')
    ok, output = await registry.run("missing", {}, CONTEXT)
    assert not ok and "unknown tool" in output


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (AgentTool("end_call", "clash", {"type": "object"}, _noop), "already taken"),
        (AgentTool("bad", "not an object schema", {"type": "string"}, _noop), "type 'object'"),
    ],
)
def test_tools_that_clash_with_builtins_or_lack_an_object_schema_are_refused(tool: AgentTool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ToolRegistry().add(tool)


def test_a_tool_module_without_register_is_refused() -> None:
    with pytest.raises(ValueError, match="no register"):
        load_tool_modules(ToolRegistry(), ["tests.support"])
