"""llama.cpp on the same GGUF and thread count as Groundwork's local model, for
benches/gateway.rs: first-token latency (prefill) and greedy decode rate on the same prompts.

Usage: llama_cpp_peer.py MODEL_DIR_OR_GGUF PROMPTS_JSON   (prints one JSON object)
PROMPTS_JSON is a list of message lists; each prompt is rendered with the GGUF's own chat
template and read from an empty cache, as Groundwork's benchmark does.
"""
import json
import os
import statistics
import sys
import time

import jinja2
import llama_cpp


def gguf(path):
    if os.path.isfile(path):
        return path
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".gguf"))[0]


def main():
    model = gguf(sys.argv[1])
    prompts = json.loads(sys.argv[2])
    threads = len(os.sched_getaffinity(0))
    llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, verbose=False)
    template = jinja2.Environment().from_string(llm.metadata["tokenizer.chat_template"])
    eos = llm.token_eos()
    first_ms, decode, prompt_tokens, completion_tokens = [], [], 0, 0
    for i, messages in enumerate([prompts[0]] + prompts):
        text = template.render(messages=messages, add_generation_prompt=True)
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        started = time.perf_counter()
        first = None
        n = 0
        for tok in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            if first is None:
                first = time.perf_counter() - started
            if tok == eos:
                break
            n += 1
            if n >= 64:
                break
        total = time.perf_counter() - started
        if i == 0:
            continue  # warm-up
        prompt_tokens, completion_tokens = len(tokens), n
        first_ms.append(first * 1e3)
        decode.append(max(n - 1, 1) / (total - first))
    median_first = statistics.median(first_ms)
    print(json.dumps({
        "version": llama_cpp.__version__,
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "first_token_ms_median": median_first,
        "prefill_tokens_per_s": prompt_tokens / (median_first / 1e3),
        "decode_tokens_per_s": statistics.median(decode),
    }))


if __name__ == "__main__":
    main()
