"""The benchmark suite (``mtl-pipeline bench``, ``make bench``): where time and memory go.

Every figure that compares two things is measured side by side in one process run, interleaved
(:mod:`pipeline.bench.timing`), after a warm-up, as medians: these machines are noisy, and
interleaving exposes every contender to the same noise. Parts: ``make_run`` (the last ``make run``'s wall
time per stage, as that run recorded it: :mod:`pipeline.bench.run_time`), ``balancers`` (step time and peak
memory per balancer), ``formats`` (step time per precision and layout), ``precision`` (bf16's effect on each
balancer's test figures), ``input`` (loader vs model throughput, augment stage vs bare albumentations),
``distributed`` (Ray Train vs the in-process loop, workers vs threads) and ``scaling`` (data stages
at 1×, 2×, 4× the synthetic dataset). :mod:`pipeline.bench.suite` runs them and writes
``reports/bench.json``.
"""

PARTS = ("make_run", "balancers", "formats", "precision", "input", "distributed", "scaling")
