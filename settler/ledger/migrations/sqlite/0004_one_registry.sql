-- shake ledger: one campaign registry. Keep in step with ../postgres/0004_one_registry.sql.
-- 0002 created campaigns (generation and manifest digest, written when the settler
-- starts) and 0003 campaign_registry (currency, budget and ticket count, written when
-- it funds). Both are what the settler's manifest says about a campaign; this step
-- folds them into one table, campaigns, which one registration fills at once.
--
-- A row from only one of the old tables keeps NULLs where the other's columns would
-- be: a campaign registered by an older settler that never funded it has no figures
-- yet (the next registration fills them), and one whose figures were recorded without
-- a registration has no generation (the next registration sets it). The CHECKs keep
-- each pair whole.
CREATE TABLE campaigns_v4 (
    campaign        TEXT   PRIMARY KEY,
    generation      TEXT,
    manifest_digest TEXT,
    currency        TEXT,
    budget          BIGINT CHECK (budget >= 0),
    tickets         BIGINT CHECK (tickets >= 0),
    registered_at   BIGINT NOT NULL,
    CHECK ((generation IS NULL) = (manifest_digest IS NULL)),
    CHECK ((currency IS NULL) = (budget IS NULL) AND (budget IS NULL) = (tickets IS NULL)),
    CHECK (generation IS NOT NULL OR currency IS NOT NULL)
);

-- Every row of both, once per campaign; registered_at is the earlier of the two (the
-- settler registers at start, before it funds).
INSERT INTO campaigns_v4 (campaign, generation, manifest_digest, currency, budget, tickets, registered_at)
SELECT c.campaign, c.generation, c.manifest_digest, r.currency, r.budget, r.tickets,
       MIN(c.registered_at, COALESCE(r.registered_at, c.registered_at))
FROM campaigns c LEFT JOIN campaign_registry r ON r.campaign = c.campaign
UNION ALL
SELECT r.campaign, NULL, NULL, r.currency, r.budget, r.tickets, r.registered_at
FROM campaign_registry r WHERE NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.campaign = r.campaign);

DROP TABLE campaign_registry;
DROP TABLE campaigns;
ALTER TABLE campaigns_v4 RENAME TO campaigns;
