"""Layer offloading through kvtier: the part of a model's KV cache that needs no torch.

A decoder runs its layers in order, 0 .. L-1, once per forward step. `LayerOffloader` keeps
the KV of the `resident_layers` most recently used layers in fast memory (GPU tensors, in the
Hugging Face cache; NumPy arrays here) and moves the full blocks of every other layer into
kvtier, whose host and disk tiers hold them until the layer runs again. While layer i runs,
layer i+1 is already being read back on a side thread, and the layers after it are hinted to
kvtier's prefetcher (disk -> host), so that a layer's KV is usually in place when it is
needed.

Storage unit: one kvtier block is `block_tokens` tokens of K and V of ONE layer of ONE batch
row, i.e. an engine opened with geometry (layers=1, kv_heads=H, head_dim=D, block_tokens=T).
Per-layer tensors are `[batch, kv_heads, seq, head_dim]` (as transformers keeps them); a
layer's trailing partial block never leaves fast memory. Block keys are kvtier content
addresses over synthetic tokens (positions 0..) and the extra key
`"{request_id}/r{row}/l{layer}/e{epoch}"` (see `BlockNamer`), so every (request, batch row,
layer, block) has its own key and two caches never share blocks. The epoch changes when the
cache is rewritten (crop, beam reorder), so rewritten KV never aliases old blocks.

Array operations go through a small backend (`NumpyBackend` here, a torch backend in
kvtier.hf_cache), so this file is the same code the Hugging Face cache runs, testable with
NumPy alone.

Thread safety: one LayerOffloader serves one model step at a time (as a transformers Cache
does); its side thread only talks to the engine.
"""

import concurrent.futures
import uuid

import numpy as np

from . import _kvtier

_NUMPY_DTYPES = {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32"}


class NumpyBackend:
    """Array operations on NumPy arrays of shape [batch, kv_heads, seq, head_dim]."""

    def seq_len(self, x):
        return x.shape[-2]

    def cat(self, a, b):
        return np.concatenate([a, b], axis=-2)

    def slice_seq(self, x, start, stop):
        return x[:, :, start:stop, :]

    def empty_like(self, x):
        return x[:, :, :0, :]

    def dtype_name(self, x):
        name = _NUMPY_DTYPES.get(x.dtype)
        if name is None:
            raise ValueError(f"kvtier offload: arrays of dtype {x.dtype} are not supported "
                             "(float16 or float32)")
        return name

    def to_blocks(self, k, v, first, count, block_tokens):
        """K, V tokens [first*T, (first+count)*T) -> kvtier blocks (batch*count, 1, 2, T, H, D),
        row-major (row b's blocks at b*count ..)."""
        b, h, _, d = k.shape
        t0, t1 = first * block_tokens, (first + count) * block_tokens
        kk = k[:, :, t0:t1, :].reshape(b, h, count, block_tokens, d).transpose(0, 2, 3, 1, 4)
        vv = v[:, :, t0:t1, :].reshape(b, h, count, block_tokens, d).transpose(0, 2, 3, 1, 4)
        blocks = np.stack([kk, vv], axis=2)  # [b, count, 2, T, H, D]
        return np.ascontiguousarray(blocks.reshape(b * count, 1, 2, block_tokens, h, d))

    def stage(self, blocks):
        """Called on the side thread with blocks just read back: start moving them to where the
        layer lives (a GPU, for torch). Host arrays need nothing."""
        return blocks

    def from_blocks(self, blocks, batch, count, like):
        """Inverse of to_blocks: (batch*count, 1, 2, T, H, D) -> K, V [batch, H, count*T, D].
        `blocks` is a NumPy array or what stage() returned."""
        _, _, _, t, h, d = blocks.shape
        x = blocks.reshape(batch, count, 2, t, h, d).view(like.dtype)
        k = x[:, :, 0].transpose(0, 3, 1, 2, 4).reshape(batch, h, count * t, d)
        v = x[:, :, 1].transpose(0, 3, 1, 2, 4).reshape(batch, h, count * t, d)
        return np.ascontiguousarray(k), np.ascontiguousarray(v)


class ResidencyWindow:
    """Which layers are resident: the `size` most recently used ones.

    `use(layer)` records a use and returns the layers that just fell out of the window, oldest
    first. `size >= num_layers` keeps every layer resident (nothing is offloaded)."""

    def __init__(self, num_layers, size):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if size < 1:
            raise ValueError(f"resident_layers must be >= 1, got {size}")
        self.num_layers = num_layers
        self.size = size
        self._order = []  # least recently used first

    def use(self, layer):
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} out of range [0, {self.num_layers})")
        if layer in self._order:
            self._order.remove(layer)
        self._order.append(layer)
        evicted = []
        while len(self._order) > self.size:
            evicted.append(self._order.pop(0))
        return evicted

    def resident(self):
        return list(self._order)

    def __contains__(self, layer):
        return layer in self._order

    def upcoming(self, layer, count):
        """The `count` layers that run after `layer` (wrapping to the next step) and are not
        resident, in the order they will run."""
        out = []
        for step in range(1, self.num_layers):
            nxt = (layer + step) % self.num_layers
            if nxt not in self._order:
                out.append(nxt)
            if len(out) == count:
                break
        return out

    def clear(self):
        self._order.clear()


