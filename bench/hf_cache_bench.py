#!/usr/bin/env python3
"""Side-by-side greedy decode of one randomly initialised Llama with transformers'
DynamicCache, transformers' offloaded cache (OffloadedCache / DynamicCache(offloading=True))
and kvtier's KvtierCache: decode tokens/s and peak GPU memory, and a check that the three
produce the same tokens.

    PYTHONPATH=<build>/bindings/python python3 bench/hf_cache_bench.py            # GPU, 16K
    PYTHONPATH=<build>/bindings/python python3 bench/hf_cache_bench.py --small    # CPU, tiny

Each run: a prefill of --context random tokens, then --new-tokens greedy steps (argmax of the
last logits, one token per step, the model called directly with the cache, as generate()
calls it). Decode tokens/s counts the steps after the first --warmup ones (the warm-up and the
prefill are excluded), timed with CUDA events on the GPU (time.perf_counter on the CPU, the
work being synchronous there). Peak GPU memory is torch.cuda.max_memory_allocated, reset
before each run (prefill and decode peaks apart: the decode peak is what holding the KV costs
while generating); null on the CPU.

The last line printed is one JSON object (DESIGN.md, "The benchmark contract"): figure =
KvtierCache decode tokens/s, ceiling = DynamicCache's in the same run, plus every run's
figures and "tokens_identical". Exit status 1 when the tokens differ, 2 when a run failed.
"""

import argparse
import gc
import inspect
import json
import os
import shutil
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true",
                   help="tiny model and context, on the CPU (unless --device cuda)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--context", type=int, default=16384, help="prompt tokens (prefill)")
    p.add_argument("--new-tokens", type=int, default=64, help="greedy decode steps")
    p.add_argument("--warmup", type=int, default=4, help="decode steps left out of the timing")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="auto: bf16 on the GPU, fp32 on the CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resident-layers", type=int, default=2,
                   help="KvtierCache: layers kept on the device")
    p.add_argument("--block-tokens", type=int, default=64, help="KvtierCache: tokens per block")
    p.add_argument("--host-tier-mb", type=int, default=None,
                   help="KvtierCache: kvtier host tier (default: room for the whole KV x 1.5)")
    p.add_argument("--disk-dir", default=None,
                   help="KvtierCache: a kvtier disk tier under this folder (default: none; "
                        "'tmp' for a temporary folder)")
    p.add_argument("--disk-mb", type=int, default=4096, help="KvtierCache: disk tier size")
    p.add_argument("--caches", default="dynamic,offloaded,kvtier",
                   help="which runs, comma-separated")
    a = p.parse_args(argv)
    return a


def check_args(a):
    if a.new_tokens < a.warmup + 2:
        sys.exit(f"hf_cache_bench: --new-tokens ({a.new_tokens}) must be at least --warmup "
                 f"({a.warmup}) + 2: a timed decode step is needed")


