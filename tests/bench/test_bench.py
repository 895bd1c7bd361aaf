"""The benchmark suite measures what it claims: every contender side by side, every figure present.

No figure is asserted against a target here (timings belong to ``make bench``, not to unit tests);
these tests check the measuring, on the tiny profile with the fewest rounds.
"""

import pytest

from pipeline.bench import distributed, formats, input_path, precision, scaling, suite, timing
from pipeline.data.preprocess import open_arrays
from tests.conftest import tiny_params


def test_interleaving_rotates_the_order_and_warms_every_contender_up():
    calls = []
    seconds = timing.interleaved({name: (lambda n=name: calls.append(n)) for name in "abc"}, rounds=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, untimed
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # nobody always first
    assert {name: len(s) for name, s in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for s in seconds.values() for t in s)


def test_every_contender_takes_every_position_equally_often():
    seconds = timing.interleaved({name: (lambda: None) for name in "abcde"}, rounds=12)
    assert {len(s) for s in seconds.values()} == {15}  # 12 rounded up to a multiple of 5


def test_interleaving_needs_a_round():
    with pytest.raises(ValueError, match="rounds"):
        timing.interleaved({"a": lambda: None}, rounds=0)


def test_targets_flag_a_missed_figure_and_keep_the_met_ones():
    results = {
        "balancers": {
            "balancers": {
                "gradnorm": {"time_ratio_vs_equal": 1.2, "memory_ratio_vs_equal": 1.0},
                "dwa": {"time_ratio_vs_equal": 1.01, "memory_ratio_vs_equal": 1.0},
            }
        },
        "input": {"loader": {"loader_headroom": 2.0}, "augment": {"stage_vs_bare": 0.9}},
        "precision": {"max_abs_delta": {"dice": 0.01, "accuracy": 0.2}, "seed_spread": {"dice": 0.03, "accuracy": 0.1}},
        "distributed": {"ray_1_worker_vs_in_process": 1.05},
    }
    met = {t["figure"]: t["met"] for t in suite.targets(results)}
    assert met == {
        "balancers.gradnorm.time_ratio_vs_equal": False,
        "balancers.gradnorm.memory_ratio_vs_equal": True,
        "balancers.dwa.time_ratio_vs_equal": True,
        "balancers.dwa.memory_ratio_vs_equal": True,
        "input.loader.loader_headroom": False,
        "input.augment.stage_vs_bare": True,
        "precision.bf16_max_abs_delta.dice": True,
        "precision.bf16_max_abs_delta.accuracy": False,
        "distributed.ray_1_worker_vs_in_process": True,
    }


def test_scaling_multiplies_every_class_count():
    params = tiny_params()
    quadrupled = scaling.scaled(params, 4).data.synthetic
    assert (quadrupled.n_benign, quadrupled.n_malignant) == (
        4 * params.data.synthetic.n_benign,
        4 * params.data.synthetic.n_malignant,
    )


def test_input_path_reports_loader_model_and_augment_rates(tiny_data):
    results = input_path.run(tiny_params(), tiny_data, rounds=1, augment_rounds=1)
    loader, aug = results["loader"], results["augment"]
    assert loader["loader_samples_per_s"] > 0 and loader["model_samples_per_s"] > 0
    assert loader["loader_headroom"] == pytest.approx(loader["loader_samples_per_s"] / loader["model_samples_per_s"])
    assert aug["images"] == len(open_arrays(tiny_data / "augmented")[0]["ids"])  # what the stage writes
    assert set(aug["images_per_s"]) == {"bare_albumentations", "stage_1_process"}  # tiny profile: 1 worker


def test_scaling_fits_a_line_through_three_sizes():
    results = scaling.run(tiny_params(), rounds=1)
    for stage in ("preprocess", "augment"):
        images = list(results[stage]["images"].values())
        assert images[1] == pytest.approx(2 * images[0], rel=0.1) and images[2] == pytest.approx(4 * images[0], rel=0.1)
        assert {"slope_ms_per_image", "intercept_s", "r_squared", "time_ratio_4x_vs_1x"} <= set(results[stage])


def test_distributed_times_epochs_in_process_and_on_ray(tiny_data, on_cluster):
    results = distributed.run(tiny_params(), tiny_data, rounds=1, epochs_per_run=2)
    assert set(results["epoch_s_median"]) == {"in_process", "ray_1x2", "ray_2x1"}
    # epoch 1 of one run each (epoch 0 warms up); the compute part is at most the whole epoch
    assert results["epoch_samples"] == {name: 1 for name in results["epoch_s_median"]}
    for name, epoch in results["epoch_s_median"].items():
        assert 0 < results["compute_s_median"][name] <= epoch
    assert results["ray_1_worker_vs_in_process"] > 0 and results["workers_2x1_vs_1x2"] > 0


def test_every_precision_and_layout_is_timed_against_float32():
    results = formats.run(tiny_params(), steps=1, batch_size=4, image_size=32)
    assert set(results["step_ms_median"]) == set(formats.FORMATS)  # fp16 only on CUDA
    assert results["time_ratio_vs_float32"]["float32"] == 1.0
    assert all(ms > 0 for ms in results["step_ms_median"].values())


def test_bf16_is_compared_with_float32_on_the_same_test_images_per_balancer_seed_and_task(tiny_data):
    results = precision.run(tiny_params(), tiny_data, epochs=1, balancers=("equal", "dwa"), seeds=(1, 2))
    assert [(r["balancer"], r["seed"]) for r in results["runs"]] == [("equal", 1), ("equal", 2), ("dwa", 1), ("dwa", 2)]
    for r in results["runs"]:
        assert set(r["tasks"]) == {"lesion", "diagnosis"}
        for f in r["tasks"].values():
            assert f["delta"] == pytest.approx(f["bf16"] - f["float32"]) and 0.0 <= f["p_value"] <= 1.0
    dice = [r["tasks"]["lesion"] for r in results["runs"]]
    assert results["max_abs_delta"]["dice"] == pytest.approx(max(abs(f["delta"]) for f in dice))
    assert results["mean_delta"]["dice"] == pytest.approx(sum(f["delta"] for f in dice) / 4)
    # with several seeds, what they move the float32 figure is measured: the mean over balancers of its range
    ranges = [abs(dice[0]["float32"] - dice[1]["float32"]), abs(dice[2]["float32"] - dice[3]["float32"])]
    assert results["seed_spread_source"] == "measured"
    assert results["seed_spread"]["dice"] == pytest.approx(sum(ranges) / 2)
