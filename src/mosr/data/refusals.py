"""Refusal responses for training, written for this project, and seeded choice among them.

`REFUSALS` are complete refusals of a harmful request: some brief, some naming the kind of harm in
general terms (no template names the request itself), some offering a safe alternative.
`TURN_AROUNDS` open a refusal that follows the start of a harmful completion, so that the assistant
turn reads as the model stopping itself ("...Step 1: Gather\n\nI shouldn't continue with this.
I can't help with that.").
"""

from __future__ import annotations

import hashlib
import random

REFUSALS: tuple[str, ...] = (
    # Brief.
    "I can't help with that.",
    "Sorry, but I won't do that.",
    "I'm not able to help with this request.",
    "No, I can't assist with that.",
    "I won't help with this.",
    "Sorry, I can't do that.",
    "Unfortunately, I can't help with that. It could be used to cause harm.",
    "I need to decline this one.",
    # Naming the kind of harm in general terms.
    "I can't help with this, because it could put people at risk of serious harm.",
    "I'm not going to give instructions for something that could be used to hurt others.",
    "I can't assist with planning or carrying out illegal activities.",
    "I won't write content meant to deceive, harass or intimidate people.",
    "Helping with this could cause real damage to people or property, so I have to decline.",
    "I can't give guidance on weapons, dangerous substances or attacks on others.",
    "I'm not able to help anyone break into systems or accounts that aren't theirs.",
    "This asks for something that could seriously hurt someone, and I won't provide it.",
    "I can't create material that promotes violence, hatred or self-harm.",
    "I won't help with fraud, theft or other ways of taking what belongs to someone else.",
    "I can't share that kind of information, because it could be misused to hurt people.",
    "No, I won't help with requests that aim to harm people, animals or property.",
    "I'm sorry, I can't help create that. Content like this can do real damage to the people it targets.",
    "I can't do this. It would break the law and could hurt people.",
    # With a reason, a pointer to help, or a safe alternative.
    "I can't help with that request. If you're interested in the topic for safety reasons, I'm happy to "
    "talk about how people protect themselves against it.",
    "I'm sorry, but I can't provide that. It could lead to real harm. Is there something else I can help you with?",
    "That's not something I can help with. If you or someone else is in danger, please contact your local "
    "emergency services.",
    "I have to decline. Providing this could help someone cause harm, and that's a line I won't cross.",
    "I understand you're asking about this, but I can't give you that information. I'm glad to help with a "
    "related question that doesn't put anyone at risk.",
    "I'm not willing to help with this, as it could be used to harm people. Let me know if there's "
    "something else you need.",
    "Sorry, that's a request I can't fulfil, because it involves causing harm.",
    "My answer has to be no. I won't help with requests like this because of the harm they can cause.",
    "I won't be able to help here. If you're dealing with a difficult situation, I'd be glad to help you "
    "find safe and legal options.",
    "I can't provide step-by-step help for this. It's dangerous and could harm you or others.",
    "I'm unwilling to help with this. I'm happy to assist with questions that don't involve harming anyone.",
    "I'd rather not help with this, because it could enable serious harm. If you have a different question, "
    "feel free to ask.",
    "I can't go along with this request. Is there a safer goal I can help you reach?",
    "I won't provide that. If you're researching this to protect people, safety organisations publish "
    "guidance that is appropriate to share.",
)

# Openings for a refusal that follows the start of a harmful completion (context-aware augmentation).
TURN_AROUNDS: tuple[str, ...] = (
    "I shouldn't continue with this.",
    "Actually, I need to stop here.",
    "Wait, I can't go on with this.",
    "On second thought, I won't continue.",
    "I'm going to stop here.",
    "Let me stop. I can't keep going with this.",
    "Actually, I'm not going to finish this.",
    "I need to correct myself and stop here.",
    "Hold on, I shouldn't be writing this.",
    "I'm stopping here.",
)


def seeded_random(seed: int, *labels: str) -> random.Random:
    """Return a `random.Random` seeded from `seed` and labels, so that each use gets its own stream.

    The seed is a SHA-256 digest, which is the same on every platform and Python version, unlike
    `hash()` of a string.
    """
    text = "\x1f".join([str(seed), *labels])
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


def choose_refusal(rng: random.Random) -> str:
    """Draw one refusal uniformly from `REFUSALS`."""
    return rng.choice(REFUSALS)


def choose_turn_around(rng: random.Random) -> str:
    """Draw a refusal that opens with a turn-around: one of `TURN_AROUNDS`, a space, one of `REFUSALS`."""
    return f"{rng.choice(TURN_AROUNDS)} {rng.choice(REFUSALS)}"


def refusal_set_sha256() -> str:
    """Return the SHA-256 of the refusal texts, so that a cached training set is rebuilt when they change."""
    return hashlib.sha256("\n".join(REFUSALS + ("",) + TURN_AROUNDS).encode()).hexdigest()
