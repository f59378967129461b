"""The mock upstream's OpenAI chat extensions and usage knobs, driven with the official SDK."""

import json
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

from devtools.mock_upstream import MESSAGE_OVERHEAD_TOKENS, app, count_tokens
from tests.helpers.mock_server import serving

HELLO = [{"role": "user", "content": "Hello, world!"}]  # 4 tokens
HELLO_PROMPT = 4 + MESSAGE_OVERHEAD_TOKENS
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "unit", "days"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def client(base_url) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-mock", max_retries=0) as c:
        yield c


@pytest.fixture
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def test_n_gives_n_identical_choices_and_usage_sums_them(client):
    # when
    completion = client.chat.completions.create(model="m", messages=HELLO, n=3)
    # then
    assert [c.index for c in completion.choices] == [0, 1, 2]
    contents = {c.message.content for c in completion.choices}
    [content] = contents
    assert content.startswith("Mock reply to: Hello, world!")
    assert completion.usage.prompt_tokens == HELLO_PROMPT
    assert completion.usage.completion_tokens == 3 * count_tokens(content)
    assert completion.usage.total_tokens == HELLO_PROMPT + 3 * count_tokens(content)


def test_n_streams_every_choice_and_the_usage_chunk_sums_them(client):
    # when
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=HELLO,
            n=2,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    # then
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks[:-1]:
        [choice] = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert texts[0] == texts[1] == "Mock reply to: Hello"
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 2 * 5


def test_bad_n_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=HELLO, n=0)
    assert caught.value.body["param"] == "n"


def test_tools_give_a_deterministic_call_to_the_first_tool(client):
    # when
    completion = client.chat.completions.create(model="m", messages=HELLO, tools=[WEATHER, TIME])
    # then
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    # required properties only: a string, the first enum value, an integer
    assert json.loads(call.function.arguments) == {
        "city": "mock-city",
        "unit": "celsius",
        "days": 1,
    }
    assert completion.usage.completion_tokens == count_tokens("get_weather") + count_tokens(
        call.function.arguments
    )


def test_tool_choice_names_the_tool_or_turns_tools_off(client):
    # when
    named = client.chat.completions.create(
        model="m",
        messages=HELLO,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    none = client.chat.completions.create(
        model="m", messages=HELLO, tools=[WEATHER, TIME], tool_choice="none"
    )
    # then
    [call] = named.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_time",
        {"zone": "mock-zone"},
    )
    assert none.choices[0].finish_reason == "stop"
    assert none.choices[0].message.tool_calls is None


def test_an_unknown_named_tool_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m",
            messages=HELLO,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert caught.value.body["param"] == "tool_choice"


def test_a_tool_result_is_answered_in_text(client):
    # given
    first = client.chat.completions.create(model="m", messages=HELLO, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
    ]
    # when
    second = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
    # then: the call counts its name and arguments, the result its content
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content.startswith("Mock reply to: Hello, world!")
    arguments = call.function.arguments
    assert second.usage.prompt_tokens == (
        HELLO_PROMPT
        + (count_tokens(f"get_weather {arguments}") + MESSAGE_OVERHEAD_TOKENS)
        + (count_tokens("Sunny") + MESSAGE_OVERHEAD_TOKENS)
    )


