-- shake ledger schema v2 (PostgreSQL): money safety. Keep in step with ../sqlite/0002_money_safety.sql.

-- A campaign's budget account never goes below zero, whatever posts to it. A trigger,
-- not a CHECK: PostgreSQL checks a CHECK on the row an INSERT ... ON CONFLICT DO UPDATE
-- proposes (the negative delta) before it becomes an update, and the posting statement
-- moves balances exactly that way. An AFTER row trigger sees only the final row.
CREATE FUNCTION shake_budget_nonnegative() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'shake: budget account % would go below zero (%)', NEW.name, NEW.balance
        USING ERRCODE = 'check_violation', CONSTRAINT = 'budget_nonnegative';
END
$$;
CREATE TRIGGER budget_nonnegative AFTER INSERT OR UPDATE OF balance ON accounts FOR EACH ROW
    WHEN (NEW.balance < 0 AND NEW.name LIKE 'budget:%')
    EXECUTE FUNCTION shake_budget_nonnegative();

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
