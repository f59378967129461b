"""The mock upstream's API families, one module each; devtools.mock_upstream routes to them.

core       the tokenizer, knobs, reply text, request errors and the ASGI send helpers they share
schema     deterministic JSON values for a JSON schema (tool arguments, structured outputs)
openai     chat completions (n, tools, response_format, logprobs), completions, embeddings, models
responses  OpenAI Responses: create (unary and streamed), a bounded store, retrieve by id
anthropic  Anthropic Messages (unary and streamed) and count_tokens, in Anthropic's shapes
media      images generations, audio transcriptions (multipart) and speech, moderations

Nothing here imports devtools.mock_upstream (it imports us).
"""
