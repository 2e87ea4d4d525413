"""Budget-aware sampling: a suggestion outside the family's search constraint or over the
memory budget is recorded infeasible, told to the sampler, and the next one is asked for."""

from ray.tune.search import Searcher

from archscale.analysis.records import read_trials
from archscale.search.feasible import FeasibleSearch
from archscale.search.trial import TrialContext, has_constraint

SMALL = {"base": "resnet18", "base_width": 0.125, "divisor": 4, "beta": 1.0, "phi": 1.0,
         "stochastic_depth": 0.0, "dropout": 0.0}
CONTEXT = {"in_channels": 1, "num_classes": 10, "image_size": 28}


class Listed(Searcher):
    """Suggests the given configurations in order and remembers what it was told."""

    def __init__(self, configs):
        super().__init__(metric="val_accuracy", mode="max")
        self.configs, self.told = list(configs), []

    def suggest(self, trial_id):
        return self.configs.pop(0) if self.configs else None

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, result))


def _search(tmp_path, configs, **budgets):
    ctx = TrialContext(run_dir=str(tmp_path), family="efficientnet", fixed=SMALL, data_context=CONTEXT, data_info={},
                       train={"batch_size": 32, "device": "cpu"}, **budgets)
    inner = Listed(configs)
    return FeasibleSearch(inner, ctx, tmp_path / "trials.csv", ["alpha", "gamma"], [("val_accuracy", "max")],
                          quiet=True), inner


def test_the_family_constraint_is_checked_before_dispatch(tmp_path):
    assert has_constraint("efficientnet") and not has_constraint("budgeted")
    # product 1.0 (outside 2 +- 10%), then 2.0: the first is rejected untrained, the second suggested
    search, inner = _search(tmp_path, [{"alpha": 1.0, "gamma": 1.0}, {"alpha": 2.0, "gamma": 1.0}])
    assert search.suggest("t1") == {"alpha": 2.0, "gamma": 1.0}
    rows = read_trials(tmp_path)
    assert list(rows["status"]) == ["infeasible"] and rows["trial_id"].iloc[0] == "t1_infeasible"
    assert "alpha*beta^2*gamma^2 = 1.000 is outside target 2" in rows["error"].iloc[0]
    assert inner.told == [("t1", {"val_accuracy": 0.0})]


def test_the_memory_budget_rejects_with_its_source(tmp_path):
    search, inner = _search(tmp_path, [{"alpha": 2.0, "gamma": 1.0}], max_memory_mb=0.5)
    assert search.suggest("t1") is None  # the only configuration is over the budget
    row = read_trials(tmp_path).iloc[0]
    assert row["status"] == "infeasible" and row["memory_source"] == "cpu_estimate" and row["memory_mb"] > 0.5
    assert "(cpu_estimate) > max_memory_mb 0.5" in row["error"]
