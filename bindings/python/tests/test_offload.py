"""kvtier.offload with NumPy: which layers stay resident, how blocks are named, and that a
model's per-layer KV comes back exactly after going through kvtier's host and disk tiers.
This is the code the Hugging Face cache runs (with a torch backend); it needs no torch."""

import shutil
import tempfile
import unittest

import numpy as np

import kvtier
from kvtier.offload import BlockNamer, LayerOffloader, NumpyBackend, ResidencyWindow

LAYERS, BATCH, HEADS, DIM, T = 4, 2, 2, 8, 4


def engine_options(**extra):
    opts = dict(device="emulated", model="offload-test")
    opts.update(extra)
    return opts


class Reference:
    """What DynamicCache does: concatenate every layer's KV, keep everything."""

    def __init__(self):
        self.kv = {}

    def update(self, layer, k, v):
        if layer in self.kv:
            k = np.concatenate([self.kv[layer][0], k], axis=2)
            v = np.concatenate([self.kv[layer][1], v], axis=2)
        self.kv[layer] = (k, v)
        return k, v


def run_steps(test, offloader, steps, seed=0, dtype=np.float16, batch=BATCH):
    """Feeds `steps` (new tokens per forward step) through every layer, checking each update
    against the reference, as a decoder would call a cache."""
    rng = np.random.default_rng(seed)
    ref = Reference()
    for step, n in enumerate(steps):
        for layer in range(LAYERS):
            k = rng.standard_normal((batch, HEADS, n, DIM)).astype(dtype)
            v = rng.standard_normal((batch, HEADS, n, DIM)).astype(dtype)
            want_k, want_v = ref.update(layer, k, v)
            got_k, got_v = offloader.update(layer, k, v)
            test.assertEqual(got_k.tobytes(), want_k.tobytes(), f"step {step} layer {layer} K")
            test.assertEqual(got_v.tobytes(), want_v.tobytes(), f"step {step} layer {layer} V")
    return ref


class _RefusingEngine:
    """A real engine whose first `refusals` stores store nothing and report every block
    rejected, as a store does when every host slot is held by a transfer in flight."""

    def __init__(self, engine, refusals):
        self._engine = engine
        self._refusals = refusals
        self.refused = 0
        self.flushes = 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def flush(self):
        self.flushes += 1
        return self._engine.flush()

    def store(self, ns, tokens, blocks, **kwargs):
        if self.refused < self._refusals:
            self.refused += 1
            return {"stored": 0, "present": 0, "rejected": len(blocks)}
        return self._engine.store(ns, tokens, blocks, **kwargs)


class ResidencyWindowTest(unittest.TestCase):
    def test_keeps_the_most_recently_used_layers(self):
        w = ResidencyWindow(num_layers=4, size=2)
        self.assertEqual(w.use(0), [])
        self.assertEqual(w.use(1), [])
        self.assertEqual(w.use(2), [0])
        self.assertEqual(w.resident(), [1, 2])
        self.assertEqual(w.use(3), [1])
        self.assertEqual(w.use(0), [2])  # the next forward step wraps around
        self.assertIn(0, w)
        self.assertNotIn(1, w)

    def test_upcoming_names_the_next_offloaded_layers_in_run_order(self):
        w = ResidencyWindow(num_layers=5, size=2)
        for layer in (0, 1):
            w.use(layer)
        self.assertEqual(w.upcoming(1, 2), [2, 3])
        w.use(2)
        w.use(3)
        w.use(4)
        self.assertEqual(w.upcoming(4, 3), [0, 1, 2])  # wraps into the next step
        self.assertEqual(w.upcoming(4, 10), [0, 1, 2])

    def test_a_window_as_large_as_the_model_never_evicts(self):
        w = ResidencyWindow(num_layers=3, size=3)
        self.assertEqual([w.use(i % 3) for i in range(9)], [[]] * 9)

    def test_bad_sizes(self):
        with self.assertRaisesRegex(ValueError, "resident_layers must be >= 1"):
            ResidencyWindow(4, 0)
        with self.assertRaisesRegex(ValueError, r"layer 4 out of range \[0, 4\)"):
            ResidencyWindow(4, 1).use(4)


