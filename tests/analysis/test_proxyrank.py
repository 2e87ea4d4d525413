"""How the proxies a run recorded rank its trained configurations (the report's section)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from archscale.analysis.proxyrank import (
    MIN_TRIALS,
    P_AGREE,
    describe,
    proxy_columns_of,
    proxy_ranking,
    recorded,
)
from archscale.search.sampling.prescreen import CHECK_P
from archscale.spec import parse_spec


def trials(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(n)], "status": ["completed"] * n, **columns})


def test_ranks_match_a_hand_computation():
    """x ranks 1..5, accuracy ranks 1, 3, 2, 4, 5: one swapped pair. Spearman 1 - 6*2/(5*24) = 0.9;
    Kendall (9 concordant - 1 discordant) / 10 = 0.8."""
    t = trials(val_accuracy=[0.1, 0.3, 0.2, 0.4, 0.5], params=[10, 20, 30, 40, 50],
               proxy_zico=[5.0, 4.0, 3.0, 2.0, 1.0], proxy_zico_s=[0.01, 0.02, 0.03, 0.04, 0.05],
               proxy_errors=[""] * 5)
    table = proxy_ranking(t).set_index("proxy")
    assert list(table.index) == ["params", "zico"]  # the baseline first; seconds and errors are not proxies
    assert table.at["params", "spearman"] == pytest.approx(0.9)
    assert table.at["params", "kendall"] == pytest.approx(0.8)
    assert table.at["zico", "spearman"] == pytest.approx(-0.9)  # the reverse order
    assert table.at["zico", "seconds"] == pytest.approx(0.03)
    assert table.at["params", "p"] < 0.1 < table.at["zico", "p"]  # one-sided: with the accuracy, not against
    text = describe(pd.DataFrame(proxy_ranking(t)))
    assert text.startswith("Ranks this run's trained configurations best: params (Spearman 0.900")
    assert "agrees with training" in text and "zico ranks it backwards (-0.900)" in text
    suggested = text.split("next search of this space: search.prescreen: ")[1].split(" trains")[0]
    spec = parse_spec({"name": "x", "space": {"family": "budgeted", "params": {"c1_width": [4, 8]}},
                       "search": {"num_trials": 40, "prescreen": yaml.safe_load(suggested)}})
    assert (spec.search.prescreen.proxy, spec.search.prescreen.keep, spec.search.prescreen.pool) == ("params", 10, 80)


def test_only_completed_trials_with_a_value_count_and_too_few_rank_nothing():
    t = trials(val_accuracy=[0.1, 0.2, np.nan, 0.4, 0.5, 0.6], macs=[1, 2, 3, 4, 5, 6],
               proxy_synflow=[1.0, np.nan, 3.0, 4.0, 5.0, np.inf])
    t.loc[5, "status"] = "pruned"
    table = proxy_ranking(t).set_index("proxy")
    assert table.at["macs", "trials"] == 4 and table.at["synflow", "trials"] == 3
    assert table["spearman"].isna().all()  # under MIN_TRIALS pairs
    assert describe(proxy_ranking(t)) == (f"Too few completed trials with a value to rank anything (4; at least "
                                          f"{MIN_TRIALS} with distinct values are needed).")


def test_a_proxy_that_agrees_with_nothing_is_said_so_and_a_prescreen_is_named():
    t = trials(val_accuracy=[0.5, 0.1, 0.4, 0.2, 0.3, 0.35], params=[1, 2, 3, 4, 5, 6],
               proxy_grad_norm=[3.0, 1.0, 6.0, 2.0, 5.0, 4.0])
    text = describe(proxy_ranking(t), prescreened=True)
    assert "No proxy agrees with training at one-sided p < 0.1 here" in text
    assert "next search" not in text  # nothing to suggest
    assert "not a random sample" in text


def test_a_run_without_search_proxies_has_only_the_baselines():
    t = trials(val_accuracy=[0.1, 0.2], params=[1, 2], macs=[3, 4], proxy_errors=["", ""])
    assert proxy_columns_of(t) == {"params": "params", "macs": "macs"} and not recorded(t)
    assert recorded(trials(val_accuracy=[0.1], proxy_naswot=[1.0]))


def test_the_report_trusts_a_proxy_at_the_level_the_prescreen_check_does():
    assert P_AGREE == CHECK_P
