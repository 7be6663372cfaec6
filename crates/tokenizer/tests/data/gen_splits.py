"""Writes pretokenize_hf_reference.json: how Hugging Face `tokenizers` (Oniguruma regexes, an
implementation independent of kiln) splits random strings with the GPT-2, SmolLM (digits, then
GPT-2), Llama 3 and Qwen 2 pre-tokenizer patterns.

    pip install tokenizers
    python gen_splits.py > pretokenize_hf_reference.json
"""
import json
import random

from tokenizers import Regex, pre_tokenizers

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

POOL = (
    list("abcXYZ")
    + ["é", "ß", "Ж", "中", "あ", "ʰ"]
    + list("0179")
    + ["٣", "½", "Ⅻ"]
    + [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000"]
    + list("!.,-'\"()$#")
    + ["'s", "'T", "'re", "'LL", "'ve", "'M", "'d"]
    + ["😀", "\u0301", "\u200b", "—"]
)


def split(pre, text):
    return [p for p, _ in pre.pre_tokenize_str(text)]


def main():
    rng = random.Random(1234)
    iso = lambda pat: pre_tokenizers.Split(Regex(pat), behavior="isolated")
    pres = {
        "gpt2": iso(GPT2),
        "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), iso(GPT2)]),
        "llama3": iso(LLAMA3),
        "qwen2": iso(QWEN2),
    }
    texts = ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 24))) for _ in range(200)]
    out = {name: [[t, split(pre, t)] for t in texts] for name, pre in pres.items()}
    json.dump(out, __import__("sys").stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