class BlockNamerTest(unittest.TestCase):
    def test_one_key_per_request_row_layer_block_and_epoch(self):
        with kvtier.Engine.open(layers=1, kv_heads=HEADS, head_dim=DIM, block_tokens=T,
                                model="m", host_tier_bytes=1 << 20, device="emulated") as e:
            a = BlockNamer(e, "default", "req-a", T)
            b = BlockNamer(e, "default", "req-b", T)
            self.assertEqual(a.extra(1, 3, 0), "req-a/r1/l3/e0")
            keys = set()
            for namer in (a, b):
                for row in range(2):
                    for layer in range(3):
                        for epoch in range(2):
                            ks = namer.keys(row, layer, epoch, 5)
                            self.assertEqual(len(ks), 5)
                            keys.update(ks)
            self.assertEqual(len(keys), 2 * 2 * 3 * 2 * 5)
            # A chain's keys are prefixes of each other: block j's key does not depend on
            # how many blocks follow it.
            self.assertEqual(a.keys(0, 0, 0, 2), a.keys(0, 0, 0, 5)[:2])
            self.assertEqual(a.keys(0, 0, 0, 0), [])


class NumpyBackendTest(unittest.TestCase):
    def test_blocks_are_kvtier_layout_and_round_trip(self):
        be = NumpyBackend()
        rng = np.random.default_rng(1)
        k = rng.standard_normal((2, HEADS, 3 * T + 1, DIM)).astype(np.float32)
        v = rng.standard_normal((2, HEADS, 3 * T + 1, DIM)).astype(np.float32)
        blocks = be.to_blocks(k, v, first=1, count=2, block_tokens=T)
        self.assertEqual(blocks.shape, (4, 1, 2, T, HEADS, DIM))
        self.assertTrue(blocks.flags.c_contiguous)
        # Block (row 1, block 2 of the layer), token 3, head 1: token-major like kvtier's.
        np.testing.assert_array_equal(blocks[1 * 2 + 1, 0, 0, 3, 1], k[1, 1, 2 * T + 3])
        np.testing.assert_array_equal(blocks[1 * 2 + 1, 0, 1, 3, 1], v[1, 1, 2 * T + 3])
        k2, v2 = be.from_blocks(blocks, batch=2, count=2, like=k[:, :, :0])
        np.testing.assert_array_equal(k2, k[:, :, T:3 * T])
        np.testing.assert_array_equal(v2, v[:, :, T:3 * T])

    def test_unsupported_dtype(self):
        with self.assertRaisesRegex(ValueError, "float64 are not supported"):
            NumpyBackend().dtype_name(np.zeros((1, 1, 1, 1)))


