"""LangChain's ChatOpenAI (on Chat Completions, and on the Responses API) and ChatAnthropic, and
a LangGraph tool-calling agent on each, with only base_url and a key."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from tests.compat import harness
from tests.compat.harness import Answer, Compat, assert_one_version_per_run

ROUTES = {"openai": "support-agent", "responses": "support-agent", "anthropic": "refund-agent"}
TOOLS: dict[str, list[BaseTool]] = {
    "openai": [tool(harness.search_help_center)],
    "responses": [tool(harness.search_help_center)],
    "anthropic": [tool(harness.lookup_order), tool(harness.issue_refund)],
}


def chat_model(compat: Compat, dialect: str) -> BaseChatModel:
    if dialect == "anthropic":
        return ChatAnthropic(model="refund-agent", base_url=compat.anthropic_url, api_key="sk-x")  # type: ignore[call-arg, arg-type]
    return ChatOpenAI(
        model="support-agent",
        base_url=compat.openai_url,
        api_key="sk-x",  # type: ignore[arg-type]
        use_responses_api=dialect == "responses",
    )


def agent_graph(model: BaseChatModel, tools: list[BaseTool]) -> CompiledStateGraph[Any]:
    """LangGraph's tool-calling agent: the model, then its tools, until it answers."""
    bound = model.bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


DIALECTS = pytest.mark.parametrize("dialect", ["openai", "responses", "anthropic"])


@DIALECTS
def test_plain(compat: Compat, dialect: str) -> None:
    answer = chat_model(compat, dialect).invoke("Where is my order?")
    assert answer.text
    assert (
        compat.fake.last()["path"]
        == {
            "openai": "/v1/chat/completions",
            "responses": "/v1/responses",
            "anthropic": "/v1/messages",
        }[dialect]
    )


@DIALECTS
def test_stream(compat: Compat, dialect: str) -> None:
    chunks = list(chat_model(compat, dialect).stream("Where is my order?"))
    assert len(chunks) > 2 and "".join(str(c.content) for c in chunks)


@DIALECTS
def test_tool_round_trip(compat: Compat, dialect: str) -> None:
    compat.call_tools()
    tools = {t.name: t for t in TOOLS[dialect]}
    model = chat_model(compat, dialect).bind_tools(list(tools.values()))
    messages: list[BaseMessage] = [HumanMessage("Where is my order A-1234?")]
    asked = model.invoke(messages)
    assert isinstance(asked, AIMessage) and asked.tool_calls
    messages += [asked, *(tools[call["name"]].invoke(call) for call in asked.tool_calls)]
    assert all(isinstance(m, ToolMessage) for m in messages[2:])
    answered = model.invoke(messages)
    assert isinstance(answered, AIMessage) and answered.content and not answered.tool_calls


@DIALECTS
def test_structured_output(compat: Compat, dialect: str) -> None:
    """with_structured_output on its defaults: a json_schema for ChatOpenAI, a forced tool for
    ChatAnthropic (which returned None when the router dropped it)."""
    answer = chat_model(compat, dialect).with_structured_output(Answer).invoke("How long?")
    assert isinstance(answer, Answer)
    sent = compat.sent()[0]
    if dialect == "openai":
        assert sent["response_format"]["type"] == "json_schema"
    elif dialect == "responses":
        assert sent["text"]["format"]["type"] == "json_schema"
    else:
        assert sent["tool_choice"] == {"type": "tool", "name": "Answer"}


@DIALECTS
def test_langgraph_agent(compat: Compat, dialect: str) -> None:
    compat.call_tools()
    graph = agent_graph(chat_model(compat, dialect), TOOLS[dialect])
    state = graph.invoke({"messages": [("user", "Where is my order A-1234?")]})
    kinds = [type(m).__name__ for m in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]


@DIALECTS
def test_langgraph_agent_runs_stay_on_one_version(compat: Compat, dialect: str) -> None:
    compat.call_tools()
    graph = agent_graph(chat_model(compat, dialect), TOOLS[dialect])

    def run(opening: str) -> None:
        state = graph.invoke({"messages": [("user", opening)]})
        graph.invoke({"messages": [*state["messages"], ("user", "And if it is late?")]})

    assert_one_version_per_run(compat.sticky_runs(ROUTES[dialect], run), calls=4)
