"""kvtier.hf_cache.KvtierCache: greedy generate() with layers offloaded through kvtier gives
exactly the tokens of transformers' DynamicCache, on a small randomly initialised Llama, and
(on the layered Cache API, transformers >= 4.56 / 5.x) on a small Qwen2 whose layers alternate
full and sliding-window attention (the sliding ones stay transformers' own layers).

Needs torch (the torch backend tests) and transformers (the generate tests); each class skips,
saying which import failed, where they are missing. The offload logic itself is tested with
NumPy alone in test_offload.py."""

import importlib.util
import shutil
import tempfile
import types
import unittest

import numpy as np

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_TRANSFORMERS = HAVE_TORCH and importlib.util.find_spec("transformers") is not None

if HAVE_TORCH:
    import torch

    from kvtier.offload import LayerOffloader, NumpyBackend
    from kvtier.torch_backend import TorchBackend

if HAVE_TRANSFORMERS:
    import transformers
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    from kvtier.hf_cache import KvtierCache, layer_plan, supported_api

    LAYERED = supported_api() == "layered"
    try:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        HAVE_QWEN2 = True
    except ImportError:
        HAVE_QWEN2 = False

    # transformers 4.38 - 4.40's Llama swaps any cache but StaticCache for a new DynamicCache:
    # KvtierCache refuses it there (test_llama_refused_where_it_drops_custom_caches).
    _VERSION = tuple(int("".join(c for c in p if c.isdigit()) or 0)
                     for p in transformers.__version__.split(".")[:2])
    LLAMA_DROPS_CACHES = (4, 38) <= _VERSION < (4, 41)
else:
    LLAMA_DROPS_CACHES = False
    LAYERED = HAVE_QWEN2 = False

NO_TORCH = "torch is not installed (Debian: python3-torch; or pip install torch)"
NO_TRANSFORMERS = ("torch and transformers are needed for the generate() tests "
                   "(pip install torch transformers)")
LLAMA_DROPS = "transformers 4.38 - 4.40: Llama drops any cache but StaticCache"
NO_SLIDING = ("sliding-window layers need the layered Cache API (transformers >= 4.56) and "
              "Qwen2")


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@unittest.skipUnless(HAVE_TORCH, NO_TORCH)
class TorchBackendTest(unittest.TestCase):
    def test_blocks_match_the_numpy_layout_for_every_dtype(self):
        g = torch.Generator().manual_seed(0)
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            k = torch.randn(2, 3, 13, 8, generator=g).to(dtype)
            v = torch.randn(2, 3, 13, 8, generator=g).to(dtype)
            be = TorchBackend()
            be.empty_like(k)
            blocks = be.to_blocks(k, v, first=1, count=2, block_tokens=4)
            self.assertIsInstance(blocks, np.ndarray)
            self.assertEqual(blocks.shape, (4, 1, 2, 4, 3, 8))
            if dtype != torch.bfloat16:  # NumPy has no bfloat16 to compare with
                ref = NumpyBackend().to_blocks(k.numpy(), v.numpy(), 1, 2, 4)
                self.assertEqual(blocks.tobytes(), ref.tobytes(), dtype)
            staged = be.stage(blocks)
            k2, v2 = be.from_blocks(staged, batch=2, count=2, like=k[:, :, :0])
            self.assertEqual(k2.dtype, dtype)
            self.assertTrue(torch.equal(k2, k[:, :, 4:12]), dtype)
            self.assertTrue(torch.equal(v2, v[:, :, 4:12]), dtype)

    def test_offloaded_layers_come_back_bit_exact(self):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            off = LayerOffloader(4, 1, block_tokens=4, backend=TorchBackend(),
                                 engine_options=dict(device="emulated"))
            ref = {}
            g = torch.Generator().manual_seed(1)
            for n in (9, 1, 1, 1, 1, 5, 1):
                for layer in range(4):
                    k = torch.randn(2, 2, n, 8, generator=g).to(dtype).to(device())
                    v = torch.randn(2, 2, n, 8, generator=g).to(dtype).to(device())
                    if layer in ref:
                        ref[layer] = (torch.cat([ref[layer][0], k], -2),
                                      torch.cat([ref[layer][1], v], -2))
                    else:
                        ref[layer] = (k, v)
                    got_k, got_v = off.update(layer, k, v)
                    self.assertEqual(got_k.device, k.device)
                    self.assertTrue(torch.equal(got_k, ref[layer][0]), (dtype, layer))
                    self.assertTrue(torch.equal(got_v, ref[layer][1]), (dtype, layer))
            self.assertGreater(off.counters["offloaded_blocks"], 0)
            self.assertEqual(off.counters["restores_on_demand"], 0)
            off.close()


