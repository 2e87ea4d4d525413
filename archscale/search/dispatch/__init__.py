"""The Ray side: Ray's session, the Tune run, one trial in a worker, what is recorded, resources."""
