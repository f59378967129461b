import httpx


def test_chat_completion_is_served_and_metered(live, gw_team):
    # when
    r = httpx.post(f"{live.url}/v1/chat/completions", headers=gw_team.headers(),
                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    # then
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "mock-a"
    assert body["usage"]["total_tokens"] > 0
    assert r.headers["x-request-id"].startswith("req_")
