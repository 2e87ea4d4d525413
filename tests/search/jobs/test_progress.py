"""Progress lines: one plain line per finished trial, fit for a log file."""

import io

from archscale.search.dispatch.recorder import Progress


def rows():
    return [
        {"trial_id": "a1", "status": "completed", "val_accuracy": 0.91, "macs": 123456, "params": 4321, "test_accuracy": 0.9},
        {"trial_id": "b2", "status": "pruned", "val_accuracy": 0.31, "macs": 2000, "params": 100, "epochs": 1},
        {"trial_id": "c3", "status": "failed", "error": "TrainingDiverged: loss became nan in epoch 1", "macs": 10},
        {"trial_id": "d4", "status": "completed", "val_accuracy": 0.95, "macs": 99, "params": 9, "test_accuracy": 0.94},
    ]


def test_a_line_per_trial_with_n_of_total_metrics_best_and_eta():
    out = io.StringIO()
    progress = Progress(5, [("val_accuracy", "max"), ("macs", "min")], already=1, out=out, epochs=4)
    for row in rows():
        progress.finished(row)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("[2/5] trial a1 completed: val_accuracy=0.9100 macs=123.46k params=4.32k")
    assert "best val_accuracy=0.9100" in lines[0] and "elapsed, ~" in lines[0] and "left" in lines[0]
    assert lines[1].startswith("[3/5] trial b2 pruned") and "(stopped after 1 of 4 epochs)" in lines[1]
    assert "best val_accuracy=0.9100" in lines[1]  # a pruned trial's accuracy is not a result
    assert "(TrainingDiverged: loss became nan in epoch 1)" in lines[2]
    assert lines[3].startswith("[5/5]") and "best val_accuracy=0.9500" in lines[3] and "~0s left" in lines[3]


def test_quiet_prints_nothing_and_verbose_adds_starts_and_epochs():
    quiet = io.StringIO()
    progress = Progress(4, [("val_accuracy", "max")], out=quiet, verbosity="quiet", epochs=2)
    progress.started("a1", {"c1_width": 8})
    progress.epoch("a1", {"epochs": 1, "val_accuracy": 0.5})
    for row in rows():
        progress.finished(row)
    assert quiet.getvalue() == "" and progress.done == 4 and progress.best == 0.95

    loud = io.StringIO()
    progress = Progress(4, [("val_accuracy", "max")], out=loud, verbosity="verbose", epochs=2)
    progress.started("a1", {"c1_width": 8}, gpu=0.25)
    progress.epoch("a1", {"epochs": 1, "train_loss": 1.5, "val_accuracy": 0.5})
    progress.finished(rows()[0])
    lines = loud.getvalue().splitlines()
    assert lines[0] == "  trial a1 started on 0.25 GPU: c1_width=8"
    assert lines[1].startswith("  trial a1 epoch 1/2: train_loss=1.5000") and "val_accuracy=0.5000" in lines[1]
    assert lines[2].startswith("[1/4] trial a1 completed")


def test_eta_never_exceeds_the_time_budget_left():
    out = io.StringIO()
    progress = Progress(1000, [("val_accuracy", "max")], out=out, time_budget_s=60)
    progress.start -= 30  # 30 s in, one trial done: 999 more at 30 s each would be hours
    progress.finished(rows()[0])
    assert "30s elapsed, ~30s left" in out.getvalue()
