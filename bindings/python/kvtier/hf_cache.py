"""A Hugging Face transformers `Cache` backed by kvtier.

    from kvtier.hf_cache import KvtierCache
    cache = KvtierCache(model.config, resident_layers=2,
                        engine_options=dict(host_tier_bytes=8 << 30,
                                            disk_dir="/nvme/kvtier", disk_capacity_bytes=1 << 40))
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=256)
    cache.close()   # erases this cache's blocks (also done when it is garbage collected)

It behaves like transformers' DynamicCache (same tensors in, same tensors out, so generation
is token-for-token identical) but keeps only the `resident_layers` most recently used layers'
KV on the model's device. Every other layer's full blocks live in kvtier's host tier (host
RAM) and, past it, its disk tier; while layer i computes attention, layer i+1 is read back on
a side thread and copied to the GPU on a side stream, and the layers after it are hinted to
kvtier's prefetcher (disk -> host). The offload logic is kvtier.offload.LayerOffloader (tested
with NumPy); this file maps the transformers Cache interface onto it.

Supported: decoder-only models whose layers all use full attention (Llama, Qwen2, Mistral
without a sliding window, ...), greedy / sampling generate(), and beam search, crop, batch
select and repeat (these rewrite the offloaded KV). Not supported: sliding-window or hybrid
layer types, torch.compile / static shapes.

transformers versions: the class adapts at import to the Cache API installed: the classic one
(4.36 - 4.55: Cache with get_usable_length / get_max_length, a torch.nn.Module in 4.42 - 4.46;
but 4.38 - 4.40's Llama, Gemma, Cohere, DBRX and OLMo swap any cache but StaticCache for a new
DynamicCache, so the constructor refuses those models there; generate() run against 4.36.2,
4.37.2, 4.41.2 and 4.42.3)
or the layered one (4.56 and later: Cache(layers=...), get_mask_sizes(cache_position, layer),
is_sliding); it also answers 5.x's get_mask_sizes(query_length, layer), get_query_offset and
has_previous_state.
"""

import torch
import transformers
from transformers import cache_utils

from . import offload
from .torch_backend import TorchBackend

# transformers >= 4.56 builds a Cache from per-layer objects (cache_utils.CacheLayerMixin);
# earlier releases subclass Cache directly and keep their own storage.
_LAYERED_API = hasattr(cache_utils, "CacheLayerMixin")


class _LayerView:
    """What `cache.layers[i]` is on the layered API: a view of one layer of a KvtierCache
    (reading .keys / .values of an offloaded layer brings it back)."""

    is_sliding = False
    is_compileable = False

    def __init__(self, cache, layer):
        self._cache = cache
        self._layer = layer

    @property
    def is_initialized(self):
        return self._cache.get_seq_length(self._layer) > 0

    @property
    def keys(self):
        kv = self._cache._offloader.layer_kv(self._layer)
        return None if kv is None else kv[0]

    @property
    def values(self):
        kv = self._cache._offloader.layer_kv(self._layer)
        return None if kv is None else kv[1]

    def get_seq_length(self):
        return self._cache.get_seq_length(self._layer)

    def get_mask_sizes(self, cache_position):
        return self._cache.get_mask_sizes(cache_position, self._layer)

    def get_max_cache_shape(self):
        return -1

    def __repr__(self):
        return f"KvtierLayer({self._layer})"


# transformers 4.38 - 4.40: these models' forward() replaces any past_key_values that is not a
# StaticCache by DynamicCache.from_legacy_cache(past_key_values), a new DynamicCache, and
# generate() goes on with that one; a KvtierCache passed in stays empty and never sees the KV.
# (4.36 - 4.37 and 4.41 on keep any Cache subclass.)
_DROPS_CUSTOM_CACHES = ("llama", "gemma", "cohere", "dbrx", "olmo")


def _transformers_version():
    parts = []
    for p in transformers.__version__.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _check_model_keeps_the_cache(config):
    version = _transformers_version()
    model_type = getattr(config, "model_type", None)
    if (4, 38) <= version < (4, 41) and model_type in _DROPS_CUSTOM_CACHES:
        raise ValueError(
            f"KvtierCache cannot serve {model_type} on transformers {transformers.__version__}: "
            "in 4.38 - 4.40 this model replaces any cache but StaticCache by a new "
            "DynamicCache, so the KV would never reach kvtier; use transformers <= 4.37 or "
            ">= 4.41")


def _num_layers(config):
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        raise ValueError("KvtierCache supports full-attention layers only; this model has "
                         f"layer types {sorted(set(layer_types))}")
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        raise ValueError("KvtierCache supports full-attention layers only; this model uses a "
                         f"sliding window of {cfg.sliding_window} tokens")
    return cfg.num_hidden_layers - getattr(cfg, "num_kv_shared_layers", 0)


