"""Checks the benchmark's parsing and aggregation (bench/measure.py) on hand-made inputs whose answers
follow from their definitions. Standard library only: `python3 -m unittest discover bench`."""
import math
import unittest

import measure


class Quantiles(unittest.TestCase):
    def test_quantiles_interpolate_between_ranks(self):
        xs = list(range(1, 101))  # 1..100
        self.assertEqual(measure.quantile(xs, 0.0), 1)
        self.assertEqual(measure.quantile(xs, 1.0), 100)
        self.assertAlmostEqual(measure.quantile(xs, 0.5), 50.5)
        self.assertAlmostEqual(measure.quantile(xs, 0.99), 99.01)
        self.assertEqual(measure.quantile([7], 0.999), 7)
        self.assertTrue(math.isnan(measure.quantile([], 0.5)))
        self.assertEqual(measure.quantile([3, 1, 2], 0.5), 2)  # unsorted input

    def test_latency_summary_of_a_level(self):
        s = measure.latency_summary([10.0] * 998 + [50.0, 1000.0])
        self.assertEqual((s["n"], s["p50_ms"], s["max_ms"]), (1000, 10.0, 1000.0))
        self.assertGreater(s["p999_ms"], 50.0)

    def test_median_and_ratio_skip_missing(self):
        self.assertEqual(measure.median([3.0, None, float("nan"), 1.0, 2.0]), 2.0)
        self.assertTrue(math.isnan(measure.median([None])))
        self.assertTrue(math.isnan(measure.ratio(1.0, 0.0)))
        self.assertTrue(math.isnan(measure.ratio(None, 2.0)))
        self.assertEqual(measure.ratio(3.0, 2.0), 1.5)


class Parsing(unittest.TestCase):
    def test_summary_line_of_fvision_run(self):
        out = "image  label\n-:1  tench 0.87 12.0\n\n1000 images in 8.21 s (121.8 images/s): 1000 classified\n"
        self.assertEqual(measure.parse_summary(out), (1000, 8.21, 121.8))
        self.assertIsNone(measure.parse_summary("no summary here\n"))

    def test_preset_names_from_models_list(self):
        listing = (
            "name                 version  layout weights                        description\n"
            "efficientnet-lite0   1        NCHW   real (trained)                 EfficientNet\n"
            "efficientnet-lite0-int8 1     NCHW   real (trained)                 INT8\n"
            "mobilenet_v2         1        NCHW   real (trained)                 torchvision\n"
            "resnet50             1        NCHW   WEIGHT-FREE (throughput only)  torchvision\n"
        )
        self.assertEqual(
            measure.parse_presets(listing), ["efficientnet-lite0", "efficientnet-lite0-int8", "mobilenet_v2", "resnet50"]
        )

    def test_rfc3339_keeps_the_fraction(self):
        a = measure.rfc3339_seconds("2026-12-01T14:00:00.123456Z")
        b = measure.rfc3339_seconds("2026-12-01T14:00:01.000Z")
        self.assertAlmostEqual((b - a) * 1e3, 876.544, places=3)
        self.assertEqual(measure.rfc3339_seconds("1970-01-01T00:00:10Z"), 10.0)
        with self.assertRaises(ValueError):
            measure.rfc3339_seconds("2026-12-01 14:00:00")

    def test_label_mismatches_count_missing_records(self):
        ours = {"0/a": 1, "0/b": 2, "0/c": 3}
        self.assertEqual(measure.label_mismatches(ours, dict(ours)), [])
        self.assertEqual(measure.label_mismatches(ours, {"0/a": 1, "0/b": 5}), ["0/b", "0/c"])


def doc_with(results, levels=(), connector_levels=()):
    return {"results": results, "sweep": {"levels": list(levels)}, "connector_sweep": {"levels": list(connector_levels)}}


