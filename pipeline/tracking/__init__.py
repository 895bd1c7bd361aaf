"""MLflow tracking: one parent run per stage invocation, one nested child run per (balancer, fold).

Typical use in the train stage (the driver)::

    outage_s = params.tracking.outage_s                                   # how long to wait out the server
    with stage_run(params, "train", balancer, data_root) as parent:       # connects, fails fast
        with child_run(parent, balancer, fold, outage_s=outage_s) as run_id:  # closed FINISHED/FAILED
            logger = EpochLogger(tracking_uri(params), run_id)             # picklable: send to workers
            result = trainer.fit(on_epoch=logger)                          # keeps what the server missed
            logger.finish(result.history, outage_s)                        # all epochs, or TrackingError
            log_fold_result(run_id, result, model, example, test_metrics,
                            outage_s=outage_s, log_model=params.tracking.log_models)

Nothing here logs a value that contains a credential of :func:`pipeline.environment.secret_values`.
"""

from pipeline.tracking.connection import connect
from pipeline.tracking.epochs import EpochLogger
from pipeline.tracking.lineage import flatten_params, lineage_tags
from pipeline.tracking.results import log_fold_result
from pipeline.tracking.retry import TrackingError
from pipeline.tracking.runs import child_run, stage_run

__all__ = [
    "EpochLogger",
    "TrackingError",
    "child_run",
    "connect",
    "flatten_params",
    "lineage_tags",
    "log_fold_result",
    "stage_run",
]
