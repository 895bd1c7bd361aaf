"""What every stage that runs a model shares, below training, evaluation and serving: the device and how a batch
reaches it (:mod:`~pipeline.runtime.device`, :mod:`~pipeline.runtime.prefetch`), the precision and memory format
(:mod:`~pipeline.runtime.compute_format`), communication between ranks (:mod:`~pipeline.runtime.comm`), batched
prediction with losses and metrics (:mod:`~pipeline.runtime.inference`, :mod:`~pipeline.runtime.metrics`)."""