class LayerOffloaderTest(unittest.TestCase):
    def test_kv_comes_back_exactly_through_the_host_tier(self):
        off = LayerOffloader(LAYERS, resident_layers=1, block_tokens=T,
                             engine_options=engine_options())
        run_steps(self, off, [7, 1, 1, 1, 1, 1, 3, 9])
        self.assertEqual(off.resident_layers(), [LAYERS - 1])
        self.assertEqual(off.seq_length(0), 24)
        self.assertEqual([off.stored_blocks(i) for i in range(LAYERS - 1)], [6, 6, 6])
        c = off.counters
        self.assertGreater(c["offloaded_blocks"], 0)
        # Every read-back of an offloaded layer was started ahead, on the side thread.
        self.assertEqual(c["restores_on_demand"], 0)
        self.assertGreater(c["prefetch_hits"], 0)
        off.synchronize()
        stats = off.engine.stats()
        self.assertEqual(stats["tiers"]["host"]["used_blocks"],
                         BATCH * sum(off.stored_blocks(i) for i in range(LAYERS)))
        off.close()
        self.assertEqual(off.seq_length(0), 0)

    def test_kv_comes_back_exactly_through_the_disk_tier(self):
        tmp = tempfile.mkdtemp(prefix="kvtier-offload-")
        self.addCleanup(shutil.rmtree, tmp, True)
        block_bytes = 2 * T * HEADS * DIM * 2
        off = LayerOffloader(
            LAYERS, resident_layers=2, block_tokens=T,
            engine_options=engine_options(host_tier_bytes=8 * block_bytes,
                                          disk_dir=tmp + "/cache", disk_region_bytes=1 << 20,
                                          disk_capacity_bytes=8 << 20))
        run_steps(self, off, [13, 1, 1, 1, 1, 1, 1, 2, 5], seed=2)
        off.synchronize()
        off.engine.flush()
        stats = off.engine.stats()
        # The host tier holds 8 blocks; the rest of the offloaded KV lives on disk.
        self.assertGreater(stats["tiers"]["disk"]["used_blocks"], 0)
        self.assertGreater(stats["tiers"]["disk"]["hits"], 0)
        self.assertGreater(stats["prefetch"]["hinted"], 0)
        off.close()

    def test_all_layers_resident_offloads_nothing(self):
        off = LayerOffloader(LAYERS, resident_layers=LAYERS, block_tokens=T,
                             engine_options=engine_options())
        run_steps(self, off, [9, 1, 1])
        self.assertEqual(off.counters["offloaded_blocks"], 0)
        self.assertEqual(off.engine.stats()["stored_blocks"], 0)
        off.close()

    def test_float32_and_a_single_row(self):
        off = LayerOffloader(LAYERS, resident_layers=1, block_tokens=T,
                             engine_options=engine_options())
        run_steps(self, off, [5, 3, 4], dtype=np.float32, batch=1)
        self.assertEqual(off.engine.options.dtype, "fp32")
        off.close()

    def test_layer_kv_and_rewrite_crop_and_reorder(self):
        off = LayerOffloader(LAYERS, resident_layers=1, block_tokens=T,
                             engine_options=engine_options())
        ref = run_steps(self, off, [10, 1, 1], seed=3)
        for layer in range(LAYERS):
            k, v = off.layer_kv(layer)
            self.assertEqual(k.tobytes(), ref.kv[layer][0].tobytes())
        old_keys = [off._namer.keys(0, layer, 0, off.stored_blocks(layer))
                    for layer in range(LAYERS)]
        self.assertTrue(any(old_keys))
        # Beam-search style reorder of the batch rows, then a crop to 9 tokens.
        order = np.array([1, 0])
        off.rewrite(lambda k, v: (k[order][:, :, :9], v[order][:, :, :9]))
        for layer in range(LAYERS):
            self.assertEqual(off.seq_length(layer), 9)
            k, v = off.layer_kv(layer)
            self.assertEqual(k.tobytes(),
                             np.ascontiguousarray(ref.kv[layer][0][order][:, :, :9]).tobytes())
            self.assertEqual(v.tobytes(),
                             np.ascontiguousarray(ref.kv[layer][1][order][:, :, :9]).tobytes())
        # The old blocks are gone, the new ones live under the next epoch.
        for keys in old_keys:
            if keys:
                with self.assertRaises(kvtier.NotFoundError):
                    off.engine.load("default", keys)
        # And updates continue from the rewritten state.
        rng = np.random.default_rng(9)
        k = rng.standard_normal((BATCH, HEADS, 2, DIM)).astype(np.float16)
        got, _ = off.update(0, k, k)
        self.assertEqual(got.shape, (BATCH, HEADS, 11, DIM))
        off.close()

    def test_reset_forgets_everything_and_starts_again(self):
        off = LayerOffloader(LAYERS, 1, block_tokens=T, engine_options=engine_options())
        run_steps(self, off, [8, 1], seed=6)
        off.synchronize()
        self.assertGreater(off.engine.stats()["tiers"]["host"]["used_blocks"], 0)
        off.reset()
        self.assertEqual(off.engine.stats()["tiers"]["host"]["used_blocks"], 0)
        self.assertEqual([off.seq_length(i) for i in range(LAYERS)], [0] * LAYERS)
        self.assertEqual(off.resident_layers(), [])
        run_steps(self, off, [6, 2], seed=7, batch=1)  # a new request, another batch size
        off.close()

    def test_close_erases_every_block_of_the_cache(self):
        with kvtier.Engine.open(layers=1, kv_heads=HEADS, head_dim=DIM, block_tokens=T,
                                model="m", host_tier_bytes=1 << 20, device="emulated") as e:
            a = LayerOffloader(LAYERS, 1, block_tokens=T, engine=e, request_id="a")
            b = LayerOffloader(LAYERS, 1, block_tokens=T, engine=e, request_id="b")
            run_steps(self, a, [8, 1], seed=4)
            run_steps(self, b, [8, 1], seed=4)  # same KV, different request: no sharing
            a.synchronize()
            b.synchronize()
            used = e.stats()["tiers"]["host"]["used_blocks"]
            # Every layer has left the window once (layer 3 at step 1): 2 full blocks per row
            # and layer, for each of the two requests.
            self.assertEqual([a.stored_blocks(i) for i in range(LAYERS)], [2] * LAYERS)
            self.assertEqual(used, 2 * BATCH * 2 * LAYERS)
            a.close()
            self.assertEqual(e.stats()["tiers"]["host"]["used_blocks"], used // 2)
            b.close()
            self.assertEqual(e.stats()["tiers"]["host"]["used_blocks"], 0)
            self.assertFalse(e.closed)  # a caller's engine stays open

    def test_a_store_refused_while_transfers_are_in_flight_is_retried(self):
        # Every host slot held by transfers in flight (reads landing from disk, an earlier
        # store's copies) makes a store refuse blocks; once those settle there is room. The
        # engine below refuses the first store as if that happened.
        with kvtier.Engine.open(layers=1, kv_heads=HEADS, head_dim=DIM, block_tokens=T,
                                model="m", host_tier_bytes=1 << 20, device="emulated") as e:
            engine = _RefusingEngine(e, refusals=1)
            off = LayerOffloader(LAYERS, resident_layers=1, block_tokens=T, engine=engine)
            run_steps(self, off, [9, 1, 1, 4], seed=3)
            off.synchronize()
            self.assertEqual(engine.refused, 1)
            self.assertEqual(off.counters["store_retries"], 1)
            self.assertGreaterEqual(engine.flushes, 1)
            off.close()

    def test_a_store_refused_again_after_settling_is_an_error(self):
        with kvtier.Engine.open(layers=1, kv_heads=HEADS, head_dim=DIM, block_tokens=T,
                                model="m", host_tier_bytes=1 << 20, device="emulated") as e:
            engine = _RefusingEngine(e, refusals=2)
            off = LayerOffloader(LAYERS, resident_layers=1, block_tokens=T, engine=engine)
            with self.assertRaisesRegex(kvtier.ResourceExhaustedError,
                                        r"blocks of layer 0 were not stored"):
                run_steps(self, off, [9, 1, 1, 4], seed=3)
                off.synchronize()
            self.assertEqual(engine.refused, 2)
            off.close()

    def test_engine_of_another_geometry_is_refused(self):
        with kvtier.Engine.open(layers=1, kv_heads=HEADS, head_dim=DIM * 2, block_tokens=T,
                                model="m", host_tier_bytes=1 << 20, device="emulated") as e:
            off = LayerOffloader(LAYERS, 1, block_tokens=T, engine=e)
            k = np.zeros((1, HEADS, 4, DIM), np.float16)
            with self.assertRaisesRegex(ValueError, r"\(1, 2, 16, 'fp16', 4\) does not fit "
                                        r"these tensors, which need \(1, 2, 8, 'fp16', 4\)"):
                off.update(0, k, k)

    def test_bad_updates(self):
        off = LayerOffloader(LAYERS, 1, block_tokens=T, engine_options=engine_options())
        k = np.zeros((1, HEADS, 4, DIM), np.float16)
        with self.assertRaisesRegex(ValueError, "layer 9 out of range"):
            off.update(9, k, k)
        with self.assertRaisesRegex(ValueError, "key shape"):
            off.update(0, k, k[:, :, :2])
        off.update(0, k, k)
        with self.assertRaisesRegex(ValueError, "batch size changed from 1 to 2"):
            off.update(1, np.zeros((2, HEADS, 4, DIM), np.float16),
                       np.zeros((2, HEADS, 4, DIM), np.float16))
        off.close()

    def test_kv_evicted_from_every_tier_is_a_clear_error(self):
        block_bytes = 2 * T * HEADS * DIM * 2
        # Two host blocks and no disk: offloaded layers cannot all be kept.
        off = LayerOffloader(LAYERS, 1, block_tokens=T, prefetch=False,
                             engine_options=engine_options(host_tier_bytes=2 * block_bytes))
        rng = np.random.default_rng(5)
        with self.assertRaisesRegex(kvtier.NotFoundError,
                                    "no longer cached in any tier; the host and disk tiers "
                                    "must hold every offloaded layer"):
            for _ in range(2):
                for layer in range(LAYERS):
                    k = rng.standard_normal((1, HEADS, 8, DIM)).astype(np.float16)
                    off.update(layer, k, k)
        off.close()


if __name__ == "__main__":
    unittest.main()
