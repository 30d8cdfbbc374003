-- Each decision names the previous version the change was judged against: "commit <sha>",
-- "last applied at <sha>" or "nothing (a creation)" (a change is judged against every baseline
-- that applies: a pull request's base and the last applied manifest).
ALTER TABLE policy_decisions ADD COLUMN against TEXT NOT NULL DEFAULT '';
