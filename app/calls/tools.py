"""Operator-defined agent tools.

An operator module listed in TOOL_MODULES exposes ``register(registry: ToolRegistry) -> None``
and calls ``registry.add(AgentTool(...))``. A tool has a name, a description, JSON-schema
parameters, an async handler ``(arguments, context) -> JSON-serialisable result`` and a timeout.
A handler that raises or times out yields an error result to the model; the call goes on.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.tools import BUILTIN_TOOLS


@dataclass(frozen=True, slots=True)
class ToolContext:
    call_sid: str
    direction: str
    custom_parameters: dict[str, str]


ToolHandler = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class AgentTool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: ToolHandler
    timeout_s: float | None = None
    sensitive: bool = False  # the recording pauses while it runs (a card being collected, say)

    def definition(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}


class ToolRegistry:
    def __init__(self, *, default_timeout_s: float = 8.0) -> None:
        self.default_timeout_s = default_timeout_s
        self._tools: dict[str, AgentTool] = {}
        self._reserved = {t["name"] for t in BUILTIN_TOOLS}

    def add(self, tool: AgentTool) -> None:
        if tool.name in self._reserved or tool.name in self._tools:
            raise ValueError(f"tool name {tool.name!r} is already taken")
        if tool.parameters.get("type") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be a JSON schema of type 'object'")
        self._tools[tool.name] = tool

    def is_sensitive(self, name: str) -> bool:
        tool = self._tools.get(name)
        return tool is not None and tool.sensitive

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def definitions(self) -> tuple[dict[str, Any], ...]:
        return BUILTIN_TOOLS + tuple(t.definition() for t in self._tools.values())

    async def run(self, name: str, arguments: dict[str, Any], context: ToolContext) -> tuple[bool, str]:
        """Run a tool; always returns (ok, JSON output for the model), never raises."""
        tool = self._tools.get(name)
        if tool is None:
            return False, orjson.dumps({"error": f"unknown tool {name}"}).decode()
        timeout = tool.timeout_s if tool.timeout_s is not None else self.default_timeout_s
        try:
            async with asyncio.timeout(timeout):
                result = await tool.handler(arguments, context)
            return True, orjson.dumps(result if result is not None else {"ok": True}).decode()
        except TimeoutError:
            return False, orjson.dumps({"error": f"tool {name} timed out after {timeout:g} s"}).decode()
        except Exception as exc:  # noqa: BLE001 - a tool's failure is reported to the model
            return False, orjson.dumps({"error": f"tool {name} failed: {type(exc).__name__}: {exc}"}).decode()


def load_tool_modules(registry: ToolRegistry, modules: list[str]) -> None:
    for module_name in modules:
        module = importlib.import_module(module_name)
        register = getattr(module, "register", None)
        if not callable(register):
            raise ValueError(f"tool module {module_name} has no register(registry) function")
        register(registry)
