"""Writes smollm2_hf_reference.json: SmolLM2's tokenization of tricky strings by Hugging Face
`tokenizers` (an implementation independent of kiln and llama.cpp), built from the vocabulary
and merges in the GGUF file, with SmolLM2's pre-tokenizer (individual digits, then GPT-2
byte-level) and its control tokens as special tokens.

    pip install gguf tokenizers
    python gen_reference.py path/to/SmolLM2-135M-Instruct.Q4_1.gguf > smollm2_hf_reference.json
"""
import json
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CASES = [
    "Hello world",
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "a    b",
    "a \n b",
    "\t\tx",
    "trailing   ",
    "   leading",
    "\r\n\r\n",
    "12345",
    "3.14159 and 2,718",
    "x1y22z333",
    "in 1999, 42 people",
    "٣٤٥ Ⅻ ½ ²",
    "I'm you're they've we'll he'd it's DON'T",
    "héllo wörld café naïve",
    "日本語のテキスト",
    "中文测试，标点。",
    "한국어 문장",
    "Привет, мир!",
    "emoji 😀👍🏽 family 👨‍👩‍👧",
    "العربية",
    "हिन्दी",
    "e\u0301 vs é",
    "def f(x):\n    return x**2  # comment\n",
    'fn main() { println!("{}", 1); }',
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>",
    "a<|im_end|>b",
    "<|im_start|><|im_start|>",
    "<|im_sta",
    "!!!???... --- ***",
    '"quoted" (parens) [brackets]',
    "a\u00a0b a\u3000b",
    "a" * 300,
    " " * 40 + "x",
    "mixed\tTabs\tand  spaces\n\n  indented",
    "URL: https://example.com/path?q=1&r=2#frag",
    "email@example.org, @handle #tag $100 50% ^_^ ~tilde~ |pipe|",
]

GPL = "/usr/share/common-licenses/GPL-3"


def main():
    r = gguf.GGUFReader(sys.argv[1])
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
    )
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in CASES]
    with open(GPL, encoding="utf-8") as f:
        gpl = f.read()
    out = {
        "source": "huggingface tokenizers %s" % __import__("tokenizers").__version__,
        "cases": cases,
        "gpl3_ids": tok.encode(gpl, add_special_tokens=False).ids,
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