class Figures(unittest.TestCase):
    def test_ratios_pair_reps_and_take_the_median(self):
        fp32 = "efficientnet-lite0"
        results = []
        # Our rate doubles the loop's in rep 0, triples it in rep 1, and rep 2 has no loop row: pairs only.
        for rep, ours, loop in ((0, 200.0, 100.0), (1, 300.0, 100.0), (2, 500.0, None)):
            results.append({"rep": rep, "what": "fvision-run", "model": fp32, "images_per_s": ours, "peak_rss_mib": 100.0 + rep,
                            "images_per_cpu_s": ours / 2})
            if loop is not None:
                results.append({"rep": rep, "what": "python-loop", "model": fp32, "images_per_s": loop, "images_per_cpu_s": loop})
        results.append({"rep": 0, "what": "pyspark", "model": fp32, "images_per_s": 50.0})
        results.append({"rep": 1, "what": "bench-connector", "model": fp32, "error": "no cluster"})
        results.append({"rep": 0, "what": "sink-drain", "model": fp32, "peak_rss_mib": 140.0})
        for rep, floor in ((0, 8.0), (1, 10.0), (2, 12.0)):
            results.append({"rep": rep, "what": "compute-floor", "model": fp32, "floor_ms": floor})
        levels = [
            {"level": "idle", "e2e": {"p50_ms": 15.0, "p99_ms": 20.0}},
            {"level": "50%", "e2e": {"p50_ms": 20.0, "p99_ms": 40.0}},
        ]
        # The sink's peak is the highest over the connector sweep's levels; a failed level has none.
        connector_levels = [{"level": "10%", "sink_peak_rss_mib": 120.0}, {"level": "50%", "sink_peak_rss_mib": 160.0},
                            {"level": "90%", "error": "timed out"}]
        values, ranges = measure.figures(doc_with(results, levels, connector_levels))
        self.assertEqual(values["run_vs_loop"], 2.5)  # median of 2.0 and 3.0
        self.assertEqual(ranges["run_vs_loop"], (2.0, 3.0))
        self.assertEqual(values["run_vs_pyspark"], 4.0)
        self.assertEqual(values["cpu_run_vs_loop"], 1.25)  # per CPU-second: half of the wall-clock ratios
        self.assertTrue(math.isnan(values["cpu_run_vs_pyspark"]))  # PySpark's row has no CPU figure
        self.assertEqual(values["run_peak_rss_mib"], 102.0)  # the highest peak, not the median
        self.assertEqual(values["sink_peak_rss_mib"], 160.0)
        self.assertEqual(ranges["sink_peak_rss_mib"], (120.0, 160.0))  # the drain's 140 lies between
        self.assertEqual(values["floor_ms"], 10.0)
        self.assertEqual(values["p50_idle_vs_floor"], 1.5)
        self.assertEqual(values["p99_half_load_vs_floor"], 4.0)
        self.assertTrue(math.isnan(values["connector_vs_embedded"]))  # its only row failed
        self.assertTrue(math.isnan(values["int8_run_vs_loop"]))  # no INT8 rows

        verdicts = {v["key"]: v["status"] for v in measure.verdicts(values)}
        self.assertEqual(verdicts["run_vs_loop"], "met")  # 2.5 >= 1.6
        self.assertEqual(verdicts["run_vs_pyspark"], "met")  # 4.0 >= 2.5
        self.assertEqual(verdicts["run_peak_rss_mib"], "met")  # 102 <= 150
        self.assertEqual(verdicts["sink_peak_rss_mib"], "not met")  # 160 > 150
        self.assertEqual(verdicts["p50_idle_vs_floor"], "met")  # 1.5 <= 1.5
        self.assertEqual(verdicts["p99_half_load_vs_floor"], "not met")  # 4.0 > 3
        self.assertEqual(verdicts["connector_vs_embedded"], "not measured")
        self.assertEqual(verdicts["int8_run_vs_loop"], "not measured")
        self.assertEqual(verdicts["mobilenet_run_vs_loop"], "not measured")  # no MobileNetV2 rows

    def test_mobilenet_is_compared_with_peers_running_mobilenet(self):
        fp32, mnv2 = "efficientnet-lite0", "mobilenet_v2"
        results = [
            # FP32 rows that would give other ratios if MobileNetV2's were paired with them by mistake.
            {"rep": 0, "what": "python-loop", "model": fp32, "images_per_s": 10.0},
            {"rep": 0, "what": "pyspark", "model": fp32, "images_per_s": 5.0},
        ]
        for rep, ours, loop, spark, rss in ((0, 180.0, 100.0, 60.0, 120.0), (1, 150.0, 100.0, 50.0, 155.0)):
            results += [
                {"rep": rep, "what": "fvision-run", "model": mnv2, "images_per_s": ours, "peak_rss_mib": rss},
                {"rep": rep, "what": "python-loop", "model": mnv2, "images_per_s": loop},
                {"rep": rep, "what": "pyspark", "model": mnv2, "images_per_s": spark},
            ]
        values, ranges = measure.figures(doc_with(results))
        self.assertAlmostEqual(values["mobilenet_run_vs_loop"], 1.65)  # median of 1.8 and 1.5
        self.assertEqual(ranges["mobilenet_run_vs_pyspark"], (3.0, 3.0))
        self.assertEqual(values["mobilenet_run_peak_rss_mib"], 155.0)
        self.assertTrue(math.isnan(values["run_vs_loop"]))  # no FP32 run of ours
        verdicts = {v["key"]: v["status"] for v in measure.verdicts(values)}
        self.assertEqual(verdicts["mobilenet_run_vs_loop"], "met")  # 1.65 >= 1.6
        self.assertEqual(verdicts["mobilenet_run_vs_pyspark"], "met")  # 3.0 >= 2.5
        self.assertEqual(verdicts["mobilenet_run_peak_rss_mib"], "not met")  # 155 > 150