class KvtierCache(cache_utils.Cache):
    """transformers Cache whose non-resident layers live in kvtier's host and disk tiers.

    config: the model's config (gives the number of layers), or pass num_layers.
    resident_layers: how many of the most recently used layers stay on the model's device
        (>= num_layers keeps everything resident, like DynamicCache).
    block_tokens: tokens per kvtier block; a layer's trailing partial block stays resident.
    engine: an open kvtier.Engine of geometry (layers=1, kv_heads, head_dim, dtype,
        block_tokens), or None to open one at the first update with `engine_options`
        (kvtier.EngineOptions keywords: host_tier_bytes, disk_dir, disk_capacity_bytes, ...).
        The host and disk tiers must hold every offloaded layer: KV evicted from all tiers
        cannot be recomputed by a cache and raises kvtier.NotFoundError.
    request_id: names this cache's blocks (default: random); ns: the kvtier namespace.
    prefetch, lookahead: read the next layer back ahead of need; hint `lookahead` more.
    """

    is_compileable = False

    def __init__(self, config=None, *, num_layers=None, resident_layers=2, block_tokens=16,
                 engine=None, engine_options=None, ns="default", request_id=None,
                 prefetch=True, lookahead=2):
        if num_layers is None:
            if config is None:
                raise ValueError("KvtierCache needs the model config or num_layers")
            num_layers = _num_layers(config)
        if config is not None:
            _check_model_keeps_the_cache(config)
        # Views first: they only hold `self`. The base class comes next (on transformers 4.42
        # to 4.46 it is a torch.nn.Module, which must be initialised before attributes are set).
        views = [_LayerView(self, i) for i in range(num_layers)]
        if _LAYERED_API:
            super().__init__(layers=views)
        else:
            super().__init__()
            self.layers = views
        self._offloader = offload.LayerOffloader(
            num_layers, resident_layers, block_tokens=block_tokens, engine=engine,
            engine_options=engine_options, ns=ns, request_id=request_id,
            backend=TorchBackend(), prefetch=prefetch, lookahead=lookahead)
        self._seen_tokens = 0  # transformers < 4.41 reads it through Cache.seen_tokens

    # ------------------------------------------------------------------ the Cache interface

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        """Appends the new K, V of `layer_idx` and returns the layer's whole K, V."""
        if layer_idx == 0:
            self._seen_tokens += key_states.shape[-2]
        return self._offloader.update(layer_idx, key_states, value_states)

    def get_seq_length(self, layer_idx=0):
        if layer_idx is None:
            layer_idx = 0
        return self._offloader.seq_length(layer_idx)

    def get_mask_sizes(self, cache_position, layer_idx=0):
        """(kv_length, kv_offset) for the attention mask, as a dynamic full-attention cache.
        transformers 4.x passes the query's cache_position tensor, 5.x the query length."""
        query_length = cache_position if isinstance(cache_position, int) else \
            cache_position.shape[0]
        return self.get_seq_length(layer_idx) + query_length, 0

    def get_query_offset(self, layer_idx=0):  # transformers 5.x
        return self.get_seq_length(layer_idx)

    def has_previous_state(self, layer_idx=None, *args):  # transformers 5.x
        return self.get_seq_length(layer_idx) > 0

    def get_max_cache_shape(self, layer_idx=0):
        return -1 if _LAYERED_API else None

    def get_max_length(self, layer_idx=None):  # transformers < 4.46 (None), 5.x (-1)
        return -1 if _LAYERED_API else None

    def get_usable_length(self, new_seq_length=0, layer_idx=0):  # transformers < 4.46
        return self.get_seq_length(layer_idx)

    @property
    def seen_tokens(self):
        return self._seen_tokens

    @property
    def is_sliding(self):
        return [False] * self._offloader.num_layers

    @property
    def is_initialized(self):
        return self.get_seq_length(0) > 0

    @property
    def max_batch_size(self):
        return self._offloader.batch_size

    @property
    def max_cache_len(self):
        return -1

    def __len__(self):
        # As DynamicCache: the layers that have KV.
        return sum(1 for i in range(self._offloader.num_layers)
                   if self._offloader.seq_length(i) > 0)

    def __getitem__(self, layer_idx):
        if not 0 <= layer_idx < len(self):
            raise KeyError(f"Cache only has {len(self)} layers, attempted to access layer with "
                           f"index {layer_idx}")
        return self._offloader.layer_kv(layer_idx)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def to_legacy_cache(self):
        return tuple(self[i] for i in range(len(self)))

    def reset(self):
        self._offloader.reset()
        self._seen_tokens = 0

    def reorder_cache(self, beam_idx):
        self._offloader.rewrite(lambda k, v: (k.index_select(0, beam_idx.to(k.device)),
                                              v.index_select(0, beam_idx.to(v.device))))

    def crop(self, max_length):
        if max_length < 0:
            max_length = self.get_seq_length() - abs(max_length)
        if self.get_seq_length() <= max_length:
            return
        self._offloader.rewrite(lambda k, v: (k[..., :max_length, :], v[..., :max_length, :]))
        self._seen_tokens = max_length

    def batch_repeat_interleave(self, repeats):
        self._offloader.rewrite(lambda k, v: (k.repeat_interleave(repeats, dim=0),
                                              v.repeat_interleave(repeats, dim=0)))

    def batch_select_indices(self, indices):
        self._offloader.rewrite(lambda k, v: (k[indices, ...], v[indices, ...]))

    # ------------------------------------------------------------------ kvtier's side

    @property
    def engine(self):
        """The kvtier.Engine (None before the first update when the cache opens its own)."""
        return self._offloader.engine

    @property
    def offloader(self):
        return self._offloader

    def resident_layers(self):
        return self._offloader.resident_layers()

    def stats(self):
        """The offloader's counters, and the engine's stats under "engine"."""
        s = dict(self._offloader.counters)
        if self.engine is not None and not self.engine.closed:
            self._offloader.synchronize()
            s["engine"] = self.engine.stats()
        return s

    def close(self):
        """Erases this cache's blocks from kvtier (and closes the engine it opened)."""
        self._offloader.close()

    def __repr__(self):
        return (f"KvtierCache(layers={self._offloader.num_layers}, "
                f"resident={self._offloader.window.size})")


def supported_api():
    """Which transformers Cache API this module adapted to: "layered" (>= 4.56) or "classic"."""
    return "layered" if _LAYERED_API else "classic"


__all__ = ["KvtierCache", "supported_api"]
