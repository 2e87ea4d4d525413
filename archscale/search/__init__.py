"""The search: the only layer that imports Ray and Optuna. Grouped by job:

- :mod:`.jobs`: running a job. One skeleton (:mod:`.jobs.job`) that a one-stage run
  (:mod:`.jobs.run`), two-stage compound scaling (:mod:`.jobs.stages`) and ``ablate`` /
  ``repeat`` (:mod:`.jobs.ablate`) fill in; ``check``; the run directory; the files written at
  the end; provenance and the time profile.
- :mod:`.configs`: one configuration: its context, what it costs and whether it may train
  (:mod:`.configs.evaluate`, the one place anything is measured), and the results store.
- :mod:`.sampling`: the Optuna side: the searcher Tune asks, replays, ``study.db``, importance.
- :mod:`.dispatch`: the Ray side: Ray's session, the Tune run, one trial in a worker, the
  recorder, resources, clusters, early stopping.
"""
