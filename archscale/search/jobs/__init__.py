"""Running a job: one skeleton, the jobs that fill it in, and the run directory."""
