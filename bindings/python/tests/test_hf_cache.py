"""kvtier.hf_cache.KvtierCache: greedy generate() with layers offloaded through kvtier gives
exactly the tokens of transformers' DynamicCache, on a small randomly initialised Llama.

Needs torch (the torch backend tests) and transformers (the generate tests); each class skips,
saying which import failed, where they are missing. The offload logic itself is tested with
NumPy alone in test_offload.py."""

import importlib.util
import shutil
import tempfile
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

    from kvtier.hf_cache import KvtierCache, supported_api

    # transformers 4.38 - 4.40's Llama swaps any cache but StaticCache for a new DynamicCache:
    # KvtierCache refuses it there (test_llama_refused_where_it_drops_custom_caches).
    _VERSION = tuple(int("".join(c for c in p if c.isdigit()) or 0)
                     for p in transformers.__version__.split(".")[:2])
    LLAMA_DROPS_CACHES = (4, 38) <= _VERSION < (4, 41)
else:
    LLAMA_DROPS_CACHES = False

NO_TORCH = "torch is not installed (Debian: python3-torch; or pip install torch)"
NO_TRANSFORMERS = ("torch and transformers are needed for the generate() tests "
                   "(pip install torch transformers)")
LLAMA_DROPS = "transformers 4.38 - 4.40: Llama drops any cache but StaticCache"


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
        self.assertGreater(stats["engine"]["tiers"]["disk"]["hits"], 0)

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
        self.assertEqual(cache.is_sliding, [False] * 4)
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

    def test_sliding_window_models_are_refused(self):
        config = LlamaConfig(num_hidden_layers=2)
        config.sliding_window = 64
        with self.assertRaisesRegex(ValueError, "full-attention layers only"):
            KvtierCache(config)


if __name__ == "__main__":
    unittest.main()
