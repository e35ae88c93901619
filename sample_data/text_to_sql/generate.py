"""Generate the text-to-SQL sample: questions over the retail schema, answered in Teradata SQL.

    python sample_data/text_to_sql/generate.py

Question families (counting, filtering, joins, aggregates, TOP n, SAMPLE, QUALIFY with window
functions) are filled with values drawn from the database's own rows by a seeded random
generator. Every query is transpiled with sqlglot (teradata → sqlite) and executed against the
database built by `build_db.py` before it is written; a query that fails or returns no rows is
not kept. The output is deterministic.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build_db  # noqa: E402

from engine.data.samples import write_sample_splits  # noqa: E402

SEED = 1234
TARGET_ROWS = 480
INSTRUCTION = (
    "Write one Teradata SQL query that answers the question. Tables: "
    "customers(customer_id, first_name, last_name, email, city, state, segment, signup_date); "
    "stores(store_id, store_name, city, state, opened_date); "
    "products(product_id, product_name, category, brand, unit_price); "
    "orders(order_id, customer_id, store_id, order_date, status, channel); "
    "order_items(order_id, product_id, quantity, unit_price).")

DATA = build_db.rows(random.Random(build_db.SEED))
CITIES = sorted({c[4] for c in DATA["customers"]})
STATES = sorted({c[5] for c in DATA["customers"]})
SEGMENTS = sorted({c[6] for c in DATA["customers"]})
STORE_NAMES = [s[1] for s in DATA["stores"]]
STORE_STATES = sorted({s[3] for s in DATA["stores"]})
CATEGORIES = sorted({p[2] for p in DATA["products"]})
BRANDS = sorted({p[3] for p in DATA["products"]})
PRODUCT_NAMES = [p[1] for p in DATA["products"]]
STATUSES = ["completed", "shipped", "cancelled", "returned"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
ORDER_DATES = sorted({o[3] for o in DATA["orders"]})
SIGNUPS = sorted({c[7] for c in DATA["customers"]})
PEOPLE = sorted({(c[1], c[2]) for c in DATA["customers"]})
REVENUE = "SUM(oi.quantity * oi.unit_price)"
JOIN_ITEMS = "JOIN order_items oi ON oi.order_id = o.order_id"


def month_range(r: random.Random) -> tuple[str, str, str]:
    year = r.choice([2023, 2024])
    m = r.randrange(12)
    days = MONTH_DAYS[m] if m != 1 or year % 4 == 0 else 28
    return (f"{MONTHS[m]} {year}", f"{year}-{m + 1:02d}-01", f"{year}-{m + 1:02d}-{days:02d}")


def pretty_date(iso: str) -> str:
    y, m, d = iso.split("-")
    return f"{MONTHS[int(m) - 1]} {int(d)}, {y}"


Family = Callable[[random.Random], tuple[str, str]]


def count_city(r):
    city = r.choice(CITIES)
    q = r.choice(["How many customers live in {c}?", "Count the customers based in {c}.",
                  "What is the number of customers from {c}?", "How many of our customers are in {c}?"])
    return q.format(c=city), f"SELECT COUNT(*) AS customer_count FROM customers WHERE city = '{city}'"


def count_segment_state(r):
    seg, st = r.choice(SEGMENTS), r.choice(STATES)
    q = r.choice(["How many {s} customers are there in {t}?",
                  "Count {s} segment customers located in the state {t}.",
                  "Number of customers in {t} who belong to the {s} segment?"])
    return q.format(s=seg, t=st), ("SELECT COUNT(*) AS customer_count FROM customers "
                                   f"WHERE state = '{st}' AND segment = '{seg}'")


def category_by_price(r):
    cat = r.choice(CATEGORIES)
    q = r.choice(["List the {c} products from most to least expensive.",
                  "Show every product in the {c} category, priciest first.",
                  "Which {c} products do we sell? Sort them by price, highest first."])
    return q.format(c=cat), ("SELECT product_name, unit_price FROM products "
                             f"WHERE category = '{cat}' ORDER BY unit_price DESC, product_name")


def top_expensive(r):
    n = r.randint(2, 10)
    q = r.choice(["What are the {n} most expensive products?", "Show the top {n} products by price.",
                  "Give me the {n} priciest items in the catalog.",
                  "Which {n} products have the highest unit price?"])
    return q.format(n=n), (f"SELECT TOP {n} product_name, unit_price FROM products "
                           "ORDER BY unit_price DESC, product_name")


def cheapest_in_category(r):
    n, cat = r.randint(1, 3), r.choice(CATEGORIES)
    q = r.choice(["What are the {n} cheapest {c} products?",
                  "Find the {n} lowest-priced items in {c}.",
                  "Show the {n} least expensive products in the {c} category."])
    if n == 1:
        q = r.choice(["What is the cheapest {c} product?", "Which {c} item costs the least?"])
    return q.format(n=n, c=cat), (f"SELECT TOP {n} product_name, unit_price FROM products "
                                  f"WHERE category = '{cat}' ORDER BY unit_price ASC, product_name")


def revenue_per_store(r):
    year = r.choice([None, 2023, 2024])
    when = f" in {year}" if year else ""
    q = r.choice(["What is the revenue of each store{w} from completed orders?",
                  "Show completed-order revenue by store{w}, highest first.",
                  "Rank the stores by revenue{w}, counting only completed orders."])
    where = "WHERE o.status = 'completed'"
    if year:
        where += f" AND o.order_date BETWEEN DATE '{year}-01-01' AND DATE '{year}-12-31'"
    return q.format(w=when), (f"SELECT s.store_name, {REVENUE} AS revenue FROM orders o "
                              f"{JOIN_ITEMS} JOIN stores s ON s.store_id = o.store_id {where} "
                              "GROUP BY s.store_name ORDER BY revenue DESC")


def revenue_month(r):
    label, a, b = month_range(r)
    q = r.choice(["What was the total revenue from completed orders in {m}?",
                  "How much did we sell in {m}, counting completed orders only?",
                  "Total completed-order revenue for {m}?"])
    return q.format(m=label), (f"SELECT {REVENUE} AS revenue FROM orders o {JOIN_ITEMS} "
                               f"WHERE o.status = 'completed' AND o.order_date BETWEEN DATE '{a}' "
                               f"AND DATE '{b}'")


def orders_by_status(r):
    year = r.choice([2023, 2024])
    q = r.choice(["How many orders had each status in {y}?",
                  "Break down the {y} orders by status.",
                  "Count orders per status for the year {y}."])
    return q.format(y=year), ("SELECT status, COUNT(*) AS order_count FROM orders WHERE order_date "
                              f"BETWEEN DATE '{year}-01-01' AND DATE '{year}-12-31' "
                              "GROUP BY status ORDER BY order_count DESC")


def channel_month(r):
    label, a, b = month_range(r)
    channel = r.choice(["online", "in-store"])
    q = r.choice(["How many {ch} orders were placed in {m}?", "Count the {ch} orders from {m}.",
                  "Number of orders made {ch} during {m}?"])
    return q.format(ch=channel, m=label), ("SELECT COUNT(*) AS order_count FROM orders WHERE "
                                           f"channel = '{channel}' AND order_date BETWEEN "
                                           f"DATE '{a}' AND DATE '{b}'")


def signed_up_after(r):
    day = r.choice(SIGNUPS[len(SIGNUPS) // 2:-3])
    q = r.choice(["Which customers signed up after {d}?", "List customers who joined after {d}.",
                  "Show the names and signup dates of customers registered after {d}."])
    return q.format(d=pretty_date(day)), ("SELECT first_name, last_name, signup_date FROM customers "
                                          f"WHERE signup_date > DATE '{day}' "
                                          "ORDER BY signup_date, last_name")


def top_customers(r):
    n = r.randint(3, 10)
    q = r.choice(["Who are our top {n} customers by total spend?",
                  "List the {n} customers who spent the most, ignoring cancelled orders.",
                  "Show the {n} biggest spenders and how much they spent."])
    return q.format(n=n), (f"SELECT TOP {n} c.first_name, c.last_name, {REVENUE} AS total_spent "
                           f"FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
                           f"{JOIN_ITEMS} WHERE o.status <> 'cancelled' "
                           "GROUP BY c.customer_id, c.first_name, c.last_name "
                           "ORDER BY total_spent DESC, c.customer_id")


def latest_order_per_customer(r):
    city = r.choice(CITIES)
    q = r.choice(["For each customer in {c}, show their most recent order.",
                  "What is the latest order of every {c} customer?",
                  "List each {c} customer with the date of their last order."])
    return q.format(c=city), ("SELECT c.first_name, c.last_name, o.order_id, o.order_date "
                              "FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
                              f"WHERE c.city = '{city}' QUALIFY ROW_NUMBER() OVER (PARTITION BY "
                              "c.customer_id ORDER BY o.order_date DESC, o.order_id DESC) = 1")


def best_seller_per_category(r):
    year = r.choice([None, 2023, 2024])
    when = f" in {year}" if year else ""
    q = r.choice(["What was the best-selling product in each category{w}, by units?",
                  "For every category, which product sold the most units{w}?",
                  "Top product per category by quantity sold{w}."])
    where = (f"WHERE o.order_date BETWEEN DATE '{year}-01-01' AND DATE '{year}-12-31' "
             if year else "")
    return q.format(w=when), ("SELECT p.category, p.product_name, SUM(oi.quantity) AS units "
                              "FROM orders o " + JOIN_ITEMS + " JOIN products p ON p.product_id = "
                              f"oi.product_id {where}GROUP BY p.category, p.product_name "
                              "QUALIFY ROW_NUMBER() OVER (PARTITION BY p.category ORDER BY "
                              "SUM(oi.quantity) DESC, p.product_name) = 1")


def sample_customers(r):
    n, seg = r.randint(3, 10), r.choice(SEGMENTS)
    q = r.choice(["Give me a random sample of {n} {s} customers.",
                  "Pick {n} {s} customers at random for a survey.",
                  "Draw a random sample of {n} customers from the {s} segment."])
    return q.format(n=n, s=seg), ("SELECT customer_id, first_name, last_name, email FROM customers "
                                  f"WHERE segment = '{seg}' SAMPLE {n}")


def avg_order_value_segment(r):
    q = r.choice(["What is the average order value for each customer segment?",
                  "Average order total per segment?", "Compare average order value across segments."])
    status = r.choice([None, "completed"])
    where = f" WHERE o.status = '{status}'" if status else ""
    if status:
        q = q.rstrip("?.") + ", completed orders only?"
    return q, ("SELECT c.segment, ROUND(AVG(t.order_total), 2) AS avg_order_value FROM "
               f"(SELECT o.order_id, o.customer_id, {REVENUE} AS order_total FROM orders o "
               f"{JOIN_ITEMS}{where} GROUP BY o.order_id, o.customer_id) t "
               "JOIN customers c ON c.customer_id = t.customer_id GROUP BY c.segment "
               "ORDER BY avg_order_value DESC")


def never_ordered_at_store(r):
    store = r.choice(STORE_NAMES)
    q = r.choice(["Which products have never been ordered at the {s} store?",
                  "List products that were never sold at {s}."])
    return q.format(s=store), ("SELECT p.product_name FROM products p WHERE NOT EXISTS (SELECT 1 "
                               "FROM order_items oi JOIN orders o ON o.order_id = oi.order_id "
                               "JOIN stores s ON s.store_id = o.store_id WHERE oi.product_id = "
                               f"p.product_id AND s.store_name = '{store}') ORDER BY p.product_name")


def frequent_customers(r):
    k = r.randint(8, 12)
    q = r.choice(["Which customers have placed more than {k} orders?",
                  "List customers with over {k} orders and their order counts.",
                  "Find our repeat customers: more than {k} orders each."])
    return q.format(k=k), ("SELECT c.first_name, c.last_name, COUNT(*) AS order_count FROM "
                           "customers c JOIN orders o ON o.customer_id = c.customer_id GROUP BY "
                           "c.customer_id, c.first_name, c.last_name "
                           f"HAVING COUNT(*) > {k} ORDER BY order_count DESC, c.last_name")


def stores_in_state(r):
    st = r.choice(STORE_STATES)
    q = r.choice(["Which stores are in {t}?", "List our store locations in the state {t}.",
                  "Show the name and city of every store in {t}."])
    return q.format(t=st), f"SELECT store_name, city FROM stores WHERE state = '{st}'"


def orders_on_day(r):
    day = r.choice(ORDER_DATES)
    q = r.choice(["Which orders were placed on {d}?", "Show the orders from {d}.",
                  "List order ids and statuses for {d}."])
    return q.format(d=pretty_date(day)), ("SELECT order_id, customer_id, status FROM orders "
                                          f"WHERE order_date = DATE '{day}' ORDER BY order_id")


def units_of_product(r):
    name = r.choice(PRODUCT_NAMES)
    q = r.choice(["How many units of the {p} have we sold?", "Total quantity sold of {p}?",
                  "What is the total number of {p} units ordered?"])
    return q.format(p=name), ("SELECT SUM(oi.quantity) AS units_sold FROM order_items oi JOIN "
                              "products p ON p.product_id = oi.product_id "
                              f"WHERE p.product_name = '{name}'")


def avg_price_category(r):
    q = r.choice(["What is the average price in each product category?",
                  "Average unit price by category, highest first.",
                  "Show each category with its mean product price."])
    return q, ("SELECT category, ROUND(AVG(unit_price), 2) AS avg_price FROM products "
               "GROUP BY category ORDER BY avg_price DESC")


def distinct_customers_store(r):
    store = r.choice(STORE_NAMES)
    q = r.choice(["How many different customers have ordered from the {s} store?",
                  "Count the distinct customers of {s}.",
                  "How many unique shoppers placed orders at {s}?"])
    return q.format(s=store), ("SELECT COUNT(DISTINCT o.customer_id) AS customers FROM orders o "
                               "JOIN stores s ON s.store_id = o.store_id "
                               f"WHERE s.store_name = '{store}'")


def stores_by_status(r):
    n, status = r.randint(2, 5), r.choice(["cancelled", "returned"])
    q = r.choice(["Which {n} stores have the most {st} orders?",
                  "Top {n} stores by number of {st} orders.",
                  "Show the {n} stores with the highest count of {st} orders."])
    return q.format(n=n, st=status), (f"SELECT TOP {n} s.store_name, COUNT(*) AS order_count FROM "
                                      "orders o JOIN stores s ON s.store_id = o.store_id WHERE "
                                      f"o.status = '{status}' GROUP BY s.store_name "
                                      "ORDER BY order_count DESC, s.store_name")


def price_between(r):
    lo = r.choice([10, 15, 20, 25, 30, 40, 50])
    hi = lo + r.choice([20, 30, 50, 75, 100])
    q = r.choice(["Which products cost between ${a} and ${b}?",
                  "List products priced from {a} to {b} dollars, cheapest first.",
                  "Show items with a unit price in the range {a}-{b}."])
    return q.format(a=lo, b=hi), ("SELECT product_name, unit_price FROM products WHERE unit_price "
                                  f"BETWEEN {lo} AND {hi} ORDER BY unit_price, product_name")


def largest_order(r):
    year = r.choice([2023, 2024])
    q = r.choice(["What was the largest single order in {y}?",
                  "Which order had the highest total in {y}, and how much was it?",
                  "Find the biggest order of {y} by value."])
    return q.format(y=year), (f"SELECT TOP 1 o.order_id, {REVENUE} AS order_total FROM orders o "
                              f"{JOIN_ITEMS} WHERE o.order_date BETWEEN DATE '{year}-01-01' AND "
                              f"DATE '{year}-12-31' GROUP BY o.order_id "
                              "ORDER BY order_total DESC, o.order_id")


def revenue_channel_category(r):
    cat = r.choice(CATEGORIES)
    q = r.choice(["How does {c} revenue split between online and in-store?",
                  "Revenue from {c} products by sales channel?",
                  "Compare online and in-store sales of {c} items."])
    return q.format(c=cat), (f"SELECT o.channel, {REVENUE} AS revenue FROM orders o {JOIN_ITEMS} "
                             "JOIN products p ON p.product_id = oi.product_id "
                             f"WHERE p.category = '{cat}' AND o.status <> 'cancelled' "
                             "GROUP BY o.channel ORDER BY revenue DESC")


def brand_products(r):
    brand = r.choice(BRANDS)
    q = r.choice(["How many products does {b} have in our catalog?",
                  "Count the {b} products we carry.", "What does {b} sell here? List the products."])
    if q.startswith("What"):
        return q.format(b=brand), ("SELECT product_name, category, unit_price FROM products "
                                   f"WHERE brand = '{brand}' ORDER BY product_name")
    return q.format(b=brand), ("SELECT COUNT(*) AS product_count FROM products "
                               f"WHERE brand = '{brand}'")


def online_buyers_city(r):
    city = r.choice(CITIES)
    q = r.choice(["Which customers from {c} have ordered online?",
                  "List {c} customers who bought through the online channel.",
                  "Who in {c} has placed at least one online order?"])
    return q.format(c=city), ("SELECT DISTINCT c.first_name, c.last_name FROM customers c JOIN "
                              "orders o ON o.customer_id = c.customer_id WHERE "
                              f"c.city = '{city}' AND o.channel = 'online' "
                              "ORDER BY c.last_name, c.first_name")


def second_priciest(r):
    rank = r.choice([1, 2, 3])
    word = {1: "most expensive", 2: "second most expensive", 3: "third most expensive"}[rank]
    q = r.choice(["What is the {w} product in each category?",
                  "For every category, show the {w} item.",
                  "List the {w} product per category with its price."])
    return q.format(w=word), ("SELECT category, product_name, unit_price FROM products QUALIFY "
                              "RANK() OVER (PARTITION BY category ORDER BY unit_price DESC) "
                              f"= {rank}")


def top_customers_per_city(r):
    n = r.choice([1, 2, 3])
    q = r.choice(["Who are the top {n} customers by number of orders in each city?",
                  "For each city, list the {n} customers with the most orders.",
                  "Show the {n} most frequent buyers per city."])
    if n == 1:
        q = r.choice(["Who is the customer with the most orders in each city?",
                      "For each city, who ordered most often?"])
    return q.format(n=n), ("SELECT c.city, c.first_name, c.last_name, COUNT(*) AS order_count FROM "
                           "customers c JOIN orders o ON o.customer_id = c.customer_id GROUP BY "
                           "c.city, c.customer_id, c.first_name, c.last_name QUALIFY ROW_NUMBER() "
                           "OVER (PARTITION BY c.city ORDER BY COUNT(*) DESC, c.customer_id) "
                           f"<= {n}")


def email_of(r):
    first, last = r.choice(PEOPLE)
    q = r.choice(["What is the email address of {f} {l}?", "Find {f} {l}'s email.",
                  "Look up the email for customer {f} {l}."])
    return q.format(f=first, l=last), ("SELECT email FROM customers WHERE first_name = "
                                       f"'{first}' AND last_name = '{last}'")


def first_order_segment(r):
    seg = r.choice(SEGMENTS)
    q = r.choice(["When did each {s} customer place their first order?",
                  "Show the first order of every {s} customer.",
                  "List {s} customers with their earliest order date."])
    return q.format(s=seg), ("SELECT c.customer_id, c.first_name, c.last_name, o.order_date FROM "
                             "customers c JOIN orders o ON o.customer_id = c.customer_id WHERE "
                             f"c.segment = '{seg}' QUALIFY ROW_NUMBER() OVER (PARTITION BY "
                             "c.customer_id ORDER BY o.order_date, o.order_id) = 1")


def orders_of_person(r):
    first, last = r.choice(PEOPLE)
    status = r.choice([None, "completed", "returned"])
    if status:
        q = f"How many {status} orders does {first} {last} have?"
        extra = f" AND o.status = '{status}'"
    else:
        q = r.choice(["How many orders has {f} {l} placed?", "Count {f} {l}'s orders."]).format(
            f=first, l=last)
        extra = ""
    return q, ("SELECT COUNT(*) AS order_count FROM orders o JOIN customers c ON c.customer_id = "
               f"o.customer_id WHERE c.first_name = '{first}' AND c.last_name = '{last}'{extra}")


def category_revenue_year(r):
    n, year = r.randint(2, 4), r.choice([2023, 2024])
    q = r.choice(["Which {n} categories brought in the most revenue in {y}?",
                  "Top {n} product categories by {y} sales.",
                  "Show the {n} highest-grossing categories for {y}."])
    return q.format(n=n, y=year), (f"SELECT TOP {n} p.category, {REVENUE} AS revenue FROM orders o "
                                   f"{JOIN_ITEMS} JOIN products p ON p.product_id = oi.product_id "
                                   f"WHERE o.status <> 'cancelled' AND o.order_date BETWEEN DATE "
                                   f"'{year}-01-01' AND DATE '{year}-12-31' GROUP BY p.category "
                                   "ORDER BY revenue DESC")


FAMILIES: list[Family] = [
    count_city, count_segment_state, category_by_price, top_expensive, cheapest_in_category,
    revenue_per_store, revenue_month, orders_by_status, channel_month, signed_up_after,
    top_customers, latest_order_per_customer, best_seller_per_category, sample_customers,
    avg_order_value_segment, never_ordered_at_store, frequent_customers, stores_in_state,
    orders_on_day, units_of_product, avg_price_category, distinct_customers_store,
    stores_by_status, price_between, largest_order, revenue_channel_category, brand_products,
    online_buyers_city, second_priciest, top_customers_per_city, email_of, first_order_segment,
    orders_of_person, category_revenue_year,
]


def runs(con: sqlite3.Connection, sql: str) -> bool:
    import sqlglot

    try:
        lite = sqlglot.transpile(sql, read="teradata", write="sqlite")[0]
        rows = con.execute(lite).fetchall()
    except Exception as err:  # a generator bug: say which query
        raise SystemExit(f"query does not run: {sql}\n{err}") from err
    return bool(rows) and rows[0] != (None,)


def examples(rng: random.Random, con: sqlite3.Connection) -> list[dict]:
    out, seen_q = [], set()
    per_family: dict[str, int] = {}
    cap = -(-TARGET_ROWS // len(FAMILIES)) + 4
    attempts = 0
    while len(out) < TARGET_ROWS and attempts < 200_000:
        family = FAMILIES[attempts % len(FAMILIES)]
        attempts += 1
        if per_family.get(family.__name__, 0) >= cap:
            continue
        question, sql = family(rng)
        if question in seen_q or not runs(con, sql):
            continue
        seen_q.add(question)
        per_family[family.__name__] = per_family.get(family.__name__, 0) + 1
        out.append({"instruction": INSTRUCTION, "prompt": question, "completion": sql})
    return out



def main() -> None:
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # SAMPLE has no SQLite equivalent
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(build_db.build(Path(tmp) / "retail.db"))
        try:
            rows = examples(random.Random(SEED), con)
        finally:
            con.close()
    counts = write_sample_splits(rows, HERE, SEED + 1)
    print(f"text_to_sql: {len(rows)} rows -> {counts}")


if __name__ == "__main__":
    main()
