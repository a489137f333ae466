"""A Hugging Face transformers `Cache` backed by kvtier.

    from kvtier.hf_cache import KvtierCache
    cache = KvtierCache(model.config, resident_layers=2,
                        engine_options=dict(host_tier_bytes=8 << 30,
                                            disk_dir="/nvme/kvtier", disk_capacity_bytes=1 << 40))
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=256)
    cache.close()   # erases this cache's blocks (also done when it is garbage collected)

It behaves like transformers' DynamicCache (same tensors in, same tensors out, so generation
is token-for-token identical) but keeps only the `resident_layers` most recently used
full-attention layers' KV on the model's device. Every other full-attention layer's full
blocks live in kvtier's host tier (host RAM) and, past it, its disk tier; while layer i
computes attention, the next offloaded layer is read back on a side thread and copied to the
GPU on a side stream, and the layers after it are hinted to kvtier's prefetcher (disk -> host).
The offload logic is kvtier.offload.LayerOffloader (tested with NumPy); this file maps the
transformers Cache interface onto it.

Layer kinds. On the layered Cache API (transformers >= 4.56, 5.x) the cache is built per layer
the way `DynamicCache(config=model.config)` builds it (what generate() makes by default):
"full_attention" layers go through kvtier; "sliding_attention" and "chunked_attention" layers
(Qwen2 with use_sliding_window, Mistral with a sliding window, Gemma 2/3, GPT-OSS, ...) are
transformers' own `DynamicSlidingWindowLayer`, kept on the device (they hold at most a window
of tokens, which is what transformers' own offloading leaves resident too). So a hybrid model
gives DynamicCache's tokens and offloads only its full layers; a model whose layers are all
sliding offloads nothing. Any other layer type (linear attention / Mamba states, "hybrid",
sparse-attention indexers, ...) is refused by the constructor, naming the types. On the
classic API (< 4.56) sliding layers are refused too: there, only full-attention models.

Supported: decoder-only models as above, greedy / sampling generate(), and beam search, crop,
batch select and repeat (these rewrite the offloaded KV). Not supported: torch.compile /
static shapes (is_compileable is False), encoder-decoder caches.

transformers versions: the class adapts at import to the Cache API installed: the classic one
(4.36 - 4.55: Cache with get_usable_length / get_max_length, a torch.nn.Module in 4.42 - 4.46;
but 4.38 - 4.40's Llama, Gemma, Cohere, DBRX and OLMo swap any cache but StaticCache for a new
DynamicCache, so the constructor refuses those models there; generate() run against 4.36.2,
4.37.2, 4.41.2 and 4.42.3)
or the layered one (4.56 and later: Cache(layers=...), get_mask_sizes(cache_position, layer)
in 4.56 - 4.57, get_mask_sizes(query_length, layer), get_query_offset, get_max_length and
batch_size in 5.x; written against transformers 5.x's cache_utils / masking_utils source, not
yet run there: see docs/integration.md).
"""

import inspect

import torch
import transformers
from transformers import cache_utils

from . import offload
from .torch_backend import TorchBackend

# transformers >= 4.56 builds a Cache from per-layer objects (cache_utils.CacheLayerMixin);
# earlier releases subclass Cache directly and keep their own storage.
_LAYERED_API = hasattr(cache_utils, "CacheLayerMixin")

# Layer types that transformers caches with DynamicSlidingWindowLayer (DynamicCache(config)).
_WINDOW_TYPES = ("sliding_attention", "chunked_attention")


