"""kvtier: a hierarchical GPU / host / disk / remote KV-cache storage engine, from Python.

    import numpy as np, kvtier
    with kvtier.Engine.open(layers=4, kv_heads=2, head_dim=16, dtype="fp16",
                            block_tokens=16, model="my-model@1",
                            host_tier_bytes=64 << 20, device="emulated") as engine:
        tokens = np.arange(64, dtype=np.int32)
        kv = np.zeros((4,) + engine.block_shape, engine.dtype)   # 4 blocks
        engine.store("default", tokens, kv)
        n, keys = engine.match("default", tokens)                # (64, [4 hex keys])
        back = engine.load("default", keys)                      # == kv

Blocks are NumPy arrays of shape (n, layers, parts, block_tokens, kv_heads, head_dim) in
kvtier's layer-major layout (parts: 2 for K and V, 1 for an MLA latent, kind="mla"); store() and load() stage them through device buffers of the engine's
device (docs/integration.md, "Python"). Errors raise kvtier.Error subclasses.

kvtier.offload (NumPy only) keeps per-layer KV of a running model in kvtier;
kvtier.hf_cache.KvtierCache (needs torch and transformers) is a transformers Cache on top.
"""

from ._kvtier import (  # noqa: F401
    AlreadyExistsError,
    DataLossError,
    Engine,
    EngineOptions,
    Error,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    stats_schema,
)

__all__ = [
    "AlreadyExistsError",
    "DataLossError",
    "Engine",
    "EngineOptions",
    "Error",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnavailableError",
    "stats_schema",
]
