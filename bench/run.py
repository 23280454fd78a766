"""Issue 20's benchmark: our pipeline against its peers on the same 1,000 ImageEvent records, interleaved
rep by rep in one run, then an open-loop latency sweep. Writes one JSON file; `bench/report.py` turns it
into the Markdown report and its plots. Run by `./scripts/bench.sh` (which builds and sets up the venv).

Usage: run.py --fvision PATH --out FILE.json [--reps 3] [--passes 10] [--short] [--no-spark] [--no-connector]
"""
import argparse
import base64
import contextlib
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import psutil

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import measure  # noqa: E402

PEERS = HERE / "peers"
SAMPLE = REPO / "data" / "imagenet-sample"
FP32 = "efficientnet-lite0"
INT8 = "efficientnet-lite0-int8"
MOBILENET = "mobilenet_v2"  # real torchvision weights (the seed's default model)
WEIGHT_FREE = ["resnet50"]
# The models PySpark runs too: the FP32 reference and the seed's default (the same model file on every side).
WITH_SPARK = [FP32, MOBILENET]


def say(message):
    print(f"==> {message}", file=sys.stderr, flush=True)


class RssSampler(threading.Thread):
    """Samples the resident memory of a process and all its descendants (JVM, Python workers) every
    `interval` seconds; the peak of the sum is the figure."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []  # (seconds since start, MiB summed over the tree)
        self.cpu = {}  # pid -> the latest user + system CPU seconds seen
        self.done = threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu[proc.pid] = times.user + times.system
                except psutil.Error:
                    pass
            if total:
                self.samples.append((round(time.perf_counter() - self.t0, 3), round(total / 2**20, 1)))
            self.done.wait(self.interval)

    def peak(self):
        return max((mib for _, mib in self.samples), default=float("nan"))


def timed(cmd, env, stdin=None, label=""):
    """Runs a command to its end: wall time from spawn to exit, peak RSS of its process tree (sampled),
    its stdout and stderr. Fails loudly when the command fails."""
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as infile:
        proc = subprocess.Popen(cmd, env=env, stdin=infile, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sampler = RssSampler(proc.pid)
        sampler.start()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the whole tree: the kernel's count for waited descendants, or the sampled sum where a
    # descendant was not waited for (the JVM): whichever saw more.
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_s = max(waited, sum(sampler.cpu.values()))
    if proc.returncode != 0:
        raise RuntimeError(f"{label or cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu_s, "peak_rss_mib": sampler.peak(), "rss": sampler.samples}, out.decode(), err.decode()


def machine():
    info = {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["cpu"] = value.strip()
        if key.strip() == "Flags":
            flags = value.split()
            info["flags"] = [f for f in flags if re.match(r"^(avx|fma|f16c|amx|sse4_2)", f)]
    info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    info["java"] = (java.stderr.splitlines() or ["?"])[0]
    import onnxruntime
    import PIL
    import pyspark

    info["onnxruntime"] = onnxruntime.__version__
    info["pillow"] = PIL.__version__
    info["pyspark"] = pyspark.__version__
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    info["commit"] = commit.stdout.strip()
    return info


def write_records(work, passes, weight_free_passes):
    """The same records for everyone: the 100 sample images x `passes`, as ImageEvent JSON lines with
    base64 `data` (one file for `fvision run -`, one file per pass for Spark's file source)."""
    files = sorted(p for p in SAMPLE.iterdir() if p.suffix == ".JPEG")
    spark_dir = work / "spark-input"
    shutil.rmtree(spark_dir, ignore_errors=True)
    spark_dir.mkdir(parents=True)
    all_lines = []
    encoded = {p.name: base64.b64encode(p.read_bytes()).decode() for p in files}
    for round_ in range(passes):
        lines = []
        for p in files:
            event = {"id": f"{round_}/{p.name}", "source": "file", "uri": f"file://{p}", "content_type": "image/jpeg", "data": encoded[p.name]}
            lines.append(json.dumps(event))
        (spark_dir / f"part-{round_:03}.jsonl").write_text("\n".join(lines) + "\n")
        all_lines.extend(lines)
    records = work / "records.jsonl"
    records.write_text("\n".join(all_lines) + "\n")
    short = work / "records-weight-free.jsonl"
    short.write_text("\n".join(all_lines[: len(files) * weight_free_passes]) + "\n")
    return files, {"default": records, "weight-free": short}, spark_dir


def filter_unstable():
    """Sample images whose top-1 changes when the resize filter changes (`expected-top5.tsv`): a faithful
    port may differ there, a near tie; everywhere else top-1 must be equal."""
    rows = (SAMPLE / "expected-top5.tsv").read_text().splitlines()[1:]
    return {r.split("\t")[0] for r in rows if r.split("\t")[-1] != "yes"}


def label_check(ours, theirs):
    """Mismatching records, and how many of them are on filter-stable images (must be none)."""
    if ours is None:
        return {"label_mismatches": None}
    mismatches = measure.label_mismatches(ours, theirs)
    unstable = filter_unstable()
    stable = [k for k in mismatches if k.split("/", 1)[-1] not in unstable]
    return {"label_mismatches": len(mismatches), "stable_label_mismatches": len(stable),
            "mismatch_images": sorted({k.split("/", 1)[-1] for k in mismatches})}


def models_dir(path):
    """The presets' directory as the report shows it: repository-relative, else with ~ for the home."""
    path = pathlib.Path(path).resolve()
    if path.is_relative_to(REPO):
        return str(path.relative_to(REPO))
    home = pathlib.Path.home()
    return "~/" + str(path.relative_to(home)) if path.is_relative_to(home) else str(path)


def jsonl_labels(path):
    labels = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "class_index" in row:
                labels[row["image_id"]] = row["class_index"]
    return labels


class Bench:
    def __init__(self, args):
        self.args = args
        self.fvision = args.fvision
        self.work = pathlib.Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.setdefault("FVISION_MODELS_DIR", str(REPO / "models" / "presets"))
        self.env.setdefault("FVISION_DATA_DIR", str(REPO / "data"))
        self.env["NO_COLOR"] = "1"
        self.py = sys.executable
        self.results = []  # one row per measurement: {rep, what, model, ...}

    def passes(self, model):
        """Weight-free models are measured for throughput only, over fewer records (resnet50 is slow)."""
        return min(self.args.passes, self.args.weight_free_passes) if model in WEIGHT_FREE else self.args.passes

    def add(self, rep, what, model, **fields):
        row = {"rep": rep, "what": what, "model": model, **fields}
        self.results.append(row)
        shown = {k: v for k, v in fields.items() if k not in ("rss", "labels") and not isinstance(v, (list, dict))}
        say(f"rep {rep} {what} {model}: {json.dumps(shown)[:300]}")
        return row

    def run_ours(self, rep, model, records, ours):
        records = records["weight-free" if model in WEIGHT_FREE else "default"]
        out = self.work / f"run-{model}.jsonl"
        cmd = [self.fvision, "run", "-", "-m", model, "--output", str(out)]
        m, stdout, stderr = timed(cmd, self.env, stdin=records, label="fvision run")
        images, secs, rate = measure.parse_summary(stdout) or (0, float("nan"), float("nan"))
        load = re.search(r"loaded in (\d+) ms \(warm-up (\d+) ms\)", stderr)
        labels = jsonl_labels(out)
        ref = ours.setdefault(model, labels)
        self.add(rep, "fvision-run", model, images=len(labels), wall_s=m["wall_s"], images_per_s=len(labels) / m["wall_s"],
                 cpu_s=m["cpu_s"], images_per_cpu_s=len(labels) / m["cpu_s"],
                 pipeline_images_per_s=rate, pipeline_s=secs, outside_pipeline_s=m["wall_s"] - secs,
                 model_load_ms=int(load.group(1)) if load else None, warm_up_ms=int(load.group(2)) if load else None,
                 peak_rss_mib=m["peak_rss_mib"], rss=m["rss"] if rep == 0 else [],
                 **label_check(ref, labels))

    def run_loop(self, rep, model, files, ours):
        cmd = [self.py, str(PEERS / "python_loop.py"), "--model", model, "--mode", "loop", "--passes", str(self.passes(model))]
        m, stdout, _ = timed(cmd + [str(f) for f in files], self.env, label="python loop")
        res = json.loads(stdout)
        theirs = res["labels"]
        self.add(rep, "python-loop", model, images=res["images"], wall_s=m["wall_s"], images_per_s=res["images"] / m["wall_s"],
                 cpu_s=m["cpu_s"], images_per_cpu_s=res["images"] / m["cpu_s"],
                 loop_images_per_s=res["images"] / res["loop_s"], load_s=res["load_s"], peak_rss_mib=m["peak_rss_mib"],
                 rss=m["rss"] if rep == 0 else [], **label_check(ours.get(model), theirs))

    def run_spark(self, rep, model, spark_dir, ours):
        job = self.work / f"spark-{rep}"
        shutil.rmtree(job, ignore_errors=True)
        env = dict(self.env, PYSPARK_PYTHON=self.py, PYSPARK_DRIVER_PYTHON=self.py, SPARK_LOCAL_IP="127.0.0.1")
        cmd = [self.py, str(PEERS / "pyspark_job.py"), "--model", model, "--input", str(spark_dir), "--work", str(job),
               "--max-files-per-trigger", str(self.args.max_files_per_trigger)]
        m, stdout, _ = timed(cmd, env, label="pyspark")
        shutil.rmtree(job, ignore_errors=True)
        res = json.loads(stdout.strip().splitlines()[-1])
        self.add(rep, "pyspark", model, images=res["images"], wall_s=m["wall_s"], startup_s=res["startup_s"], query_s=res["query_s"],
                 cpu_s=m["cpu_s"], images_per_cpu_s=res["images"] / m["cpu_s"],
                 images_per_s=res["images"] / res["query_s"], micro_batches=res["micro_batches"], peak_rss_mib=m["peak_rss_mib"],
                 rss=m["rss"] if rep == 0 else [], **label_check(ours.get(model), res["labels"]))

    def run_python_parts(self, rep, model, files):
        base = [self.py, str(PEERS / "python_loop.py"), "--model", model]
        _, stdout, _ = timed(base + ["--mode", "preprocess", "--passes", "2"] + [str(f) for f in files], self.env)
        pre = json.loads(stdout)
        _, stdout, _ = timed(base + ["--mode", "ort", "--batch", "8", "--seconds", str(self.args.seconds)] + [str(f) for f in files], self.env)
        ort = json.loads(stdout)
        self.add(rep, "python-parts", model, preprocess_ms=pre["ms_per_image"], ort_b8_ms=ort["ms_per_image"],
                 ort_b8_images_per_s=1e3 / ort["ms_per_image"])

    def profile(self, model, records, files):
        """`perf record` of `fvision run` and of the Python loop over the same images, once: the share of CPU
        samples by category (inference, JPEG decode, WASM compile, ...) and CPU ms per image in each."""
        if not shutil.which("perf"):
            return {"error": "perf is not installed (apt-get install linux-perf)"}
        sides = {
            "ours": ([self.fvision, "run", "-", "-m", model, "--output", os.devnull], records["default"]),
            "loop": ([self.py, str(PEERS / "python_loop.py"), "--model", model, "--mode", "loop", "--passes", str(self.passes(model))]
                     + [str(f) for f in files], None),
        }
        out = {}
        for side, (cmd, stdin) in sides.items():
            data = self.work / f"perf-{side}.data"
            try:
                m, _, _ = timed(["perf", "record", "-F", "499", "-o", str(data), "--"] + cmd, self.env, stdin=stdin, label=f"perf record {side}")
                report = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio", "-t", "|"],
                                        env=self.env, capture_output=True, text=True, check=True).stdout
            except (RuntimeError, subprocess.CalledProcessError) as err:
                out[side] = {"error": str(err)[-300:]}
                continue
            images = 100 * self.passes(model)
            shares = measure.profile_categories(report.splitlines())
            out[side] = {"images": images, "cpu_s": m["cpu_s"], "shares": shares,
                         "cpu_ms_per_image": {k: v * m["cpu_s"] * 1e3 / images for k, v in shares.items()}}
            say(f"profile {side}: " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
        return out

    def run_pipeline(self, rep, model):
        cmd = [self.fvision, "bench", "pipeline", "-m", model, "--repeat", str(self.args.pipeline_repeat), "--json"]
        _, stdout, _ = timed(cmd, self.env, label="bench pipeline")
        res = json.loads(stdout)
        res.pop("model", None)
        self.add(rep, "bench-pipeline", model, **res)

    def run_floor(self, rep, model):
        cmd = [self.fvision, "bench", "inference", "-m", model, "--batch-sizes", "1,4,8", "--seconds", str(self.args.seconds), "--json"]
        _, stdout, _ = timed(cmd, self.env, label="bench inference")
        res = json.loads(stdout)[0]
        b1 = next(b for b in res["inference"] if b["batch_size"] == 1)
        prepare = res["decode_ms"] + res["resize_ms"] + res["normalize_ms"]
        self.add(rep, "compute-floor", model, decode_ms=res["decode_ms"], resize_ms=res["resize_ms"], normalize_ms=res["normalize_ms"],
                 inference_b1_ms=b1["ms_per_image"], floor_ms=prepare + b1["ms_per_image"],
                 inference=[{k: b[k] for k in ("batch_size", "ms_per_image")} for b in res["inference"]])

    def run_connector(self, rep, model):
        cmd = [self.fvision, "bench", "connector", "-m", model, "--repeat", str(self.args.passes), "--json"]
        try:
            _, stdout, _ = timed(cmd, self.env, label="bench connector")
        except RuntimeError as err:
            self.add(rep, "bench-connector", model, error=str(err)[-500:])
            return
        res = json.loads(stdout)
        res.pop("model", None)
        self.add(rep, "bench-connector", model, **res)

    def sweep_level(self, model, rate, n, warmup):
        """One offered rate: an open-loop feeder writes records to `fvision run -` at fixed intervals,
        each stamped with its scheduled send time as `event_time` (so a feeder held up by back-pressure
        does not hide the wait); each record's table row is timed on arrival on fvision's stdout."""
        out = self.work / "sweep.jsonl"
        out.unlink(missing_ok=True)
        proc = subprocess.Popen([self.fvision, "run", "-", "-m", model, "--output", str(out)], env=self.env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready = threading.Event()
        stderr_lines = []

        def read_stderr():
            for line in proc.stderr:
                stderr_lines.append(line.decode(errors="replace"))
                if b"loaded in" in line:
                    ready.set()
            ready.set()

        arrivals = {}

        def read_stdout():
            for line in proc.stdout:
                name = line.split(b" ", 1)[0]
                if name.startswith(b"-:"):
                    arrivals[int(name[2:])] = time.time()

        threads = [threading.Thread(target=read_stderr, daemon=True), threading.Thread(target=read_stdout, daemon=True)]
        for t in threads:
            t.start()
        ready.wait(60)
        time.sleep(0.5)  # the validator and the stages start after the model is loaded
        images = self.sweep_images
        scheduled = {}
        t0 = time.time() + 0.1
        warm_rate = min(rate, 20.0)
        for i in range(warmup + n):
            at = t0 + i / warm_rate if i < warmup else t0 + warmup / warm_rate + 0.5 + (i - warmup) / rate
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            stamp = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            scheduled[i + 1] = at
            name, data = images[i % len(images)]
            line = b'{"id":"sweep-%d","source":"simulator","event_time":"%s","data":"%s"}\n' % (i, stamp.encode(), data)
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except BrokenPipeError:
                break
        proc.stdin.close()
        proc.wait()
        for t in threads:
            t.join(5)
        if proc.returncode != 0:
            raise RuntimeError(f"fvision run (sweep) failed: {''.join(stderr_lines)[-2000:]}")
        measured = range(warmup + 1, warmup + n + 1)
        e2e = [(arrivals[i] - scheduled[i]) * 1e3 for i in measured if i in arrivals]
        from_records, processing = [], []
        with open(out) as f:
            for row in map(json.loads, f):
                line_no = int(row["file"].split(":")[1])
                if line_no <= warmup or "processed_at" not in row:
                    continue
                from_records.append((measure.rfc3339_seconds(row["processed_at"]) - measure.rfc3339_seconds(row["event_time"])) * 1e3)
                processing.append(row["processing_time_ms"])
        finished = [arrivals[i] for i in measured if i in arrivals]
        first = scheduled[warmup + 1]
        achieved = len(finished) / (max(finished) - first) if finished else float("nan")
        return {"offered_per_s": rate, "achieved_per_s": achieved, "records": n,
                "e2e": measure.latency_summary(e2e), "processed_at_minus_event_time": measure.latency_summary(from_records),
                "processing_time": measure.latency_summary(processing)}

    def sink_config(self, tag, images, predictions, dlq, model):
        """The `inference-sink` YAML the benchmark runs: the shipped defaults (16 MiB fetches), validation in
        the connector, max batch 4, max wait 5 ms."""
        config = self.work / f"{tag}.yaml"
        config.write_text(
            "apiVersion: 0.2.0\nmeta:\n"
            f"  {{version: 0.1.0, name: {tag}, type: inference-sink, topic: {images},\n"
            f"   consumer: {{id: {tag}, max-bytes: 16 MiB, offset: {{start: beginning, strategy: manual, flush-period: {{secs: 2}}}}}}}}\n"
            "inference:\n"
            f"  {{model: {model}, max-batch: 4, max-wait: 5ms, predictions-topic: {predictions}, dlq-topic: {dlq}, validate-at: connector}}\n"
        )
        return config

    def create_topic(self, topic, attempts=3):
        """`fluvio topic create`, tried again when the SC answers with an error (seen right after other topics
        were deleted); a topic that the failed attempt did create counts as created."""
        for attempt in range(attempts):
            done = subprocess.run(["fluvio", "topic", "create", topic], env=self.env, capture_output=True, text=True)
            if done.returncode == 0 or "already exists" in done.stderr + done.stdout:
                return
            if attempt + 1 == attempts:
                raise RuntimeError(f"fluvio topic create {topic}: {(done.stderr or done.stdout).strip()[-300:]}")
            time.sleep(2)

    @contextlib.contextmanager
    def fresh_topics(self, kind):
        """Three new topics (images, predictions, dead letters) named after `kind`, deleted afterwards."""
        tag = f"fvbench-{kind}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
        names = [f"{tag}-{k}" for k in ("images", "predictions", "dlq")]
        try:
            for topic in names:
                self.create_topic(topic)
            yield tag, names
        finally:
            # Every name, created or not: a create the SC answered with a time-out may still have happened.
            for topic in names:
                subprocess.run(["fluvio", "topic", "delete", topic], env=self.env, capture_output=True)

    def run_sink_drain(self, rep, model):
        """The `inference-sink` binary over a backlog (the sample x passes, written first by `fvision simulate
        --mode fluvio`), whole process with `--drain`: images/s and CPU including its start-up, and its peak
        RSS while fetches are full (the worst case for the client's buffers)."""
        sink_bin = str(pathlib.Path(self.fvision).with_name("inference-sink"))
        n = 100 * self.args.passes
        try:
            with self.fresh_topics("drain") as (tag, (images, predictions, dlq)):
                subprocess.run([self.fvision, "simulate", "--mode", "fluvio", "--fluvio-topic", images, "--rate", "100000",
                                "--count", str(n)], env=self.env, check=True, capture_output=True)
                config = self.sink_config(tag, images, predictions, dlq, model)
                res, _, _ = timed([sink_bin, "--config", str(config), "--drain"], self.env, label="inference-sink --drain")
        except (RuntimeError, subprocess.CalledProcessError) as err:
            self.add(rep, "sink-drain", model, error=str(err)[-500:])
            return
        self.add(rep, "sink-drain", model, records=n, images_per_s=n / res["wall_s"], images_per_cpu_s=n / res["cpu_s"],
                 **{k: res[k] for k in ("wall_s", "cpu_s", "peak_rss_mib")})

    def connector_level(self, model, rate, n, warmup=10):
        """One offered rate through the connector on the live cluster: fresh topics, the `inference-sink`
        binary on them, `fvision simulate --mode fluvio` pacing the records (event_time = its send time,
        ms), latency = processed_at − event_time of each prediction read back; topics deleted after."""
        sink_bin = str(pathlib.Path(self.fvision).with_name("inference-sink"))
        sink = sampler = None
        with self.fresh_topics("sweep") as (tag, (images, predictions, dlq)):
            try:
                config = self.sink_config(tag, images, predictions, dlq, model)
                log = open(self.work / f"{tag}.log", "wb")
                sink = subprocess.Popen([sink_bin, "--config", str(config)], env=self.env, stdout=log, stderr=subprocess.STDOUT)
                sampler = RssSampler(sink.pid)
                sampler.start()
                simulate = [self.fvision, "simulate", "--mode", "fluvio", "--fluvio-topic", images]
                # Warm-up records at a low rate: the sink's start-up (model, WASM) is not part of the level.
                subprocess.run(simulate + ["--rate", "5", "--count", str(warmup)], env=self.env, check=True, capture_output=True)
                self.wait_for(predictions, warmup, 120)
                subprocess.run(simulate + ["--rate", f"{rate:.3f}", "--count", str(n)], env=self.env, check=True, capture_output=True)
                rows = self.wait_for(predictions, warmup + n, 120)
            finally:
                if sampler is not None:
                    sampler.done.set()
                    sampler.join()
                if sink is not None:
                    sink.terminate()
                    try:
                        sink.wait(30)
                    except subprocess.TimeoutExpired:
                        sink.kill()
        latencies = []
        for row in rows[warmup:]:
            latencies.append((measure.rfc3339_seconds(row["processed_at"]) - measure.rfc3339_seconds(row["event_time"])) * 1e3)
        return {"offered_per_s": rate, "records": n, "sink_peak_rss_mib": sampler.peak(),
                "processed_at_minus_event_time": measure.latency_summary(latencies),
                "processing_time": measure.latency_summary([r["processing_time_ms"] for r in rows[warmup:]])}

    def wait_for(self, topic, count, timeout):
        """The JSON records of a topic once it holds `count` of them (polled)."""
        deadline = time.time() + timeout
        while True:
            # One large fetch: the 0.50 CLI can skip a record where a fetch cuts a batch (the sink re-reads such
            # gaps itself; this reader would undercount).
            out = subprocess.run(["fluvio", "consume", topic, "-B", "-d", "--maxbytes", str(64 << 20)], env=self.env,
                                 capture_output=True, text=True).stdout
            rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            if len(rows) >= count or time.time() > deadline:
                if len(rows) < count:
                    raise RuntimeError(f"{topic}: {len(rows)} of {count} predictions after {timeout} s")
                return rows
            time.sleep(1)

    def connector_sweep(self, model, saturation):
        levels = []
        for share in self.args.connector_shares:
            rate = saturation * share
            try:
                level = self.connector_level(model, rate, max(40, int(rate * self.args.level_seconds)))
            except (RuntimeError, subprocess.CalledProcessError) as err:
                say(f"connector sweep {share:.0%} failed: {err}")
                levels.append({"share": share, "level": f"{share:.0%}", "offered_per_s": rate, "error": str(err)[-500:]})
                continue
            level["share"] = share
            level["level"] = f"{share:.0%}"
            say(f"connector sweep {share:.0%} ({rate:.1f}/s): {level['processed_at_minus_event_time']}")
            levels.append(level)
        return levels

    def sweep(self, model, saturation):
        images = sorted(p for p in SAMPLE.iterdir() if p.suffix == ".JPEG")
        self.sweep_images = [(p.name, base64.b64encode(p.read_bytes())) for p in images]
        levels = []
        idle = self.sweep_level(model, 2.0, self.args.idle_records, warmup=5)
        idle["share"] = 2.0 / saturation
        idle["level"] = "idle"
        say(f"sweep idle 2/s: {idle['e2e']}")
        levels.append(idle)
        for share in self.args.shares:
            rate = saturation * share
            n = max(60, int(rate * self.args.level_seconds))
            level = self.sweep_level(model, rate, n, warmup=10)
            level["share"] = share
            level["level"] = f"{share:.0%}"
            say(f"sweep {share:.0%} ({rate:.1f}/s): achieved {level['achieved_per_s']:.1f}/s, e2e {level['e2e']}")
            levels.append(level)
        return levels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fvision", required=True)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/fluvio-vision/bench-work"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--passes", type=int, default=10, help="the 100 sample images this many times")
    parser.add_argument("--weight-free-passes", type=int, default=1, help="passes for the weight-free resnet50")
    parser.add_argument("--pipeline-repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="time of each inference-only measurement")
    parser.add_argument("--max-files-per-trigger", type=int, default=2)
    parser.add_argument("--models", default=",".join([FP32, INT8, MOBILENET] + WEIGHT_FREE))
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--no-connector", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="skip the perf profiles")
    parser.add_argument("--shares", default="0.1,0.25,0.5,0.75,0.9,1.0,1.1,1.2")
    parser.add_argument("--level-seconds", type=float, default=8.0)
    parser.add_argument("--idle-records", type=int, default=30)
    parser.add_argument("--connector-shares", default="0.1,0.5,0.9", help="levels of the connector's sweep")
    parser.add_argument("--only-connector-sweep", action="store_true", help="skip everything else (trying)")
    parser.add_argument("--saturation", type=float, help="the connector's images/s the sweep's shares refer to [default: measured]")
    args = parser.parse_args()
    args.shares = [float(s) for s in args.shares.split(",")]
    args.connector_shares = [float(s) for s in args.connector_shares.split(",") if s]

    bench = Bench(args)
    listing = subprocess.run([args.fvision, "models", "list"], env=bench.env, capture_output=True, text=True, check=True).stdout
    presets = measure.parse_presets(listing)
    models = [m for m in args.models.split(",") if m in presets]
    say(f"models: {models} (presets: {presets})")
    info = machine()
    info["load_average_start"] = os.getloadavg()
    started = datetime.now(timezone.utc)
    files, records, spark_dir = write_records(bench.work, args.passes, min(args.passes, args.weight_free_passes))
    ours = {}
    # The models whose stages are measured apart (compute floor, Pillow and ORT alone, perf profile).
    detailed = [FP32] + [m for m in (MOBILENET,) if m in models]
    # The FP32 labels every peer must reproduce come from the first `fvision run` of each model.
    for rep in range(0 if args.only_connector_sweep else args.reps):
        for model in models:
            bench.run_ours(rep, model, records, ours)
            if model != INT8:
                bench.run_loop(rep, model, files, ours)
            if model in WITH_SPARK and not args.no_spark:
                bench.run_spark(rep, model, spark_dir, ours)
        for model in models:
            bench.run_pipeline(rep, model)
        for model in [FP32] + [m for m in (INT8, MOBILENET) if m in models]:
            bench.run_floor(rep, model)
        for model in detailed:
            bench.run_python_parts(rep, model, files)
        if not args.no_connector:
            bench.run_connector(rep, FP32)
            bench.run_sink_drain(rep, FP32)
    profiled = [] if args.no_profile or args.only_connector_sweep else detailed
    profiles = {model: bench.profile(model, records, files) for model in profiled}
    int8_vs_fp32 = label_check(ours[FP32], ours[INT8]) if INT8 in ours and FP32 in ours else None
    sweep, connector_sweep = [], []
    if not args.no_sweep and not args.only_connector_sweep:
        saturation = measure.median([r["pipeline_images_per_sec"] for r in bench.results if r["what"] == "bench-pipeline" and r["model"] == FP32])
        sweep = bench.sweep(FP32, saturation)
    if (not args.no_sweep and not args.no_connector) or args.only_connector_sweep:
        measured = measure.median(measure.series({"results": bench.results}, "bench-connector", FP32, "connector_images_per_sec"))
        saturation = args.saturation or measured
        connector_sweep = bench.connector_sweep(FP32, saturation)
    info["load_average_end"] = os.getloadavg()
    doc = {
        "issue": 20,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("fvision", "out", "work")},
        "records": len(files) * args.passes,
        "models_dir": models_dir(bench.env["FVISION_MODELS_DIR"]),
        "notes": [n for n in (os.environ.get("FVISION_BENCH_NOTE"),) if n],
        "models": models,
        "weight_free_models": [m for m in models if m in WEIGHT_FREE],
        "int8_top1_differences_vs_fp32": int8_vs_fp32,
        "results": bench.results,
        "profiles": profiles,
        "sweep": {"model": FP32, "levels": sweep},
        "connector_sweep": {"model": FP32, "levels": connector_sweep},
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
