-- The seeds' SQL design (shared/seeds/001, 002, 003), as written there: a balances table with a
-- float amount per customer, and a trades table with a random string id, status and reason, in
-- the same database so that one ACID transaction can touch both. Only what the seeds index is
-- indexed (customer id). bench/run loads :customers balances rows.
DROP TABLE IF EXISTS trades;
DROP TABLE IF EXISTS balances;
CREATE TABLE balances (
    id            text PRIMARY KEY,
    customer_id   text NOT NULL UNIQUE,
    amount        float NOT NULL,
    last_modified timestamp NOT NULL
);
CREATE TABLE trades (
    id           text PRIMARY KEY,
    customer_id  text NOT NULL,
    stock_ticker text NOT NULL,
    type         text NOT NULL,
    quantity     integer NOT NULL,
    status       text NOT NULL,
    created_at   timestamp NOT NULL,
    reason       text,
    executed_at  timestamp
);
CREATE INDEX trades_customer ON trades (customer_id, type);
INSERT INTO balances (id, customer_id, amount, last_modified)
SELECT md5(g::text), 'c' || g, 1000000000.0, now()
FROM generate_series(1, :customers) AS g;
VACUUM ANALYZE;
