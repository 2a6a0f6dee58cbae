-- PlaceTrade in the seeds' design (001 section 4): check the customer's balance and insert the
-- trade row, in one transaction. pgbench runs this once per "transaction"; with
-- synchronous_commit on, every COMMIT waits for its WAL flush (PostgreSQL groups concurrent ones).
\set c random(1, :customers)
\set buy random(0, 1)
BEGIN;
SELECT amount >= 200.0 AS funded FROM balances WHERE customer_id = 'c:c' \gset
\if :funded
INSERT INTO trades (id, customer_id, stock_ticker, type, quantity, status, created_at, reason)
VALUES (gen_random_uuid()::text, 'c:c', 'AAPL', CASE WHEN :buy = 1 THEN 'BUY' ELSE 'SELL' END, 1,
        'PLACED', now(), NULL);
\else
INSERT INTO trades (id, customer_id, stock_ticker, type, quantity, status, created_at, reason)
VALUES (gen_random_uuid()::text, 'c:c', 'AAPL', CASE WHEN :buy = 1 THEN 'BUY' ELSE 'SELL' END, 1,
        'REJECTED', now(), 'insufficient funds');
\endif
COMMIT;
