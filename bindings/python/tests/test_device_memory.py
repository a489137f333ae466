"""An inference engine's own KV pool as kvtier's device buffers, from Python.

On the emulated device an inference engine's "GPU" memory is host memory it owns, so a NumPy
array stands in for its pool: registered with Engine.register_device_memory, it is read by
store_device / store_paged and written by load_device / load_paged in place, byte for byte.
Unregistered, it is refused with a message that says what to do.
"""

import sys
import unittest

import numpy as np

import kvtier

GEOMETRY = dict(layers=4, kv_heads=2, head_dim=16, dtype="fp16", block_tokens=16)


def open_engine(**overrides):
    opts = dict(GEOMETRY, model="test-model@1", host_tier_bytes=64 * 8192, device="emulated",
                namespaces=["default", "tenant-b"])
    opts.update(overrides)
    return kvtier.Engine.open(**opts)


def prompt(n_blocks, seed):
    return (seed * 100003 + np.arange(n_blocks * 16)).astype(np.int32)


def random_blocks(engine, n, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 16, size=(n,) + engine.block_shape, dtype=np.uint16)
    return bits.view(engine.dtype)


class RegisteredPool(unittest.TestCase):
    def setUp(self):
        self.engine = open_engine()

    def tearDown(self):
        self.engine.close()

    def test_blocks_round_trip_through_a_registered_array_byte_exact(self):
        e = self.engine
        bb = e.block_bytes
        pool = np.zeros((8,) + e.block_shape, e.dtype)  # the inference engine's "GPU" pool
        kv = random_blocks(e, 4, seed=1)
        pool[:4] = kv
        tokens = prompt(4, 1)
        src = [pool.ctypes.data + i * bb for i in range(4)]

        with self.assertRaises(kvtier.InvalidArgumentError) as refused:
            e.store_device("default", tokens, src)
        self.assertIn("buffer 0", str(refused.exception))
        self.assertIn("not device memory", str(refused.exception))
        self.assertIn("RegisterDeviceMemory", str(refused.exception))

        refs = sys.getrefcount(pool)
        self.assertEqual(e.register_device_memory(pool), pool.ctypes.data)
        self.assertGreater(sys.getrefcount(pool), refs)  # kept alive while registered
        self.assertEqual(e.store_device("default", tokens, src),
                         {"stored": 4, "present": 0, "rejected": 0})
        matched, keys = e.match("default", tokens)
        self.assertEqual(matched, 64)
        # The ordinary path sees the same bytes.
        self.assertEqual(e.load("default", keys).tobytes(), kv.tobytes())

        # Into the second half of the pool, in reverse order, layer by layer.
        dst = [pool.ctypes.data + (4 + i) * bb for i in range(4)]
        e.load_device("default", keys[::-1], dst, layerwise=True)
        self.assertEqual(pool[4:].tobytes(), kv[::-1].tobytes())
        self.assertEqual(pool[:4].tobytes(), kv.tobytes())  # the source is untouched

        e.unregister_device_memory(pool)
        self.assertEqual(sys.getrefcount(pool), refs)
        with self.assertRaises(kvtier.InvalidArgumentError) as again:
            e.load_device("default", keys, dst)
        self.assertIn("not device memory", str(again.exception))

    def test_paged_pool_of_registered_arrays_in_both_layouts(self):
        e = self.engine
        kv = random_blocks(e, 3, seed=2)
        tokens = prompt(3, 2)
        e.store("default", tokens, kv)
        _, keys = e.match("default", tokens)
        layers, _, block_tokens, heads, dim = e.block_shape
        pages = [5, 0, 2]
        for layout in ("nhd", "hnd"):
            page = (block_tokens, heads, dim) if layout == "nhd" else (heads, block_tokens, dim)
            # One array per layer, as vLLM allocates them: [2 (K, V)][num_pages][page].
            tensors = [np.zeros((2, 6) + page, e.dtype) for _ in range(layers)]
            addresses = [t.ctypes.data for t in tensors]
            with self.assertRaises(kvtier.InvalidArgumentError) as refused:
                e.load_paged("default", keys, addresses, 6, pages, layout=layout)
            self.assertIn("paged pool layer 0", str(refused.exception))
            for t in tensors:
                e.register_device_memory(t)
            e.load_paged("default", keys, addresses, 6, pages, layout=layout, layerwise=True)
            for b, p in enumerate(pages):
                for layer in range(layers):
                    for part in range(2):
                        want = kv[b, layer, part]
                        if layout == "hnd":
                            want = want.transpose(1, 0, 2)
                        self.assertEqual(tensors[layer][part, p].tobytes(), want.tobytes(),
                                         f"{layout} block {b} layer {layer} part {part}")
            untouched = [q for q in range(6) if q not in pages]
            for t in tensors:
                self.assertFalse(t[:, untouched].any())
            # And back out of the pool, into another namespace, byte exact.
            ns = "tenant-b"
            e.erase_namespace(ns)
            self.assertEqual(
                e.store_paged(ns, tokens, addresses, 6, pages, layout=layout)["stored"], 3)
            self.assertEqual(e.load(ns, e.match(ns, tokens)[1]).tobytes(), kv.tobytes())
            for t in tensors:
                e.unregister_device_memory(t)

    def test_registration_errors_are_clear(self):
        e = self.engine
        pool = np.zeros((2,) + e.block_shape, e.dtype)
        e.register_device_memory(pool)
        with self.assertRaises(kvtier.AlreadyExistsError):
            e.register_device_memory(pool)
        with self.assertRaises(kvtier.InvalidArgumentError) as overlap:
            e.register_device_memory(pool.ctypes.data + 8, 64)
        self.assertIn("overlaps", str(overlap.exception))
        e.unregister_device_memory(pool.ctypes.data)  # by address works too
        with self.assertRaises(kvtier.NotFoundError):
            e.unregister_device_memory(pool)
        # Not registrable: read-only and non-contiguous arrays, other objects, no size.
        read_only = np.zeros(4096, np.uint8)
        read_only.flags.writeable = False
        for bad in (read_only, np.zeros((64, 64), np.uint8)[:, ::2], "a string", 1.5):
            with self.assertRaises(kvtier.InvalidArgumentError, msg=repr(bad)):
                e.register_device_memory(bad)
        with self.assertRaises(kvtier.InvalidArgumentError) as no_size:
            e.register_device_memory(pool.ctypes.data)
        self.assertIn("nbytes", str(no_size.exception))
        with self.assertRaises(kvtier.InvalidArgumentError):
            e.register_device_memory(pool, nbytes=pool.nbytes + 1)
        with self.assertRaises(kvtier.InvalidArgumentError):
            e.register_device_memory(pool, nbytes=0)
        with self.assertRaises(kvtier.InvalidArgumentError) as layout:
            e.load_paged("default", [], [pool.ctypes.data] * 4, 1, [], layout="xyz")
        self.assertIn("layout", str(layout.exception))

    def test_close_releases_what_is_still_registered(self):
        pool = np.zeros((2,) + self.engine.block_shape, self.engine.dtype)
        refs = sys.getrefcount(pool)
        self.engine.register_device_memory(pool)
        self.engine.close()
        self.assertEqual(sys.getrefcount(pool), refs)


if __name__ == "__main__":
    unittest.main()
