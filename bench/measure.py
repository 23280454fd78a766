"""Pure helpers of the benchmark: quantiles, medians, ratios, the parsing of what the tools print, and the
goals of issue 20. No I/O and only the standard library, so `bench/test_measure.py` checks them with the
system Python (`python3 -m unittest discover bench`)."""
import math
import re
import statistics

# `fvision run`'s summary line: "1000 images in 8.21 s (121.8 images/s): ..."
SUMMARY = re.compile(r"^(\d+) images in ([0-9.]+) s \(([0-9.]+) images/s\)")
# `fvision models list`: the first column of each row is a preset name.
PRESET_ROW = re.compile(r"^([a-z0-9][a-z0-9_.-]*)\s")


def quantile(values, q):
    """The q-quantile (0..1) by linear interpolation between the closest ranks (NaN when empty)."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(values):
    """The median, NaN when there is nothing to take it of (a failed peer)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def ratio(a, b):
    """a / b, NaN when either is missing or b is zero."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def paired_ratios(ours, theirs):
    """Rep-by-rep ratios of two interleaved series (rep i of ours against rep i of theirs)."""
    return [ratio(a, b) for a, b in zip(ours, theirs)]


def parse_summary(stdout):
    """(images, seconds, images/s) from `fvision run`'s last summary line, or None."""
    for line in reversed(stdout.splitlines()):
        m = SUMMARY.match(line.strip())
        if m:
            return int(m.group(1)), float(m.group(2)), float(m.group(3))
    return None


def parse_presets(listing):
    """Preset names from `fvision models list` (the header row and blank lines skipped)."""
    names = []
    for line in listing.splitlines():
        m = PRESET_ROW.match(line)
        if m and m.group(1) not in ("name", "preset", "model"):
            names.append(m.group(1))
    return names


def rfc3339_seconds(stamp):
    """Seconds since the epoch of an RFC 3339 UTC time ("...T12:00:00.123456Z"), fraction kept exactly."""
    from datetime import datetime, timezone

    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]00:00)$", stamp)
    if not m:
        raise ValueError(f"not an RFC 3339 UTC time: {stamp!r}")
    whole = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return whole + (float(m.group(2)) if m.group(2) else 0.0)


def label_mismatches(ours, theirs):
    """Keys whose top-1 differs, plus keys one side lacks: every peer must have done the same work."""
    keys = set(ours) | set(theirs)
    return sorted(k for k in keys if ours.get(k) != theirs.get(k))


def latency_summary(latencies_ms):
    """p50 / p99 / p999 / max of a level of the latency sweep."""
    return {
        "n": len(latencies_ms),
        "p50_ms": quantile(latencies_ms, 0.5),
        "p99_ms": quantile(latencies_ms, 0.99),
        "p999_ms": quantile(latencies_ms, 0.999),
        "max_ms": max(latencies_ms) if latencies_ms else math.nan,
    }


# Issue 20's goals: (key, what, goal, True when higher is better).
GOALS = [
    ("run_vs_pyspark", "`fvision run` / PySpark seed-shape job", 2.5, True),
    ("run_vs_loop", "`fvision run` / Python loop", 1.6, True),
    ("int8_run_vs_pyspark", "`fvision run` INT8 / PySpark (FP32)", 3.5, True),
    ("int8_run_vs_loop", "`fvision run` INT8 / Python loop (FP32)", 2.2, True),
    ("cpu_run_vs_pyspark", "same, images per CPU-second (whole process trees)", 2.5, True),
    ("cpu_run_vs_loop", "same vs Python loop, images per CPU-second", 1.6, True),
    ("cpu_int8_run_vs_pyspark", "INT8 vs PySpark, images per CPU-second", 3.5, True),
    ("cpu_int8_run_vs_loop", "INT8 vs Python loop, images per CPU-second", 2.2, True),
    ("pipeline_vs_limit", "`bench pipeline` / limit", 0.9, True),
    ("connector_vs_embedded", "connector on the local cluster / embedded", 0.9, True),
    ("int8_pipeline_vs_fp32_limit", "INT8 pipeline / FP32 limit", 1.5, True),
    ("run_peak_rss_mib", "peak RSS of `fvision run` (MiB)", 150.0, False),
    ("mobilenet_run_vs_pyspark", "MobileNetV2 (real weights): `fvision run` / PySpark seed-shape job", 2.5, True),
    ("mobilenet_run_vs_loop", "MobileNetV2: `fvision run` / Python loop", 1.6, True),
    ("mobilenet_run_peak_rss_mib", "MobileNetV2: peak RSS of `fvision run` (MiB)", 150.0, False),
    ("sink_peak_rss_mib", "peak RSS of the sink, `inference-sink` draining a backlog or in the sweep (MiB)", 150.0, False),
    ("p50_idle_vs_floor", "p50 at idle / compute floor", 1.5, False),
    ("p99_half_load_vs_floor", "p99 at 50 % of saturation / compute floor", 3.0, False),
]


