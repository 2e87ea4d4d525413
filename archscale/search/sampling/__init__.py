"""The Optuna side: what the sampler is told and asked, replays, study.db, importance."""
