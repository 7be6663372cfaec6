"""Drives a running `kiln serve` with the official `openai` Python client: models, chat and
completions (plain and streamed), logprobs, echo, n, and the errors the client maps to its
exception types. Usage: openai_client_test.py BASE_URL API_KEY. Exits non-zero on the first
failed check."""

import sys

import openai
from openai import OpenAI


def main() -> int:
    base, key = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            raise AssertionError(what)
        checks += 1

    models = client.models.list()
    model = models.data[0].id
    check(len(models.data) == 1, f"one model listed: {models.data}")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0
    )
    text = chat.choices[0].message.content
    check(isinstance(text, str) and text.strip(), f"chat text: {chat}")
    check(chat.choices[0].finish_reason in ("stop", "length"), chat.choices[0].finish_reason)
    u = chat.usage
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens > 0, u)

    # The same request streamed gives the same text (greedy), usage in the last chunk.
    parts, usage, finishes = [], None, []
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finishes.append(c.finish_reason)
    check("".join(parts) == text, f"streamed {''.join(parts)!r} vs plain {text!r}")
    check(usage is not None and usage.completion_tokens == u.completion_tokens, usage)
    check(len(finishes) == 1, finishes)

    lp = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, logprobs=True, top_logprobs=3, seed=5
    )
    content = lp.choices[0].logprobs.content
    check(len(content) > 0 and len(content[0].top_logprobs) == 3, content)
    check(all(t.logprob <= 0.0 for t in content), content)

    two = client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, n=2, temperature=0.9, seed=11
    )
    check([c.index for c in two.choices] == [0, 1], two.choices)

    # Completions with echo and prompt logprobs, as evaluation harnesses request them.
    prompt = "The quick brown fox jumps over the lazy dog"
    comp = client.completions.create(
        model=model, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=1
    )
    c0 = comp.choices[0]
    check(c0.text.startswith(prompt), c0.text)
    n_tok = comp.usage.prompt_tokens + comp.usage.completion_tokens
    check(len(c0.logprobs.tokens) == n_tok, (len(c0.logprobs.tokens), n_tok))
    check(c0.logprobs.token_logprobs[0] is None, c0.logprobs.token_logprobs[:2])

    streamed = "".join(
        ch.choices[0].text
        for ch in client.completions.create(
            model=model, prompt=prompt, max_tokens=6, temperature=0, stream=True
        )
        if ch.choices
    )
    plain = client.completions.create(model=model, prompt=prompt, max_tokens=6, temperature=0)
    check(streamed == plain.choices[0].text, (streamed, plain.choices[0].text))

    def raises(exc, fn, what):
        try:
            fn()
        except exc:
            check(True, what)
            return
        except Exception as e:  # the wrong exception type is a failure too
            raise AssertionError(f"{what}: expected {exc.__name__}, got {type(e).__name__}: {e}")
        raise AssertionError(f"{what}: no error")

    bad_key = OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
    raises(
        openai.AuthenticationError,
        lambda: bad_key.chat.completions.create(model=model, messages=messages, max_tokens=2),
        "wrong API key",
    )
    raises(
        openai.NotFoundError,
        lambda: client.chat.completions.create(model="no-such-model", messages=messages),
        "unknown model",
    )
    raises(
        openai.BadRequestError,
        lambda: client.completions.create(model=model, prompt=prompt, max_tokens=10**9),
        "absurd max_tokens",
    )
    # Ten chat turns: from turn 2 on, only the new messages are prefilled; the rest of the
    # prompt comes from the prefix cache (whole KV blocks, so up to a block is recomputed).
    block = 16
    history = [{"role": "system", "content": "You are a terse assistant."}]
    seen = 0
    for turn in range(10):
        history.append({"role": "user", "content": f"Turn {turn}: name a colour."})
        r = client.chat.completions.create(
            model=model, messages=history, max_tokens=12, temperature=0
        )
        history.append({"role": "assistant", "content": r.choices[0].message.content})
        prompt = r.usage.prompt_tokens
        cached = r.usage.prompt_tokens_details.cached_tokens
        computed = prompt - cached
        if turn > 0:
            new = prompt - seen
            check(
                computed <= new + block,
                f"turn {turn + 1}: {computed} prompt tokens computed, only {new} are new",
            )
        seen = prompt + r.usage.completion_tokens
    print(f"ten-turn chat: the last turn computed {computed} of {prompt} prompt tokens")

    print(f"openai client {openai.__version__}: {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
