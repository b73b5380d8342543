"""Generation throughput: the engine (Ray Data + vLLM actors) vs bare vLLM vs transformers.

Same embedded model, same prompts, same number of output tokens, in one run:

  (a) engine  — ``selfalign.engine.processor.run_engine`` over a Ray Dataset (local profile);
  (b) vllm    — one ``vllm.LLM.generate`` call over all prompts;
  (c) hf      — transformers batched ``generate`` with left padding (the reference
                reimplementation's approach), prompts in input order.

Prompts are document-like: chunks of 100-800 tokens cut from real README pages that
installed Python packages carry in their metadata, each wrapped in a backtranslation-style
chat request. ``ignore_eos`` / ``min_new_tokens`` make every system produce exactly
``--max-tokens`` tokens per prompt, so output tokens/s compare like with like.

Each system runs in its own subprocess. Two figures per system:
  * ``tokens_per_s``      — output tokens / wall time of the whole job, model load and
                            engine start-up included (what a user waits for);
  * ``gen_tokens_per_s``  — output tokens / generation time only (b, c; for a, the
                            engine's start-up cannot be separated from its run).
The ratios use ``tokens_per_s``.

    .venv/bin/python benchmarks/generate.py            # writes benchmarks/results/generate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "generate.json"
MODEL_REF = "embedded:smollm2-135m-instruct"


def build_prompts(model_path: str, count: int, seed: int) -> list[str]:
    """Deterministic document-like prompts of 100-800 tokens from real package READMEs."""
    from importlib import metadata

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    docs = []
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if isinstance(text, str) and len(text) > 2000:
            docs.append(text)
    if not docs:
        raise SystemExit("no package long descriptions found to build prompts from")
    token_lists = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    rng = random.Random(seed)
    prompts = []
    while len(prompts) < count:
        tokens = rng.choice(token_lists)
        length = rng.randint(100, 800)
        if len(tokens) < length:
            continue
        start = rng.randint(0, len(tokens) - length)
        chunk = tokenizer.decode(tokens[start : start + length])
        request = (
            "Here is a passage from a web page. Write the question or instruction "
            f"that this passage best answers.\n\n{chunk}"
        )
        prompts.append(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
            )
        )
    return prompts


# --------------------------------------------------------------------------- systems


def engine_spec(model_path: str, max_tokens: int):
    """The spec both (a) and (b) use: identical vLLM settings and CPU environment."""
    from selfalign.core.resources import load_ray_config
    from selfalign.engine.config import SamplingSettings, VLLMSettings
    from selfalign.engine.processor import EngineSpec

    profile = load_ray_config().profile("local")
    return profile, EngineSpec(
        model_path=model_path,
        resources=profile.stage("generate"),
        vllm=VLLMSettings(max_model_len=2048),
        sampling=SamplingSettings(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
        device="cpu",
    )


def run_engine_system(model_path: str, prompts: list[str], max_tokens: int) -> dict:
    import ray

    from selfalign.core.cluster import ensure_ray
    from selfalign.engine.processor import run_engine

    profile, spec = engine_spec(model_path, max_tokens)
    started = time.perf_counter()
    ensure_ray(profile)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts)])
    rows = run_engine(ds, spec).select_columns(["id", "num_generated_tokens", "error"]).take_all()
    wall = time.perf_counter() - started
    errors = [r for r in rows if r["error"]]
    if errors or len(rows) != len(prompts):
        raise SystemExit(f"engine: {len(errors)} errors, {len(rows)} rows: {errors[:2]}")
    return {"output_tokens": sum(r["num_generated_tokens"] for r in rows), "wall_s": wall}


def run_vllm_system(model_path: str, prompts: list[str], max_tokens: int) -> dict:
    from selfalign.engine.processor import engine_env, engine_kwargs

    _, spec = engine_spec(model_path, max_tokens)
    os.environ.update(engine_env(spec))  # the same threads / KV cache the engine actors get
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model_path, **engine_kwargs(spec))
    load = time.perf_counter() - started
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    gen_start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    gen = time.perf_counter() - gen_start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"output_tokens": tokens, "wall_s": load + gen, "load_s": load, "gen_s": gen}


def run_hf_system(model_path: str, prompts: list[str], max_tokens: int, batch_size: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    load = time.perf_counter() - started
    tokens = 0
    gen_start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(
                prompts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            out = model.generate(
                **batch,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            tokens += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    gen = time.perf_counter() - gen_start
    return {"output_tokens": tokens, "wall_s": load + gen, "load_s": load, "gen_s": gen}


# --------------------------------------------------------------------------- driver


def child(args: argparse.Namespace) -> None:
    prompts = json.loads(Path(args.prompts_file).read_text())
    if args.system == "engine":
        result = run_engine_system(args.model_path, prompts, args.max_tokens)
    elif args.system == "vllm":
        result = run_vllm_system(args.model_path, prompts, args.max_tokens)
    else:
        result = run_hf_system(args.model_path, prompts, args.max_tokens, args.hf_batch_size)
    result["tokens_per_s"] = result["output_tokens"] / result["wall_s"]
    if "gen_s" in result:
        result["gen_tokens_per_s"] = result["output_tokens"] / result["gen_s"]
    print("RESULT " + json.dumps(result), flush=True)


def run_child(system: str, args: argparse.Namespace, model_path: str, prompts_file: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        system,
        "--model-path",
        model_path,
        "--prompts-file",
        prompts_file,
        "--max-tokens",
        str(args.max_tokens),
        "--hf-batch-size",
        str(args.hf_batch_size),
    ]
    print(f"[bench] running {system} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"{system} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"[bench] {system}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=208)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--child", choices=["engine", "vllm", "hf"], dest="system")
    parser.add_argument("--model-path")
    parser.add_argument("--prompts-file")
    args = parser.parse_args()
    if args.system:
        child(args)
        return

    from selfalign.core.models import resolve_model

    model_path = resolve_model(MODEL_REF).path
    prompts = build_prompts(model_path, args.prompts, args.seed)
    prompts_file = Path(args.output).with_suffix(".prompts.tmp")
    prompts_file.parent.mkdir(parents=True, exist_ok=True)
    prompts_file.write_text(json.dumps(prompts))
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        lengths = sorted(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        results = {
            s: run_child(s, args, model_path, str(prompts_file)) for s in ("engine", "vllm", "hf")
        }
    finally:
        prompts_file.unlink(missing_ok=True)

    report = {
        "benchmark": "generate",
        "model": MODEL_REF,
        "prompts": len(prompts),
        "prompt_tokens": {
            "min": lengths[0],
            "median": lengths[len(lengths) // 2],
            "max": lengths[-1],
        },
        "max_new_tokens": args.max_tokens,
        "hf_batch_size": args.hf_batch_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
        "ratios": {
            "engine_vs_vllm": results["engine"]["tokens_per_s"] / results["vllm"]["tokens_per_s"],
            "engine_vs_hf": results["engine"]["tokens_per_s"] / results["hf"]["tokens_per_s"],
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=2))


if __name__ == "__main__":
    main()