def _transformers_version():
    parts = []
    for p in transformers.__version__.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class _LayerView(cache_utils.CacheLayerMixin if _LAYERED_API else object):
    """What `cache.layers[i]` is for a layer kept through kvtier: a view of one layer of a
    KvtierCache (reading .keys / .values of an offloaded layer brings it back). The cache-wide
    operations (crop, reorder, reset, ...) are KvtierCache's: they rewrite every layer at once.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = True
    # Cache.early_initialization (export / static shapes) must skip it: nothing to allocate.
    supports_early_init = False

    def __init__(self, cache, layer, slot):
        # CacheLayerMixin.__init__ is not called: it would assign keys / values, which here are
        # read-only views of the offloader's state.
        self._cache = cache
        self._layer = layer  # the model's layer index
        self._slot = slot  # the offloader's layer index

    @property
    def is_initialized(self):
        return self._cache._offloader.seq_length(self._slot) > 0

    @property
    def keys(self):
        kv = self._cache._offloader.layer_kv(self._slot)
        return None if kv is None else kv[0]

    @property
    def values(self):
        kv = self._cache._offloader.layer_kv(self._slot)
        return None if kv is None else kv[1]

    @property
    def device(self):
        like = self._cache._offloader._like
        return None if like is None else like.device

    @property
    def dtype(self):
        like = self._cache._offloader._like
        return None if like is None else like.dtype

    def lazy_initialization(self, *args, **kwargs):
        pass  # the offloader binds itself to the first tensors it sees

    def update(self, key_states, value_states, *args, **kwargs):
        return self._cache._offloader.update(self._slot, key_states, value_states)

    def get_seq_length(self, *args, **kwargs):
        return self._cache._offloader.seq_length(self._slot)

    def get_mask_sizes(self, query_length_or_cache_position):
        return self._cache.get_mask_sizes(query_length_or_cache_position, self._layer)

    def get_max_cache_shape(self):
        return -1

    def get_max_length(self):
        return -1

    def offload(self):
        pass  # kvtier decides where the layer lives

    def prefetch(self):
        pass

    def _whole_cache_only(self, name):
        raise NotImplementedError(
            f"KvtierLayer.{name}: call KvtierCache.{name}, which rewrites every layer at once")

    def reset(self):
        self._whole_cache_only("reset")

    def reorder_cache(self, beam_idx):
        self._whole_cache_only("reorder_cache")

    def crop(self, max_length):
        self._whole_cache_only("crop")

    def batch_repeat_interleave(self, repeats):
        self._whole_cache_only("batch_repeat_interleave")

    def batch_select_indices(self, indices):
        self._whole_cache_only("batch_select_indices")

    def __repr__(self):
        return f"KvtierLayer({self._layer})"


# Every method CacheLayerMixin declares abstract is defined above, whatever the release (4.56:
# get_max_cache_shape; 5.x: get_max_length); clearing the set keeps a future abstract method
# from making the views impossible to build.
_LayerView.__abstractmethods__ = frozenset()


# transformers 4.38 - 4.40: these models' forward() replaces any past_key_values that is not a
# StaticCache by DynamicCache.from_legacy_cache(past_key_values), a new DynamicCache, and
# generate() goes on with that one; a KvtierCache passed in stays empty and never sees the KV.
# (4.36 - 4.37 and 4.41 on keep any Cache subclass.)
_DROPS_CUSTOM_CACHES = ("llama", "gemma", "cohere", "dbrx", "olmo")


def _check_model_keeps_the_cache(config):
    version = _transformers_version()
    model_type = getattr(config, "model_type", None)
    if (4, 38) <= version < (4, 41) and model_type in _DROPS_CUSTOM_CACHES:
        raise ValueError(
            f"KvtierCache cannot serve {model_type} on transformers {transformers.__version__}: "
            "in 4.38 - 4.40 this model replaces any cache but StaticCache by a new "
            "DynamicCache, so the KV would never reach kvtier; use transformers <= 4.37 or "
            ">= 4.41")


def _text_config(config):
    if hasattr(config, "get_text_config"):
        return config.get_text_config(decoder=True)
    return config


def layer_plan(config):
    """The cache layout DynamicCache(config=config) builds, as (num_layers, windows): windows
    maps each sliding / chunked layer to its window in tokens; the other layers are full
    attention. Raises ValueError naming what KvtierCache cannot serve."""
    cfg = _text_config(config)
    sliding_window = getattr(cfg, "sliding_window", None)
    chunk = getattr(cfg, "attention_chunk_size", None)
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is None:
        # As transformers infers them (cache_utils: DynamicCache / get_layer_types_and_kwargs).
        # (use_sliding_window is not read: Qwen2-style configs drop sliding_window when it
        # is off, and give layer_types anyway.)
        if sliding_window is not None:
            layer_types = ["sliding_attention"] * cfg.num_hidden_layers
        elif chunk is not None:
            layer_types = ["chunked_attention"] * cfg.num_hidden_layers
        else:
            layer_types = ["full_attention"] * cfg.num_hidden_layers
    layer_types = list(layer_types)
    shared = getattr(cfg, "num_kv_shared_layers", None) or 0
    if shared > 0:  # layers that reuse an earlier layer's KV keep no cache (Gemma 3n)
        layer_types = layer_types[:-shared]
    unknown = sorted(set(layer_types) - {"full_attention", *_WINDOW_TYPES})
    if unknown:
        raise ValueError(
            f"KvtierCache cannot serve layer types {unknown}: it caches full-attention layers "
            "through kvtier and sliding / chunked-attention layers as transformers does; "
            "linear-attention, recurrent and other layer caches are not supported")
    windows = {}
    for i, t in enumerate(layer_types):
        if t == "full_attention":
            continue
        window = sliding_window if t == "sliding_attention" else chunk
        if window is None:
            raise ValueError(f"KvtierCache: layer {i} is {t} but the config gives no window "
                             "(sliding_window / attention_chunk_size)")
        windows[i] = int(window)
    if windows and not _LAYERED_API:
        raise ValueError(
            "KvtierCache supports full-attention layers only on transformers "
            f"{transformers.__version__} (sliding-window layers need the layered Cache API of "
            f"4.56 or later); this model has {len(windows)} sliding / chunked layers (window "
            f"{sorted(set(windows.values()))} tokens)")
    return len(layer_types), windows


def _layer_mask_arg():
    """What the installed DynamicSlidingWindowLayer.get_mask_sizes takes: "query_length" (an
    int; transformers 5.x) or "cache_position" (the query's positions; 4.56 - 4.57)."""
    try:
        params = inspect.signature(cache_utils.DynamicSlidingWindowLayer.get_mask_sizes).parameters
    except (AttributeError, TypeError, ValueError):
        return "query_length"
    return "cache_position" if "cache_position" in params else "query_length"


_LAYER_MASK_ARG = _layer_mask_arg() if _LAYERED_API else None


def _window_layer(window):
    """A sliding / chunked layer, exactly as DynamicCache(config=...) makes it."""
    return cache_utils.DynamicSlidingWindowLayer(sliding_window=window)


class KvtierCache(cache_utils.Cache):
    """transformers Cache whose non-resident full-attention layers live in kvtier's host and
    disk tiers.

    config: the model's config (gives the layers and their kinds), or pass num_layers (then
        every layer is full attention).
    resident_layers: how many of the most recently used full-attention layers stay on the
        model's device (>= their number keeps everything resident, like DynamicCache).
        Sliding / chunked layers are always on the device and do not count.
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
        windows = {}
        if num_layers is None:
            if config is None:
                raise ValueError("KvtierCache needs the model config or num_layers")
            num_layers, windows = layer_plan(config)
        if config is not None:
            _check_model_keeps_the_cache(config)
        full = [i for i in range(num_layers) if i not in windows]
        slots = {layer: slot for slot, layer in enumerate(full)}
        # Layers first: they only hold `self`. The base class comes next (on transformers 4.42
        # to 4.46 it is a torch.nn.Module, which must be initialised before attributes are set).
        layers = [_window_layer(windows[i]) if i in windows else _LayerView(self, i, slots[i])
                  for i in range(num_layers)]
        if _LAYERED_API:
            super().__init__(layers=layers)
        else:
            super().__init__()
            self.layers = layers
        self._num_layers = num_layers
        self._windows = windows  # model layer -> window, for the layers kept as transformers'
        self._full = full  # offloader slot -> model layer
        self._slots = slots  # model layer -> offloader slot
        # An offloader of at least one layer even when every layer is sliding: it then never
        # sees a tensor and never opens an engine.
        self._offloader = offload.LayerOffloader(
            max(1, len(full)), resident_layers, block_tokens=block_tokens, engine=engine,
            engine_options=engine_options, ns=ns, request_id=request_id,
            backend=TorchBackend(), prefetch=prefetch, lookahead=lookahead)
        self._seen_tokens = 0  # transformers < 4.41 reads it through Cache.seen_tokens

    # ------------------------------------------------------------------ the Cache interface

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Appends the new K, V of `layer_idx` and returns the layer's whole K, V (a sliding
        layer: its window and the new tokens, as DynamicSlidingWindowLayer returns them)."""
        if layer_idx == 0:
            self._seen_tokens += key_states.shape[-2]
        slot = self._slots.get(layer_idx)
        if slot is not None:
            return self._offloader.update(slot, key_states, value_states)
        if layer_idx in self._windows:
            return self.layers[layer_idx].update(key_states, value_states, *args, **kwargs)
        raise IndexError(f"KvtierCache has {self._num_layers} layers, got layer_idx {layer_idx}")

    def get_seq_length(self, layer_idx=0):
        if layer_idx is None:
            layer_idx = 0
        if layer_idx in self._windows:
            return self.layers[layer_idx].get_seq_length()
        slot = self._slots.get(layer_idx)
        return 0 if slot is None else self._offloader.seq_length(slot)

    def get_mask_sizes(self, cache_position, layer_idx=0):
        """(kv_length, kv_offset) for the attention mask of `layer_idx`. transformers 4.x
        passes the query's cache_position tensor, 5.x the query length (an int)."""
        query_length = cache_position if isinstance(cache_position, int) else \
            cache_position.shape[0]
        if layer_idx in self._windows:
            # Answered by transformers' own layer, in the form that release's layer takes
            # (only the query's length matters to it in either).
            if _LAYER_MASK_ARG == "cache_position":
                arg = cache_position if not isinstance(cache_position, int) else \
                    torch.arange(query_length)
            else:
                arg = query_length
            return self.layers[layer_idx].get_mask_sizes(arg)
        return self.get_seq_length(layer_idx) + query_length, 0

    def get_query_offset(self, layer_idx=0):  # transformers 5.x (masking_utils)
        return self.get_seq_length(layer_idx)

    def has_previous_state(self, layer_idx=None, *args):  # transformers 5.x
        return self.get_seq_length(layer_idx) > 0

    def _layer_max_length(self, layer_idx):
        return self._windows.get(layer_idx, -1)

    def get_max_cache_shape(self, layer_idx=0):
        """As DynamicCache: -1 (no limit) for a full layer, its window for a sliding one;
        None on transformers < 4.56."""
        if not _LAYERED_API:
            return None
        return self._layer_max_length(0 if layer_idx is None else layer_idx)

    def get_max_length(self, layer_idx=None):
        """transformers < 4.46: None (no limit). 4.56 and 5.x: as Cache.get_max_length, the
        layer's limit, or the largest over the layers (-1 when none has one)."""
        if not _LAYERED_API:
            return None
        if layer_idx is None:
            return max(self._layer_max_length(i) for i in range(self._num_layers))
        return self._layer_max_length(layer_idx)

    def get_usable_length(self, new_seq_length=0, layer_idx=0):  # transformers < 4.46
        return self.get_seq_length(layer_idx)

    @property
    def seen_tokens(self):
        return self._seen_tokens

    @property
    def is_sliding(self):
        return [i in self._windows for i in range(self._num_layers)]

    @property
    def is_linear(self):  # transformers 5.x: no linear-attention (recurrent) layers here
        return [False] * self._num_layers

    @property
    def is_initialized(self):
        return self.get_seq_length(0) > 0

    @property
    def batch_size(self):
        """The batch the layers hold, or -1 before the first update (as Cache.batch_size)."""
        if self._offloader.batch_size is not None:
            return self._offloader.batch_size
        for layer in self._window_layers():
            if layer.is_initialized and layer.keys is not None and layer.keys.dim() == 4:
                return layer.keys.shape[0]
        return -1

    @property
    def max_batch_size(self):
        return self._offloader.batch_size

    @property
    def max_cache_len(self):
        return -1

    def __len__(self):
        if _LAYERED_API:  # as Cache(layers=...): the number of layers
            return self._num_layers
        # As the classic DynamicCache: the layers that have KV.
        return sum(1 for i in range(self._num_layers) if self.get_seq_length(i) > 0)

    def __getitem__(self, layer_idx):
        if not 0 <= layer_idx < len(self):
            raise KeyError(f"Cache only has {len(self)} layers, attempted to access layer with "
                           f"index {layer_idx}")
        if layer_idx in self._windows:
            layer = self.layers[layer_idx]
            return layer.keys, layer.values
        return self._offloader.layer_kv(self._slots[layer_idx])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def to_legacy_cache(self):
        return tuple(self[i] for i in range(len(self)))

    def _window_layers(self):
        return [self.layers[i] for i in sorted(self._windows)]

    def reset(self):
        self._offloader.reset()
        for i, window in self._windows.items():
            self.layers[i] = _window_layer(window)
        self._seen_tokens = 0

    def reorder_cache(self, beam_idx):
        for layer in self._window_layers():
            layer.reorder_cache(beam_idx)
        self._offloader.rewrite(lambda k, v: (k.index_select(0, beam_idx.to(k.device)),
                                              v.index_select(0, beam_idx.to(v.device))))

    def crop(self, max_length):
        # The sliding layers first: they refuse a crop past their window (as in DynamicCache),
        # and then nothing has changed.
        for layer in self._window_layers():
            layer.crop(max_length)
        seq = self._offloader.seq_length(0) if self._full else 0
        # transformers 5.x's DynamicLayer.crop reads 0 as "remove 0 tokens", 4.x as "keep 0".
        if max_length < 0 or (max_length == 0 and _transformers_version() >= (5, 0)):
            max_length = seq - abs(max_length)
        if seq > max_length:
            self._offloader.rewrite(lambda k, v: (k[..., :max_length, :],
                                                  v[..., :max_length, :]))
        self._seen_tokens = min(self._seen_tokens, max(max_length, 0))

    def batch_repeat_interleave(self, repeats):
        for layer in self._window_layers():
            layer.batch_repeat_interleave(repeats)
        self._offloader.rewrite(lambda k, v: (k.repeat_interleave(repeats, dim=0),
                                              v.repeat_interleave(repeats, dim=0)))

    def batch_select_indices(self, indices):
        for layer in self._window_layers():
            layer.batch_select_indices(indices)
        self._offloader.rewrite(lambda k, v: (k[indices, ...], v[indices, ...]))

    # ------------------------------------------------------------------ kvtier's side

    @property
    def engine(self):
        """The kvtier.Engine (None before the first update when the cache opens its own, and
        for a model without full-attention layers)."""
        return self._offloader.engine

    @property
    def offloader(self):
        return self._offloader

    def offloaded_layers(self):
        """The model's layers whose KV goes through kvtier (the full-attention ones)."""
        return list(self._full)

    def window_layers(self):
        """The model's sliding / chunked layers, kept on the device as in DynamicCache."""
        return sorted(self._windows)

    def resident_layers(self):
        """The kvtier layers now on the device (model layer indices), least recently used
        first."""
        if not self._full:
            return []
        return [self._full[slot] for slot in self._offloader.resident_layers()]

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
        return (f"KvtierCache(layers={self._num_layers}, kvtier={len(self._full)}, "
                f"sliding={len(self._windows)}, resident={self._offloader.window.size})")


def supported_api():
    """Which transformers Cache API this module adapted to: "layered" (>= 4.56) or "classic"."""
    return "layered" if _LAYERED_API else "classic"


__all__ = ["KvtierCache", "layer_plan", "supported_api"]
