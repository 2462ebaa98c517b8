"""LangChain and LlamaIndex against Groundwork with default arguments — only the base URL and
the key set — as a user of those libraries would point them at it: chat (plain and streamed)
and embeddings. Their default model names (gpt-3.5-turbo, text-embedding-ada-002) reach
Groundwork's routes through its model aliases; LangChain's embeddings send tiktoken token ids.

The tiktoken encoding files LangChain needs are read from llama-index-core's bundled cache
(TIKTOKEN_CACHE_DIR, set by the caller): no network is used.

Usage: frameworks_client.py langchain|llamaindex (LlamaIndex runs in its own environment: it
requires openai < 3). The LangChain run also checks the OpenAI edges through the plain client:
`dimensions`, `encoding_format`, refused token ids, `user`, aliases in the models list."""

import math
import os
import sys

import openai

base = os.environ["GROUNDWORK_URL"] + "/v1"
key = os.environ.get("GROUNDWORK_KEY", "unused")
ANSWER = os.environ["EXPECTED_ANSWER"]
TEXTS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Rust's borrow checker enforces that references never outlive their data — même en français.",
]


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


def close(a, b, tol=1e-4):
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < tol


# The reference: the same texts embedded by name through the plain client.
raw = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
ref = [d.embedding for d in raw.embeddings.create(model="embed", input=TEXTS).data]
check(len(ref[0]) == 384, "reference vectors")


def langchain():
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    emb = OpenAIEmbeddings(base_url=base, api_key=key)
    check(emb.check_embedding_ctx_length and emb.model == "text-embedding-ada-002", "LangChain defaults in force")
    docs = emb.embed_documents(TEXTS)
    check(len(docs) == 2 and all(close(a, b) for a, b in zip(docs, ref)), "LangChain token-id embeddings equal the text's")
    q = emb.embed_query(TEXTS[0])
    check(close(q, ref[0]), "LangChain embed_query")

    chat = ChatOpenAI(base_url=base, api_key=key)
    check(chat.model_name == "gpt-3.5-turbo", "LangChain chat default model")
    msg = chat.invoke("When was the tower completed?")
    check(msg.content == ANSWER, "LangChain chat answer")
    parts = [c.content for c in chat.stream("When was the tower completed?")]
    check("".join(parts) == ANSWER and len([p for p in parts if p]) >= 2, "LangChain streamed chat")


def llamaindex():
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai import OpenAI

    lemb = OpenAIEmbedding(api_base=base, api_key=key)
    check(lemb.model_name == "text-embedding-ada-002", "LlamaIndex embedding default model")
    vecs = lemb.get_text_embedding_batch(TEXTS)
    check(all(close(a, b) for a, b in zip(vecs, ref)), "LlamaIndex embeddings")
    check(close(lemb.get_query_embedding(TEXTS[1]), ref[1]), "LlamaIndex query embedding")

    llm = OpenAI(api_base=base, api_key=key)
    check(llm.model == "gpt-3.5-turbo", "LlamaIndex chat default model")
    check(llm.complete("When was the tower completed?").text == ANSWER, "LlamaIndex completion")
    streamed = "".join(r.delta or "" for r in llm.stream_complete("When was the tower completed?"))
    check(streamed == ANSWER, "LlamaIndex streamed completion")


def edges():
    short = raw.embeddings.create(model="text-embedding-3-small", input=TEXTS[0], dimensions=64).data[0].embedding
    want = ref[0][:64]
    norm = math.sqrt(sum(x * x for x in want))
    check(len(short) == 64 and close(short, [x / norm for x in want]), "dimensions: prefix renormalised")
    floats = raw.embeddings.create(model="embed", input=TEXTS[0], encoding_format="float").data[0].embedding
    check(close(floats, ref[0]), "encoding_format float equals base64")
    try:
        raw.embeddings.create(model="embed", input=TEXTS[0], dimensions=1000)
        check(False, "too many dimensions refused")
    except openai.APIStatusError as err:
        check(err.status_code in (400, 422) and "1 to 384" in str(err), "too many dimensions refused, naming the range")
    try:
        raw.embeddings.create(model="embed", input=[[15339, 999999]])
        check(False, "unknown token ids refused")
    except openai.APIStatusError as err:
        check("send the text" in str(err), "unknown token ids refused, naming the fix")
    raw.embeddings.create(model="embed", input="logged for a user", user="alice-42")

    ids = [m.id for m in raw.models.list()]
    check("text-embedding-3-small" in ids and "gpt-4o-mini" in ids, "aliases listed as models")


if sys.argv[1] == "langchain":
    langchain()
    edges()
else:
    llamaindex()
print("all checks passed")
