"""Progressive rollout: an incident's sibling (DESIGN.md). A release is promoted 1 -> 10 -> 50 -> 100 %
of traffic in phases; each evaluation interval the phase's gates are read from Prometheus and the
decision matrix (rollbackd.rollout.decide) says PROMOTE, HOLD, ROLLBACK or WAIT. Phases and gates are
data (rollbackd.rollout.config); the rollout runs as an incident of trigger kind ``rollout`` so it shares
the journal, the runner, the one-active-incident constraint and the fencing of every write."""
