"""Token estimates for when the upstream does not say (and for reservations).

No tokenizer model can be downloaded at run time here, so the local count is a byte-based
estimate: about 4 bytes of UTF-8 per token for English with BPE tokenizers. Reservations use
a deliberately pessimistic 3 bytes per token so they cover the real count in practice; the
charge is the upstream's `usage` whenever it is given.
"""

BYTES_PER_TOKEN = 4
RESERVE_BYTES_PER_TOKEN = 3
PER_MESSAGE_OVERHEAD = 4


def estimate_text_tokens(text_len_bytes: int) -> int:
    return -(-text_len_bytes // BYTES_PER_TOKEN)


def reserve_input_tokens(body_len_bytes: int) -> int:
    """An upper estimate of a request's input tokens from its JSON body size."""
    return body_len_bytes // RESERVE_BYTES_PER_TOKEN + 16


def estimate_prompt_tokens(request: dict) -> int:
    """Local count of a request's input tokens, used only when upstream reports no usage."""
    total = 0
    if isinstance(request.get("messages"), list):
        for message in request["messages"]:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            total += PER_MESSAGE_OVERHEAD + estimate_text_tokens(len(str(content or "").encode()))
        return total + 3
    source = request.get("prompt", request.get("input", ""))
    if isinstance(source, list):
        return sum(estimate_text_tokens(len(str(s).encode())) for s in source)
    return estimate_text_tokens(len(str(source).encode()))