def test_streamed_tool_call_is_reassembled_by_the_sdk(client):
    # given
    unary = client.chat.completions.create(model="m", messages=HELLO, tools=[WEATHER])
    # when
    with client.chat.completions.stream(model="m", messages=HELLO, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    # then
    [choice] = final.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    [expected] = unary.choices[0].message.tool_calls
    assert call.function.name == expected.function.name
    assert call.function.arguments == expected.function.arguments


def test_json_object_content_is_valid_json(client):
    # when
    completion = client.chat.completions.create(
        model="m", messages=HELLO, response_format={"type": "json_object"}
    )
    # then
    content = completion.choices[0].message.content
    assert json.loads(content)["reply"].startswith("Mock reply to: Hello, world!")
    assert completion.usage.completion_tokens == count_tokens(content)


class Forecast(BaseModel):
    city: str
    degrees: int
    rain: bool
    hours: list[float]


def test_json_schema_content_parses_into_the_schema(client):
    # when
    completion = client.chat.completions.parse(model="m", messages=HELLO, response_format=Forecast)
    # then
    assert completion.choices[0].message.parsed == Forecast(
        city="mock-city", degrees=1, rain=True, hours=[1.5]
    )


def test_logprobs_have_an_entry_per_generated_token(client):
    # when
    completion = client.chat.completions.create(
        model="m", messages=HELLO, logprobs=True, top_logprobs=2, max_tokens=6
    )
    # then
    [choice] = completion.choices
    entries = choice.logprobs.content
    assert len(entries) == completion.usage.completion_tokens == 6
    assert "".join(e.token for e in entries) == choice.message.content
    assert all(len(e.top_logprobs) == 2 for e in entries)
    assert all(e.top_logprobs[0].token == e.token for e in entries)
    assert all(-0.08 < e.logprob < 0 for e in entries)
    assert entries[0].bytes == list(entries[0].token.encode())


def test_streamed_logprobs_match_the_unary_ones(client):
    # given
    unary = client.chat.completions.create(model="m", messages=HELLO, logprobs=True, max_tokens=4)
    # when
    chunks = list(
        client.chat.completions.create(
            model="m", messages=HELLO, logprobs=True, max_tokens=4, stream=True
        )
    )
    # then
    streamed = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert streamed == unary.choices[0].logprobs.content


def test_top_logprobs_without_logprobs_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=HELLO, top_logprobs=2)
    assert caught.value.body["param"] == "top_logprobs"


def test_usage_details_are_zeros_unless_asked(client):
    # when
    usage = client.chat.completions.create(model="m", messages=HELLO).usage
    # then
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("model", "headers"),
    [
        ("mock-cached-5-reasoning-7", {}),
        ("m", {"x-mock-cached-tokens": "5", "x-mock-reasoning-tokens": "7"}),
        (
            "mock-cached-1-reasoning-2",
            {"x-mock-cached-tokens": "5", "x-mock-reasoning-tokens": "7"},
        ),
    ],
)
def test_cached_and_reasoning_knobs_set_exact_usage(client, model, headers):
    # when
    completion = client.chat.completions.create(
        model=model, messages=HELLO, max_tokens=10, extra_headers=headers
    )
    # then
    usage = completion.usage
    assert usage.prompt_tokens == HELLO_PROMPT  # includes the 5 cached ones
    assert usage.prompt_tokens_details.cached_tokens == 5
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.completion_tokens == 10 + 7  # visible + reasoning
    assert usage.total_tokens == HELLO_PROMPT + 17
    assert count_tokens(completion.choices[0].message.content) == 10


def test_cached_tokens_are_capped_at_the_prompt(client):
    # when
    usage = client.chat.completions.create(model="mock-cached-999", messages=HELLO).usage
    # then
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens == HELLO_PROMPT


def test_streamed_usage_chunk_carries_the_same_details(client):
    # given
    unary = client.chat.completions.create(model="mock-cached-3-reasoning-4", messages=HELLO)
    # when
    chunks = list(
        client.chat.completions.create(
            model="mock-cached-3-reasoning-4",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    # then
    assert chunks[-1].usage == unary.usage


def test_legacy_completions_carry_the_usage_knobs_too(http):
    # when
    body = {"model": "mock-reasoning-2", "prompt": "Hi there", "max_tokens": 3}
    usage = http.post("/v1/completions", json=body).json()["usage"]
    # then
    assert usage["completion_tokens"] == 3 + 2
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2


def test_plain_stream_frames_are_byte_identical_to_the_template_path(http):
    # The load-test path (one choice, no tools, no logprobs) must stay the cheap template one:
    # each piece frame differs from the next only by its piece.
    # when
    body = {**{"model": "m", "messages": HELLO}, "stream": True, "max_tokens": 4}
    lines = [ln for ln in http.post("/v1/chat/completions", json=body).text.split("\n\n") if ln]
    # then
    pieces = [orjson.loads(ln[6:]) for ln in lines[1:5]]
    assert [p["choices"][0]["delta"]["content"] for p in pieces] == [
        "Mock",
        " reply",
        " to",
        ":",
    ]
    assert len({p["id"] for p in pieces}) == 1
