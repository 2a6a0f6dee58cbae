-- One whole trade in the seeds' design, as one client would drive it with no exchange latency:
--   1. PlaceTrade (001 section 4): check the balance and insert the trade, one transaction;
--   2. the execution worker (001 section 6): take the customer's oldest non-terminal trade, mark
--      it IN PROGRESS, read the balance to send as max price;
--   3. the exchange callback (001 section 7): in one transaction, re-read the trade, and if it is
--      IN PROGRESS debit the balance and mark it FILLED.
-- pgbench counts one execution of this script as one transaction: here, one trade end to end.
\set c random(1, :customers)
BEGIN;
SELECT amount >= 200.0 AS funded FROM balances WHERE customer_id = 'c:c' \gset
INSERT INTO trades (id, customer_id, stock_ticker, type, quantity, status, created_at, reason)
VALUES (gen_random_uuid()::text, 'c:c', 'AAPL', 'BUY', 1, 'PLACED', now(), NULL)
RETURNING id AS placed_id \gset
COMMIT;
SELECT id AS next_id, status AS next_status FROM trades
WHERE customer_id = 'c:c' AND (status = 'PLACED' OR status = 'IN PROGRESS')
ORDER BY created_at ASC LIMIT 1 \gset
UPDATE trades SET status = 'IN PROGRESS' WHERE id = ':next_id' AND status = 'PLACED';
SELECT amount AS max_price FROM balances WHERE customer_id = 'c:c' \gset
BEGIN;
SELECT status = 'IN PROGRESS' AS in_progress FROM trades WHERE id = ':next_id' FOR UPDATE \gset
\if :in_progress
UPDATE balances SET amount = amount - 190.0190, last_modified = now() WHERE customer_id = 'c:c';
UPDATE trades SET status = 'FILLED', reason = 'Trade Completed', executed_at = now()
WHERE id = ':next_id';
COMMIT;
\else
ROLLBACK;
\endif
