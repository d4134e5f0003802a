"""Writes a small Hugging Face tokenizer that AutoTokenizer loads offline.

inference-perf needs a tokenizer to size prompts and count streamed output tokens,
and no model hub is reachable here. Rather than ship a real vocabulary, this builds
a word-level tokenizer whose token counts equal the simulator's (vllm-sim treats a
space plus up to four letters as one token): every vocabulary entry is a lowercase
word of at most four letters, and decoding joins words with single spaces. So a
prompt inference-perf sizes at N tokens is N tokens to the simulated pod too, and
the pod's generated words (its fixed short-word list) count one token each here.

Usage: python make_tokenizer.py OUT_DIR
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

# vllm-sim's generated-text words (sim/src/engine/tokenizer.rs, WORDS), so output
# text tokenizes without unknown tokens.
SIM_OUTPUT_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "but have an they we one all can more time when will some what used them so out into "
    "many than made then may like each most over new such even also data node pod load "
    "fast cash path rate step"
).split()

SPECIAL_TOKENS = {"unk_token": "[UNK]", "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}

# Vocabulary size: large enough that random prompts rarely repeat blocks by chance.
VOCAB_WORDS = 8000

# Longest word, in letters: the simulator's tokenizer splits longer words.
MAX_WORD_LETTERS = 4


def generated_words(count: int) -> list[str]:
    """Deterministic pronounceable words of 3-4 letters (consonant-vowel patterns)."""
    consonants = "bcdfghjklmnprstvwz"
    vowels = "aeiou"
    words: list[str] = []
    patterns = [(consonants, vowels, consonants), (consonants, vowels, consonants, vowels)]
    for pattern in patterns:
        for letters in itertools.product(*pattern):
            words.append("".join(letters))
            if len(words) == count:
                return words
    return words


def build_vocab() -> dict[str, int]:
    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS.values():
        vocab[token] = len(vocab)
    for word in itertools.chain(SIM_OUTPUT_WORDS, generated_words(VOCAB_WORDS)):
        if len(vocab) >= VOCAB_WORDS + len(SPECIAL_TOKENS):
            break
        if word not in vocab:
            assert len(word) <= MAX_WORD_LETTERS and word.isalpha(), word
            vocab[word] = len(vocab)
    return vocab


def write_tokenizer(out_dir: Path) -> None:
    vocab = build_vocab()
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS.values()))

    check_round_trip(tokenizer, len(vocab))

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n")


def check_round_trip(tokenizer: Tokenizer, vocab_size: int) -> None:
    """inference-perf sizes prompts by decoding random ids and re-counting; with this
    tokenizer that must be exact, and the simulator must count the same text alike."""
    rng = random.Random(7)
    first_word = len(SPECIAL_TOKENS)
    ids = [rng.randrange(first_word, vocab_size) for _ in range(500)]
    text = tokenizer.decode(ids)
    if tokenizer.encode(text).ids != ids:
        raise RuntimeError("generated tokenizer does not round-trip its own vocabulary")
    if len(re.findall(r" ?[a-z]{1,%d}" % MAX_WORD_LETTERS, text)) != len(ids) or len(text.split()) != len(ids):
        raise RuntimeError("generated text would not count alike in the simulator's tokenizer")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        write_tokenizer(Path(argv[1]))
    except (OSError, RuntimeError) as e:
        print(f"make_tokenizer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
