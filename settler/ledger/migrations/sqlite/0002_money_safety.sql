-- shake ledger schema v2 (SQLite): money safety. Keep in step with ../postgres/0002_money_safety.sql.

-- A campaign's budget account never goes below zero, whatever posts to it (AFTER
-- triggers see only the row an upsert finally writes).
CREATE TRIGGER budget_nonnegative_insert AFTER INSERT ON accounts
    WHEN NEW.balance < 0 AND NEW.name LIKE 'budget:%'
    BEGIN SELECT RAISE(ABORT, 'shake: budget account would go below zero'); END;
CREATE TRIGGER budget_nonnegative_update AFTER UPDATE OF balance ON accounts
    WHEN NEW.balance < 0 AND NEW.name LIKE 'budget:%'
    BEGIN SELECT RAISE(ABORT, 'shake: budget account would go below zero'); END;

-- Claims for a ticket already posted to another user (a ticket handed out twice, from a
-- restored or copied edge state file). Never paid; recorded once per claiming user so
-- that reconcile reports them (conflicting_claims).
CREATE TABLE conflicts (
    campaign   TEXT   NOT NULL,
    ticket     BIGINT NOT NULL,
    uid        TEXT   NOT NULL,
    posted_uid TEXT   NOT NULL,
    amount     BIGINT NOT NULL,
    opened_at  BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (campaign, ticket, uid)
);

-- The campaign registry: which generation of a campaign id this ledger settles, and the
-- digest of the manifest it was funded with. A second generation of the same id is
-- refused (its tickets would collide with the first's), and so is a manifest changed
-- after funding (moving expires_at to refund early, say).
CREATE TABLE campaigns (
    campaign        TEXT   PRIMARY KEY,
    generation      TEXT   NOT NULL,
    manifest_digest TEXT   NOT NULL,
    registered_at   BIGINT NOT NULL
);