def tiny_llama(seed=0):
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval().to(device())
    return config, model


def assert_went_through_disk(test, stats):
    """Blocks were offloaded, written to kvtier's disk tier and read back from it."""
    test.assertGreater(stats["offloaded_blocks"], 0)
    test.assertGreater(stats["restored_blocks"], 0)
    disk = stats["engine"]["tiers"]["disk"]
    test.assertGreater(disk["bytes_in"], 0, "nothing was written to the disk tier")
    test.assertGreater(disk["bytes_out"], 0, "nothing was read back from the disk tier")
    test.assertGreater(disk["hits"], 0)


def small_tiers(tmp, block_bytes, host_blocks):
    """Engine options whose host tier holds only `host_blocks` blocks, so that offloaded
    layers spill to the disk tier under `tmp`."""
    return dict(device="emulated", host_tier_bytes=host_blocks * block_bytes,
                disk_dir=tmp + "/cache", disk_region_bytes=1 << 20,
                disk_capacity_bytes=16 << 20)


@unittest.skipUnless(HAVE_TRANSFORMERS, NO_TRANSFORMERS)
class GenerateTest(unittest.TestCase):
    NEW_TOKENS = 40

    def generate(self, model, input_ids, cache, **kwargs):
        with torch.no_grad():
            return model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                  past_key_values=cache, do_sample=False,
                                  max_new_tokens=self.NEW_TOKENS, min_new_tokens=self.NEW_TOKENS,
                                  pad_token_id=0, **kwargs)

    def check_same_tokens(self, batch, prompt_len, engine_options, resident_layers=1):
        config, model = tiny_llama()
        g = torch.Generator().manual_seed(2)
        input_ids = torch.randint(3, 128, (batch, prompt_len), generator=g).to(device())
        want = self.generate(model, input_ids, DynamicCache())
        cache = KvtierCache(config, resident_layers=resident_layers, block_tokens=4,
                            engine_options=engine_options)
        got = self.generate(model, input_ids, cache)
        self.assertEqual(got.tolist(), want.tolist())
        self.assertEqual(cache.get_seq_length(), prompt_len + self.NEW_TOKENS - 1)
        stats = cache.stats()
        cache.close()
        return stats

    @unittest.skipIf(LLAMA_DROPS_CACHES, LLAMA_DROPS)
    def test_greedy_tokens_equal_dynamic_cache_through_the_host_tier(self):
        stats = self.check_same_tokens(1, 23, dict(device="emulated"))
        # Layers really went through kvtier and came back, mostly read ahead of need.
        self.assertGreater(stats["offloaded_blocks"], 0)
        self.assertGreater(stats["restored_blocks"], 0)
        self.assertGreater(stats["prefetch_hits"], 0)
        self.assertGreater(stats["engine"]["tiers"]["host"]["hits"], 0)

    @unittest.skipIf(LLAMA_DROPS_CACHES, LLAMA_DROPS)
    def test_greedy_tokens_equal_with_a_batch_and_the_disk_tier(self):
        tmp = tempfile.mkdtemp(prefix="kvtier-hf-")
        self.addCleanup(shutil.rmtree, tmp, True)
        block_bytes = 2 * 4 * 2 * 16 * 4  # K+V x 4 tokens x 2 kv heads x head_dim 16 x fp32
        stats = self.check_same_tokens(
            2, 17, dict(device="emulated", host_tier_bytes=16 * block_bytes,
                        disk_dir=tmp + "/cache", disk_region_bytes=1 << 20,
                        disk_capacity_bytes=16 << 20),
            resident_layers=2)
        assert_went_through_disk(self, stats)

    @unittest.skipIf(LLAMA_DROPS_CACHES, LLAMA_DROPS)
    def test_cache_interface(self):
        config, model = tiny_llama()
        cache = KvtierCache(config, resident_layers=1, block_tokens=4,
                            engine_options=dict(device="emulated"))
        self.assertIn(supported_api(), ("layered", "classic"))
        self.assertIsInstance(cache, transformers.cache_utils.Cache)
        self.assertEqual(cache.get_seq_length(), 0)
        ids = torch.randint(3, 128, (1, 10)).to(device())
        with torch.no_grad():
            model(ids, past_key_values=cache, use_cache=True)
        self.assertEqual(cache.get_seq_length(), 10)
        self.assertEqual(len(cache), 4)
        self.assertEqual(cache.resident_layers(), [3])
        k, v = cache[0]  # an offloaded layer, brought back
        self.assertEqual(tuple(k.shape), (1, 2, 10, 16))
        self.assertEqual(cache.get_mask_sizes(torch.arange(10, 11), 0), (11, 0))
        self.assertEqual(cache.get_mask_sizes(1, 3), (11, 0))  # 5.x passes the query length
        self.assertEqual(cache.get_query_offset(2), 10)
        self.assertEqual(cache.is_sliding, [False] * 4)
        self.assertEqual(cache.offloaded_layers(), [0, 1, 2, 3])
        if LAYERED:
            self.assertEqual(cache.batch_size, 1)
            self.assertEqual(cache.get_max_length(), -1)
            self.assertEqual(len(cache.layers), 4)
            self.assertTrue(torch.equal(cache.layers[0].keys, k))
            self.assertIsInstance(cache.layers[0], transformers.cache_utils.CacheLayerMixin)
        before = cache[2][0].clone()
        cache.crop(6)
        self.assertEqual(cache.get_seq_length(), 6)
        self.assertTrue(torch.equal(cache[2][0], before[:, :, :6]))
        cache.batch_repeat_interleave(2)
        self.assertEqual(cache[1][0].shape[0], 2)
        self.assertTrue(torch.equal(cache[2][0], before[:, :, :6].repeat_interleave(2, dim=0)))
        cache.reset()
        self.assertEqual(cache.get_seq_length(), 0)
        cache.close()

    def test_llama_refused_where_it_drops_custom_caches(self):
        config = LlamaConfig(num_hidden_layers=2)
        if LLAMA_DROPS_CACHES:
            with self.assertRaisesRegex(ValueError, "never reach kvtier"):
                KvtierCache(config, engine_options=dict(device="emulated"))
        else:
            KvtierCache(config, engine_options=dict(device="emulated")).close()
        # Given only num_layers there is no model type to check.
        KvtierCache(num_layers=2, engine_options=dict(device="emulated")).close()

    def test_sliding_window_layers_are_planned_as_dynamic_cache_builds_them(self):
        # A plain object stands for the config: only the attributes read are needed.
        config = types.SimpleNamespace(num_hidden_layers=2, sliding_window=64)
        if not LAYERED:
            with self.assertRaisesRegex(ValueError, "full-attention layers only"):
                KvtierCache(config)
            return
        self.assertEqual(layer_plan(config), (2, {0: 64, 1: 64}))
        mixed = types.SimpleNamespace(
            num_hidden_layers=4, sliding_window=8, layer_types=[
                "full_attention", "sliding_attention", "full_attention", "sliding_attention"])
        self.assertEqual(layer_plan(mixed), (4, {1: 8, 3: 8}))
        cache = KvtierCache(mixed, engine_options=dict(device="emulated"))
        self.assertEqual(cache.is_sliding, [False, True, False, True])
        self.assertEqual(cache.offloaded_layers(), [0, 2])
        self.assertEqual(cache.window_layers(), [1, 3])
        self.assertIsInstance(cache.layers[1],
                              transformers.cache_utils.DynamicSlidingWindowLayer)
        self.assertEqual(cache.get_max_length(), 8)
        self.assertEqual(cache.get_max_length(0), -1)
        cache.close()
        # A model of sliding layers only keeps everything as transformers does: no engine.
        only = KvtierCache(config, engine_options=dict(device="emulated"))
        self.assertEqual(only.offloaded_layers(), [])
        self.assertIsNone(only.engine)
        only.close()

    def test_unsupported_layer_types_are_refused_by_name(self):
        config = types.SimpleNamespace(
            num_hidden_layers=3,
            layer_types=["full_attention", "linear_attention", "full_attention"])
        with self.assertRaisesRegex(ValueError, "linear_attention"):
            KvtierCache(config)
        no_window = types.SimpleNamespace(
            num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"])
        if LAYERED:
            with self.assertRaisesRegex(ValueError, "no window"):
                KvtierCache(no_window)


def tiny_qwen2(window, seed=0):
    """Layers 0 and 2 full attention, 1 and 3 sliding-window attention of `window` tokens."""
    config = Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, use_sliding_window=True,
                         sliding_window=window, max_window_layers=1,
                         layer_types=["full_attention", "sliding_attention",
                                      "full_attention", "sliding_attention"])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval().to(device())
    return config, model


