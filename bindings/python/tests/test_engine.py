"""kvtier.Engine from Python: store -> match -> load byte for byte, namespaces, errors, stats,
and a disk tier that survives a reopen. Runs on the emulated device."""

import os
import shutil
import stat
import tempfile
import threading
import time
import unittest

import numpy as np

import kvtier

# 4 layers x 2 kv heads x 16 dim x 16 tokens x fp16 = 8 KiB per block.
GEOMETRY = dict(layers=4, kv_heads=2, head_dim=16, dtype="fp16", block_tokens=16)


def open_engine(**overrides):
    opts = dict(GEOMETRY, model="test-model@1", host_tier_bytes=64 * 8192, device="emulated",
                namespaces=["default", "tenant-b"])
    opts.update(overrides)
    return kvtier.Engine.open(**opts)


def prompt(n_blocks, seed, block_tokens=16):
    return (seed * 100003 + np.arange(n_blocks * block_tokens)).astype(np.int32)


def random_blocks(engine, n, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 16, size=(n,) + engine.block_shape, dtype=np.uint16)
    # Random bit patterns (NaNs included) must come back bit-exact.
    return bits.view(engine.dtype) if engine.dtype != np.uint16 else bits


class EngineRoundTrip(unittest.TestCase):
    def setUp(self):
        self.engine = open_engine()

    def tearDown(self):
        self.engine.close()

    def test_store_match_load_is_byte_exact(self):
        e = self.engine
        self.assertEqual(e.block_shape, (4, 2, 16, 2, 16))
        self.assertEqual(e.block_bytes, 8192)
        self.assertEqual(e.dtype, np.float16)
        self.assertEqual(e.device_kind, "emulated")
        tokens = prompt(5, 1)
        kv = random_blocks(e, 5, seed=1)
        result = e.store("default", tokens, kv)
        self.assertEqual(result, {"stored": 5, "present": 0, "rejected": 0})
        matched, keys = e.match("default", tokens)
        self.assertEqual(matched, 80)
        self.assertEqual(keys, e.block_keys("default", tokens))
        self.assertTrue(all(isinstance(k, str) and len(k) == 32 for k in keys))
        self.assertEqual(e.match_tiers("default", tokens), ["host"] * 5)
        back = e.load("default", keys)
        self.assertEqual(back.shape, kv.shape)
        self.assertEqual(back.dtype, np.float16)
        self.assertEqual(back.tobytes(), kv.tobytes())
        # A subset, in another order, into a caller's array.
        out = np.zeros((2,) + e.block_shape, np.float16)
        self.assertIs(e.load("default", [keys[3], keys[0]], out=out), out)
        self.assertEqual(out[0].tobytes(), kv[3].tobytes())
        self.assertEqual(out[1].tobytes(), kv[0].tobytes())

    def test_storing_again_deduplicates_and_later_blocks_chain_from_the_prompt(self):
        e = self.engine
        tokens = prompt(4, 2)
        kv = random_blocks(e, 4, seed=2)
        # Blocks 2..3 first: no prefix yet.
        self.assertEqual(e.store("default", tokens, kv[2:], first_block=2)["stored"], 2)
        self.assertEqual(e.match("default", tokens)[0], 0)
        e.store("default", tokens[:32], kv[:2])
        matched, keys = e.match("default", tokens)
        self.assertEqual(matched, 64)
        self.assertEqual(e.load("default", keys).tobytes(), kv.tobytes())
        self.assertEqual(e.store("default", tokens, kv),
                         {"stored": 0, "present": 4, "rejected": 0})

    def test_tokens_may_be_a_list_or_any_integer_array(self):
        e = self.engine
        tokens = prompt(2, 3)
        e.store("default", tokens.tolist(), random_blocks(e, 2, seed=3))
        self.assertEqual(e.match("default", tokens.astype(np.int64))[0], 32)
        self.assertEqual(e.match("default", list(tokens))[0], 32)

    def test_match_counts_the_longest_cached_prefix_of_full_blocks(self):
        e = self.engine
        tokens = prompt(4, 4)
        e.store("default", tokens, random_blocks(e, 4, seed=4))
        other = tokens.copy()
        other[2 * 16 + 3] = -7  # diverges inside block 2
        other = np.append(other, 1)  # and ends with a partial block
        matched, keys = e.match("default", other)
        self.assertEqual(matched, 32)
        self.assertEqual(len(keys), 2)
        self.assertEqual(e.match("default", prompt(4, 5)), (0, []))
        self.assertEqual(e.match("default", tokens, extra="lora:1")[0], 0)
        self.assertEqual(e.match("default", tokens[:20])[0], 16)

    def test_bfloat16_blocks_travel_as_raw_16_bit_integers(self):
        with open_engine(dtype="bf16") as e:
            self.assertEqual(e.dtype, np.uint16)
            kv = random_blocks(e, 2, seed=5)
            tokens = prompt(2, 5)
            e.store("default", tokens, kv.view(np.int16))  # torch's tensor.view(int16)
            back = e.load("default", e.match("default", tokens)[1])
            self.assertEqual(back.dtype, np.uint16)
            self.assertEqual(back.tobytes(), kv.tobytes())
            with self.assertRaisesRegex(ValueError, "float16 does not hold bf16"):
                e.store("default", tokens, kv.view(np.float16))

    def test_fp8_blocks_travel_as_raw_bytes_and_refuse_quantizing_codecs(self):
        for dtype in ("fp8_e4m3", "fp8_e5m2"):
            with open_engine(dtype=dtype) as e:
                self.assertEqual(e.dtype, np.uint8)
                rng = np.random.default_rng(7)
                kv = rng.integers(0, 256, size=(2,) + e.block_shape, dtype=np.uint8)
                tokens = prompt(2, 7)
                e.store("default", tokens, kv.view(np.int8))  # torch's tensor.view(torch.int8)
                back = e.load("default", e.match("default", tokens)[1])
                self.assertEqual(back.dtype, np.uint8)
                self.assertEqual(back.tobytes(), kv.tobytes())
                with self.assertRaisesRegex(ValueError, "does not hold"):
                    e.store("default", tokens, kv.astype(np.float16))
        with self.assertRaisesRegex(kvtier.InvalidArgumentError, "one byte per element"):
            with tempfile.TemporaryDirectory() as d:
                open_engine(dtype="fp8_e4m3", disk_dir=d + "/cache", codec="fp8",
                            disk_capacity_bytes=1 << 20, disk_region_bytes=64 * 1024)
        with self.assertRaisesRegex(kvtier.InvalidArgumentError, "ambiguous"):
            open_engine(dtype="fp8")

    def test_mla_latent_blocks_have_one_part_and_round_trip_through_disk(self):
        # DeepSeek-like, scaled down: 3 layers, one latent of 48 (32 + 16 rope) per token.
        with tempfile.TemporaryDirectory() as d:
            opts = dict(layers=3, kv_heads=1, head_dim=48, dtype="bf16", block_tokens=16,
                        kind="mla", rope_dim=16, disk_dir=d + "/cache",
                        disk_capacity_bytes=1 << 20, disk_region_bytes=64 * 1024,
                        host_tier_bytes=2 * 3 * 16 * 48 * 2, admit_min_seen=1)
            with open_engine(**opts) as e:
                self.assertEqual(e.block_shape, (3, 1, 16, 1, 48))
                self.assertEqual(e.block_bytes, 3 * 16 * 48 * 2)  # no K/V factor
                tokens = prompt(4, 8)
                kv = random_blocks(e, 4, seed=8)
                e.store("default", tokens[:32], kv[:2])
                e.store("default", tokens, kv[2:], first_block=2)
                e.store("default", prompt(2, 80), random_blocks(e, 2, seed=80))  # demotes all 4
                e.flush()
            with open_engine(**opts) as e:  # restart: from the disk tier
                n, keys = e.match("default", tokens)
                self.assertEqual(n, 64)
                back = np.concatenate([e.load("default", keys[i:i + 2]) for i in (0, 2)])
                self.assertEqual(back.tobytes(), kv.tobytes())
            # The same directory refuses a K/V engine, naming both geometries.
            kv_opts = dict(opts, kind="kv", rope_dim=0, head_dim=24)
            with self.assertRaisesRegex(kvtier.FailedPreconditionError, "kind=mla rope_dim=16"):
                open_engine(**kv_opts)
        with self.assertRaisesRegex(kvtier.InvalidArgumentError, "num_kv_heads = 2, must be 1"):
            open_engine(kind="mla")
        with self.assertRaisesRegex(ValueError, "unknown KV kind"):
            kvtier.EngineOptions(kind="mha2")

    def test_tensor_parallel_ranks_hold_their_heads_under_their_own_keys(self):
        keys = []
        for rank in range(2):
            opts = kvtier.EngineOptions(**dict(GEOMETRY, model="test-model@1",
                                               host_tier_bytes=64 * 8192, device="emulated"))
            full_heads = opts.kv_heads
            opts.shard(rank, 2)
            self.assertEqual((opts.tp_rank, opts.tp_size, opts.store_rank), (rank, 2, 0))
            self.assertEqual(opts.kv_heads, full_heads // 2)
            self.assertEqual(opts.kv_head_begin, rank * full_heads // 2)
            self.assertEqual(opts.total_kv_heads, full_heads)
            with self.assertRaisesRegex(kvtier.InvalidArgumentError, "already a shard"):
                opts.shard(rank, 2)
            with kvtier.Engine.open(opts) as e:
                tokens = prompt(2, 9)
                kv = random_blocks(e, 2, seed=9)
                e.store("default", tokens, kv)
                n, k = e.match("default", tokens)
                self.assertEqual(n, 32)
                self.assertEqual(e.load("default", k).tobytes(), kv.tobytes())
                keys.append(k)
        self.assertNotEqual(keys[0], keys[1])
        opts = kvtier.EngineOptions(**GEOMETRY)
        with self.assertRaisesRegex(kvtier.InvalidArgumentError, "tp_rank = 3"):
            opts.shard(3, 2)
        bad = kvtier.EngineOptions(**dict(GEOMETRY, model="m@1", host_tier_bytes=1 << 20,
                                          device="emulated", tp_size=2, tp_rank=1))
        with self.assertRaisesRegex(kvtier.InvalidArgumentError, "not a shard"):
            kvtier.Engine.open(bad)

    def test_erase_removes_blocks(self):
        e = self.engine
        tokens = prompt(3, 6)
        e.store("default", tokens, random_blocks(e, 3, seed=6))
        keys = e.match("default", tokens)[1]
        self.assertEqual(e.erase("default", [keys[1]]), 1)
        self.assertEqual(e.match("default", tokens)[0], 16)
        self.assertEqual(e.erase("default", [keys[1]]), 0)
        with self.assertRaises(kvtier.NotFoundError):
            e.load("default", [keys[1]])

    def test_flush_and_context_manager(self):
        with open_engine() as e:
            e.store("default", prompt(1, 7), random_blocks(e, 1, seed=7))
            e.flush()
        self.assertTrue(e.closed)
        with self.assertRaisesRegex(kvtier.FailedPreconditionError, "closed"):
            e.match("default", prompt(1, 7))
        e.close()  # idempotent


class Namespaces(unittest.TestCase):
    def test_namespaces_never_share_blocks_matches_or_counts(self):
        with open_engine() as e:
            self.assertEqual(e.list_namespaces(), ["default", "tenant-b"])
            e.create_namespace("team-x")
            self.assertEqual(e.list_namespaces(), ["default", "tenant-b", "team-x"])
            with self.assertRaises(kvtier.AlreadyExistsError):
                e.create_namespace("team-x")
            with self.assertRaisesRegex(ValueError, "bad name|namespace"):
                e.create_namespace("bad name")
            tokens = prompt(2, 8)
            kv = random_blocks(e, 2, seed=8)
            e.store("default", tokens, kv)
            keys = e.match("default", tokens)[1]
            self.assertEqual(e.match("tenant-b", tokens)[0], 0)
            with self.assertRaises(kvtier.NotFoundError):
                e.load("tenant-b", keys)  # another tenant's keys give nothing
            self.assertEqual(e.erase("tenant-b", keys), 0)
            other = random_blocks(e, 2, seed=9)
            e.store("tenant-b", tokens, other)
            keys_b = e.match("tenant-b", tokens)[1]
            self.assertNotEqual(keys, keys_b)
            self.assertEqual(e.load("tenant-b", keys_b).tobytes(), other.tobytes())
            stats = e.stats()["namespaces"]
            self.assertEqual(stats["default"]["blocks"], 2)
            self.assertEqual(stats["tenant-b"]["blocks"], 2)
            self.assertEqual(stats["team-x"]["blocks"], 0)
            self.assertEqual(e.erase_namespace("tenant-b"), 2)
            self.assertEqual(e.match("tenant-b", tokens)[0], 0)
            self.assertEqual(e.load("default", keys).tobytes(), kv.tobytes())


class BadInput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.engine = open_engine()
        cls.tokens = prompt(2, 10)
        cls.kv = random_blocks(cls.engine, 2, seed=10)
        cls.engine.store("default", cls.tokens, cls.kv)
        cls.keys = cls.engine.match("default", cls.tokens)[1]

    @classmethod
    def tearDownClass(cls):
        cls.engine.close()

    def test_wrong_block_shape_names_the_expected_one(self):
        bad = np.zeros((2, 4, 2, 16, 2, 8), np.float16)
        with self.assertRaisesRegex(kvtier.InvalidArgumentError,
                                    r"expected shape .* = \(n, 4, 2, 16, 2, 16\).*"
                                    r"got \(2, 4, 2, 16, 2, 8\)"):
            self.engine.store("default", self.tokens, bad)
        with self.assertRaisesRegex(ValueError, "expected shape"):
            self.engine.store("default", self.tokens, self.kv.reshape(2, -1))

    def test_wrong_dtype_says_which_dtypes_fit(self):
        with self.assertRaisesRegex(ValueError, "dtype float64 does not hold fp16 elements "
                                    r"\(use float16, or a 2-byte integer"):
            self.engine.store("default", self.tokens, self.kv.astype(np.float64))

    def test_non_contiguous_and_read_only_arrays(self):
        strided = np.zeros((4,) + self.engine.block_shape, np.float16)[::2]
        with self.assertRaisesRegex(ValueError, "C-contiguous"):
            self.engine.store("default", self.tokens, strided)
        out = np.zeros((1,) + self.engine.block_shape, np.float16)
        out.flags.writeable = False
        with self.assertRaisesRegex(ValueError, "read-only"):
            self.engine.load("default", self.keys[:1], out=out)

    def test_out_with_the_wrong_number_of_blocks(self):
        out = np.zeros((3,) + self.engine.block_shape, np.float16)
        with self.assertRaisesRegex(ValueError, "out holds 3 blocks but 2 keys"):
            self.engine.load("default", self.keys, out=out)

    def test_tokens_must_be_whole_blocks_of_integers(self):
        with self.assertRaisesRegex(ValueError, "not a multiple of block_tokens = 16"):
            self.engine.store("default", self.tokens[:20], self.kv[:1])
        with self.assertRaisesRegex(ValueError, "integer array, got dtype float32"):
            self.engine.match("default", self.tokens.astype(np.float32))
        with self.assertRaisesRegex(ValueError, r"tokens\[1\]: expected an int, got str"):
            self.engine.match("default", [1, "two"])
        with self.assertRaisesRegex(ValueError, "does not fit in int32"):
            self.engine.match("default", [1 << 40])
        with self.assertRaisesRegex(ValueError, "blocks 1..2 requested"):
            self.engine.store("default", self.tokens, self.kv, first_block=1)
        with self.assertRaisesRegex(ValueError, "no blocks"):
            self.engine.store("default", self.tokens, self.kv[:0])

    def test_unknown_namespace_and_keys(self):
        with self.assertRaisesRegex(kvtier.NotFoundError, "namespace 'nope' does not exist"):
            self.engine.match("nope", self.tokens)
        with self.assertRaises(LookupError):
            self.engine.load("default", ["0" * 32])
        with self.assertRaisesRegex(ValueError, "expected 32 hex digits"):
            self.engine.load("default", ["abc"])
        with self.assertRaisesRegex(ValueError, "no keys"):
            self.engine.load("default", [])
        with self.assertRaises(kvtier.NotFoundError):
            self.engine.cancel_hint(12345)

    def test_bad_options_name_the_field(self):
        with self.assertRaisesRegex(ValueError, "layers|num_layers"):
            open_engine(layers=0)
        with self.assertRaisesRegex(ValueError, "device 'tpu'"):
            open_engine(device="tpu")
        with self.assertRaisesRegex(ValueError, "fp8|dtype"):
            open_engine(dtype="fp8")
        with self.assertRaisesRegex(TypeError, "no option 'layer_count'"):
            kvtier.EngineOptions(layer_count=3)
        with self.assertRaisesRegex(ValueError, "model"):
            open_engine(model="")
        opts = kvtier.EngineOptions(**GEOMETRY, model="m", host_tier_bytes=1 << 20,
                                    device="emulated")
        opts.validate()
        # Options object, with keywords overriding its fields.
        with kvtier.Engine.open(opts, host_tier_bytes=2 * 8192) as e:
            self.assertEqual(e.options.host_tier_bytes, 2 * 8192)
            self.assertEqual(e.options.model, "m")
            self.assertEqual(e.stats()["tiers"]["host"]["capacity_blocks"], 2)
        self.assertEqual(opts.host_tier_bytes, 1 << 20)  # the caller's options are unchanged
        self.assertEqual(opts.layers, 4)
        self.assertEqual(opts.dtype, "fp16")
        self.assertEqual(opts.block_bytes, 8192)
        # The error for a missing fingerprint names `model_fingerprint`: that name works too.
        with self.assertRaisesRegex(ValueError, "model_fingerprint is empty"):
            open_engine(model="")
        named = kvtier.EngineOptions(**GEOMETRY, model_fingerprint="m2")
        self.assertEqual(named.model, "m2")

    def test_all_errors_are_kvtier_errors(self):
        for cls in (kvtier.InvalidArgumentError, kvtier.NotFoundError,
                    kvtier.AlreadyExistsError, kvtier.ResourceExhaustedError,
                    kvtier.FailedPreconditionError, kvtier.DataLossError,
                    kvtier.UnavailableError):
            self.assertTrue(issubclass(cls, kvtier.Error), cls)
        self.assertTrue(issubclass(kvtier.Error, RuntimeError))
        self.assertTrue(issubclass(kvtier.InvalidArgumentError, ValueError))
        self.assertTrue(issubclass(kvtier.NotFoundError, LookupError))


class Threads(unittest.TestCase):
    def test_threads_store_and_load_at_once(self):
        # Store and load release the GIL: four threads interleave inside the engine, and each
        # gets its own bytes back.
        errors = []
        with open_engine(host_tier_bytes=256 * 8192) as e:
            def work(t):
                try:
                    for i in range(10):
                        tokens = prompt(3, 1000 * t + i)
                        kv = random_blocks(e, 3, seed=1000 * t + i)
                        e.store("default", tokens, kv)
                        n, keys = e.match("default", tokens)
                        if n != 48 or e.load("default", keys).tobytes() != kv.tobytes():
                            errors.append(f"thread {t} round {i}: wrong blocks")
                except Exception as x:  # noqa: BLE001 - reported below
                    errors.append(f"thread {t}: {x!r}")

            threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            self.assertEqual(e.stats()["stored_blocks"], 4 * 10 * 3)


class Tenants(unittest.TestCase):
    def test_a_quota_evicts_only_the_namespaces_own_blocks(self):
        opts = kvtier.EngineOptions(**GEOMETRY, model="test-model@1", host_tier_bytes=16 * 8192,
                                    device="emulated", namespaces=["default", "tenant-b"])
        opts.set_namespace_limits("tenant-b", host_bytes=4 * 8192)
        with kvtier.Engine.open(opts) as e:
            mine = prompt(6, 20)
            kv = random_blocks(e, 6, seed=20)
            e.store("default", mine, kv)
            for i in range(4):
                e.store("tenant-b", prompt(2, 30 + i), random_blocks(e, 2, seed=30 + i))
            ns = e.stats()["namespaces"]
            self.assertEqual(ns["tenant-b"]["blocks_per_tier"]["host"], 4)
            self.assertEqual(ns["tenant-b"]["quota_blocks"]["host"], 4)
            self.assertEqual(ns["tenant-b"]["quota_evictions"], 4)
            self.assertEqual(ns["default"]["blocks_per_tier"]["host"], 6)
            self.assertEqual(e.load("default", e.match("default", mine)[1]).tobytes(), kv.tobytes())
            with self.assertRaisesRegex(ValueError, "host_bytes"):
                e.set_namespace_limits("default", host_bytes=100)
            with self.assertRaisesRegex(ValueError, "ttl"):
                e.set_namespace_limits("default", ttl_s=0)
            with self.assertRaises(kvtier.NotFoundError):
                e.set_namespace_limits("nobody", host_bytes=8192)

    def test_blocks_past_their_time_to_live_are_gone(self):
        with open_engine(secure_erase=True) as e:
            tokens = prompt(3, 40)
            e.store("tenant-b", tokens, random_blocks(e, 3, seed=40))
            self.assertEqual(e.match("tenant-b", tokens)[0], 48)
            e.set_namespace_limits("tenant-b", ttl_s=0.05)
            time.sleep(0.1)
            self.assertEqual(e.match("tenant-b", tokens)[0], 0)
            for _ in range(200):
                if e.stats()["namespaces"]["tenant-b"]["blocks"] == 0:
                    break
                time.sleep(0.01)
            self.assertEqual(e.stats()["namespaces"]["tenant-b"]["expired_blocks"], 3)
            # A miss in Match counts against every tier; the engine reports it per namespace.
            self.assertEqual(e.stats()["namespaces"]["tenant-b"]["misses_per_tier"]["host"], 3)


class Stats(unittest.TestCase):
    def test_stats_is_a_dict_of_what_happened(self):
        with open_engine(host_tier_bytes=4 * 8192) as e:
            tokens = prompt(6, 11)
            kv = random_blocks(e, 6, seed=11)
            # One store cannot evict its own blocks (they are pinned while in flight)...
            self.assertEqual(e.store("default", tokens, kv),
                             {"stored": 4, "present": 0, "rejected": 2})
            self.assertEqual(e.stats()["rejected_blocks"], 2)
            # ...a second one evicts the two least recently used.
            self.assertEqual(e.store("default", tokens, kv[4:], first_block=4)["stored"], 2)
            e.match("default", tokens)
            e.load("default", e.block_keys("default", tokens)[2:])
            s = e.stats()
            self.assertIn("emulated", s["device"])
            self.assertEqual(set(s["tiers"]), {"gpu", "host", "disk", "remote"})
            host = s["tiers"]["host"]
            self.assertEqual(host["capacity_blocks"], 4)
            self.assertEqual(host["used_blocks"], 4)
            self.assertEqual(host["evictions"], 2)
            self.assertEqual(host["hits"], 4)
            self.assertEqual(s["tiers"]["gpu"]["capacity_blocks"], 0)
            self.assertEqual(s["stored_blocks"], 6)
            self.assertEqual(s["loaded_blocks"], 4)
            self.assertEqual(s["match_calls"], 1)
            self.assertEqual(s["namespaces"]["default"]["blocks"], 4)
            self.assertEqual(s["namespaces"]["default"]["blocks_per_tier"]["host"], 4)
            self.assertEqual(s["store_latency"]["count"], 2)
            self.assertEqual(len(s["load_latency"]["buckets"]), 24)
            self.assertIn("budget_bytes", s["prefetch"])


class DiskTier(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kvtier-py-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def disk_engine(self, **overrides):
        opts = dict(host_tier_bytes=4 * 8192, disk_dir=self.dir + "/cache",
                    disk_region_bytes=64 * 1024, disk_capacity_bytes=16 * 64 * 1024,
                    admit_min_seen=1)
        opts.update(overrides)
        return open_engine(**opts)

    def test_reopened_directory_serves_what_it_held(self):
        tokens = prompt(3, 12)
        with self.disk_engine() as e:
            kv = random_blocks(e, 3, seed=12)
            e.store("tenant-b", tokens, kv)
            # Four more blocks push the first three out of the 4-slot host tier, to disk.
            e.store("default", prompt(4, 13), random_blocks(e, 4, seed=13))
            e.flush()
            self.assertEqual(e.stats()["tiers"]["disk"]["used_blocks"], 3)
        with self.disk_engine(namespaces=["default"]) as e:
            # tenant-b comes back from the directory itself.
            self.assertIn("tenant-b", e.list_namespaces())
            matched, keys = e.match("tenant-b", tokens)
            self.assertEqual(matched, 48)
            self.assertEqual(e.match_tiers("tenant-b", tokens), ["disk"] * 3)
            self.assertEqual(e.load("tenant-b", keys).tobytes(), kv.tobytes())
            self.assertEqual(e.match("default", tokens)[0], 0)  # still isolated
            # Hints move disk blocks up to the host tier in the background.
            e.hint("tenant-b", keys)
            e.flush()

    def test_codec_threads_and_reads_in_place(self):
        tokens = prompt(3, 50)
        for threads, in_place, codec in ((1, False, "none"), (3, True, "none"),
                                         (2, False, "zstd-shuffle")):
            with self.subTest(threads=threads, in_place=in_place, codec=codec):
                shutil.rmtree(self.dir + "/cache", ignore_errors=True)
                with self.disk_engine(disk_codec_threads=threads, disk_read_in_place=in_place,
                                      codec=codec) as e:
                    self.assertEqual(e.options.disk_codec_threads, threads)
                    self.assertEqual(e.options.disk_read_in_place, in_place)
                    kv = random_blocks(e, 3, seed=50)
                    e.store("default", tokens, kv)
                    e.store("default", prompt(4, 51), random_blocks(e, 4, seed=51))
                    e.flush()
                    _, keys = e.match("default", tokens)
                    self.assertEqual(e.match_tiers("default", tokens), ["disk"] * 3)
                    self.assertEqual(e.load("default", keys).tobytes(), kv.tobytes())
        with self.assertRaisesRegex(ValueError, "codec_threads"):
            self.disk_engine(disk_codec_threads=65)

    def test_plans_and_deadlines(self):
        tokens = prompt(3, 40)
        with self.disk_engine() as e:
            kv = random_blocks(e, 3, seed=40)
            e.store("default", tokens, kv)
            # A model slow to prefill: loading from the host tier wins, all but the last token.
            plan = e.plan_load("default", tokens, prefill_tokens_per_s=100)
            self.assertEqual(plan["load_blocks"], 3)
            self.assertEqual(plan["load_tokens"], 47)
            self.assertEqual(plan["recompute_tokens"], 1)
            self.assertLess(plan["expected_total_s"], plan["recompute_all_s"])
            # A model far faster than any copy: recompute.
            fast = e.plan_load("default", tokens, prefill_tokens_per_s=1e12)
            self.assertEqual(fast["load_blocks"], 0)
            self.assertEqual(fast["reason"], "recompute_all")
            with self.assertRaisesRegex(ValueError, "prefill"):
                e.plan_load("default", tokens, prefill_tokens_per_s=0)
            with self.assertRaisesRegex(ValueError, "local_tokens"):
                e.plan_load("default", tokens, prefill_tokens_per_s=100, local_tokens=5)
            # Push them to disk, then load them with a deadline already past: a disk read not
            # in by then (all of them, unless the disk is very quick) is abandoned; its row is
            # zeros (or, for a read in place already in the kernel, partly its own bytes:
            # never another's), every other row exact, and the blocks stay cached.
            e.store("default", prompt(4, 41), random_blocks(e, 4, seed=41))
            e.flush()
            _, keys = e.match("default", tokens)
            self.assertEqual(e.match_tiers("default", tokens), ["disk"] * 3)
            got, failed = e.load_within("default", keys, 0)
            for i in range(3):
                if i in failed:
                    row = np.frombuffer(got[i].tobytes(), np.uint8)
                    own = np.frombuffer(kv[i].tobytes(), np.uint8)
                    self.assertFalse(((row != 0) & (row != own)).any())
                else:
                    self.assertEqual(got[i].tobytes(), kv[i].tobytes())
            e.flush()
            self.assertEqual(e.stats()["blocks_abandoned"], len(failed))
            got, failed = e.load_within("default", keys, 30)
            self.assertEqual(list(failed), [])
            self.assertEqual(got.tobytes(), kv.tobytes())
            with self.assertRaisesRegex(ValueError, "seconds"):
                e.load_within("default", keys, -1)

    def test_the_directory_is_private_and_never_adopted_or_linked(self):
        cache = self.dir + "/cache"
        old = os.umask(0)
        try:
            with self.disk_engine():
                pass
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(cache).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(cache + "/data.kvt").st_mode), 0o600)
        # A loose mode is refused, naming the path and the fix; group access when asked.
        os.chmod(cache, 0o750)
        with self.assertRaises(kvtier.FailedPreconditionError) as cm:
            self.disk_engine()
        self.assertIn("chmod 700", str(cm.exception))
        self.assertIn(cache, str(cm.exception))
        with self.disk_engine(disk_group_access=True):
            pass
        os.chmod(cache, 0o700)
        # data.kvt replaced by a link to someone's file: refused, the file untouched.
        victim = self.dir + "/victim"
        with open(victim, "wb") as f:
            f.write(bytes(range(200)) * 4)
        os.remove(cache + "/data.kvt")
        os.symlink(victim, cache + "/data.kvt")
        with self.assertRaises(kvtier.FailedPreconditionError) as cm:
            self.disk_engine()
        self.assertIn("symbolic link", str(cm.exception))
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), bytes(range(200)) * 4)
        # A non-empty directory that is not a cache.
        other = self.dir + "/other"
        os.mkdir(other, 0o700)
        with open(other + "/notes.txt", "w") as f:
            f.write("mine")
        with self.assertRaises(kvtier.FailedPreconditionError) as cm:
            self.disk_engine(disk_dir=other)
        self.assertIn("not empty", str(cm.exception))
        self.assertEqual(os.listdir(other), ["notes.txt"])

    def test_corrupt_record_raises_data_loss_never_wrong_bytes(self):
        tokens = prompt(2, 15)
        with self.disk_engine() as e:
            kv = random_blocks(e, 2, seed=15)
            e.store("default", tokens, kv)
            e.store("default", prompt(4, 16), random_blocks(e, 4, seed=16))  # push them to disk
            e.flush()
            self.assertEqual(e.match_tiers("default", tokens), ["disk", "disk"])
        with open(self.dir + "/cache/data.kvt", "r+b") as f:
            f.seek(4096 + 64)  # the payload of the first record
            f.write(b"XXXX")
        with self.disk_engine() as e:
            keys = e.block_keys("default", tokens)
            with self.assertRaises(kvtier.DataLossError):
                e.load("default", keys)
            self.assertEqual(e.stats()["tiers"]["disk"]["checksum_failures"], 1)
            # The bad block is now a miss; the good one still loads exactly.
            self.assertLess(e.match("default", tokens)[0], 32)
            outcomes = []
            for i, key in enumerate(keys):
                try:
                    same = e.load("default", [key]).tobytes() == kv[i].tobytes()
                    outcomes.append("exact" if same else "wrong")
                except kvtier.NotFoundError:
                    outcomes.append("missing")
            self.assertEqual(sorted(outcomes), ["exact", "missing"])

    def test_directory_of_another_geometry_is_refused(self):
        with self.disk_engine() as e:
            e.store("default", prompt(1, 14), random_blocks(e, 1, seed=14))
        with self.assertRaisesRegex(kvtier.Error, "geometry"):
            self.disk_engine(head_dim=32)

    def test_quantized_codecs_return_dequantized_values_from_disk(self):
        # 32 KiB blocks (head_dim 64): big enough for a quantized record to save pages.
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
        rng = np.random.default_rng(seed)
        for codec in ("fp8", "int8"):
            shutil.rmtree(self.dir + "/cache", ignore_errors=True)
            with self.disk_engine(codec=codec, head_dim=64, host_tier_bytes=4 * 32768,
                                  disk_region_bytes=256 * 1024,
                                  disk_capacity_bytes=16 * 256 * 1024) as e:
                tokens = prompt(2, 17)
                shape = (2,) + e.block_shape  # (n, layers, 2, tokens, kv_heads, head_dim)
                sigma = np.exp(rng.uniform(-3, 3, size=(2, 4, 2, 1, 2, 1)))
                kv = (rng.standard_normal(shape) * sigma).astype(np.float16)
                kv[kv == 0] = np.float16(1e-3)  # never zero
                e.store("default", tokens, kv)
                e.store("default", prompt(4, 18), random_blocks(e, 4, seed=18))  # to disk
                e.flush()
                self.assertEqual(e.match_tiers("default", tokens), ["disk", "disk"])
                got = e.load("default", e.block_keys("default", tokens))
                x = kv.astype(np.float64)
                err = np.abs(got.astype(np.float64) - x)
                # Per head (block, layer, K/V, kv_head): scale = max |x| / 448 or / 127.
                amax = np.abs(x).max(axis=(3, 5), keepdims=True)
                scale = amax / (448.0 if codec == "fp8" else 127.0)
                half_ulp = np.abs(got.astype(np.float64)) * 2.0**-11 + 2.0**-25
                if codec == "int8":
                    bound = scale / 2 + half_ulp
                else:
                    bound = np.abs(x) * 2.0**-4 + scale * 2.0**-10 + half_ulp
                bound = bound + (np.abs(x) + 448 * scale) * 2.0**-21
                msg = f"{codec}, seed {seed}"
                self.assertTrue(np.all(err <= bound), msg)
                self.assertGreater(np.count_nonzero(err), 0, msg)  # lossy: not all exact
                rel_rms = np.sqrt((err**2).sum() / (x**2).sum())
                self.assertLess(rel_rms, 0.04 if codec == "fp8" else 0.012, msg)
        with self.assertRaisesRegex(ValueError, "codec"):
            kvtier.EngineOptions(**GEOMETRY, model="m", host_tier_bytes=1 << 20,
                                 disk_dir=self.dir + "/x", disk_capacity_bytes=1 << 30,
                                 codec="lz5").validate()


if __name__ == "__main__":
    unittest.main()
