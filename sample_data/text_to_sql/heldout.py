"""Write the hand-written held-out set of the text-to-SQL sample: heldout.jsonl.

    python sample_data/text_to_sql/heldout.py [OUT.jsonl]   (default: heldout.jsonl next to this file)

`generate.py` fills 34 question families with values, so its test split shares question shapes
and phrasings with its train split: a model can score there by recognising a phrasing. The
questions below were written one at a time, apart from those families: shapes none of them has
(two periods side by side, percentages and shares, CASE buckets, MINUS / INTERSECT, IN and
NOT EXISTS subqueries, correlated averages, discounts against the list price) in the wording an
analyst would type. The gold queries keep the dataset's conventions, so a model that learned
them can be right: revenue and spend are SUM(oi.quantity * oi.unit_price) without cancelled
orders (only completed ones where the question says so), averages are ROUND(..., 2), dates are
DATE 'YYYY-MM-DD' literals with BETWEEN, and TOP n orders by a unique tiebreaker.

Before the file is written every gold goes through the evaluator's SQL judge against a fresh
build of the database. A gold is refused when it fails, returns no rows, or returns a repeated
row (then DISTINCT would change the answer, so the question is ambiguous); a question is refused
when it repeats a prompt of train / validation / test. The output is deterministic.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build_db  # noqa: E402
from generate import INSTRUCTION  # noqa: E402  (the same instruction as every other split)

OUT = HERE / "heldout.jsonl"
OTHER_SPLITS = ("train", "validation", "test")
ITEMS = "FROM orders o JOIN order_items oi ON oi.order_id = o.order_id"
ITEMS_PRODUCTS = f"{ITEMS} JOIN products p ON p.product_id = oi.product_id"
Y2024 = "BETWEEN DATE '2024-01-01' AND DATE '2024-12-31'"
Y2023 = "BETWEEN DATE '2023-01-01' AND DATE '2023-12-31'"

# (question, gold Teradata query). Questions are as a user would type them; the SQL is one line.
QUESTIONS: list[tuple[str, str]] = [
    # Percentages and shares
    ("What percentage of all orders ended up cancelled? Two decimals is fine.",
     "SELECT ROUND(100.0 * SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) / COUNT(*), 2) "
     "AS cancelled_pct FROM orders"),
    ("what share of our 2024 orders came in online? percent, rounded to 2 places",
     "SELECT ROUND(100.0 * SUM(CASE WHEN channel = 'online' THEN 1 ELSE 0 END) / COUNT(*), 2) "
     f"AS online_pct FROM orders WHERE order_date {Y2024}"),
    ("Could you show each category's share of total revenue as a percentage (two decimals), "
     "biggest share first? Leave cancelled orders out.",
     "SELECT p.category, ROUND(100.0 * SUM(oi.quantity * oi.unit_price) / (SELECT "
     "SUM(oi2.quantity * oi2.unit_price) FROM orders o2 JOIN order_items oi2 ON oi2.order_id = "
     f"o2.order_id WHERE o2.status <> 'cancelled'), 2) AS revenue_share {ITEMS_PRODUCTS} "
     "WHERE o.status <> 'cancelled' GROUP BY p.category ORDER BY revenue_share DESC"),
    ("Return rate per customer segment: the percent of each segment's orders that came back "
     "returned, two decimals, highest rate first.",
     "SELECT c.segment, ROUND(100.0 * SUM(CASE WHEN o.status = 'returned' THEN 1 ELSE 0 END) / "
     "COUNT(*), 2) AS return_rate FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
     "GROUP BY c.segment ORDER BY return_rate DESC"),
    ("Which stores cancel more than 10% of their orders?",
     "SELECT s.store_name FROM orders o JOIN stores s ON s.store_id = o.store_id GROUP BY "
     "s.store_name HAVING 100.0 * SUM(CASE WHEN o.status = 'cancelled' THEN 1 ELSE 0 END) / "
     "COUNT(*) > 10"),
    # Two periods side by side, and buckets of time
    ("Compare completed-order revenue in October 2024 with November 2024: one row, October in "
     "the first column and November in the second.",
     "SELECT SUM(CASE WHEN o.order_date BETWEEN DATE '2024-10-01' AND DATE '2024-10-31' THEN "
     "oi.quantity * oi.unit_price ELSE 0 END) AS october_revenue, SUM(CASE WHEN o.order_date "
     "BETWEEN DATE '2024-11-01' AND DATE '2024-11-30' THEN oi.quantity * oi.unit_price ELSE 0 "
     f"END) AS november_revenue {ITEMS} WHERE o.status = 'completed'"),
    ("Did we get more orders in November or in December 2024? Give me both counts side by side, "
     "November first.",
     "SELECT SUM(CASE WHEN order_date BETWEEN DATE '2024-11-01' AND DATE '2024-11-30' THEN 1 "
     "ELSE 0 END) AS november_orders, SUM(CASE WHEN order_date BETWEEN DATE '2024-12-01' AND "
     "DATE '2024-12-31' THEN 1 ELSE 0 END) AS december_orders FROM orders"),
    ("Orders per quarter in 2024, please. Label the quarters Q1 to Q4 and list them in order.",
     "SELECT t.quarter, COUNT(*) AS order_count FROM (SELECT CASE WHEN order_date BETWEEN DATE "
     "'2024-01-01' AND DATE '2024-03-31' THEN 'Q1' WHEN order_date BETWEEN DATE '2024-04-01' "
     "AND DATE '2024-06-30' THEN 'Q2' WHEN order_date BETWEEN DATE '2024-07-01' AND DATE "
     f"'2024-09-30' THEN 'Q3' ELSE 'Q4' END AS quarter FROM orders WHERE order_date {Y2024}) t "
     "GROUP BY t.quarter ORDER BY t.quarter"),
    ("How many customers signed up in each quarter of 2023? Use the labels Q1, Q2, Q3 and Q4, "
     "in quarter order.",
     "SELECT t.quarter, COUNT(*) AS signups FROM (SELECT CASE WHEN signup_date BETWEEN DATE "
     "'2023-01-01' AND DATE '2023-03-31' THEN 'Q1' WHEN signup_date BETWEEN DATE '2023-04-01' "
     "AND DATE '2023-06-30' THEN 'Q2' WHEN signup_date BETWEEN DATE '2023-07-01' AND DATE "
     "'2023-09-30' THEN 'Q3' ELSE 'Q4' END AS quarter FROM customers WHERE signup_date "
     f"{Y2023}) t GROUP BY t.quarter ORDER BY t.quarter"),
    ("Revenue in the first half of 2024 versus the second half, cancelled orders excluded. "
     "Two columns, first half then second half.",
     "SELECT SUM(CASE WHEN o.order_date BETWEEN DATE '2024-01-01' AND DATE '2024-06-30' THEN "
     "oi.quantity * oi.unit_price ELSE 0 END) AS h1_revenue, SUM(CASE WHEN o.order_date BETWEEN "
     "DATE '2024-07-01' AND DATE '2024-12-31' THEN oi.quantity * oi.unit_price ELSE 0 END) AS "
     f"h2_revenue {ITEMS} WHERE o.status <> 'cancelled'"),
    # CASE buckets
    ("Put the products into price bands and count them: 'under 25' below $25, '25-99.99' from "
     "$25 up to $99.99, and '100+' for $100 or more.",
     "SELECT t.price_band, COUNT(*) AS product_count FROM (SELECT CASE WHEN unit_price < 25 THEN "
     "'under 25' WHEN unit_price < 100 THEN '25-99.99' ELSE '100+' END AS price_band FROM "
     "products) t GROUP BY t.price_band"),
    ("Size up our orders by how many different products they contain: 'single' for 1, "
     "'medium' for 2 or 3, 'large' for 4 or more. How many orders fall in each size?",
     "SELECT t.order_size, COUNT(*) AS order_count FROM (SELECT order_id, CASE WHEN COUNT(*) = 1 "
     "THEN 'single' WHEN COUNT(*) <= 3 THEN 'medium' ELSE 'large' END AS order_size FROM "
     "order_items GROUP BY order_id) t GROUP BY t.order_size"),
    # IN / NOT EXISTS subqueries and set operations
    ("Which Atlanta customers have ordered both Electronics and Home products?",
     "SELECT c.first_name, c.last_name FROM customers c WHERE c.city = 'Atlanta' AND "
     f"c.customer_id IN (SELECT o.customer_id {ITEMS_PRODUCTS} WHERE p.category = "
     f"'Electronics') AND c.customer_id IN (SELECT o.customer_id {ITEMS_PRODUCTS} WHERE "
     "p.category = 'Home')"),
    ("Who has bought a Cast Iron Skillet? Just first and last names.",
     "SELECT c.first_name, c.last_name FROM customers c WHERE c.customer_id IN (SELECT "
     f"o.customer_id {ITEMS_PRODUCTS} WHERE p.product_name = 'Cast Iron Skillet')"),
    ("Which cities do we have customers in but no store?",
     "SELECT city FROM customers MINUS SELECT city FROM stores"),
    ("How many customers placed orders in both 2023 and 2024?",
     "SELECT COUNT(*) AS customer_count FROM (SELECT customer_id FROM orders WHERE order_date "
     f"{Y2023} INTERSECT SELECT customer_id FROM orders WHERE order_date {Y2024}) t"),
    ("Any Boston customers who have shopped with us both online and in-store? Names please.",
     "SELECT c.first_name, c.last_name FROM customers c WHERE c.city = 'Boston' AND "
     "c.customer_id IN (SELECT customer_id FROM orders WHERE channel = 'online') AND "
     "c.customer_id IN (SELECT customer_id FROM orders WHERE channel = 'in-store')"),
    ("Which customers have never ordered online?",
     "SELECT c.first_name, c.last_name FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o "
     "WHERE o.customer_id = c.customer_id AND o.channel = 'online')"),
    ("Which products got no orders at all in the first quarter of 2023?",
     "SELECT p.product_name FROM products p WHERE NOT EXISTS (SELECT 1 FROM order_items oi JOIN "
     "orders o ON o.order_id = oi.order_id WHERE oi.product_id = p.product_id AND o.order_date "
     "BETWEEN DATE '2023-01-01' AND DATE '2023-03-31')"),
    ("Show the Corporate customers who live in a city where we have no store, with their city.",
     "SELECT first_name, last_name, city FROM customers WHERE segment = 'Corporate' AND city "
     "NOT IN (SELECT city FROM stores)"),
    ("Name the customers all of whose orders were completed.",
     "SELECT c.first_name, c.last_name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o "
     "WHERE o.customer_id = c.customer_id) AND NOT EXISTS (SELECT 1 FROM orders o WHERE "
     "o.customer_id = c.customer_id AND o.status <> 'completed')"),
    ("How many customers have ordered from a store outside their home state?",
     "SELECT COUNT(DISTINCT o.customer_id) AS customer_count FROM orders o JOIN customers c ON "
     "c.customer_id = o.customer_id JOIN stores s ON s.store_id = o.store_id WHERE s.state <> "
     "c.state"),
    # Averages over orders
    ("avg number of different products per order?",
     "SELECT ROUND(AVG(t.product_count), 2) AS avg_products FROM (SELECT order_id, COUNT(*) AS "
     "product_count FROM order_items GROUP BY order_id) t"),
    ("On average, how many units does one order contain?",
     "SELECT ROUND(AVG(t.units), 2) AS avg_units FROM (SELECT order_id, SUM(quantity) AS units "
     "FROM order_items GROUP BY order_id) t"),
    ("What's the average order value online vs in-store for 2024, not counting cancelled orders?",
     "SELECT t.channel, ROUND(AVG(t.order_total), 2) AS avg_order_value FROM (SELECT o.order_id, "
     f"o.channel, SUM(oi.quantity * oi.unit_price) AS order_total {ITEMS} WHERE o.status <> "
     f"'cancelled' AND o.order_date {Y2024} GROUP BY o.order_id, o.channel) t GROUP BY t.channel"),
    # Rankings
    ("Rank the stores by how many different products they sold in 2023, most first; break ties "
     "by store name.",
     "SELECT s.store_name, COUNT(DISTINCT oi.product_id) AS product_count "
     f"{ITEMS} JOIN stores s ON s.store_id = o.store_id WHERE o.order_date {Y2023} "
     "GROUP BY s.store_name ORDER BY product_count DESC, s.store_name"),
    ("Which brand has sold the most units overall, and how many?",
     "SELECT TOP 1 p.brand, SUM(oi.quantity) AS units FROM order_items oi JOIN products p ON "
     "p.product_id = oi.product_id GROUP BY p.brand ORDER BY units DESC, p.brand"),
    ("top 5 products by online revenue",
     f"SELECT TOP 5 p.product_name, SUM(oi.quantity * oi.unit_price) AS revenue {ITEMS_PRODUCTS} "
     "WHERE o.status <> 'cancelled' AND o.channel = 'online' GROUP BY p.product_name "
     "ORDER BY revenue DESC, p.product_name"),
    ("Which order had the most units in it, and how many units was that?",
     f"SELECT TOP 1 o.order_id, SUM(oi.quantity) AS units {ITEMS} GROUP BY o.order_id "
     "ORDER BY units DESC, o.order_id"),
    ("Customers from which state have spent the most with us? Show the state and the amount.",
     "SELECT TOP 1 c.state, SUM(oi.quantity * oi.unit_price) AS total_spent FROM customers c "
     "JOIN orders o ON o.customer_id = c.customer_id JOIN order_items oi ON oi.order_id = "
     "o.order_id WHERE o.status <> 'cancelled' GROUP BY c.state ORDER BY total_spent DESC, "
     "c.state"),
    ("Which 3 products get returned the most, by units?",
     f"SELECT TOP 3 p.product_name, SUM(oi.quantity) AS units {ITEMS_PRODUCTS} WHERE o.status = "
     "'returned' GROUP BY p.product_name ORDER BY units DESC, p.product_name"),
    ("What was the very first order at each store? Store name, order id and date.",
     "SELECT s.store_name, o.order_id, o.order_date FROM orders o JOIN stores s ON s.store_id = "
     "o.store_id QUALIFY ROW_NUMBER() OVER (PARTITION BY o.store_id ORDER BY o.order_date, "
     "o.order_id) = 1"),
    ("For each customer, show their single biggest order by value: customer id, order id and "
     "the order total.",
     f"SELECT o.customer_id, o.order_id, SUM(oi.quantity * oi.unit_price) AS order_total {ITEMS} "
     "GROUP BY o.customer_id, o.order_id QUALIFY ROW_NUMBER() OVER (PARTITION BY o.customer_id "
     "ORDER BY SUM(oi.quantity * oi.unit_price) DESC, o.order_id) = 1"),
    # Several conditions at once
    ("How many returned online orders came from Corporate customers?",
     "SELECT COUNT(*) AS order_count FROM orders o JOIN customers c ON c.customer_id = "
     "o.customer_id WHERE c.segment = 'Corporate' AND o.channel = 'online' AND o.status = "
     "'returned'"),
    ("Show the Small Business customers in Texas who signed up during 2024, with their signup "
     "dates.",
     "SELECT first_name, last_name, signup_date FROM customers WHERE segment = 'Small Business' "
     f"AND state = 'TX' AND signup_date {Y2024}"),
    ("Which stores opened before 2019? Oldest first, with the opening date.",
     "SELECT store_name, opened_date FROM stores WHERE opened_date < DATE '2019-01-01' "
     "ORDER BY opened_date"),
    ("Break down the online orders from the second half of 2024 by status.",
     "SELECT status, COUNT(*) AS order_count FROM orders WHERE channel = 'online' AND order_date "
     "BETWEEN DATE '2024-07-01' AND DATE '2024-12-31' GROUP BY status"),
    ("Kara Owens' orders in date order, with each order's total.",
     "SELECT o.order_id, o.order_date, SUM(oi.quantity * oi.unit_price) AS order_total "
     f"{ITEMS} JOIN customers c ON c.customer_id = o.customer_id WHERE c.first_name = 'Kara' "
     "AND c.last_name = 'Owens' GROUP BY o.order_id, o.order_date "
     "ORDER BY o.order_date, o.order_id"),
    # Comparisons with an average, and with the list price
    ("Which products cost more than the average product? Name and price.",
     "SELECT product_name, unit_price FROM products WHERE unit_price > (SELECT AVG(unit_price) "
     "FROM products)"),
    ("List the products priced above the average of their own category, with category and "
     "price.",
     "SELECT p.product_name, p.category, p.unit_price FROM products p WHERE p.unit_price > "
     "(SELECT AVG(p2.unit_price) FROM products p2 WHERE p2.category = p.category)"),
    ("Who has spent over $2,500 with us in total? Names and totals, please.",
     "SELECT c.first_name, c.last_name, SUM(oi.quantity * oi.unit_price) AS total_spent FROM "
     "customers c JOIN orders o ON o.customer_id = c.customer_id JOIN order_items oi ON "
     "oi.order_id = o.order_id WHERE o.status <> 'cancelled' GROUP BY c.customer_id, "
     "c.first_name, c.last_name HAVING SUM(oi.quantity * oi.unit_price) > 2500"),
    ("How many order lines were sold below the product's list price?",
     "SELECT COUNT(*) AS line_count FROM order_items oi JOIN products p ON p.product_id = "
     "oi.product_id WHERE oi.unit_price < p.unit_price"),
    ("How much have we given away in discounts, i.e. list price minus price paid, times "
     "quantity, on orders that weren't cancelled?",
     "SELECT SUM(oi.quantity * (p.unit_price - oi.unit_price)) AS discount_total "
     f"{ITEMS_PRODUCTS} WHERE o.status <> 'cancelled'"),
]


def _normal(text: str) -> str:
    """A question with case, spacing and end punctuation ignored: what counts as a repeat."""
    return " ".join(text.lower().split()).rstrip("?.!")


def _other_prompts() -> set[str]:
    prompts = set()
    for split in OTHER_SPLITS:
        with open(HERE / f"{split}.jsonl", encoding="utf-8") as fh:
            prompts.update(_normal(json.loads(line)["prompt"]) for line in fh if line.strip())
    return prompts


def problem(judge, sql: str) -> str | None:
    """Why a gold query cannot be kept (None when it can), judged the way the evaluator does."""
    reference = judge.reference(sql)
    if isinstance(reference, str):
        return f"it fails: {reference}"
    rows, ordered = reference
    counts = rows if isinstance(rows, Counter) else Counter(rows)
    if not counts or set(counts) == {tuple(None for _ in next(iter(counts)))}:
        return "it returns no rows"
    if max(counts.values()) > 1:
        return "it returns a repeated row, so DISTINCT would change the answer"
    if " TOP " in f" {sql} " and not ordered:
        return "TOP without ORDER BY picks arbitrary rows"
    return None


def checked_rows() -> list[dict]:
    """The seed-format rows, after every question and gold passed the checks."""
    from engine.evaluation.metrics import SqlJudge

    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    others, seen, errors = _other_prompts(), set(), []
    with tempfile.TemporaryDirectory() as tmp:
        judge = SqlJudge(build_db.build(Path(tmp) / "retail.db"))
        try:
            for number, (question, sql) in enumerate(QUESTIONS, start=1):
                key = _normal(question)
                why = ("it repeats a train/validation/test prompt" if key in others
                       else "it repeats an earlier held-out question" if key in seen
                       else problem(judge, sql))
                seen.add(key)
                if why:
                    errors.append(f"question {number} ({question!r}): {why}")
        finally:
            judge.close()
    if errors:
        raise SystemExit("heldout.py: not written:\n  " + "\n  ".join(errors))
    return [{"instruction": INSTRUCTION, "prompt": q, "completion": sql} for q, sql in QUESTIONS]


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write(out: Path = OUT) -> Path:
    out = Path(out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(checked_rows()), encoding="utf-8")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    path = write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
    print(f"text_to_sql: {len(QUESTIONS)} held-out rows -> {path}")
