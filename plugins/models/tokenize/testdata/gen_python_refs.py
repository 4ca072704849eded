# Regenerates python_refs.json: GPT-2's pre-tokenization with the real
# `regex` module (what transformers' GPT2Tokenizer uses) and Python's
# bytes.decode("utf-8", errors="replace"). Run: python3 gen_python_refs.py
# (needs the `regex` package; tests only read the JSON).
import json
import random

import regex

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

texts = [
    "", " ", "  ", "\n", "a", " a", "a ", "a  b", "a \nb", "a\n b", "a\t\tb", " \t\n x ",
    "don't", "DON'T", "it's 'tis", "'s", "''s", "?'s", "I'll've", "we're're", "' s", " 's",
    "x'm'd'll", "rock'n'roll", "hello   world  ", "\r\n\r\n", "end\n", "tab\tend\t",
    "123abc456", " 12 34", "3.14159", "١٢٣ numbers", "x²+y²", "Ⅻ roman", "½ cup",
    "naïve café", "Ünïcödé", "straße", "東京タワー", "한국어 텍스트", "Привет, мир!", "שלום",
    "emoji 😀😀 and 👍🏽", "a\u00a0b", "a\u2028b", "a\u3000\u3000b", "a\u200bb", "a\ufeffb",
    "a\x1cb", "a\x85b", "a\x0bb\x0cc", "zero\u200dwidth", "mixed—dash–en", "quotes “like” ‘this’",
    "$100 & 50% off!!!", "...?!", " ... ", "<|endoftext|>", "a<b>c", "foo@bar.com", "C++ / C#",
    "   leading", "trailing   ", " \u00a0 x", "x \u00a0", "a \u2003 b", "\u0301accent", "e\u0301",
    "ǅ title", "ʰmodifier", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U0001F1FA\U0001F1F8 flag",
]
rng = random.Random(1234)
alphabet = list("ab Z9'.,!\t\n\r") + ["é", "東", "😀", "\u00a0", "\u2028", "²", "ـ", "\u0301", "s", "t", "re", "ll"]
for _ in range(300):
    texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))))

pretok = [{"text": t, "words": PAT.findall(t)} for t in texts]

byte_cases = [
    b"", b"abc", b"\xe6\x9d", b"\xe6\x9d\xb1", b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80", b"\x80", b"\xc0\xaf",
    b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5", b"\xff\xfe", b"a\xc3", b"\xc3(",
    b"\xe2\x82", b"\xe2\x82(", b"\xf0\x90\x80", b"\xf0\x90(", b"\xf1\x80\x80\x80\x80",
]
for _ in range(300):
    byte_cases.append(bytes(rng.choice([0x41, 0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xc3, 0xdf, 0xe0, 0xe1, 0xed, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff]) for _ in range(rng.randint(1, 10))))
utf8_replace = [{"hex": b.hex(), "text": b.decode("utf-8", errors="replace")} for b in byte_cases]

with open("python_refs.json", "w", encoding="utf-8") as f:
    json.dump({"regex_version": regex.__version__, "pattern": PAT.pattern, "pretokenize": pretok, "utf8_replace": utf8_replace}, f, ensure_ascii=True, indent=None, separators=(",", ":"))
