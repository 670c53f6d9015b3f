-- shake ledger schema v1 (SQLite). Keep in step with ../postgres/0001_init.sql.
-- Money is BIGINT minor units; times are unix microseconds (BIGINT) so that both
-- backends store exactly the same values.
CREATE TABLE accounts (
    name     TEXT PRIMARY KEY,
    currency TEXT   NOT NULL,
    balance  BIGINT NOT NULL DEFAULT 0
);

-- One row per settled ticket: a transfer of amount from debit (the campaign's budget
-- account) to credit (the user's wallet). The unique index is the idempotency key.
CREATE TABLE postings (
    id        INTEGER PRIMARY KEY,
    campaign  TEXT    NOT NULL,
    ticket    BIGINT  NOT NULL CHECK (ticket > 0),
    shard     INTEGER NOT NULL,
    round     INTEGER NOT NULL,
    amount    BIGINT  NOT NULL CHECK (amount >= 0),
    currency  TEXT    NOT NULL,
    uid       TEXT    NOT NULL,
    debit     TEXT    NOT NULL,
    credit    TEXT    NOT NULL,
    opened_at BIGINT  NOT NULL,
    posted_at BIGINT  NOT NULL
);
CREATE UNIQUE INDEX postings_campaign_ticket ON postings (campaign, ticket);

-- Campaign-level transfers, each at most once per campaign: 'fund' (sponsor -> budget)
-- and 'refund' (budget -> sponsor, the unopened remainder).
CREATE TABLE transfers (
    campaign  TEXT   NOT NULL,
    kind      TEXT   NOT NULL CHECK (kind IN ('fund', 'refund')),
    amount    BIGINT NOT NULL CHECK (amount >= 0),
    currency  TEXT   NOT NULL,
    debit     TEXT   NOT NULL,
    credit    TEXT   NOT NULL,
    posted_at BIGINT NOT NULL,
    PRIMARY KEY (campaign, kind)
);
