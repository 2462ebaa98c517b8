"""The chat UI in headless Chromium, as a user would use it (run by tests/it/ui.rs).

Usage: ui_test.py SERVER_URL API_KEY FIXTURES_DIR ARTIFACTS_DIR WIDTH HEIGHT TAG

FIXTURES_DIR holds handbook.md, plant-safety.pdf and broken.pdf. The server asks for keys;
its fake model answers, in order: a Markdown answer (the suggested question), the same again
(regenerate), then a long answer (stopped). Screenshots go to ARTIFACTS_DIR as
TAG-<state>.png. Prints a JSON report on stdout; exits non-zero on the first failed step
(with what it saw).
"""

import base64
import json
import os
import sys
import time

import selenium_axe_python
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

AXE_JS = os.path.join(os.path.dirname(selenium_axe_python.__file__), "axe-core", "axe.min.js")

# Drops files on an element the way a browser does: a DataTransfer holding File objects,
# dispatched as dragenter, dragover and drop.
DROP_JS = """
const [target, files] = arguments;
const dt = new DataTransfer();
for (const f of files) {
  const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
  dt.items.add(new File([bytes], f.name, {type: f.type}));
}
for (const type of ["dragenter", "dragover", "drop"]) {
  target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
}
"""


class Flow:
    def __init__(self, url, key, fixtures, out, width, height, tag):
        self.url, self.key, self.fixtures, self.out, self.tag = url, key, fixtures, out, tag
        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            f"--window-size={width},{height}",
        ):
            opts.add_argument(flag)
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        # The layout viewport is the size asked for (a headless window's outer size is it).
        self.d.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
        )
        self.wait = WebDriverWait(self.d, 90)
        self.report = {"tag": tag, "width": width, "screenshots": []}

    def q(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def qs(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def until(self, what, f, timeout=90):
        try:
            return WebDriverWait(self.d, timeout).until(lambda d: f())
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(f"timed out waiting for {what}")

    def texts(self, css, inner=None):
        """The text of every `css` element (of its `inner` part), read at one instant: the
        page's lists re-render whenever what they show changes."""
        return self.d.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".map(e => ((arguments[1] && e.querySelector(arguments[1])) || e).textContent)",
            css, inner)

    def retry(self, what, f):
        """Runs `f` again when the list it acts on re-rendered under it."""
        for _ in range(20):
            try:
                return f()
            except StaleElementReferenceException:
                time.sleep(0.2)
        raise AssertionError(f"{what}: the page kept re-rendering")

    def shot(self, state):
        path = os.path.join(self.out, f"{self.tag}-{state}.png")
        self.d.save_screenshot(path)
        self.report["screenshots"].append(path)

    def narrow(self):
        return self.q("#tabs").is_displayed()

    def panel(self, name):
        """Shows a panel: on a narrow screen through its tab."""
        if self.narrow():
            self.q(f"#tabs button[data-panel={name}]").click()
        self.until(f"panel {name}", lambda: self.q(f"#{name}").is_displayed())

    def axe(self, state):
        with open(AXE_JS, encoding="utf-8") as f:
            self.d.execute_script(f.read())
        result = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
        )
        serious = [
            {"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n.get("target") for n in v["nodes"]][:5]}
            for v in result
            if v["impact"] in ("serious", "critical")
        ]
        self.report.setdefault("axe", {})[state] = {
            "violations": [(v["id"], v["impact"]) for v in result],
            "serious": serious,
        }
        assert not serious, f"axe-core found serious violations in {state}: {serious}"

    def renderer_is_safe(self):
        """The page's Markdown renderer on hostile text: nothing but its own tags and
        attributes comes out (models and documents can write anything)."""
        hostile = [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[click](javascript:alert(1)) [ok](https://example.org/a?b=1&c=\"d\")",
            "```js\" onmouseover=\"alert(1)\n<b>x</b>\n```",
            "| <i>a</i> | b\" onclick=\"x |\n|---|---|\n| `<svg onload=1>` | [1] |",
            "1. <a href=javascript:x>y</a>\n   - **<u>z</u>** ~~<s>w</s>~~",
            "> <iframe src=//evil></iframe>\n\n# <h1>t</h1>",
            "`unclosed <code` and **bold <b> [2](data:text/html,x)",
        ]
        allowed = {"P", "BR", "STRONG", "EM", "DEL", "CODE", "PRE", "A", "BUTTON", "UL", "OL",
                   "LI", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "BLOCKQUOTE", "H3", "H4",
                   "H5", "HR", "DIV"}
        found = self.d.execute_script(
            """
            const out = [];
            for (const text of arguments[0]) {
              const box = document.createElement("div");
              box.innerHTML = markdown(text, {1: [{}]});
              for (const e of box.querySelectorAll("*")) {
                for (const a of e.attributes) {
                  const bad = a.name.startsWith("on") || (a.name === "href"
                    && !/^(https?:|mailto:)/.test(a.value)) || a.name === "src";
                  if (bad) out.push(e.tagName + " " + a.name + "=" + a.value);
                }
                out.push("tag:" + e.tagName);
              }
            }
            return out;
            """,
            hostile,
        )
        tags = {f[4:] for f in found if f.startswith("tag:")}
        bad = [f for f in found if not f.startswith("tag:")] + sorted(tags - allowed)
        self.report["renderer_tags"] = sorted(tags)
        assert not bad, f"the Markdown renderer let through: {bad}"

    def run(self):
        d, r = self.d, self.report
        d.get(self.url + "/")
        self.renderer_is_safe()

        # Sign in: the server refuses requests without a key, the page asks for one.
        self.until("the sign-in box", lambda: self.q("#signin").is_displayed())
        self.shot("signin")
        self.axe("signin")
        self.q("#api-key").send_keys(self.key)
        self.q("#signin-form button[type=submit]").click()
        self.until("sign-in to close", lambda: not self.q("#signin").is_displayed())
        r["key_in_session"] = d.execute_script("return sessionStorage.getItem('gw-key')") == self.key
        r["key_in_local"] = d.execute_script(
            "return Object.keys(localStorage).some(k => localStorage.getItem(k) === arguments[0])",
            self.key)

        # A knowledge base, three files dropped on it.
        self.until("the agent list", lambda: self.q("#agent-select").get_attribute("value"))
        self.q("#new-kb").send_keys("handbook")
        self.q("#create-kb").click()
        self.until("the new KB", lambda: self.q("#kb-select").get_attribute("value") == "handbook")
        self.panel("docs")
        files = []
        for name, kind in (("handbook.md", "text/markdown"), ("plant-safety.pdf", "application/pdf"),
                           ("broken.pdf", "application/pdf")):
            with open(os.path.join(self.fixtures, name), "rb") as f:
                files.append({"name": name, "type": kind, "b64": base64.b64encode(f.read()).decode()})
        d.execute_script(DROP_JS, self.q("#dropzone"), files)
        self.until("three upload results", lambda: len([
            li for li in self.qs("#uploads li")
            if li.get_attribute("data-result") in ("ready", "failed", "refused")]) == 3, 180)
        results = {li.get_attribute("data-upload"): (li.get_attribute("data-result"),
                   li.find_element(By.CSS_SELECTOR, ".reason").text) for li in self.qs("#uploads li")}
        r["uploads"] = results
        documents = lambda: d.execute_script(  # noqa: E731
            "return [...document.querySelectorAll('#documents li[data-id]')]"
            ".map(li => [li.dataset.status, li.innerText, !!li.querySelector('.reason')])")
        self.until("the list to show the failure", lambda: any(
            status == "failed" and reason for status, _, reason in documents()))
        r["documents"] = documents()
        self.shot("documents")

        # The empty chat: suggested questions from the headings, the KB's size.
        self.panel("chat")
        self.until("suggestions", lambda: self.qs("#suggestions button.suggestion"))
        self.until("the KB size", lambda: "2 documents ready" in self.q("#empty-size").text)
        r["suggestions"] = self.texts("#suggestions button.suggestion")
        r["kb_size"] = self.q("#empty-size").text
        self.shot("empty")
        self.axe("empty")

        # A suggested question: a Markdown answer, cited; the citation opens the passage.
        def ask_first():
            first = self.qs("#suggestions button.suggestion")[0]
            r["asked"] = first.text
            first.click()

        self.retry("the first suggestion", ask_first)
        self.until("the answer", lambda: self.qs(".msg.assistant .actions"))
        answer = self.qs(".msg.assistant")[-1]
        r["answer_html"] = {
            tag: len(answer.find_elements(By.CSS_SELECTOR, ".answer " + tag))
            for tag in ("ol li", "table td", "pre code", "strong", "code", "button.cite",
                        ".copy-code", ".unsupported")
        }
        r["answer_text"] = answer.find_element(By.CSS_SELECTOR, ".answer").text
        r["raw_markdown_left"] = any(s in r["answer_text"] for s in ("**", "```", "|---"))
        r["deltas"] = int(answer.get_attribute("data-deltas") or "0")
        source = answer.find_element(By.CSS_SELECTOR, ".sources button")
        quote = source.get_attribute("title")
        answer.find_element(By.CSS_SELECTOR, "button.cite").click()
        self.until("the passage", lambda: self.qs("#passage mark") and self.q("#source").is_displayed())
        r["passage_source"] = self.q("#passage .src").text
        r["highlighted"] = self.q("#passage mark").text
        r["quote"] = quote
        r["passage"] = self.q("#passage .text").text
        self.shot("passage")
        self.panel("chat")
        self.shot("answer")
        self.axe("answer")

        # Copy (answer and sources), then regenerate.
        answer.find_element(By.CSS_SELECTOR, ".copy-answer").click()
        copied = answer.find_element(By.CSS_SELECTOR, ".copy-answer")
        self.until("the copy", lambda: copied.get_attribute("data-copied"))
        r["copied"] = copied.get_attribute("data-copied")
        before = len(self.qs(".msg.assistant"))
        answer.find_element(By.CSS_SELECTOR, ".regenerate").click()
        self.until("the regenerated answer", lambda: len(self.qs(".msg.assistant .actions")) == before + 1)
        r["regenerated"] = self.qs(".msg.assistant .answer")[-1].text == r["answer_text"]

        # A new conversation from the keyboard; a question the documents cannot answer.
        self.q("#chat-input").send_keys("x")
        self.q("#chat-input").send_keys(Keys.CONTROL, Keys.SHIFT, "o")
        self.until("a new conversation", lambda: self.qs("#empty"))
        self.q("#chat-input").clear()
        self.q("body").send_keys("/")
        r["slash_focuses_input"] = d.execute_script("return document.activeElement.id") == "chat-input"
        self.q("#chat-input").send_keys("What is the capital of Peru?", Keys.ENTER)
        self.until("the not-found answer", lambda: self.qs(".msg.assistant .actions"))
        r["not_found_badge"] = bool(self.qs(".msg.assistant .badge.notfound"))
        r["not_found_text"] = self.qs(".msg.assistant .answer")[-1].text

        # Stop a streaming answer: the second suggestion, stopped after a few pieces.
        self.panel("history")
        self.q("#new-conversation").click()
        self.panel("chat")
        self.until("suggestions again", lambda: len(self.qs("#suggestions button.suggestion")) > 1)
        def ask_second():
            second = self.qs("#suggestions button.suggestion")[1]
            r["stop_asked"] = second.text
            second.click()

        self.retry("the second suggestion", ask_second)
        self.until("the stream", lambda: int(
            (self.qs(".msg.assistant") or [None])[-1].get_attribute("data-deltas") or "0") >= 5)
        self.until("the stop button", lambda: self.q("#stop-btn").is_displayed())
        self.shot("streaming")
        self.q("#stop-btn").click()
        self.until("the stopped answer", lambda: self.qs(".msg.assistant .badge.stopped"), 30)
        r["stopped_text"] = self.qs(".msg.assistant .answer")[-1].text
        r["send_back"] = self.q("#send-btn").is_displayed() and not self.q("#stop-btn").is_displayed()
        self.shot("stopped")

        # Conversations: search, rename, delete.
        self.panel("history")
        titles = lambda: self.texts("#conversations li[data-id]", ".name")  # noqa: E731
        self.until("three conversations", lambda: len(titles()) == 3)
        r["conversations"] = titles()
        self.q("#conv-search").send_keys("Peru")
        self.until("the search", lambda: len(titles()) == 1)
        r["search_hits"] = titles()

        def rename():
            li = self.qs("#conversations li[data-id]")[0]
            li.find_element(By.XPATH, ".//button[text()='Rename']").click()
            box = li.find_element(By.CSS_SELECTOR, "form input")
            box.clear()
            box.send_keys("Geography question", Keys.ENTER)

        self.retry("rename", rename)
        self.until("the new title", lambda: titles() == ["Geography question"])
        self.shot("renamed")
        self.q("#conv-search").clear()
        self.q("#conv-search").send_keys(" ")
        self.q("#conv-search").send_keys(Keys.BACKSPACE)
        self.until("all conversations", lambda: len(titles()) == 3)

        def delete():
            target = [x for x in self.qs("#conversations li[data-id]")
                      if x.find_element(By.CSS_SELECTOR, ".name").text == "Geography question"][0]
            button = target.find_element(By.CSS_SELECTOR, "button.danger")
            button.click()
            button.click()

        self.retry("delete the conversation", delete)
        self.until("the deletion", lambda: len(titles()) == 2)
        r["after_delete"] = titles()
        self.shot("conversations")

        # Delete a document: it leaves the list and the search.
        self.panel("docs")

        def search(text):
            done = int(self.q("#kb-hits").get_attribute("data-searches") or "0")
            box = self.q("#kb-search")
            box.clear()
            box.send_keys(text, Keys.ENTER)
            self.until("search results", lambda: int(
                self.q("#kb-hits").get_attribute("data-searches") or "0") > done)
            return self.texts("#kb-hits li", ".name")

        r["search_before"] = search("reactor inspection")

        def delete_pdf():
            pdf = [li for li in self.qs("#documents li[data-id]")
                   if "plant-safety.pdf" in li.text][0]
            button = pdf.find_element(By.CSS_SELECTOR, "button.danger")
            button.click()
            button.click()

        # (The live list re-renders on every change; a click lands on the current rows.)
        self.retry("delete the document", delete_pdf)
        self.until("the document to leave the list", lambda: not any(
            "plant-safety.pdf" in t for t in self.texts("#documents li[data-id]", ".name")))
        r["search_after"] = search("reactor inspection")
        self.shot("deleted")

        # Dark scheme from the system setting.
        light = d.execute_script("return getComputedStyle(document.body).backgroundColor")
        d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                          {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark = d.execute_script("return getComputedStyle(document.body).backgroundColor")
        r["colors"] = [light, dark]
        self.panel("chat")
        self.shot("dark")
        self.axe("dark")
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

        # Nothing was fetched from anywhere but this server.
        r["requests"] = d.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        r["external"] = [u for u in r["requests"] if not u.startswith(self.url)]
        r["overflow_x"] = d.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth + 1")


def main() -> None:
    url, key, fixtures, out, width, height, tag = sys.argv[1:8]
    os.makedirs(out, exist_ok=True)
    flow = Flow(url, key, fixtures, out, int(width), int(height), tag)
    try:
        flow.run()
        print(json.dumps(flow.report))
    except Exception as e:  # noqa: BLE001 - the report says what was seen before the failure
        flow.report["failed"] = f"{type(e).__name__}: {e}"
        print(json.dumps(flow.report))
        sys.exit(1)
    finally:
        flow.d.quit()


if __name__ == "__main__":
    main()
