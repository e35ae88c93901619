"""Generate the arithmetic word-problem sample with step-by-step rationales (deterministic).

    python sample_data/arithmetic/generate.py

Each problem family draws its numbers from a seeded random generator, computes the answer in
Python, and writes the reasoning a person would show. The final answer is an integer string.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from engine.data.samples import write_sample_splits

SEED = 314159
TARGET_ROWS = 240
INSTRUCTION = "Solve the word problem. Think step by step, then give the final answer."

NAMES = ["Maya", "Leo", "Priya", "Tom", "Aisha", "Carlos", "Mei", "Jonas", "Fatima", "Sam",
         "Olga", "Kwame", "Lucia", "Ravi", "Hannah", "Diego"]
Problem = tuple[str, str, int]  # question, rationale, answer


def shopping(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    item, price = r.choice([("notebooks", r.randint(2, 6)), ("pens", r.randint(1, 3)),
                            ("mugs", r.randint(4, 9)), ("apples", 1), ("posters", r.randint(3, 8))])
    n = r.randint(3, 12)
    bill = next(b for b in (10, 20, 50, 100) if b > n * price)
    q = r.choice([
        f"{name} buys {n} {item} at ${price} each and pays with a ${bill} bill. "
        "How much change does {name} get?",
        f"{item.capitalize()} cost ${price} each. {name} buys {n} of them and hands the cashier "
        f"${bill}. How many dollars of change come back?",
    ]).replace("{name}", name)
    cost = n * price
    rationale = (f"{n} {item} at ${price} each cost {n} × {price} = ${cost}.\n"
                 f"The change is {bill} − {cost} = ${bill - cost}.")
    return q, rationale, bill - cost


def sharing(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    friends = r.randint(2, 6)
    each = r.randint(3, 12)
    left = r.randint(0, friends - 1)
    total = friends * each + left
    thing = r.choice(["stickers", "marbles", "cookies", "cards", "grapes"])
    q = r.choice([
        f"{name} has {total} {thing} and shares them equally among {friends} friends, keeping "
        "any that are left over. How many does each friend get?",
        f"{total} {thing} are split evenly between {friends} children. How many {thing} does each "
        "child receive?",
    ])
    rationale = f"{total} ÷ {friends} = {each}"
    rationale += f" with {left} left over." if left else " exactly."
    rationale += f"\nEach one gets {each} {thing}."
    return q, rationale, each


def rate(r: random.Random) -> Problem:
    speed = r.choice([40, 45, 50, 60, 64, 72, 80, 90])
    hours = r.randint(2, 7)
    vehicle = r.choice(["a train", "a bus", "a car", "a truck"])
    q = r.choice([
        f"{vehicle.capitalize()} travels at {speed} km per hour for {hours} hours. How many "
        "kilometres does it cover?",
        f"If {vehicle} keeps a steady {speed} km/h, how far does it go in {hours} hours?",
    ])
    rationale = f"Distance = speed × time = {speed} × {hours} = {speed * hours} km."
    return q, rationale, speed * hours


def multi_step(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    start = r.randint(10, 60)
    gain = r.randint(5, 40)
    loss = r.randint(1, start + gain - 1)
    thing = r.choice(["books", "shells", "coins", "stamps", "plants"])
    q = r.choice([
        f"{name} had {start} {thing}, got {gain} more as a present, then gave {loss} away. "
        f"How many {thing} does {name} have now?",
        f"There were {start} {thing} on the shelf. {gain} were added in the morning and {loss} "
        "were taken in the afternoon. How many are on the shelf now?",
    ])
    mid = start + gain
    rationale = (f"After the additions: {start} + {gain} = {mid}.\n"
                 f"After removing {loss}: {mid} − {loss} = {mid - loss}.")
    return q, rationale, mid - loss


def discount(r: random.Random) -> Problem:
    price = r.choice([20, 40, 50, 60, 80, 120, 150, 200, 250])
    pct = r.choice([10, 20, 25, 30, 50])
    item = r.choice(["jacket", "lamp", "bicycle helmet", "suitcase", "pair of boots"])
    q = r.choice([
        f"A {item} costs ${price}. It is on sale for {pct}% off. What is the sale price in "
        "dollars?",
        f"The store takes {pct}% off a ${price} {item}. How much does the {item} cost now?",
    ])
    off = price * pct // 100
    rationale = (f"{pct}% of {price} is {price} × {pct} ÷ 100 = {off}.\n"
                 f"The sale price is {price} − {off} = ${price - off}.")
    return q, rationale, price - off


def area(r: random.Random) -> Problem:
    w, h = r.randint(3, 15), r.randint(3, 15)
    tile = r.choice([1, 1, 2])
    if tile == 1:
        q = (f"A rectangular garden is {w} metres long and {h} metres wide. What is its area in "
             "square metres?")
        return q, f"Area = length × width = {w} × {h} = {w * h} square metres.", w * h
    w, h = w * 2, h * 2
    tiles = (w // 2) * (h // 2)
    q = (f"A floor measures {w} m by {h} m and is covered with square tiles 2 m on a side. "
         "How many tiles are needed?")
    rationale = (f"Along the length: {w} ÷ 2 = {w // 2} tiles; along the width: {h} ÷ 2 = "
                 f"{h // 2} tiles.\nTotal: {w // 2} × {h // 2} = {tiles} tiles.")
    return q, rationale, tiles


def time_problem(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    per_day = r.randint(15, 90)
    days = r.randint(3, 14)
    activity = r.choice(["practises piano", "reads", "jogs", "studies Spanish"])
    q = (f"{name} {activity} for {per_day} minutes every day for {days} days. How many minutes "
         "is that in total?")
    rationale = f"{per_day} minutes × {days} days = {per_day * days} minutes."
    return q, rationale, per_day * days


def saving(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    goal = r.choice([60, 90, 120, 150, 180, 240, 300])
    weekly = r.choice([5, 10, 15, 20, 30])
    have = r.randrange(5, goal // 2, 5)
    need = goal - have
    weeks = -(-need // weekly)
    item = r.choice(["a bike", "a guitar", "a tablet", "concert tickets", "a skateboard"])
    q = (f"{name} wants {item} that costs ${goal} and has already saved ${have}. Saving "
         f"${weekly} a week, how many weeks until {name} can afford it?")
    rationale = f"Still needed: {goal} − {have} = ${need}.\n{need} ÷ {weekly} = {need / weekly:.2f}"
    rationale += (f", so {weeks} weeks." if need % weekly == 0 else
                  f", which rounds up to {weeks} full weeks.")
    return q, rationale, weeks


FAMILIES: list[Callable[[random.Random], Problem]] = [
    shopping, sharing, rate, multi_step, discount, area, time_problem, saving]


def problems(rng: random.Random) -> list[dict]:
    rows, seen = [], set()
    attempts = 0
    while len(rows) < TARGET_ROWS and attempts < 100_000:
        attempts += 1
        q, rationale, answer = FAMILIES[len(rows) % len(FAMILIES)](rng)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"instruction": INSTRUCTION, "prompt": q, "rationale": rationale,
                     "answer": str(answer), "completion": f"{rationale}\nAnswer: {answer}"})
    return rows



def main() -> None:
    rows = problems(random.Random(SEED))
    counts = write_sample_splits(rows, Path(__file__).resolve().parent, SEED + 1)
    print(f"arithmetic: {len(rows)} rows -> {counts}")


if __name__ == "__main__":
    main()