def verdicts(values):
    """Each goal with its measured value and met / not met / not measured."""
    rows = []
    for key, what, goal, higher in GOALS:
        value = values.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            status = "not measured"
        elif (value >= goal) if higher else (value <= goal):
            status = "met"
        else:
            status = "not met"
        rows.append({"key": key, "what": what, "goal": goal, "higher_is_better": higher, "value": value, "status": status})
    return rows


def rows(doc, what, model):
    """The result rows of one measurement and model, in rep order."""
    return sorted((r for r in doc["results"] if r["what"] == what and r["model"] == model and "error" not in r), key=lambda r: r["rep"])


def series(doc, what, model, field):
    """One field of a measurement over the reps."""
    return [r.get(field) for r in rows(doc, what, model)]


def by_rep(doc, what, model, field):
    """{rep: value} of one field, for pairing measurements taken in the same rep."""
    return {r["rep"]: r.get(field) for r in rows(doc, what, model)}


def paired(doc, a, b):
    """Rep-by-rep ratios a / b, each given as (what, model, field); only reps where both were measured."""
    left, right = by_rep(doc, *a), by_rep(doc, *b)
    return [ratio(left[k], right[k]) for k in sorted(left) if k in right]


def sweep_level(doc, name):
    """A level of the latency sweep by its name (`idle`, `50%`), or None."""
    for level in doc.get("sweep", {}).get("levels", []):
        if level.get("level") == name:
            return level
    return None


def figures(doc, fp32="efficientnet-lite0", int8="efficientnet-lite0-int8", mobilenet="mobilenet_v2", latency="e2e"):
    """Issue 20's figures from a run's JSON: each ratio as the median of its rep-by-rep ratios (with the
    range), peak RSS as the highest peak, latency ratios against the median compute floor. MobileNetV2 (the
    seed's default model, issue 30) has the same throughput and memory goals as FP32, against peers running
    the same model file."""
    run = ("fvision-run", fp32, "images_per_s")
    run8 = ("fvision-run", int8, "images_per_s")
    loop = ("python-loop", fp32, "images_per_s")
    spark = ("pyspark", fp32, "images_per_s")
    mobilenet_run = ("fvision-run", mobilenet, "images_per_s")

    def cpu(measurement):
        return (measurement[0], measurement[1], "images_per_cpu_s")

    ratios = {
        "run_vs_pyspark": paired(doc, run, spark),
        "run_vs_loop": paired(doc, run, loop),
        "int8_run_vs_pyspark": paired(doc, run8, spark),
        "int8_run_vs_loop": paired(doc, run8, loop),
        "mobilenet_run_vs_pyspark": paired(doc, mobilenet_run, ("pyspark", mobilenet, "images_per_s")),
        "mobilenet_run_vs_loop": paired(doc, mobilenet_run, ("python-loop", mobilenet, "images_per_s")),
        "cpu_run_vs_pyspark": paired(doc, cpu(run), cpu(spark)),
        "cpu_run_vs_loop": paired(doc, cpu(run), cpu(loop)),
        "cpu_int8_run_vs_pyspark": paired(doc, cpu(run8), cpu(spark)),
        "cpu_int8_run_vs_loop": paired(doc, cpu(run8), cpu(loop)),
        "pipeline_vs_limit": series(doc, "bench-pipeline", fp32, "ratio_vs_limit"),
        "connector_vs_embedded": series(doc, "bench-connector", fp32, "ratio_connector_vs_embedded"),
        "int8_pipeline_vs_fp32_limit": paired(
            doc, ("bench-pipeline", int8, "pipeline_images_per_sec"), ("bench-pipeline", fp32, "limit_images_per_sec")
        ),
    }
    out = {}
    ranges = {}
    for key, values in ratios.items():
        values = [v for v in values if v is not None and not math.isnan(v)]
        out[key] = median(values)
        ranges[key] = (min(values), max(values)) if values else None
    for key, model in (("run_peak_rss_mib", fp32), ("mobilenet_run_peak_rss_mib", mobilenet)):
        peaks = [p for p in series(doc, "fvision-run", model, "peak_rss_mib") if p is not None]
        out[key] = max(peaks) if peaks else math.nan
        ranges[key] = (min(peaks), max(peaks)) if peaks else None
    sink_peaks = [p for p in series(doc, "sink-drain", fp32, "peak_rss_mib") if p is not None] + [
        level["sink_peak_rss_mib"]
        for level in doc.get("connector_sweep", {}).get("levels", [])
        if isinstance(level.get("sink_peak_rss_mib"), (int, float)) and not math.isnan(level["sink_peak_rss_mib"])
    ]
    out["sink_peak_rss_mib"] = max(sink_peaks) if sink_peaks else math.nan
    ranges["sink_peak_rss_mib"] = (min(sink_peaks), max(sink_peaks)) if sink_peaks else None
    floor = median(series(doc, "compute-floor", fp32, "floor_ms"))
    out["floor_ms"] = floor
    idle, half = sweep_level(doc, "idle"), sweep_level(doc, "50%")
    out["p50_idle_vs_floor"] = ratio(idle[latency]["p50_ms"], floor) if idle else math.nan
    out["p99_half_load_vs_floor"] = ratio(half[latency]["p99_ms"], floor) if half else math.nan
    return out, ranges