@unittest.skipUnless(HAVE_TRANSFORMERS, NO_TRANSFORMERS)
@unittest.skipUnless(LAYERED and HAVE_QWEN2, NO_SLIDING)
class SlidingWindowGenerateTest(unittest.TestCase):
    """A hybrid cache: kvtier holds the full layers, transformers' DynamicSlidingWindowLayer the
    sliding ones. The reference is generate() with no cache given, i.e. the DynamicCache that
    transformers builds from the config (sliding layers included)."""

    NEW_TOKENS = 40
    WINDOW = 8  # well under the prompt: the window slides in the prefill and in every step

    def generate(self, model, input_ids, cache=None):
        kwargs = {} if cache is None else {"past_key_values": cache}
        with torch.no_grad():
            return model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                  do_sample=False, max_new_tokens=self.NEW_TOKENS,
                                  min_new_tokens=self.NEW_TOKENS, pad_token_id=0,
                                  return_dict_in_generate=True, **kwargs)

    def test_greedy_tokens_equal_dynamic_cache_with_sliding_layers_through_disk(self):
        config, model = tiny_qwen2(self.WINDOW)
        prompt_len = 23
        g = torch.Generator().manual_seed(3)
        input_ids = torch.randint(3, 128, (1, prompt_len), generator=g).to(device())
        want = self.generate(model, input_ids)
        # The comparison is with a cache of the same shape: transformers' own has sliding
        # layers 1 and 3.
        self.assertEqual(list(want.past_key_values.is_sliding), [False, True, False, True])

        tmp = tempfile.mkdtemp(prefix="kvtier-hf-sw-")
        self.addCleanup(shutil.rmtree, tmp, True)
        block_bytes = 2 * 4 * 2 * 16 * 4  # K+V x 4 tokens x 2 kv heads x head_dim 16 x fp32
        cache = KvtierCache(config, resident_layers=1, block_tokens=4,
                            engine_options=small_tiers(tmp, block_bytes, host_blocks=8))
        self.addCleanup(cache.close)
        self.assertEqual(cache.is_sliding, [False, True, False, True])
        got = self.generate(model, input_ids, cache)
        self.assertEqual(got.sequences.tolist(), want.sequences.tolist())

        total = prompt_len + self.NEW_TOKENS - 1
        for layer in range(4):
            self.assertEqual(cache.get_seq_length(layer), total, layer)
        # Sliding layers keep window - 1 tokens, as DynamicSlidingWindowLayer does; full layers
        # keep everything (read back from kvtier here).
        self.assertEqual(cache.layers[1].keys.shape[-2], self.WINDOW - 1)
        self.assertEqual(cache[0][0].shape[-2], total)
        self.assertEqual(cache.offloaded_layers(), [0, 2])
        stats = cache.stats()
        assert_went_through_disk(self, stats)

    def test_crop_past_the_window_is_refused_as_dynamic_cache_refuses_it(self):
        config, model = tiny_qwen2(self.WINDOW)
        cache = KvtierCache(config, resident_layers=1, block_tokens=4,
                            engine_options=dict(device="emulated"))
        self.addCleanup(cache.close)
        ids = torch.randint(3, 128, (1, 12)).to(device())
        with torch.no_grad():
            model(ids, past_key_values=cache, use_cache=True)
        self.assertEqual(cache.get_seq_length(), 12)
        self.assertEqual(cache.get_mask_sizes(1, 0), (13, 0))
        # The sliding layer's own answer: window - 1 kept tokens plus the query, from 12 - 7.
        self.assertEqual(cache.get_mask_sizes(1, 1), (self.WINDOW, 12 - self.WINDOW + 1))
        before = cache[2][0].clone()
        with self.assertRaises(ValueError):
            cache.crop(6)
        self.assertTrue(torch.equal(cache[2][0], before))  # nothing changed


if __name__ == "__main__":
    unittest.main()
