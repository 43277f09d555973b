"""The memoized tool models and schemas are the framework's own, built once per tool function."""

from __future__ import annotations

from typing import Any

from livekit.agents.llm import utils

from voicefleet_agent import toolschema
from voicefleet_agent.assistant import TaskAssistant


def bound(name: str, owner: Any) -> Any:
    return TaskAssistant.__dict__[name].__get__(owner)


def test_cached_schemas_equal_what_the_framework_builds_for_every_assistant_tool() -> None:
    toolschema.install()
    for name, attr in vars(TaskAssistant).items():
        if hasattr(attr, "info") and hasattr(attr, "_func"):
            tool = bound(name, TaskAssistant)
            assert utils.build_strict_openai_schema(tool) == utils.build_strict_openai_schema.__wrapped__(tool)
            assert utils.build_legacy_openai_schema(tool) == utils.build_legacy_openai_schema.__wrapped__(tool)


def test_two_sessions_share_one_argument_model_per_tool_function() -> None:
    toolschema.install()
    first, second = bound("add_task", object()), bound("add_task", object())
    assert utils.function_arguments_to_pydantic_model(first) is utils.function_arguments_to_pydantic_model(second)
    # the framework's own builder makes a new class on every call: the identity above is the cache's doing
    assert utils.function_arguments_to_pydantic_model.__wrapped__(first) is not (
        utils.function_arguments_to_pydantic_model.__wrapped__(first)
    )


def test_a_caller_changing_its_schema_does_not_change_the_next_one() -> None:
    toolschema.install()
    tool = bound("add_task", TaskAssistant)
    schema = utils.build_strict_openai_schema(tool)
    schema["function"]["parameters"]["properties"].clear()
    assert utils.build_strict_openai_schema(tool)["function"]["parameters"]["properties"]


def test_a_bound_tool_leaves_self_and_the_run_context_out_of_its_schema() -> None:
    toolschema.install()
    properties = utils.build_strict_openai_schema(bound("add_task", TaskAssistant))["function"]["parameters"]
    assert set(properties["properties"]) == {"title", "due"}
