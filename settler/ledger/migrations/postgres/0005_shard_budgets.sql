-- shake ledger: one budget account per shard. Keep in step with ../sqlite/0005_shard_budgets.sql.
-- A campaign funded per shard has one budget account per shard, budget:<campaign>:<k>,
-- each funded with that shard's amount from the manifest, so that batches of different
-- shards lock different rows and post in parallel. Its fund and refund transfers are
-- one row per shard; shard -1 is the campaign's one budget account (budget:<campaign>),
-- which every campaign funded before this step keeps.
ALTER TABLE transfers ADD COLUMN shard INTEGER NOT NULL DEFAULT -1 CHECK (shard >= -1);
ALTER TABLE transfers DROP CONSTRAINT transfers_pkey;
ALTER TABLE transfers ADD PRIMARY KEY (campaign, kind, shard);
