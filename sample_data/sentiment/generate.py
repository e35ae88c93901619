"""Generate the customer-comment sentiment sample (deterministic: same output every run).

    python sample_data/sentiment/generate.py

Comments are assembled from hand-written pieces (products, aspects, openings, verdicts, closings)
with a seeded random generator, deduplicated, shuffled and cut into train / validation / test.
"""

from __future__ import annotations

import random
from pathlib import Path

from engine.data.samples import write_sample_splits

SEED = 20240611
TARGET_ROWS = 360
INSTRUCTION = ("Classify the sentiment of the customer comment. "
               "Answer with one word: positive, negative, or neutral.")

PRODUCTS = ["blender", "pair of running shoes", "phone case", "desk lamp", "coffee maker", "backpack",
            "rain jacket", "pair of headphones", "office chair", "water bottle", "yoga mat", "toaster",
            "pair of winter boots", "kitchen knife set", "bluetooth speaker", "wool sweater",
            "electric kettle", "garden hose", "laptop stand", "set of bath towels"]

POSITIVE = [
    "The {p} works perfectly and feels really well made.",
    "Absolutely love this {p}, it does exactly what I needed.",
    "Best {p} I have owned in years.",
    "The {p} arrived a day early and looks even better than the photos.",
    "Great value for the price, the {p} is sturdy and easy to use.",
    "I was skeptical at first, but the {p} has been fantastic.",
    "My {p} still works like new after months of daily use.",
    "Setup took two minutes and the {p} has been flawless since.",
    "Really impressed with the quality of the {p}.",
    "The customer service team replaced my {p} within a day, fantastic support.",
    "Bought a second {p} as a gift because I like mine so much.",
    "The {p} is quiet, quick and looks great on the counter.",
    "Exceeded my expectations, the {p} is a joy to use.",
    "Five stars, the {p} is comfortable and beautifully finished.",
]
NEGATIVE = [
    "The {p} stopped working after a week.",
    "Very disappointed, the {p} feels cheap and flimsy.",
    "My {p} arrived broken and nobody answered my emails.",
    "The {p} is nothing like the description, I want a refund.",
    "Waste of money, the {p} fell apart on the first use.",
    "The {p} took three weeks to arrive and the box was crushed.",
    "I returned the {p} because it smelled of burnt plastic.",
    "Terrible quality, the {p} broke the second time I used it.",
    "The {p} is far too loud and the buttons stick.",
    "Customer support kept me on hold for an hour about my faulty {p}.",
    "Do not buy this {p}, it leaks everywhere.",
    "The {p} overheats and the cord is ridiculously short.",
    "Sent me the wrong {p} twice, still waiting for the right one.",
    "Regret buying the {p}, it is uncomfortable and poorly stitched.",
]
NEUTRAL = [
    "The {p} arrived on Tuesday as scheduled.",
    "Does the {p} come in any other colors?",
    "I ordered the {p} in medium, it fits as expected.",
    "The {p} is about what you would expect for the price.",
    "Received the {p} today, have not tried it yet.",
    "Can I use the {p} with the older model's accessories?",
    "The {p} is the same as the one I bought last year.",
    "The {p} comes with a manual and a one-year warranty.",
    "It is a {p}. It does the job, nothing more, nothing less.",
    "Is there a replacement part available for the {p}?",
    "The {p} was delivered to my neighbour, but it got to me eventually.",
    "I bought the {p} for my brother, he has not said anything about it yet.",
    "The {p} is fine. Not great, not bad.",
    "Ordered the {p} on Monday, tracking says it ships Thursday.",
]
OPENINGS = {
    "positive": ["", "", "Wow! ", "Honestly, ", "Update: ", "So happy. ", "Quick review: "],
    "negative": ["", "", "Ugh. ", "Honestly, ", "Update: ", "Not happy. ", "Quick review: "],
    "neutral": ["", "", "Hi, ", "Just a note: ", "Update: ", "Quick question. ", "FYI, "],
}
CLOSINGS = {
    "positive": ["", "", " Highly recommend!", " Will buy again.", " Thanks!",
                 " Would recommend to friends.", " :)"],
    "negative": ["", "", " Never again.", " Avoid.", " Very frustrating.",
                 " One star.", " I expected better."],
    "neutral": ["", "", " Thanks.", " Let me know.", " Regards.", " That's all.", ""],
}


def comments(rng: random.Random) -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    pools = [("positive", POSITIVE), ("negative", NEGATIVE), ("neutral", NEUTRAL)]
    attempts = 0
    while len(rows) < TARGET_ROWS and attempts < 100_000:
        attempts += 1
        label, pool = pools[len(rows) % 3]
        body = rng.choice(pool).format(p=rng.choice(PRODUCTS))
        opening = rng.choice(OPENINGS[label])
        if opening and not opening.endswith(". ") and not opening.endswith("! "):
            body = body[0].lower() + body[1:]
        text = f"{opening}{body}{rng.choice(CLOSINGS[label])}".strip()
        if text in seen:
            continue
        seen.add(text)
        rows.append({"instruction": INSTRUCTION, "prompt": text, "completion": label})
    return rows



def main() -> None:
    rows = comments(random.Random(SEED))
    counts = write_sample_splits(rows, Path(__file__).resolve().parent, SEED + 1)
    print(f"sentiment: {len(rows)} rows -> {counts}")


if __name__ == "__main__":
    main()
