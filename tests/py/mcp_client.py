"""The official MCP Python SDK against Groundwork's `/mcp` (streamable HTTP), as an assistant or
IDE would connect: list the tools, call each, read documents as resources, the error cases, and
tenants and scopes kept apart (acme's keys never see globex's knowledge base)."""

import asyncio
import contextlib
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

URL = os.environ["GROUNDWORK_URL"] + "/mcp"
WRITER, READER, GLOBEX = os.environ["ACME_WRITE_KEY"], os.environ["ACME_READ_KEY"], os.environ["GLOBEX_KEY"]


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


@contextlib.asynccontextmanager
async def Session(key):
    """An initialised MCP session with one key (none: no Authorization header)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(URL, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def tool(s, name, **args):
    r = await s.call_tool(name, args)
    return r, r.structured_content


async def main():
    # No key, a wrong key: refused (401) before any MCP message is read, and the SDK's
    # session does not start.
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    for key in (None, "gw_not-a-real-key"):
        headers = {"Accept": "application/json, text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        async with httpx2.AsyncClient() as h:
            raw = await h.post(URL, json=init, headers=headers)
        check(raw.status_code == 401 and raw.json()["code"] == "unauthenticated", f"key {key!r}: 401 {raw.text[:80]}")
        started = False
        try:
            async with Session(key):
                started = True
        except* MCPError:
            pass
        check(not started, f"key {key!r}: no session")

    async with Session(WRITER) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        check(set(tools) == {"search", "list_knowledge_bases", "get_document", "get_chunk", "ask"}, "five tools listed")
        check(tools["search"].input_schema["required"] == ["kb", "query"], "search's schema names its required arguments")

        r, kbs = await tool(s, "list_knowledge_bases")
        names = sorted(k["name"] for k in kbs["knowledge_bases"])
        check(not r.is_error and names == ["handbook"], f"acme sees only its knowledge base: {names}")

        r, found = await tool(s, "search", kb="handbook", query="How are API keys created?", top_k=3, mode="hybrid")
        check(not r.is_error and found["passages"], "search returns passages")
        top = found["passages"][0]
        check("keys create" in top["text"] and top["document_name"] == "keys.md", "the right passage first")
        check(isinstance(top["chunk_id"], int) and top["end"] > top["start"], "passages carry citation data")
        check(json.loads(r.content[0].text) == found, "the text content is the same result as JSON")

        r, chunk = await tool(s, "get_chunk", kb="handbook", chunk_id=top["chunk_id"])
        check(chunk["text"] == top["text"] and chunk["start"] == top["start"], "get_chunk returns the cited span")

        r, doc = await tool(s, "get_document", kb="handbook", document_id=top["document_id"])
        check(doc["name"] == "keys.md" and doc["status"] == "ready", "get_document: metadata")
        check(top["text"] in doc["text"] and not doc["text_truncated"], "get_document: text holds the passage")

        r, filtered = await tool(s, "search", kb="handbook", query="keys", filter={"document_ids": ["nope"]})
        check(not r.is_error and filtered["passages"] == [], "a filter restricts the search")

        r, ans = await tool(s, "ask", agent="helper", question="How are keys created?", answer_mode="extractive")
        check(not r.is_error and ans["found"] is True, f"ask answers: {ans}")
        check("groundwork keys create" in ans["answer"] and ans["citations"], "ask's answer is grounded and cited")

        res = (await s.list_resources()).resources
        uris = sorted(str(x.uri) for x in res)
        check(len(uris) == 2 and all(u.startswith("groundwork://kbs/") for u in uris), f"documents as resources: {uris}")
        tpl = (await s.list_resource_templates()).resource_templates
        check(tpl and "{document_id}" in tpl[0].uri_template, "a resource template")
        keys_uri = next(str(x.uri) for x in res if x.name == "keys.md")
        body = (await s.read_resource(keys_uri)).contents[0].text
        check("groundwork keys create" in body, "read_resource gives the document's text")

        # Errors: another tenant's knowledge base, unknown ones, bad arguments, unknown tools.
        r, err = await tool(s, "search", kb="secret-plans", query="plans")
        check(r.is_error and err["status"] == 404, "another tenant's knowledge base is not found")
        r, err = await tool(s, "get_chunk", kb="handbook", chunk_id=999999)
        check(r.is_error and err["code"] == "not_found", "unknown chunk")
        r, err = await tool(s, "search", kb="handbook", query="x", top_k=100000)
        check(r.is_error and err["status"] == 422, f"top_k out of range refused: {err}")
        for name, args in [("search", {"kb": "handbook"}), ("no_such_tool", {})]:
            try:
                await s.call_tool(name, args)
                check(False, f"{name} {args} refused")
            except MCPError as e:
                check(e.code == -32602, f"{name} {args}: invalid params ({e.message})")
        try:
            await s.read_resource("groundwork://kbs/secret-plans/documents/x")
            check(False, "foreign resource refused")
        except MCPError as e:
            check("not found" in e.message, "another tenant's document is not found as a resource")

    async with Session(READER) as s:
        r, found = await tool(s, "search", kb="handbook", query="keys")
        check(not r.is_error and found["passages"], "a read key searches")
        r, err = await tool(s, "ask", agent="helper", question="How are keys created?")
        check(r.is_error and err["status"] == 403 and "infer" in err["detail"], "a read key may not ask (needs infer)")

    async with Session(GLOBEX) as s:
        _, kbs = await tool(s, "list_knowledge_bases")
        check([k["name"] for k in kbs["knowledge_bases"]] == ["secret-plans"], "globex sees only its own")
        uris = [str(x.uri) for x in (await s.list_resources()).resources]
        own = kbs["knowledge_bases"][0]["id"]
        check(len(uris) == 1 and f"groundwork://kbs/{own}/" in uris[0], "globex's resources are its own")
        r, err = await tool(s, "get_document", kb="handbook", document_id=top["document_id"])
        check(r.is_error and err["status"] == 404, "globex cannot read acme's document")

    print("all checks passed")


asyncio.run(main())
