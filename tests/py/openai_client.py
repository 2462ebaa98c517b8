"""The official `openai` package against Groundwork, unchanged: plain and streamed chat,
embeddings, the models list, and a budget-exceeded error."""

import os
import sys

import openai

base = os.environ["GROUNDWORK_URL"] + "/v1"
client = openai.OpenAI(base_url=base, api_key=os.environ.get("GROUNDWORK_KEY", "unused"), max_retries=0)
ANSWER = "The Eiffel Tower was completed in 1889 for the World's Fair."


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


r = client.chat.completions.create(
    model="solo", messages=[{"role": "user", "content": "When was the tower completed?"}], temperature=0.3
)
check(r.choices[0].message.content == ANSWER, "plain chat answer")
check(r.choices[0].finish_reason == "stop", "finish reason")
check(r.usage.prompt_tokens == 10 and r.usage.completion_tokens > 0, "usage")

stream = client.chat.completions.create(
    model="frontier",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When?"}],
    stream=True,
    stream_options={"include_usage": True},
)
parts, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check("".join(parts) == ANSWER, "streamed chat answer (Anthropic upstream)")
check(len(parts) >= 2, "streamed in several chunks")
check(finish == "stop" and usage is not None and usage.prompt_tokens == 12, "stream end and usage")

e = client.embeddings.create(model="embed", input=["a tower in Paris", "a bridge in London"])
check(len(e.data) == 2 and len(e.data[0].embedding) == 384, "embeddings (base64 by default in the client)")
norm = sum(x * x for x in e.data[0].embedding) ** 0.5
check(abs(norm - 1.0) < 1e-3, "embedding is normalised")

ids = [m.id for m in client.models.list()]
check("fast" in ids and "frontier" in ids, "models list")

try:
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    check(False, "budget error raised")
except openai.RateLimitError as err:
    check(err.status_code == 429, "budget exceeded is a 429")
    body = err.body if isinstance(err.body, dict) else {}
    check(body.get("code") == "budget_exceeded", "budget_exceeded code")
    check("budget exceeded" in str(err), "message readable by the client")

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    check(False, "unknown model raised")
except openai.NotFoundError:
    check(True, "unknown model is a 404")

print("all checks passed")
