"""Writes spm_reference.json: a small SentencePiece BPE model (trained here on Debian's GPL-3
text, Llama-style: byte fallback, no normalization, a dummy-prefix space) as GGUF-like
vocabulary arrays, plus the `sentencepiece` library's own encoding of test strings, an
implementation independent of kiln and llama.cpp.

    pip install sentencepiece
    python gen_spm.py > spm_reference.json
"""
import io
import json
import sys

import sentencepiece as spm

GPL = "/usr/share/common-licenses/GPL-3"

CASES = [
    "Hello world",
    "the GNU General Public License",
    "  two leading spaces and trailing  ",
    "copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>",
    "naïve café 日本 😀",
    "tab\tand\nnewline",
    "",
    "a",
    "licensees and recipients",
    "THE PROGRAM IS PROVIDED \"AS IS\" WITHOUT WARRANTY OF ANY KIND",
]


def main():
    with open(GPL, encoding="utf-8") as f:
        text = f.read()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=800,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        else:
            types.append(1)
    cases = [{"text": t, "ids": sp.encode(t)} for t in CASES]
    json.dump(
        {"tokens": tokens, "scores": scores, "token_types": types, "cases": cases},
        sys.stdout,
        ensure_ascii=False,
    )


if __name__ == "__main__":
    main()
