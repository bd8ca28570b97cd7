-- Who sends to whom (the prelude of every transfer script; the service bench draws the same):
-- client i sends from wallet i + 1 (wallets numbered 1..:n in wallet-id order, as the
-- service bench's worker i sends from the i-th wallet by id); the recipient is the hot wallet
-- (:n, never a sender) for :hot_percent of the sends, else any wallet but the sender's own.
\set s :client_id + 1
\set pick random(1, 100)
\if :pick <= :hot_percent
\set r :n
\else
\set r random(1, :n - 1)
\if :r >= :s
\set r :r + 1
\endif
\endif
\set amount random(1, :max_amount)
\set lo least(:s, :r)
\set hi greatest(:s, :r)
