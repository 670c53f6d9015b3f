-- shake ledger: one budget account per shard. Keep in step with ../postgres/0005_shard_budgets.sql.
-- A campaign funded per shard has one budget account per shard, budget:<campaign>:<k>,
-- each funded with that shard's amount from the manifest, so that batches of different
-- shards lock different rows (on PostgreSQL) and post in parallel. Its fund and refund
-- transfers are one row per shard; shard -1 is the campaign's one budget account
-- (budget:<campaign>), which every campaign funded before this step keeps. SQLite cannot
-- change a primary key in place: the table is rebuilt.
CREATE TABLE transfers_v5 (
    campaign  TEXT    NOT NULL,
    kind      TEXT    NOT NULL CHECK (kind IN ('fund', 'refund')),
    amount    BIGINT  NOT NULL CHECK (amount >= 0),
    currency  TEXT    NOT NULL,
    debit     TEXT    NOT NULL,
    credit    TEXT    NOT NULL,
    posted_at BIGINT  NOT NULL,
    shard     INTEGER NOT NULL DEFAULT -1 CHECK (shard >= -1),
    PRIMARY KEY (campaign, kind, shard)
);
INSERT INTO transfers_v5 (campaign, kind, amount, currency, debit, credit, posted_at, shard)
SELECT campaign, kind, amount, currency, debit, credit, posted_at, -1 FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers_v5 RENAME TO transfers;
