"""Context-aware augmentation: a harmful prompt, the start of a harmful answer, then a refusal.

For a malicious example (a harmful prompt with the base model's own harmful completion), draw k
uniformly from the integers of an inclusive range (by default 0 to 32, so k = 0 has probability
1/33), cut the completion after its first k tokens, and continue with a refusal:

- `response_prefix` is the first k tokens of the completion, tokenised with the model's tokenizer
  and decoded back, so it is a prefix of the completion's text. Losses do not apply to it.
- `response` is a line break (two newlines, fewer if the prefix already ends with one), a short
  turn-around ("I shouldn't continue with this.") and a refusal. For k = 0 it is the refusal alone.

So the model is trained to stop and refuse because of the harmful text it has started to write,
and not only because of alarming words in the prompt.

Two cases change k: a completion shorter than k tokens is used whole, and a cut inside a
multi-byte character moves back to the previous whole character. The k actually used is part of
each example's id ("augmented/harmful_train/12/k17").
"""

from __future__ import annotations

from collections import Counter

from mosr.data.examples import AUGMENTED, MALICIOUS, TrainingExample
from mosr.data.refusals import choose_refusal, choose_turn_around, seeded_random
from mosr.errors import MosrError

DEFAULT_AUGMENTATION_RANGE = (0, 32)

# The character a byte-level BPE tokenizer decodes a cut multi-byte character to.
_REPLACEMENT_CHARACTER = "\ufffd"


def check_augmentation_range(augmentation_range: tuple[int, int]) -> tuple[int, int]:
    """Return the range as two ints, or raise MosrError unless 0 <= low <= high."""
    try:
        low, high = (int(value) for value in augmentation_range)
    except (TypeError, ValueError):
        raise MosrError(
            f"the augmentation range must be two token counts (low, high), got {augmentation_range!r}"
        ) from None
    if low < 0 or high < low:
        raise MosrError(f"the augmentation range must satisfy 0 <= low <= high, got ({low}, {high})")
    return low, high


def completion_token_ids(tokenizer, completion: str) -> list[int]:
    """Token ids of a completion as the chat encoding tokenises message contents (no special tokens)."""
    return tokenizer(completion, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def decode_prefix(tokenizer, token_ids: list[int], k: int) -> tuple[str, int]:
    """Decode the first k of `token_ids`; return the text and the number of tokens used.

    Fewer than k tokens are used when there are fewer than k, or when the k-th token ends inside a
    multi-byte character, which would decode to U+FFFD.
    """
    k = min(k, len(token_ids))
    while k > 0:
        text = tokenizer.decode(token_ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not text.endswith(_REPLACEMENT_CHARACTER):
            return text, k
        k -= 1
    return "", 0


def refusal_after_prefix(prefix: str, rng) -> str:
    """Draw the trained part of an augmented turn: a line break, a turn-around and a refusal.

    For an empty prefix the result is a plain refusal with no line break.
    """
    if not prefix:
        return choose_refusal(rng)
    if prefix.endswith("\n\n"):
        separator = ""
    elif prefix.endswith("\n"):
        separator = "\n"
    else:
        separator = "\n\n"
    return separator + choose_turn_around(rng)


def augment_example(
    example: TrainingExample, tokenizer, k: int, rng, *, suffix: str = ""
) -> tuple[TrainingExample, int]:
    """Build the augmented example for one malicious example and a drawn k; return it and the k used."""
    if example.kind != MALICIOUS:
        raise ValueError(f"augmentation needs a malicious example, got kind {example.kind!r} ({example.id})")
    prefix, used = decode_prefix(tokenizer, completion_token_ids(tokenizer, example.response), k)
    identifier = example.id.replace(f"{MALICIOUS}/", f"{AUGMENTED}/", 1) + f"/k{used}{suffix}"
    augmented = TrainingExample(
        id=identifier,
        kind=AUGMENTED,
        prompt=example.prompt,
        response=refusal_after_prefix(prefix, rng),
        response_prefix=prefix,
        source=example.source,
    )
    return augmented, used


def build_augmented_examples(
    malicious: list[TrainingExample],
    tokenizer,
    *,
    count: int,
    augmentation_range: tuple[int, int] = DEFAULT_AUGMENTATION_RANGE,
    seed: int = 0,
) -> tuple[list[TrainingExample], Counter]:
    """Build `count` augmented examples from malicious ones; return them and the count of each k used.

    Sources are taken in a seeded random order, and the order is reshuffled for each further pass
    when `count` exceeds the number of malicious examples, so a prompt recurs with other values of k.
    """
    low, high = check_augmentation_range(augmentation_range)
    if count < 0:
        raise MosrError(f"the number of augmented examples must be >= 0, got {count}")
    if count and not malicious:
        raise MosrError("context-aware augmentation needs malicious examples, and there are none")

    rng = seeded_random(seed, "augmented")
    examples: list[TrainingExample] = []
    used_k: Counter = Counter()
    order: list[int] = []
    for index in range(count):
        passes, position = divmod(index, len(malicious))
        if position == 0:
            order = list(range(len(malicious)))
            rng.shuffle(order)
        k = rng.randint(low, high)
        suffix = f"/{passes + 1}" if passes else ""
        example, used = augment_example(malicious[order[position]], tokenizer, k, rng, suffix=suffix)
        used_k[used] += 1
        examples.append(example)
    return examples, used_k
