-- The retail schema of the text-to-SQL sample. Plain types that both Teradata and SQLite accept.
CREATE TABLE customers (
    customer_id INTEGER NOT NULL PRIMARY KEY,
    first_name  VARCHAR(40) NOT NULL,
    last_name   VARCHAR(40) NOT NULL,
    email       VARCHAR(100) NOT NULL,
    city        VARCHAR(40) NOT NULL,
    state       CHAR(2) NOT NULL,
    segment     VARCHAR(20) NOT NULL,   -- Consumer | Corporate | Small Business
    signup_date DATE NOT NULL
);

CREATE TABLE stores (
    store_id    INTEGER NOT NULL PRIMARY KEY,
    store_name  VARCHAR(60) NOT NULL,
    city        VARCHAR(40) NOT NULL,
    state       CHAR(2) NOT NULL,
    opened_date DATE NOT NULL
);

CREATE TABLE products (
    product_id   INTEGER NOT NULL PRIMARY KEY,
    product_name VARCHAR(80) NOT NULL,
    category     VARCHAR(30) NOT NULL,
    brand        VARCHAR(30) NOT NULL,
    unit_price   DECIMAL(10,2) NOT NULL
);

CREATE TABLE orders (
    order_id    INTEGER NOT NULL PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    store_id    INTEGER NOT NULL REFERENCES stores (store_id),
    order_date  DATE NOT NULL,
    status      VARCHAR(12) NOT NULL,   -- completed | shipped | cancelled | returned
    channel     VARCHAR(10) NOT NULL    -- online | in-store
);

CREATE TABLE order_items (
    order_id   INTEGER NOT NULL REFERENCES orders (order_id),
    product_id INTEGER NOT NULL REFERENCES products (product_id),
    quantity   INTEGER NOT NULL,
    unit_price DECIMAL(10,2) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
