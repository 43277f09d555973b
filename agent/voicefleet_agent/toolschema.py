"""Tool argument models and OpenAI tool schemas built once per tool, not on every LLM request.

livekit-agents (1.8.9, pinned) rebuilds each ``@function_tool``'s pydantic argument model (``create_model``) and its
JSON schema on every LLM request, and again to parse every tool call's arguments: about 2.5 ms of CPU per tool, so
15 ms for the assistant's six tools on each turn, synchronously on the session's event loop (measured with
``loopwatch``; it pushed the first turns' request step past the 20 ms the real-room tests allow). Both only depend
on the tool's function (and on whether it is bound to an instance, which drops ``self``) and its name and
description, so ``install`` memoizes them per function in the framework's ``llm.utils``, where every caller looks
them up. The schemas are handed out as copies: callers may change them.
"""

from __future__ import annotations

import copy
import functools
import weakref
from collections.abc import Callable
from typing import Any

from livekit.agents.llm import FunctionTool, utils
from pydantic import BaseModel

_models: weakref.WeakKeyDictionary[Callable[..., Any], dict[bool, type[BaseModel]]] = weakref.WeakKeyDictionary()
_schemas: weakref.WeakKeyDictionary[Callable[..., Any], dict[tuple[Any, ...], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
_installed = False


def _key(tool: Any) -> tuple[Callable[..., Any], bool] | None:
    """The function a tool wraps and whether it is bound; None for what cannot be keyed (then nothing is cached)."""
    func = getattr(tool, "_func", tool)
    try:
        weakref.ref(func)
    except TypeError:
        return None
    return func, getattr(tool, "_instance", None) is not None


def install() -> None:
    """Memoize ``llm.utils``' argument models and strict/legacy OpenAI schemas for the rest of the process."""
    global _installed
    if _installed:
        return
    _installed = True
    build_model = utils.function_arguments_to_pydantic_model
    build_strict = utils.build_strict_openai_schema
    build_legacy = utils.build_legacy_openai_schema

    @functools.wraps(build_model)
    def model(func: Callable[..., Any]) -> type[BaseModel]:
        key = _key(func)
        if key is None:
            return build_model(func)
        per_func = _models.setdefault(key[0], {})
        if key[1] not in per_func:
            per_func[key[1]] = build_model(func)
        return per_func[key[1]]

    def schema(builder: Callable[..., dict[str, Any]], tool: Any, **kwargs: Any) -> dict[str, Any]:
        key = _key(tool)
        if key is None:
            return builder(tool, **kwargs)
        info = tool.info
        variant = (builder, key[1], info.name, info.description, tuple(sorted(kwargs.items())))
        per_func = _schemas.setdefault(key[0], {})
        if variant not in per_func:
            per_func[variant] = builder(tool, **kwargs)
        return copy.deepcopy(per_func[variant])

    @functools.wraps(build_strict)
    def strict(tool: Any) -> dict[str, Any]:
        return schema(build_strict, tool)

    @functools.wraps(build_legacy)
    def legacy(tool: Any, *, internally_tagged: bool = False) -> dict[str, Any]:
        return schema(build_legacy, tool, internally_tagged=internally_tagged)

    utils.function_arguments_to_pydantic_model = model
    utils.build_strict_openai_schema = strict  # type: ignore[assignment]
    utils.build_legacy_openai_schema = legacy  # type: ignore[assignment]


def warm(owner: type) -> None:
    """Build the models and schemas of ``owner``'s tool methods now (in prewarm), as its sessions will use them."""
    for attr in vars(owner).values():
        if isinstance(attr, FunctionTool):
            tool = attr.__get__(owner)  # bound, as on an instance: the schema leaves out ``self``
            utils.build_strict_openai_schema(tool)
            utils.build_legacy_openai_schema(tool)
            utils.function_arguments_to_pydantic_model(tool)