# Where CPU samples go, by library and symbol: (category, library substring or None, symbol prefixes or None).
# The first matching rule wins; both sides (ours and the Python loop) share the categories.
PROFILE_RULES = [
    ("inference (ONNX Runtime)", "onnxruntime", None),  # ours: libonnxruntime.so; Python: its pybind module
    ("JPEG decode (libjpeg-turbo)", "libjpeg", None),
    ("JPEG decode (libjpeg-turbo)", None, ("decode_mcu", "jsimd_", "jpeg_", "tj3", "ycc_rgb", "h2v", "decompress_", "process_data_",
                                         "sep_upsample", "decode_mcu_fast", "jdhuff", "fill_bit_buffer", "jpeg_fill_bit_buffer")),
    ("resize and normalise", None, ("fast_image_resize", "fvision_models::preprocess")),
    ("resize and normalise", "_imaging", None),
    ("WASM compile (wasmtime, cranelift)", None, ("cranelift", "regalloc2", "wasmtime", "wasmparser")),
    ("WASM validation (compiled code)", "[JIT]", None),
    ("JSON and base64", None, ("serde_json", "base64", "<serde_json", "<base64")),
    ("Python interpreter, numpy", "libpython", None),
    ("Python interpreter, numpy", "_multiarray", None),
    ("Python interpreter, numpy", "openblas", None),
    ("kernel", "[kernel", None),
    ("libc (malloc, memcpy)", "libc.so", None),
]


def profile_categories(report_lines):
    """CPU shares by category from `perf report --sort dso,sym --stdio -t '|'` lines ("7.88%|dso|[.] symbol"):
    {category: share of samples, 0-1}; what no rule matches is `other`."""
    shares = {}
    for line in report_lines:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 3 or not parts[0].endswith("%"):
            continue
        try:
            share = float(parts[0].rstrip("%")) / 100
        except ValueError:
            continue
        dso, sym = parts[1], parts[2].split("] ", 1)[-1]
        category = "other"
        for name, library, prefixes in PROFILE_RULES:
            if library is not None and library not in dso:
                continue
            if prefixes is not None and not sym.lstrip("<").startswith(tuple(p.lstrip("<") for p in prefixes)):
                continue
            category = name
            break
        shares[category] = shares.get(category, 0.0) + share
    # perf rounds each of thousands of lines (stripped libraries list every address) to 0.01 %, so the lines
    # add up to more than 100 %: shares are of their sum.
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()} if total else shares
