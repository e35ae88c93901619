"""Build the retail SQLite database of the text-to-SQL sample (deterministic).

    python sample_data/text_to_sql/build_db.py [OUT.db]     (default: retail.db next to this file)

The DDL is `schema.sql`; the rows come from a seeded random generator over fixed name lists, so
every build holds exactly the same data.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 7
FIRST = ["Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Henry", "Isla", "Jack",
         "Kara", "Liam", "Mia", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sofia", "Theo",
         "Uma", "Victor", "Wendy", "Yusuf", "Zoe"]
LAST = ["Anderson", "Brooks", "Chen", "Diaz", "Evans", "Foster", "Garcia", "Hughes", "Ito",
        "Johnson", "Kim", "Lopez", "Miller", "Nguyen", "Owens", "Patel", "Reed", "Smith",
        "Turner", "Walker"]
CITIES = [("Seattle", "WA"), ("Portland", "OR"), ("Denver", "CO"), ("Austin", "TX"),
          ("Dallas", "TX"), ("Chicago", "IL"), ("Boston", "MA"), ("Atlanta", "GA"),
          ("Phoenix", "AZ"), ("San Diego", "CA")]
SEGMENTS = ["Consumer", "Consumer", "Consumer", "Corporate", "Small Business"]
STORES = [("Downtown Seattle", "Seattle", "WA"), ("Pearl District", "Portland", "OR"),
          ("LoDo Denver", "Denver", "CO"), ("South Congress", "Austin", "TX"),
          ("Deep Ellum", "Dallas", "TX"), ("Magnificent Mile", "Chicago", "IL"),
          ("Back Bay", "Boston", "MA"), ("Midtown Atlanta", "Atlanta", "GA")]
PRODUCTS = [
    ("Trail Running Shoes", "Footwear", "Stride", 89.99), ("Leather Boots", "Footwear", "Oakline", 149.50),
    ("Canvas Sneakers", "Footwear", "Stride", 54.00), ("Wool Socks 3-Pack", "Footwear", "Northknit", 18.75),
    ("Rain Jacket", "Apparel", "Northknit", 120.00), ("Cotton T-Shirt", "Apparel", "Basics Co", 15.00),
    ("Denim Jeans", "Apparel", "Oakline", 65.00), ("Fleece Hoodie", "Apparel", "Northknit", 48.00),
    ("Chef Knife", "Kitchen", "Edgeworks", 79.00), ("Cast Iron Skillet", "Kitchen", "Hearth", 42.50),
    ("Coffee Grinder", "Kitchen", "Brewlab", 59.99), ("French Press", "Kitchen", "Brewlab", 29.95),
    ("Blender", "Kitchen", "Hearth", 99.00), ("Wireless Earbuds", "Electronics", "Sonique", 129.00),
    ("Bluetooth Speaker", "Electronics", "Sonique", 74.99), ("USB-C Charger", "Electronics", "Voltix", 25.00),
    ("Smart Watch", "Electronics", "Voltix", 199.00), ("Phone Case", "Electronics", "Voltix", 19.99),
    ("Yoga Mat", "Sports", "Flexa", 35.00), ("Dumbbell Set", "Sports", "Ironside", 110.00),
    ("Water Bottle", "Sports", "Flexa", 22.00), ("Tennis Racket", "Sports", "Ironside", 140.00),
    ("Camping Tent", "Outdoor", "Summit", 249.00), ("Sleeping Bag", "Outdoor", "Summit", 89.00),
    ("Headlamp", "Outdoor", "Summit", 27.50), ("Hiking Backpack", "Outdoor", "Trailmark", 115.00),
    ("Desk Lamp", "Home", "Lumen", 39.99), ("Throw Blanket", "Home", "Northknit", 45.00),
    ("Scented Candle", "Home", "Lumen", 16.50), ("Picture Frame", "Home", "Lumen", 12.00),
]
STATUSES = ["completed"] * 7 + ["shipped", "shipped", "cancelled", "returned"]
START = dt.date(2023, 1, 1)
N_CUSTOMERS, N_ORDERS = 80, 600


def rows(rng: random.Random) -> dict[str, list[tuple]]:
    customers = []
    for cid in range(1, N_CUSTOMERS + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, state = rng.choice(CITIES)
        signup = START + dt.timedelta(days=rng.randrange(0, 700))
        email = f"{first.lower()}.{last.lower()}{cid}@example.com"
        customers.append((cid, first, last, email, city, state, rng.choice(SEGMENTS),
                          signup.isoformat()))
    stores = [(sid, name, city, state, (dt.date(2015, 3, 1) + dt.timedelta(days=400 * sid))
               .isoformat()) for sid, (name, city, state) in enumerate(STORES, start=1)]
    products = [(pid, *p) for pid, p in enumerate(PRODUCTS, start=1)]
    orders, items = [], []
    for oid in range(1, N_ORDERS + 1):
        customer = rng.choice(customers)
        signup = dt.date.fromisoformat(customer[7])
        day = signup + dt.timedelta(days=rng.randrange(0, (dt.date(2024, 12, 31) - signup).days + 1))
        home_stores = [s[0] for s in stores if s[2] == customer[4]]
        store = rng.choice(home_stores) if home_stores and rng.random() < 0.7 \
            else rng.choice(stores)[0]
        orders.append((oid, customer[0], store, day.isoformat(), rng.choice(STATUSES),
                       "online" if rng.random() < 0.45 else "in-store"))
        for product in rng.sample(products, rng.randint(1, 4)):
            price = product[4] if rng.random() < 0.8 else round(product[4] * 0.9, 2)
            items.append((oid, product[0], rng.choice([1, 1, 1, 2, 2, 3, 4]), price))
    return {"customers": customers, "stores": stores, "products": products, "orders": orders,
            "order_items": items}


def build(path: str | Path) -> Path:
    """Create the database at `path` (replacing it)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        con.executescript((HERE / "schema.sql").read_text(encoding="utf-8"))
        for table, data in rows(random.Random(SEED)).items():
            marks = ", ".join("?" * len(data[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", data)
        con.commit()
    finally:
        con.close()
    return path


if __name__ == "__main__":
    out = build(sys.argv[1] if len(sys.argv) > 1 else HERE / "retail.db")
    print(f"built {out} ({out.stat().st_size:,} bytes)")
