-- shake ledger: what the query server (shake query) reads. Keep in step with
-- ../postgres/0003_query.sql. Every statement is IF NOT EXISTS so that this step stays
-- self-contained whatever its number.

-- "My red packets": one user's postings, newest first, paged by the key
-- (posted_at, campaign, ticket), which is unique because (campaign, ticket) is. SQLite
-- has no INCLUDE: amount and currency are trailing key columns, so the page is read
-- from the index alone.
CREATE INDEX IF NOT EXISTS postings_uid_posted ON postings (uid, posted_at, campaign, ticket, amount, currency);

-- The campaign page: the ten largest packets (ties by ticket) and the totals, both
-- answered from this index alone.
CREATE INDEX IF NOT EXISTS postings_campaign_amount ON postings (campaign, amount DESC, ticket, uid);

-- The campaign registry: what the settler's manifest says about the campaign, recorded
-- once when the settler funds it, so that whoever reads the ledger (the query server)
-- needs no file it would have to trust.
CREATE TABLE IF NOT EXISTS campaign_registry (
    campaign      TEXT   PRIMARY KEY,
    currency      TEXT   NOT NULL,
    budget        BIGINT NOT NULL CHECK (budget >= 0),
    tickets       BIGINT NOT NULL CHECK (tickets >= 0),
    registered_at BIGINT NOT NULL
);
