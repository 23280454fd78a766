"""Turns a run's JSON (bench/run.py) into the Markdown report with its PNG plots, beside the JSON:
`<date>.md`, `<date>-throughput.png`, `<date>-latency.png`, `<date>-rss.png`.

Usage: report.py docs/benchmarks/2026-12-01.json
"""
import json
import math
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import measure  # noqa: E402

FP32 = "efficientnet-lite0"
INT8 = "efficientnet-lite0-int8"


def weight_free(doc):
    """The weight-free presets of a run (reports before December 2026 had every model but FP32/INT8 so)."""
    return doc.get("weight_free_models", [m for m in doc["models"] if m not in (FP32, INT8)])


def fmt(value, digits=1):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def spread(values, digits=1):
    """median [min-max] of a series."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(measure.median(values), digits)} [{fmt(min(values), digits)}-{fmt(max(values), digits)}]"


def plot_throughput(doc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = []
    for model in doc["models"]:
        n = int(measure.median(measure.series(doc, "fvision-run", model, "images")))
        bars.append((f"fvision run\n{model}\n{n} records", measure.series(doc, "fvision-run", model, "images_per_s"), "#1f77b4"))
        if model != INT8:
            bars.append((f"Python loop\n{model}\n{n} records", measure.series(doc, "python-loop", model, "images_per_s"), "#ff7f0e"))
        if model != INT8 and measure.rows(doc, "pyspark", model):
            bars.append((f"PySpark\n{model}", measure.series(doc, "pyspark", model, "images_per_s"), "#2ca02c"))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(bars)), 4.5))
    for i, (name, values, colour) in enumerate(bars):
        ax.bar(i, measure.median(values), color=colour, alpha=0.8)
        ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.set_ylabel("images/s (whole process; PySpark: query time)")
    ax.set_title(f"ImageEvent records, {doc['machine']['cores']} cores (bars: median, dots: reps)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(doc, path, floor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = doc["sweep"]["levels"]
    if not levels:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    idle = [lv for lv in levels if lv["level"] == "idle"]
    levels = sorted((lv for lv in levels if lv["level"] != "idle"), key=lambda lv: lv["offered_per_s"])
    xs = [lv["offered_per_s"] for lv in levels]
    for (q, style), colour in zip((("p50_ms", "o-"), ("p99_ms", "s-"), ("p999_ms", "^-")), ("C0", "C1", "C2")):
        ax.plot(xs, [lv["e2e"][q] for lv in levels], style, color=colour, label=f"{q[:-3]} (offered -> prediction out)")
        for lv in idle:
            ax.plot([lv["offered_per_s"]], [lv["e2e"][q]], "*", color=colour, markersize=11)
    ax.plot(xs, [lv["processing_time"]["p50_ms"] for lv in levels], "x:", color="C3", label="p50 processing_time_ms")
    if idle:
        ax.plot([], [], "*", color="black", label=f"idle ({idle[0]['offered_per_s']:g}/s)")
    if not math.isnan(floor):
        ax.axhline(floor, color="grey", linestyle="--", label=f"compute floor {floor:.1f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered images/s (open loop)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"{doc['sweep']['model']} through `fvision run -`")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def profile_section(model, profile):
    """Where the CPU goes on each side (`perf record` once per run): CPU ms per image by category."""
    lines = ["", f"### Where the CPU goes (perf), {model}", ""]
    ours, loop = profile.get("ours"), profile.get("loop")
    if not ours or not loop or "error" in ours or "error" in loop:
        problem = profile.get("error") or (ours or {}).get("error") or (loop or {}).get("error") or "not run"
        return lines + [f"Not profiled in this run: {problem}."]
    categories = sorted(set(ours["cpu_ms_per_image"]) | set(loop["cpu_ms_per_image"]),
                        key=lambda k: -(ours["cpu_ms_per_image"].get(k, 0) + loop["cpu_ms_per_image"].get(k, 0)))
    lines += [
        f"`perf record -F 499` of `fvision run` and of the Python loop over the same {ours['images']} images ({model}), once, "
        "samples grouped by library and symbol (`bench/measure.py`, `PROFILE_RULES`); CPU ms per image = share x the "
        "process tree's CPU time / images, start-up included.",
        "",
        "| category | ours: CPU ms per image (share) | Python loop: CPU ms per image (share) |",
        "| --- | ---: | ---: |",
    ]
    for k in categories:
        a, b = ours["cpu_ms_per_image"].get(k), loop["cpu_ms_per_image"].get(k)
        cell = lambda side, v: f"{fmt(v, 2)} ({side['shares'][k]:.0%})" if v is not None else "-"  # noqa: E731
        lines.append(f"| {k} | {cell(ours, a)} | {cell(loop, b)} |")
    total = lambda side: side["cpu_s"] * 1e3 / side["images"]  # noqa: E731
    lines.append(f"| **total** | **{fmt(total(ours), 2)}** | **{fmt(total(loop), 2)}** |")
    return lines


def plot_rss(doc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for what, model, label in (
        ("fvision-run", FP32, "fvision run (FP32)"),
        ("fvision-run", INT8, "fvision run (INT8)"),
        ("python-loop", FP32, "Python loop"),
        ("pyspark", FP32, "PySpark (JVM + Python workers)"),
        ("fvision-run", "mobilenet_v2", "fvision run (MobileNetV2)"),
    ):
        first = measure.rows(doc, what, model)
        if first and first[0].get("rss"):
            samples = first[0]["rss"]
            ax.plot([s[0] for s in samples], [s[1] for s in samples], label=label)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("RSS, MiB (process tree)")
    ax.set_yscale("log")
    ax.set_title("resident memory over one run (rep 0)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(json_path):
    json_path = pathlib.Path(json_path)
    doc = json.loads(json_path.read_text())
    stem = json_path.with_suffix("")
    values, ranges = measure.figures(doc)
    floor = values["floor_ms"]
    m = doc["machine"]
    flags = m.get("flags", [])
    vnni = [f for f in flags if "vnni" in f]
    lines = [
        f"# Benchmark {stem.name}: fluvio-vision against its peers (issue 20)",
        "",
        f"Run {doc['started']} to {doc['finished']} UTC on commit `{m.get('commit')}` with `./scripts/bench.sh`"
        + (" (short mode: trial figures)" if doc["settings"].get("reps", 3) < 2 else "")
        + ".",
        "",
        f"- **Machine**: {m.get('cpu')}, {m['cores']} cores, {m.get('memory_gib')} GiB; "
        f"CPU flags {', '.join(flags) or 'n/a'} (VNNI: {', '.join(vnni) or 'no'}).",
        f"- **Load**: load average {', '.join(f'{x:.1f}' for x in m['load_average_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_end'])} at the end. The machine is shared with other "
        "builds: absolute figures move with them; the ratios are taken rep by rep, every side in the same rep.",
        f"- **Software**: ONNX Runtime {m.get('onnxruntime')} (ours: the same version's library), Pillow "
        f"{m.get('pillow')}, PySpark {m.get('pyspark')} on {m.get('java')}, Python {m.get('python')}.",
        f"- **Records**: {doc['records']} ImageEvent JSON records (the 100 ImageNet sample JPEGs x "
        f"{doc['settings']['passes']}, base64 `data`), {doc['settings']['reps']} reps, interleaved; presets "
        f"read from `{doc.get('models_dir', 'models/presets')}`.",
    ]
    lines += [f"- **Note**: {note}" for note in doc.get("notes", [])]
    lines += [
        "",
        "## Issue 20's goals",
        "",
        "| goal | measured (median of reps [range]) | target | |",
        "| --- | ---: | ---: | --- |",
    ]
    for row in measure.verdicts(values):
        rng = ranges.get(row["key"])
        shown = fmt(row["value"], 2)
        if rng and rng[0] != rng[1]:
            shown += f" [{fmt(rng[0], 2)}-{fmt(rng[1], 2)}]"
        sign = "≥" if row["higher_is_better"] else "≤"
        lines.append(f"| {row['what']} | {shown} | {sign} {row['goal']} | **{row['status']}** |")
    lines += [
        "",
        f"Compute floor (decode + preprocess + inference at batch 1 of one image, `fvision bench inference` in "
        f"the same run, mean over the sample): **{fmt(floor, 2)} ms**. Latency goals use the open-loop sweep's "
        "end-to-end latency (below).",
        "",
        "## Throughput: the same records, whole process",
        "",
        f"![throughput]({stem.name}-throughput.png)",
        "",
        "| model | `fvision run` images/s | Python loop images/s | PySpark images/s (query) | PySpark start-up s | "
        "ours / loop | ours / PySpark | peak RSS MiB: ours / loop / PySpark | top-1 differences (loop, PySpark) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for model in doc["models"]:
        run = ("fvision-run", model, "images_per_s")
        peer_model = FP32 if model == INT8 else model  # INT8 against the peers running FP32
        loop = ("python-loop", peer_model, "images_per_s")
        spark = ("pyspark", peer_model, "images_per_s")
        has_spark = bool(measure.rows(doc, "pyspark", peer_model))
        own_spark = has_spark and model != INT8
        mism = (
            f"{spread(measure.series(doc, 'python-loop', model, 'label_mismatches'), 0)}, "
            f"{spread(measure.series(doc, 'pyspark', model, 'label_mismatches'), 0) if own_spark else '-'}"
            if model != INT8
            else f"{(doc.get('int8_top1_differences_vs_fp32') or {}).get('label_mismatches', 'n/a')} of {doc['records']} vs our FP32"
        )
        lines.append(
            f"| {model}{' (weight-free)' if model in weight_free(doc) else ''}, "
            f"{spread(measure.series(doc, 'fvision-run', model, 'images'), 0)} records "
            f"| {spread(measure.series(doc, *run))} "
            f"| {spread(measure.series(doc, *loop)) if model != INT8 else '(FP32 row)'} "
            f"| {spread(measure.series(doc, *spark)) if own_spark else '-'} "
            f"| {spread(measure.series(doc, 'pyspark', model, 'startup_s')) if own_spark else '-'} "
            f"| {spread(measure.paired(doc, run, loop), 2)} "
            f"| {spread(measure.paired(doc, run, spark), 2) if has_spark else '-'} "
            f"| {spread(measure.series(doc, 'fvision-run', model, 'peak_rss_mib'), 0)} / "
            f"{spread(measure.series(doc, 'python-loop', model, 'peak_rss_mib'), 0) if model != INT8 else '-'} / "
            f"{spread(measure.series(doc, 'pyspark', model, 'peak_rss_mib'), 0) if own_spark else '-'} "
            f"| {mism} |"
        )
    lines += [
        "",
        "CPU time over the whole process tree (user + system, start-up included for every side; less sensitive "
        "than wall time to what else runs on the machine):",
        "",
        "| model | CPU s per 1,000 images: ours / Python loop / PySpark | images per CPU-second: ours / loop | ours / PySpark |",
        "| --- | --- | ---: | ---: |",
    ]
    for model in doc["models"]:
        peer_model = FP32 if model == INT8 else model

        def per_k(what, m):
            return [1e3 * r["cpu_s"] / r["images"] for r in measure.rows(doc, what, m) if r.get("cpu_s")]

        has_spark = bool(measure.rows(doc, "pyspark", peer_model))
        run = ("fvision-run", model, "images_per_cpu_s")
        lines.append(
            f"| {model} | {spread(per_k('fvision-run', model), 1)} / {spread(per_k('python-loop', peer_model), 1)} / "
            f"{spread(per_k('pyspark', peer_model), 1) if has_spark else '-'} "
            f"| {spread(measure.paired(doc, run, ('python-loop', peer_model, 'images_per_cpu_s')), 2)} "
            f"| {spread(measure.paired(doc, run, ('pyspark', peer_model, 'images_per_cpu_s')), 2) if has_spark else '-'} |"
        )
    for model in doc["models"]:
        rr = measure.rows(doc, "fvision-run", model)
        if rr:
            lines.append(
                f"\n`fvision run` {model}: the pipeline alone (its summary line) "
                f"{spread([r['pipeline_images_per_s'] for r in rr])} images/s; outside it (start, model load "
                f"{spread([r.get('model_load_ms') for r in rr], 0)} ms + warm-up {spread([r.get('warm_up_ms') for r in rr], 0)} ms, "
                f"WASM compile, exit) {spread([r.get('outside_pipeline_s') for r in rr], 2)} s per run."
            )
    lines += [
        "",
        "`fvision run -` reads the records from a file on standard input and writes JSONL; its figure is records "
        "over the whole process (start, model load, WASM validation, decode, inference, exit). The Python loop "
        "reads the JPEG files, preprocesses with Pillow exactly as `models/onnx/README.md`'s reference and runs "
        "ONNX Runtime at batch 1 with 2 intra-op threads, also over its whole process. PySpark runs the seed's "
        "shape (`local[2]`, `readStream.json` over JSON-lines files of the same records, "
        f"`maxFilesPerTrigger` {doc['settings']['max_files_per_trigger']}, `trigger(availableNow)`, a scalar "
        "pandas UDF with a per-worker ONNX Runtime session of 1 intra-op thread, batch 1, Parquet sink): its "
        "figure is records over the query's time, the Spark start-up apart. Peak RSS is sampled every 50 ms over "
        "the process tree (for PySpark: driver, JVM and Python workers summed). Every peer's top-1 is compared "
        "with ours on every record (weight-free models: all logits tie, so top-1 is class 0 on both sides).",
        "",
        "## Where the time goes",
        "",
        "| model | ours: decode / resize / normalise ms | ours: inference ms/image b1 / b4 / b8 | floor ms | "
        "Python: Pillow preprocessing ms | Python: ORT b8 ms/image | `bench pipeline` images/s | limit images/s | "
        "pipeline / limit |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in doc["models"]:
        floors = measure.rows(doc, "compute-floor", model)
        parts = measure.rows(doc, "python-parts", model)
        if floors:
            f0 = floors
            dec = "/".join(spread([r[k] for r in f0], 2) for k in ("decode_ms", "resize_ms", "normalize_ms"))
            inf = " / ".join(
                spread([next((b["ms_per_image"] for b in r["inference"] if b["batch_size"] == size), math.nan) for r in f0], 2)
                for size in (1, 4, 8)
            )
            fl = spread([r["floor_ms"] for r in f0], 2)
        else:
            dec = inf = fl = "-"
        lines.append(
            f"| {model} | {dec} | {inf} | {fl} "
            f"| {spread([r['preprocess_ms'] for r in parts], 2) if parts else '-'} "
            f"| {spread([r['ort_b8_ms'] for r in parts], 2) if parts else '-'} "
            f"| {spread(measure.series(doc, 'bench-pipeline', model, 'pipeline_images_per_sec'))} "
            f"| {spread(measure.series(doc, 'bench-pipeline', model, 'limit_images_per_sec'))} "
            f"| {spread(measure.series(doc, 'bench-pipeline', model, 'ratio_vs_limit'), 2)} |"
        )
    # Reports before December 2026 profiled FP32 alone, under "profile".
    for model, profile in (doc.get("profiles") or {FP32: doc.get("profile") or {}}).items():
        lines += profile_section(model, profile)
    conn = measure.rows(doc, "bench-connector", FP32)
    errors = [r for r in doc["results"] if r["what"] == "bench-connector" and "error" in r]
    lines += ["", "## The connector on the local cluster", ""]
    if conn:
        lines += [
            "| rep | records | embedded images/s | connector images/s | connector p50 / p99 ms | connector / embedded |",
            "| ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for r in conn:
            lines.append(
                f"| {r['rep']} | {r['records']} | {fmt(r['embedded_images_per_sec'])} | {fmt(r['connector_images_per_sec'])} "
                f"| {fmt(r['connector_p50_ms'])} / {fmt(r['connector_p99_ms'])} | {fmt(r['ratio_connector_vs_embedded'], 2)} |"
            )
        lines += ["", "`fvision bench connector` (validation in the connector, the cluster's SC and SPU on the same cores)."]
    else:
        lines.append("Not measured in this run." + (f" Error: `{errors[0]['error'][-300:]}`" if errors else ""))
    drains = measure.rows(doc, "sink-drain", FP32)
    drain_errors = [r for r in doc["results"] if r["what"] == "sink-drain" and "error" in r]
    lines += ["", "### The sink binary over a backlog", ""]
    if drains:
        lines += [
            "`inference-sink --drain` as deployed (16 MiB fetches, validation in the connector) over a topic already "
            "holding the records: the whole process, start-up included, and its peak RSS while every fetch is full.",
            "",
            "| rep | records | images/s (whole process) | images per CPU-second | peak RSS MiB |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in drains:
            lines.append(
                f"| {r['rep']} | {r['records']} | {fmt(r['images_per_s'])} | {fmt(r['images_per_cpu_s'])} | {fmt(r['peak_rss_mib'])} |"
            )
    else:
        lines.append("Not measured in this run." + (f" Error: `{drain_errors[0]['error'][-300:]}`" if drain_errors else ""))
    levels = doc["sweep"]["levels"]
    lines += ["", "## Latency against offered load (open loop)", ""]
    if levels:
        have = plot_latency(doc, f"{stem}-latency.png", floor)
        lines += [
            f"![latency]({stem.name}-latency.png)" if have else "",
            "",
            "A feeder writes records to `fvision run -` at fixed intervals (the 100 sample images in turn), each "
            "stamped with its *scheduled* send time as `event_time`, so back-pressure on the feeder cannot hide "
            "waiting; a level of N % offers N % of the `bench pipeline` throughput of this run ("
            f"{fmt(levels[-1]['offered_per_s'] / levels[-1]['share'])} images/s); the first records of each level "
            "warm up and are not counted. Three measures of each record: **e2e** = its table row read from "
            "fvision's stdout − its scheduled time (the feeder's clock, µs); **processed_at − event_time** from "
            "the JSONL (processed_at has ms resolution); **processing_time_ms** (in the process, from the image's "
            "decode start to its prediction: it leaves out validation and the wait before decode).",
            "",
            "| level | offered /s | achieved /s | e2e p50 / p99 / p999 ms | processed_at − event_time p50 / p99 / "
            "p999 ms | processing_time_ms p50 / p99 | e2e p50 / floor |",
            "| --- | ---: | ---: | --- | --- | --- | ---: |",
        ]
        for lv in levels:
            e, r, p = lv["e2e"], lv["processed_at_minus_event_time"], lv["processing_time"]
            lines.append(
                f"| {lv['level']} | {fmt(lv['offered_per_s'])} | {fmt(lv['achieved_per_s'])} "
                f"| {fmt(e['p50_ms'])} / {fmt(e['p99_ms'])} / {fmt(e['p999_ms'])} "
                f"| {fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} / {fmt(r['p999_ms'])} "
                f"| {fmt(p['p50_ms'])} / {fmt(p['p99_ms'])} | {fmt(measure.ratio(e['p50_ms'], floor), 2)} |"
            )
        lines += ["", "### Through the connector on the local cluster", ""]
        clevels = doc.get("connector_sweep", {}).get("levels", [])
        if clevels:
            lines += [
                "The `inference-sink` binary on fresh topics (validation in the connector, max batch 4, max wait 5 ms), "
                "fed by `fvision simulate --mode fluvio --rate R` (whose `event_time` is each record's send time, ms); "
                "latency is `processed_at − event_time` of each prediction read back from the predictions topic (ms "
                "resolution); a level of N % offers N % of the connector's median `bench connector` throughput of "
                "this run; 10 warm-up records first, not counted.",
                "",
                "| level | offered /s | processed_at − event_time p50 / p99 / p999 ms | processing_time_ms p50 / p99 | p50 / floor | sink peak RSS MiB |",
                "| --- | ---: | --- | --- | ---: | ---: |",
            ]
            for lv in clevels:
                if "error" in lv:
                    lines.append(f"| {lv['level']} | {fmt(lv['offered_per_s'])} | failed: {lv['error'][-120:]} | | | |")
                    continue
                r, p = lv["processed_at_minus_event_time"], lv["processing_time"]
                lines.append(
                    f"| {lv['level']} | {fmt(lv['offered_per_s'])} | {fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} / {fmt(r['p999_ms'])} "
                    f"| {fmt(p['p50_ms'])} / {fmt(p['p99_ms'])} | {fmt(measure.ratio(r['p50_ms'], floor), 2)} "
                    f"| {fmt(lv.get('sink_peak_rss_mib', math.nan))} |"
                )
        else:
            lines.append("Not swept in this run (embedded pipeline only).")
    else:
        lines.append("Not run.")
    plot_throughput(doc, f"{stem}-throughput.png")
    plot_rss(doc, f"{stem}-rss.png")
    lines += ["", "## Memory over time", "", f"![rss]({stem.name}-rss.png)", ""]
    md = stem.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    return md


if __name__ == "__main__":
    print(report(sys.argv[1]))