def apply_small(a, argv):
    """--small: a model and context that run in seconds on a CPU (flags given explicitly
    still win)."""
    given = {x.split("=")[0] for x in argv if x.startswith("--")}
    small = dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=128,
                 context=96, new_tokens=16, warmup=2, block_tokens=8)
    for k, v in small.items():
        if "--" + k.replace("_", "-") not in given:
            setattr(a, k, v)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    try:
        import torch
        import transformers
        from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

        from kvtier.hf_cache import KvtierCache
    except ImportError as e:  # still the contract's last line: what is missing
        print(f"hf_cache_bench: cannot run: {e} (needs torch, transformers and the kvtier "
              "package on PYTHONPATH)")
        print(json.dumps({"bench": "hf_cache", "figure": None, "unit": "tok/s",
                          "error": f"{type(e).__name__}: {e}"}))
        return 2

    cuda = torch.cuda.is_available() and a.device != "cpu"
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("hf_cache_bench: --device cuda but torch sees no CUDA device")
    if not cuda and not a.small:
        print("hf_cache_bench: no CUDA device: running the --small CPU configuration")
        a.small = True
    if a.small:
        apply_small(a, argv)
        cuda = a.device == "cuda"
    check_args(a)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(
        a.dtype, torch.bfloat16 if cuda else torch.float32)

    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden,
                         intermediate_size=a.intermediate, num_hidden_layers=a.layers,
                         num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                         max_position_embeddings=a.context + a.new_tokens + 16)
    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(a.seed + 1)
    prompt = torch.randint(3, a.vocab, (a.batch, a.context), generator=g).to(device)
    head_dim = a.hidden // a.heads
    kv_bytes = (2 * a.layers * a.kv_heads * head_dim * torch.finfo(dtype).bits // 8
                * a.batch * (a.context + a.new_tokens))

    params = inspect.signature(model.forward).parameters
    keep = ({"logits_to_keep": 1} if "logits_to_keep" in params else
            {"num_logits_to_keep": 1} if "num_logits_to_keep" in params else {})

    tmp_dirs = []

    def kvtier_options():
        host_mb = a.host_tier_mb or max(64, int(kv_bytes * 1.5) >> 20)
        opts = dict(host_tier_bytes=host_mb << 20)
        if a.disk_dir:
            d = tempfile.mkdtemp(prefix="kvtier-hfbench-") if a.disk_dir == "tmp" else \
                os.path.join(a.disk_dir, f"kvtier-hfbench-{os.getpid()}")
            tmp_dirs.append(d)
            opts.update(disk_dir=d, disk_capacity_bytes=a.disk_mb << 20)
        return opts

    def offloaded_cache():
        cu = transformers.cache_utils
        dyn = inspect.signature(cu.DynamicCache.__init__).parameters
        if "offloading" in dyn:  # transformers >= 4.56: the layered API's own offloading
            return cu.DynamicCache(config=config, offloading=True), \
                "DynamicCache(config, offloading=True)"
        if hasattr(cu, "OffloadedCache"):
            return cu.OffloadedCache(), "OffloadedCache()"
        raise RuntimeError("this transformers has no offloaded cache")

    def make(name):
        if name == "dynamic":
            dyn = inspect.signature(DynamicCache.__init__).parameters
            return (DynamicCache(config=config), "DynamicCache(config)") if "config" in dyn \
                else (DynamicCache(), "DynamicCache()")
        if name == "offloaded":
            return offloaded_cache()
        if name == "kvtier":
            opts = kvtier_options()
            return KvtierCache(config, resident_layers=a.resident_layers,
                               block_tokens=a.block_tokens, engine_options=opts), \
                f"KvtierCache(resident_layers={a.resident_layers}, " \
                f"block_tokens={a.block_tokens}, host {opts['host_tier_bytes'] >> 20} MiB" + \
                (f", disk {a.disk_mb} MiB" if "disk_dir" in opts else "") + ")"
        raise ValueError(f"unknown cache {name!r} (dynamic, offloaded, kvtier)")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def run(name):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        cache, what = make(name)
        out = {"cache": what}
        tokens = []
        with torch.no_grad():
            sync()
            t0 = time.perf_counter()
            logits = model(prompt, past_key_values=cache, use_cache=True, **keep).logits
            nxt = logits[:, -1, :].argmax(-1, keepdim=True)
            sync()
            out["prefill_s"] = round(time.perf_counter() - t0, 4)
            if cuda:
                out["prefill_peak_mib"] = round(
                    (torch.cuda.max_memory_allocated() - base) / 2**20, 1)
                torch.cuda.reset_peak_memory_stats()
            tokens.append(nxt)
            timed = max(1, a.new_tokens - 1 - a.warmup)
            start = end = None
            for step in range(a.new_tokens - 1):
                if step == a.new_tokens - 1 - timed:
                    if cuda:
                        start, end = torch.cuda.Event(enable_timing=True), \
                            torch.cuda.Event(enable_timing=True)
                        start.record()
                    else:
                        t1 = time.perf_counter()
                logits = model(nxt, past_key_values=cache, use_cache=True).logits
                nxt = logits[:, -1, :].argmax(-1, keepdim=True)
                tokens.append(nxt)
            if cuda:
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1e3
                out["decode_peak_mib"] = round(
                    (torch.cuda.max_memory_allocated() - base) / 2**20, 1)
                out["peak_gpu_mib"] = max(out["prefill_peak_mib"], out["decode_peak_mib"])
            else:
                seconds = time.perf_counter() - t1
                out["peak_gpu_mib"] = None
        out["decode_steps_timed"] = timed
        out["decode_tok_s"] = round(timed * a.batch / seconds, 2)
        out["seq_length"] = cache.get_seq_length()
        if name == "kvtier":
            s = cache.stats()
            out["kvtier"] = {k: s[k] for k in ("offloaded_blocks", "restored_blocks",
                                                "prefetch_hits", "restores_on_demand")}
            tiers = s.get("engine", {}).get("tiers", {})
            for t in ("host", "disk"):
                if t in tiers:
                    out["kvtier"][t] = {k: tiers[t].get(k) for k in ("hits", "bytes_in",
                                                                      "bytes_out")}
            cache.close()
        del cache
        return torch.cat(tokens, dim=-1).tolist(), out

    names = [n.strip() for n in a.caches.split(",") if n.strip()]
    runs, seqs, failed = {}, {}, False
    explicit = any(x.startswith("--caches") for x in argv)
    for name in names:
        if name == "offloaded" and not cuda and not explicit:
            # transformers' offloading moves layers with CUDA streams: a GPU-only cache.
            runs[name] = {"skipped": "transformers' offloaded cache needs CUDA"}
            continue
        try:
            seqs[name], runs[name] = run(name)
        except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
            runs[name] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
    for d in tmp_dirs:
        shutil.rmtree(d, ignore_errors=True)

    ref = seqs.get("dynamic")
    identical = ref is not None and len(seqs) > 1 and all(s == ref for s in seqs.values())
    for name, seq in seqs.items():
        runs[name]["same_tokens_as_dynamic"] = None if ref is None else seq == ref

    print(f"hf_cache_bench: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if cuda else 'cpu'}; Llama {a.layers} layers, "
          f"hidden {a.hidden}, {a.heads} heads / {a.kv_heads} kv heads, {str(dtype)[6:]}, "
          f"batch {a.batch}, context {a.context}, {a.new_tokens} new tokens "
          f"({a.warmup} warm-up); whole KV {kv_bytes / 2**20:.1f} MiB")
    print(f"{'cache':<10} {'decode tok/s':>12} {'prefill s':>9} {'prefill peak MiB':>16} "
          f"{'decode peak MiB':>15} {'same tokens':>11}  what")
    for name in names:
        r = runs[name]
        if "error" in r or "skipped" in r:
            print(f"{name:<10} {'failed' if 'error' in r else 'skipped':>12}  "
                  f"{r.get('error') or r.get('skipped')}")
            continue
        print(f"{name:<10} {r['decode_tok_s']:>12.2f} {r['prefill_s']:>9.3f} "
              f"{str(r.get('prefill_peak_mib')):>16} {str(r.get('decode_peak_mib')):>15} "
              f"{str(r['same_tokens_as_dynamic']):>11}  {r['cache']}")
    if "kvtier" in runs and "kvtier" in runs["kvtier"]:
        print("kvtier:", json.dumps(runs["kvtier"]["kvtier"]))
    print("tokens: " + ("identical across " + ", ".join(seqs) if identical else
                                "NOT identical (or fewer than two runs to compare): " +
                        json.dumps({n: runs[n].get("same_tokens_as_dynamic") for n in names})))

    figure = runs.get("kvtier", {}).get("decode_tok_s")
    ceiling = runs.get("dynamic", {}).get("decode_tok_s")
    result = {
        "bench": "hf_cache", "figure": figure, "unit": "tok/s", "ceiling": ceiling,
        "ceiling_source": "DynamicCache decode tokens/s, same model and run",
        "ratio": round(figure / ceiling, 3) if figure and ceiling else None,
        "tokens_identical": identical,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "model": {"arch": "llama", "layers": a.layers, "hidden": a.hidden, "heads": a.heads,
                  "kv_heads": a.kv_heads, "dtype": str(dtype)[6:]},
        "batch": a.batch, "context": a.context, "new_tokens": a.new_tokens,
        "warmup": a.warmup, "kv_mib": round(kv_bytes / 2**20, 1), "small": a.small,
        "runs": runs,
    }
    print(json.dumps(result))
    if failed:
        return 2
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