class Profile(unittest.TestCase):
    def test_samples_fall_into_categories_by_library_then_symbol(self):
        lines = [
            "# comment",
            " 40.00%  |libonnxruntime.so.1.32.0|[.] 0x00000000013e5ff2",
            " 10.00%  |fvision                 |[.] decode_mcu",
            "  5.00%  |fvision                 |[.] regalloc2::ion::Env::run",
            "  5.00%  |fvision                 |[.] <fast_image_resize::convolution::Foo as Bar>::baz",
            "  4.00%  |[JIT] tid 12393         |[.] 0x00007f28b24120b8",
            "  6.00%  |libjpeg.so.62.4.0       |[.] 0x1234",
            "  3.00%  |libpython3.11.so.1.0    |[.] _PyEval_EvalFrameDefault",
            "  7.00%  |onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so|[.] 0x42",
            "  2.00%  |[kernel.kallsyms]       |[k] clear_page_erms",
            "  1.00%  |fvision                 |[.] std::thread::spawn",
        ]
        # The lines add up to 83 %: shares are of that.
        shares = {k: v * 0.83 for k, v in measure.profile_categories(lines).items()}
        self.assertAlmostEqual(shares["inference (ONNX Runtime)"], 0.47)  # our library and Python's module
        self.assertAlmostEqual(shares["JPEG decode (libjpeg-turbo)"], 0.16)  # ours by symbol, Pillow's by library
        self.assertAlmostEqual(shares["WASM compile (wasmtime, cranelift)"], 0.05)
        self.assertAlmostEqual(shares["resize and normalise"], 0.05)
        self.assertAlmostEqual(shares["WASM validation (compiled code)"], 0.04)
        self.assertAlmostEqual(shares["Python interpreter, numpy"], 0.03)
        self.assertAlmostEqual(shares["kernel"], 0.02)
        self.assertAlmostEqual(shares["other"], 0.01)
        # Rounded lines that add up to more than 100 % are taken as shares of their sum.
        over = measure.profile_categories([" 60.00% |libonnxruntime.so|[.] 0x1", " 60.00% |fvision|[.] decode_mcu"])
        self.assertAlmostEqual(over["inference (ONNX Runtime)"], 0.5)


if __name__ == "__main__":
    unittest.main()
