"""What one call used, in every shape an upstream reports it, normalized.

`input` is every input token (cached, cache-written and audio ones included) and `output`
every output token (reasoning and audio ones included); the other counts say which part of
those, or which non-token units (images, audio time, characters), are priced apart. The usage
record carries each nonzero count (keys in RECORD_KEYS); proxy/pricing.py prices them.

Parsers read what upstreams send, defensively: a count that is not a non-negative integer is 0,
never an error, since the answer has already been generated and must still be charged.
"""

from dataclasses import dataclass

# Usage attribute -> key in the usage record (billing/settlement.py reads them).
RECORD_KEYS = {
    "cache_read": "cr",
    "cache_write": "cw",
    "reasoning": "rs",
    "audio_in": "ai",
    "audio_out": "ao",
    "images": "img",
    "audio_ms": "ams",
    "characters": "chr",
}


@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cache_read: int = 0  # input tokens read from the provider's prompt cache
    cache_write: int = 0  # input tokens written to it (Anthropic's cache_creation)
    reasoning: int = 0  # output tokens spent thinking
    audio_in: int = 0
    audio_out: int = 0
    images: int = 0
    audio_ms: int = 0  # transcribed audio
    characters: int = 0  # speech input
    image_size: str = ""  # what the images were asked as, for their price
    image_quality: str = ""

    @property
    def tokens(self) -> int:
        return self.input + self.output

    def record_fields(self) -> dict[str, int]:
        """The nonzero breakdown, as the usage record's keys."""
        out = {}
        for name, key in RECORD_KEYS.items():
            value = getattr(self, name)
            if value:
                out[key] = value
        return out


def count(value) -> int:
    """A reported count: a non-negative int, anything else 0 (bools are not counts)."""
    if type(value) is int and value > 0:
        return value
    if type(value) is float and value > 0 and value.is_integer():
        return int(value)
    return 0


def _details(usage: dict, name: str) -> dict:
    details = usage.get(name)
    return details if isinstance(details, dict) else {}


def from_openai(usage) -> Usage | None:
    """Chat completions, completions, embeddings: `prompt_tokens` includes the cached and
    audio input tokens, `completion_tokens` the reasoning and audio output ones."""
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    prompt = _details(usage, "prompt_tokens_details")
    completion = _details(usage, "completion_tokens_details")
    u = Usage(count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")))
    u.cache_read = min(count(prompt.get("cached_tokens")), u.input)
    u.audio_in = min(count(prompt.get("audio_tokens")), u.input - u.cache_read)
    u.reasoning = min(count(completion.get("reasoning_tokens")), u.output)
    u.audio_out = min(count(completion.get("audio_tokens")), u.output - u.reasoning)
    return u


def from_responses(usage) -> Usage | None:
    """OpenAI Responses (and images with token usage): `input_tokens` includes the cached
    ones, `output_tokens` the reasoning ones."""
    if not isinstance(usage, dict) or "input_tokens" not in usage:
        return None
    u = Usage(count(usage.get("input_tokens")), count(usage.get("output_tokens")))
    u.cache_read = min(count(_details(usage, "input_tokens_details").get("cached_tokens")), u.input)
    reasoning = _details(usage, "output_tokens_details").get("reasoning_tokens")
    u.reasoning = min(count(reasoning), u.output)
    return u


def from_anthropic(usage) -> Usage | None:
    """Anthropic Messages: `input_tokens` EXCLUDES cache reads and writes, so they are added
    to make `input` the whole input."""
    if not isinstance(usage, dict) or not ("input_tokens" in usage or "output_tokens" in usage):
        return None
    u = Usage()
    u.cache_read = count(usage.get("cache_read_input_tokens"))
    u.cache_write = count(usage.get("cache_creation_input_tokens"))
    u.input = count(usage.get("input_tokens")) + u.cache_read + u.cache_write
    u.output = count(usage.get("output_tokens"))
    return u
