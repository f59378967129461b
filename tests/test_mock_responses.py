"""The mock upstream's OpenAI Responses API, driven with the official SDK."""

import json
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from devtools.mock_upstream import MESSAGE_OVERHEAD_TOKENS, app, count_tokens
from tests.helpers.mock_server import serving

QUESTION = "Hello, world!"  # 4 tokens
QUESTION_TOKENS = 4 + MESSAGE_OVERHEAD_TOKENS
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
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


def test_create_answers_a_message_item_with_exact_usage(client):
    # when
    response = client.responses.create(model="m", input=QUESTION)
    # then
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    [item] = response.output
    assert item.type == "message"
    assert item.role == "assistant"
    [part] = item.content
    assert part.type == "output_text"
    assert part.text.startswith("Mock reply to: Hello, world!")
    assert response.output_text == part.text  # the SDK's property, built from output
    usage = response.usage
    assert usage.input_tokens == QUESTION_TOKENS
    assert usage.output_tokens == count_tokens(part.text)
    assert usage.total_tokens == QUESTION_TOKENS + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_instructions_and_item_lists_count_as_messages(client):
    # given: instructions 3 tokens, a system-free item list of two messages
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "first one"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": QUESTION},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        },
    ]
    # when
    response = client.responses.create(model="m", instructions="Be brief.", input=items)
    # then
    expected = (3 + 3) + (2 + 3) + (1 + 3) + (count_tokens(QUESTION + " ") + 3)
    assert response.usage.input_tokens == expected
    assert response.output_text.startswith("Mock reply to: Hello, world!")


def test_knobs_set_cached_and_reasoning_usage(client):
    # when
    response = client.responses.create(
        model="mock-cached-4-reasoning-9", input=QUESTION, max_output_tokens=5
    )
    # then
    usage = response.usage
    assert usage.input_tokens == QUESTION_TOKENS
    assert usage.input_tokens_details.cached_tokens == 4
    assert usage.output_tokens_details.reasoning_tokens == 9
    assert usage.output_tokens == 5 + 9
    assert usage.total_tokens == QUESTION_TOKENS + 14


def test_max_output_tokens_cuts_the_reply_as_incomplete(client):
    # when
    response = client.responses.create(model="m", input=QUESTION, max_output_tokens=3)
    # then
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Mock reply to"
    assert response.usage.output_tokens == 3


def test_a_stored_response_is_retrieved_by_id(client):
    # given
    created = client.responses.create(model="m", input=QUESTION)
    # when
    fetched = client.responses.retrieve(created.id)
    # then
    assert fetched == created


def test_store_false_keeps_nothing(client):
    # given
    created = client.responses.create(model="m", input=QUESTION, store=False)
    # when / then
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(created.id)
    assert created.id in caught.value.body["message"]


def test_previous_response_carries_its_input_and_output(client):
    # given
    first = client.responses.create(model="m", instructions="Be brief.", input=QUESTION)
    # when
    second = client.responses.create(model="m", input="And then?", previous_response_id=first.id)
    # then: the first's input item and visible output, not its instructions
    carried = QUESTION_TOKENS + first.usage.output_tokens
    assert second.usage.input_tokens == carried + count_tokens("And then?") + 3
    assert second.previous_response_id == first.id
    assert second.output_text.startswith("Mock reply to: And then?")


def test_an_unknown_previous_response_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", input=QUESTION, previous_response_id="resp_nope")
    assert caught.value.body["code"] == "previous_response_not_found"
    assert caught.value.body["param"] == "previous_response_id"


def test_an_unknown_id_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")


def test_delete_removes_a_stored_response(client):
    # given
    created = client.responses.create(model="m", input=QUESTION)
    # when
    client.responses.delete(created.id)
    # then
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_function_tools_give_a_function_call_then_text_after_its_output(client):
    # when
    first = client.responses.create(model="m", input=QUESTION, tools=[WEATHER])
    # then
    [call] = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "mock-city"}
    assert first.usage.output_tokens == count_tokens("get_weather") + count_tokens(call.arguments)
    # when
    second = client.responses.create(
        model="m",
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
    )
    # then
    assert second.output[0].type == "message"
    assert second.output_text.startswith("Mock reply to: Sunny")


def test_stream_sends_the_documented_events_in_order(client):
    # when
    events = list(
        client.responses.create(model="m", input=QUESTION, max_output_tokens=3, stream=True)
    )
    # then
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "Mock reply to"
    )
    assert events[0].response.status == "in_progress"
    assert events[-1].response.usage.output_tokens == 3


def test_stream_helper_gives_the_final_response_with_usage(client):
    # when
    with client.responses.stream(model="mock-reasoning-2", input=QUESTION) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    # then
    assert final.status == "completed"
    assert final.output_text == text
    assert final.usage.output_tokens == count_tokens(text) + 2
    assert client.responses.retrieve(final.id).usage == final.usage


def test_streamed_function_call_sends_argument_deltas(client):
    # when
    events = list(client.responses.create(model="m", input=QUESTION, tools=[WEATHER], stream=True))
    # then
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert deltas == done.arguments == '{"city":"mock-city"}'
    assert events[-1].type == "response.completed"
    assert events[-1].response.output[0].arguments == deltas


def test_raw_stream_has_event_names_and_no_done_sentinel(base_url):
    # when
    body = {"model": "m", "input": QUESTION, "stream": True}
    text = httpx.post(f"{base_url}/v1/responses", json=body).text
    # then
    frames = [f for f in text.split("\n\n") if f]
    for frame in frames:
        event, data = frame.split("\n")
        assert event.removeprefix("event: ") == orjson.loads(data.removeprefix("data: "))["type"]
    assert "[DONE]" not in text


def test_missing_input_is_a_400(base_url):
    response = httpx.post(f"{base_url}/v1/responses", json={"model": "m"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
