"""What a running search also writes for the tools its user watches it with: ``RUN/study.db``
(:mod:`archscale.search.sampling.studydb`, always), TensorBoard event files
(:mod:`.tboard`) and MLflow runs (:mod:`.mlflowrun`) when ``search.track`` asks. Each is
a :class:`~.writer.QueuedWriter`: the driver queues every epoch and every recorded trial, and
one thread per writer writes them, so no trial waits on a tracker."""