class BlockNamer:
    """kvtier keys for the blocks of (request, batch row, layer).

    Keys are kvtier content addresses of the synthetic token sequence 0, 1, 2, ... under the
    extra key "{request_id}/r{row}/l{layer}/e{epoch}": block j of a chain has the key of
    tokens [0, (j+1)*T), so keys depend only on (request, row, layer, epoch, j). A layer's
    epoch changes whenever its KV is rewritten, so new bytes never alias old blocks."""

    def __init__(self, engine, ns, request_id, block_tokens):
        self.engine = engine
        self.ns = ns
        self.request_id = request_id
        self.block_tokens = block_tokens

    def extra(self, row, layer, epoch):
        return f"{self.request_id}/r{row}/l{layer}/e{epoch}"

    def tokens(self, num_blocks):
        return np.arange(num_blocks * self.block_tokens, dtype=np.int32)

    def keys(self, row, layer, epoch, num_blocks):
        if num_blocks == 0:
            return []
        return self.engine.block_keys(self.ns, self.tokens(num_blocks),
                                      self.extra(row, layer, epoch))


class LayerOffloader:
    """Per-layer KV for one model, `resident_layers` layers in fast memory, the rest in kvtier.

    update(layer, k_new, v_new) appends the new tokens of `layer` and returns its whole K and V
    (as DynamicCache.update does). Other methods: seq_length(layer), layer_kv(layer) (whole K,
    V of a layer, restored if offloaded), rewrite(fn) (apply fn to every layer's K, V, e.g. a
    crop or a beam reorder), close() (erases this cache's blocks from kvtier).

    engine: an open kvtier.Engine with geometry (layers=1, kv_heads, head_dim, dtype,
        block_tokens) matching the tensors, or None to open one on the first update with
        `engine_options` (keywords of kvtier.EngineOptions; the geometry is filled in).
    lookahead: how many upcoming offloaded layers to hint to kvtier's prefetcher beyond the
        one read back on the side thread.
    """

    def __init__(self, num_layers, resident_layers, *, block_tokens=16, engine=None,
                 engine_options=None, ns="default", request_id=None, backend=None,
                 prefetch=True, lookahead=2):
        self.window = ResidencyWindow(num_layers, resident_layers)
        self.num_layers = num_layers
        self.block_tokens = block_tokens
        self.ns = ns
        self.request_id = request_id or uuid.uuid4().hex
        self.backend = backend or NumpyBackend()
        self.prefetch = prefetch
        self.lookahead = lookahead
        self._engine = engine
        self._owns_engine = engine is None
        self._engine_options = dict(engine_options or {})
        self._namer = None
        self._can_hint = False
        self._max_store_blocks = 1
        self._batch = None
        self._like = None  # an (empty) array of the layers' dtype and device
        # Per layer: the whole K, V when resident, else only the tail past the stored blocks.
        self._kv = [None] * num_layers
        self._seq = [0] * num_layers
        self._stored = [0] * num_layers  # full blocks of each layer held by kvtier
        self._epoch = [0] * num_layers  # bumped when a layer's KV is rewritten
        self._pending = {}  # layer -> Future of its stored blocks (a NumPy array)
        self._stores = {}  # layer -> Futures of its stores not yet checked for errors
        self._hinted = {}  # layer -> its stored blocks when last hinted
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kvtier-offload")
        self.counters = {"offloaded_blocks": 0, "restored_blocks": 0, "prefetched_layers": 0,
                         "prefetch_hits": 0, "restores_on_demand": 0, "store_retries": 0}

    # ------------------------------------------------------------------ queries

    @property
    def engine(self):
        return self._engine

    def seq_length(self, layer=0):
        return self._seq[layer] if 0 <= layer < self.num_layers else 0

    def resident_layers(self):
        return self.window.resident()

    def stored_blocks(self, layer):
        return self._stored[layer]

    def is_resident(self, layer):
        return layer in self.window

    @property
    def batch_size(self):
        return self._batch

    # ------------------------------------------------------------------ update

    def update(self, layer, k_new, v_new):
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} out of range [0, {self.num_layers})")
        if k_new.shape != v_new.shape:
            raise ValueError(f"key shape {tuple(k_new.shape)} != value shape "
                             f"{tuple(v_new.shape)}")
        if len(k_new.shape) != 4:
            raise ValueError("expected [batch, kv_heads, seq, head_dim] tensors, got shape "
                             f"{tuple(k_new.shape)}")
        self._bind(k_new)
        if k_new.shape[0] != self._batch:
            raise ValueError(f"batch size changed from {self._batch} to {k_new.shape[0]}")
        k, v = self._make_resident(layer)
        if k is None:
            k, v = k_new, v_new
        else:
            k, v = self.backend.cat(k, k_new), self.backend.cat(v, v_new)
        self._kv[layer] = (k, v)
        self._seq[layer] = self.backend.seq_len(k)
        for evicted in self.window.use(layer):
            self._offload(evicted)
        if self.prefetch:
            self._prefetch_after(layer)
        return k, v

    def layer_kv(self, layer):
        """Whole K, V of `layer` (restored from kvtier if offloaded; the layer becomes
        resident, which may offload another). None before the layer's first update."""
        if self._seq[layer] == 0 and self._kv[layer] is None:
            return None
        k, v = self._make_resident(layer)
        self._kv[layer] = (k, v)
        for evicted in self.window.use(layer):
            self._offload(evicted)
        return k, v

    def rewrite(self, fn):
        """Replaces every layer's K, V by fn(k, v) (same dtype and heads; batch and length may
        change; e.g. a crop or a beam reorder). One layer at a time: an offloaded layer is read
        back, its old blocks erased, and fn's result offloaded again under the layer's next
        epoch, so at most one extra layer is on the device at once."""
        self._drain()
        old_batch, new_batch = self._batch, None
        for layer in range(self.num_layers):
            if self._seq[layer] == 0:
                continue
            self._batch = old_batch
            k, v = self._make_resident(layer)
            self._erase_layer(layer)
            k, v = fn(k, v)
            new_batch = k.shape[0]
            self._kv[layer] = (k, v)
            self._seq[layer] = self.backend.seq_len(k)
            if layer not in self.window:
                self._batch = new_batch
                self._offload(layer)
        self._batch = new_batch if new_batch is not None else old_batch

    def reset(self):
        """Forgets every layer's KV (erasing its blocks); the engine and side thread stay."""
        self._erase_all()
        self._kv = [None] * self.num_layers
        self._seq = [0] * self.num_layers
        self._stored = [0] * self.num_layers
        self.window.clear()
        self._batch = None

    def synchronize(self):
        """Waits until the side thread's stores and read-backs have landed; raises the first
        error of a store."""
        if self._worker is not None:
            self._worker.submit(lambda: None).result()
        for layer in list(self._stores):
            self._check_stores(layer)

    def close(self):
        """Erases this cache's blocks from kvtier and stops the side thread (closing the
        engine too if this offloader opened it). Idempotent."""
        if self._worker is None:
            return
        for f in self._pending.values():
            f.cancel()
        self._worker.shutdown(wait=True)
        self._worker = None
        self._pending.clear()
        self._stores.clear()
        if self._engine is not None and not self._engine.closed:
            self._erase_all()
            if self._owns_engine:
                self._engine.close()
        self._kv = [None] * self.num_layers
        self._seq = [0] * self.num_layers
        self._stored = [0] * self.num_layers
        self.window.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing left to report to
            pass

    # ------------------------------------------------------------------ internals

    def _bind(self, x):
        """On the first tensor: open (or check) the engine for this geometry."""
        if self._batch is None:
            self._batch = x.shape[0]
        if self._like is not None:
            return
        _, heads, _, head_dim = x.shape
        dtype = self.backend.dtype_name(x)
        if self._engine is None:
            # The emulated device by default: the Python module stages arrays through device
            # buffers, which on CUDA would add two bus crossings to every offload and restore
            # (docs/integration.md, "Hugging Face transformers", Cost). Emulated, kvtier's
            # tiers and staging are plain host memory.
            opts = {"model": "kvtier-offload", "host_tier_bytes": 256 << 20,
                    "admit_min_seen": 1, "device": "emulated"}
            opts.update(self._engine_options)
            opts.update(layers=1, kv_heads=heads, head_dim=head_dim, dtype=dtype,
                        block_tokens=self.block_tokens)
            if "namespaces" not in opts:
                opts["namespaces"] = [self.ns]
            self._engine = _kvtier.Engine.open(**opts)
        else:
            o = self._engine.options
            want = (1, heads, head_dim, dtype, self.block_tokens)
            got = (o.layers, o.kv_heads, o.head_dim, o.dtype, o.block_tokens)
            if got != want:
                raise ValueError(
                    "kvtier offload: the engine's geometry (layers, kv_heads, head_dim, dtype, "
                    f"block_tokens) = {got} does not fit these tensors, which need {want}")
        self._namer = BlockNamer(self._engine, self.ns, self.request_id, self.block_tokens)
        # kvtier's prefetcher promotes into the top tier from below: hints need a disk tier
        # (host is the top tier without a GPU tier) or a GPU tier.
        o = self._engine.options
        self._can_hint = bool(o.disk_dir) or o.gpu_tier_bytes > 0
        host_blocks = self._engine.stats()["tiers"]["host"]["capacity_blocks"]
        self._max_store_blocks = max(1, host_blocks // 4)
        self._like = self.backend.empty_like(x)

    def _make_resident(self, layer):
        """Whole K, V of `layer`, reading its stored blocks back if it is offloaded."""
        if layer in self.window or self._stored[layer] == 0:
            self._pending.pop(layer, None)
            return self._kv[layer] if self._kv[layer] is not None else (None, None)
        self._check_stores(layer)
        self._hinted.pop(layer, None)
        future = self._pending.pop(layer, None)
        if future is not None:
            self.counters["prefetch_hits"] += 1
            blocks = future.result()
        else:
            self.counters["restores_on_demand"] += 1
            blocks = self._load_blocks(layer, self._stored[layer], self._batch,
                                       self._epoch[layer])
        k, v = self.backend.from_blocks(blocks, self._batch, self._stored[layer], self._like)
        self.counters["restored_blocks"] += self._batch * self._stored[layer]
        tail = self._kv[layer]
        if tail is not None:
            k, v = self.backend.cat(k, tail[0]), self.backend.cat(v, tail[1])
        return k, v

    def _offload(self, layer):
        """Stores the new full blocks of a layer that left the window; keeps only its tail."""
        kv = self._kv[layer]
        if kv is None:
            return
        k, v = kv
        full = self._seq[layer] // self.block_tokens
        first = self._stored[layer]
        if full > first:
            blocks = self.backend.to_blocks(k, v, first, full - first, self.block_tokens)
            # The copy into kvtier runs on the side thread, overlapping the next layers'
            # compute; a later read of this layer is queued behind it on the same thread.
            extras = [self._namer.extra(row, layer, self._epoch[layer])
                      for row in range(self._batch)]
            self._stores.setdefault(layer, []).append(self._worker.submit(
                self._store_blocks, layer, blocks, first, full - first, extras))
            self.counters["offloaded_blocks"] += self._batch * (full - first)
            self._stored[layer] = full
        t0 = full * self.block_tokens
        self._kv[layer] = (self.backend.slice_seq(k, t0, self._seq[layer]),
                           self.backend.slice_seq(v, t0, self._seq[layer]))

    def _check_stores(self, layer):
        """Raises the error of a failed store of `layer`, if any (the blocks are then missing,
        and reading the layer back would only say "not found")."""
        for f in self._stores.pop(layer, []):
            f.result()

    def _store_blocks(self, layer, blocks, first, count, extras):
        # Runs on the side thread (the engine releases the GIL while it copies); `extras` (one
        # per batch row) were named when the store was queued. A store's own blocks are pinned
        # until it lands, so one store may not exceed what the host tier can take beside them:
        # large offloads go in chunks.
        step = self._max_store_blocks
        for row, extra in enumerate(extras):
            part = blocks[row * count:(row + 1) * count]
            for i in range(0, count, step):
                n = min(step, count - i)
                def store():
                    return self._engine.store(self.ns, self._namer.tokens(first + i + n),
                                              part[i:i + n], first_block=first + i,
                                              extra=extra)
                result = store()
                if result["rejected"]:
                    # Host slots held by transfers still in flight (reads landing from disk,
                    # copies of an earlier store) free up when those finish: settle them and
                    # store again (blocks already stored count as present). What is refused
                    # then does not fit.
                    self.counters["store_retries"] += 1
                    self._engine.flush()
                    result = store()
                if result["rejected"]:
                    raise _kvtier.ResourceExhaustedError(
                        f"kvtier offload: {result['rejected']} blocks of layer {layer} were "
                        "not stored (every host slot is pinned); give the host tier more room")

    def _load_blocks(self, layer, count, batch, epoch):
        # Runs on the side thread, or on demand. In chunks: blocks read from disk need host
        # slots to land in, pinned until the load completes.
        step = self._max_store_blocks
        parts = []
        for row in range(batch):
            keys = self._namer.keys(row, layer, epoch, count)
            for i in range(0, count, step):
                try:
                    parts.append(self._engine.load(self.ns, keys[i:i + step]))
                except _kvtier.NotFoundError as e:
                    raise _kvtier.NotFoundError(
                        f"kvtier offload: KV of layer {layer} (batch row {row}) is no longer "
                        "cached in any tier; the host and disk tiers must hold every offloaded "
                        "layer (set host_tier_bytes / disk_dir and disk_capacity_bytes): "
                        f"{e}") from e
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def _fetch_staged(self, layer, count, batch, epoch):
        return self.backend.stage(self._load_blocks(layer, count, batch, epoch))

    def _prefetch_after(self, layer):
        upcoming = self.window.upcoming(layer, 1 + self.lookahead)
        for i, nxt in enumerate(upcoming):
            if self._stored[nxt] == 0:
                continue
            if i == 0:
                if nxt not in self._pending:
                    self._pending[nxt] = self._worker.submit(
                        self._fetch_staged, nxt, self._stored[nxt], self._batch,
                        self._epoch[nxt])
                    self.counters["prefetched_layers"] += 1
            elif self._can_hint and self._hinted.get(nxt) != self._stored[nxt]:
                # Further ahead: let kvtier's prefetcher move them disk -> host meanwhile (once
                # per layer until it is read back or grows).
                self._hinted[nxt] = self._stored[nxt]
                keys = []
                for row in range(self._batch):
                    keys += self._namer.keys(row, nxt, self._epoch[nxt], self._stored[nxt])
                self._engine.hint(self.ns, keys)

    def _drain(self):
        """Waits for the side thread's queue and drops read-backs not yet used."""
        if self._worker is not None:
            self._worker.submit(lambda: None).result()
        self._pending.clear()
        self._hinted.clear()

    def _erase_layer(self, layer):
        """Erases the layer's blocks from kvtier (after its stores have landed) and starts
        its next epoch."""
        for f in self._stores.pop(layer, []):
            f.exception()  # waits; a failed store left nothing to erase
        if self._stored[layer] and self._namer is not None:
            keys = []
            for row in range(self._batch or 0):
                keys += self._namer.keys(row, layer, self._epoch[layer], self._stored[layer])
            if keys:
                self._engine.erase(self.ns, keys)
        self._stored[layer] = 0
        self._epoch[layer] += 1

    def _erase_all(self):
        self._drain()
        for layer in range(self.num_layers):
            self._erase_layer(layer)
