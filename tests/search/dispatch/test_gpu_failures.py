"""Which failures of a trial Tune retries: a GPU allocation that failed, however CUDA's
libraries word it, is raised (a neighbour on a shared GPU may have held the memory); any
other error is recorded as the trial's failure. Ray's `tune.report` and the trial's
resources are replaced, so this runs without Ray."""

from __future__ import annotations

import pytest
import torch

from archscale.search.dispatch import trial as trial_module
from archscale.search.configs.evaluate import describe_error, is_cuda_out_of_memory


def _wrapped(outer: type[BaseException], inner: BaseException) -> BaseException:
    """``outer`` raised from ``inner``, as torch.compile re-raises what its compiled code hit."""
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer("backend compiler failed") from err
    except BaseException as err:
        return err


CUDA_ALLOCATION_FAILURES = {
    "torch": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cublas": RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "cudnn": RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    "runtime": RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    "compile": _wrapped(RuntimeError, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")),
    "compile-cublas": _wrapped(RuntimeError, RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED")),
}
OTHER_FAILURES = {
    "shapes": RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"),
    "host": RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GiB"),
    "cudnn-other": RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"),
    "value": ValueError("bad value"),
}


@pytest.fixture
def run_failing(monkeypatch):
    """``run(err)``: run_trial whose training raises ``err``; returns what it reported."""
    import ray.tune

    reports: list[dict] = []
    monkeypatch.setattr(ray.tune, "report", reports.append)
    monkeypatch.setattr(trial_module, "claim_resources", lambda: {"cpus": 1, "gpus": 0.25})

    def run(err: BaseException) -> list[dict]:
        def train_trial(config, ctx, splits, report, host, reached, **timing):
            reached.update(epochs=3)
            raise err

        monkeypatch.setattr(trial_module, "train_trial", train_trial)
        trial_module.run_trial({}, ctx=None, splits=None)
        return reports

    return run


@pytest.mark.parametrize("name", sorted(CUDA_ALLOCATION_FAILURES))
def test_a_failed_gpu_allocation_is_raised_for_tune_to_retry(run_failing, name):
    err = CUDA_ALLOCATION_FAILURES[name]
    assert is_cuda_out_of_memory(err)
    with pytest.raises(type(err)):
        run_failing(err)
    assert describe_error(err).startswith("out of memory: ")


@pytest.mark.parametrize("name", sorted(OTHER_FAILURES))
def test_any_other_failure_is_recorded_not_retried(run_failing, name):
    err = OTHER_FAILURES[name]
    assert not is_cuda_out_of_memory(err)
    (report,) = run_failing(err)
    assert report["status"] == "failed" and report["epochs"] == 3
    assert report["error"] == describe_error(err)
