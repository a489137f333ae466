// tests/examples/vllm_connector_test.cc — the vLLM-style connector (examples/vllm_connector):
// what a request loads into the engine's paged pool is, byte for byte, what an earlier request
// saved, in NHD and HND; prefix hits in the pool and in kvtier combine; partial blocks wait
// until full; blocks evicted after the match, or failing their disk checksum, become load
// errors and are recomputed and saved again; a finished or preempted
// request's pages are not handed back while a load still writes them; the pool is the
// engine's own memory, registered with kvtier while the connector lives; bad input is refused.
// Every behaviour is checked for each pool a vLLM deployment has: fp16 K/V pages (NHD and
// HND), fp8 pages (kv_cache_dtype fp8_e4m3), an MLA pool ([num_pages][block_size][latent],
// no K/V axis), and a tensor-parallel rank's pool (rank 1 of 2: the model's heads 2 and 3).

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/testing_hooks.h"
#include "gtest/gtest.h"
#include "io/io_engine.h"
#include "kvtier/engine.h"
#include "kvtier_connector.h"
#include "toy_engine.h"

namespace kvtier_vllm {
namespace {

using kvtier::PageLayout;

std::vector<int32_t> Tokens(int32_t seed, size_t n) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = (seed * 7919 + static_cast<int32_t>(i) * 31) % 32000;
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Request MakeRequest(const std::string& id, std::vector<int32_t> prompt) {
  Request r;
  r.request_id = id;
  r.prompt_token_ids = std::move(prompt);
  return r;
}

// The model shapes a pool can hold.
enum class Shape { kFp16, kFp8, kMla, kTpRank1 };
const char* ShapeName(Shape s) {
  switch (s) {
    case Shape::kFp16:
      return "fp16";
    case Shape::kFp8:
      return "fp8";
    case Shape::kMla:
      return "mla";
    case Shape::kTpRank1:
      return "tp_rank1";
  }
  return "invalid";
}

struct PoolCase {
  PageLayout layout;
  Shape shape;
};

class VllmConnectorTest : public ::testing::TestWithParam<PoolCase> {
 protected:
  void TearDown() override {
    engine_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // copy_gbps: the emulated link's bandwidth (0 = unthrottled). disk: a disk tier below a
  // host tier of 4 blocks, in a fresh directory (or the last one, to reopen it).
  void Open(double copy_gbps = 0, bool disk = false) {
    engine_.reset();
    kvtier::EngineOptions o;
    o.geometry = {/*num_layers=*/3, /*num_kv_heads=*/2, /*head_dim=*/32, kvtier::DType::kFloat16,
                  /*block_tokens=*/16};
    switch (GetParam().shape) {
      case Shape::kFp16:
        break;
      case Shape::kFp8:
        o.geometry.dtype = kvtier::DType::kFp8E4m3;
        break;
      case Shape::kMla:  // a DeepSeek-like latent, scaled down: 64 + 32 rope
        o.geometry = {3, 1, 96, kvtier::DType::kBFloat16, 16};
        o.geometry.kind = kvtier::KvKind::kLatent;
        o.geometry.rope_dim = 32;
        break;
      case Shape::kTpRank1:  // a 4-head model at TP = 2: this rank holds heads 2 and 3
        o.geometry =
            *kvtier::Geometry{3, 4, 32, kvtier::DType::kFloat16, 16}.ForTensorParallelRank(1, 2);
        o.tensor_parallel = {1, 2, 0};
        break;
    }
    o.model_fingerprint = "vllm-connector-test";
    o.device.choice = kvtier::DeviceChoice::kEmulated;
    o.device.emulated_copy_gbps = copy_gbps;
    o.read_rate_priors = read_rate_priors_;
    o.host_tier_bytes = (disk ? 4 : 64) * o.geometry.block_bytes();
    if (disk) {
      if (dir_.empty()) {
        char tmpl[] = "/tmp/kvtier-vllm-connector-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
      }
      o.disk.directory = dir_ + "/cache";
      o.disk.region_bytes = 64 * 1024;
      o.disk.capacity_bytes = 16 * o.disk.region_bytes;
      o.disk.admit_min_seen = 1;  // every host eviction reaches the disk
    }
    absl::StatusOr<std::unique_ptr<kvtier::Engine>> e = kvtier::Engine::Open(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    g_ = engine_->options().geometry;
  }

  // A toy engine of 8 pages in the case's layout, as Toy(8, false) makes.
  ToyEngineOptions ToyOptions() const {
    ToyEngineOptions o;
    o.layout = GetParam().layout;
    o.num_pages = 8;
    o.max_tokens_per_step = 64;
    return o;
  }

  std::unique_ptr<ToyEngine> Toy(uint32_t pages, bool prefix_caching) {
    ToyEngineOptions o;
    o.layout = GetParam().layout;
    o.num_pages = pages;
    o.max_tokens_per_step = 64;
    o.prefix_caching = prefix_caching;
    absl::StatusOr<std::unique_ptr<ToyEngine>> t = ToyEngine::Create(engine_.get(), o);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }

  // Every layer of every page of `pages`, read from the toy's pool.
  std::vector<std::vector<uint8_t>> Snapshot(ToyEngine& toy, const std::vector<uint32_t>& pages) {
    std::vector<std::vector<uint8_t>> out;
    for (uint32_t p : pages) {
      for (uint32_t l = 0; l < g_.num_layers; ++l) {
        absl::StatusOr<std::vector<uint8_t>> bytes = toy.ReadPage(p, l);
        EXPECT_TRUE(bytes.ok()) << bytes.status();
        out.push_back(bytes.ok() ? *bytes : std::vector<uint8_t>{});
      }
    }
    return out;
  }

  // Expects pages[b] (b < blocks) to hold the model's KV of block b of `tokens`, every layer.
  void ExpectModelKv(ToyEngine& toy, const std::vector<uint32_t>& pages,
                     const std::vector<int32_t>& tokens, size_t blocks) {
    const std::vector<uint64_t> hashes = PrefixHashes(tokens, "");
    for (size_t b = 0; b < blocks; ++b) {
      for (uint32_t l = 0; l < g_.num_layers; ++l) {
        absl::StatusOr<std::vector<uint8_t>> bytes = toy.ReadPage(pages[b], l);
        ASSERT_TRUE(bytes.ok()) << bytes.status();
        EXPECT_EQ(*bytes, ExpectedPage(g_, GetParam().layout, hashes, b, l))
            << "block " << b << " page " << pages[b] << " layer " << l;
      }
    }
  }

  // Stores `prompt`'s full blocks in kvtier through a toy engine of its own.
  void StoreThroughAnotherEngine(const std::vector<int32_t>& prompt) {
    std::unique_ptr<ToyEngine> other = Toy(16, false);
    ASSERT_NE(other, nullptr);
    ASSERT_TRUE(other->AddRequest(MakeRequest("producer", prompt), 1).ok());
    ASSERT_TRUE(other->RunToCompletion().ok());
  }

  std::string dir_;
  std::unique_ptr<kvtier::Engine> engine_;
  kvtier::Geometry g_;
  kvtier::TierArray<kvtier::EngineOptions::ReadRate> read_rate_priors_;
};

TEST_P(VllmConnectorTest, ReloadedPagesEqualTheSavedPagesByteForByte) {
  Open();
  std::unique_ptr<ToyEngine> toy = Toy(8, /*prefix_caching=*/false);
  ASSERT_NE(toy, nullptr);
  std::map<std::string, std::vector<uint32_t>> freed_pages;
  std::map<std::string, std::vector<std::vector<uint8_t>>> freed_bytes;
  toy->set_on_free([&](const std::string& id, const std::vector<uint32_t>& pages) {
    freed_pages[id] = pages;
    freed_bytes[id] = Snapshot(*toy, pages);
  });

  // 88 tokens: 5 full blocks and a partial one, which is not saved.
  const std::vector<int32_t> first = Concat(Tokens(1, 48), Tokens(2, 40));
  ASSERT_TRUE(toy->AddRequest(MakeRequest("first", first), 1).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  EXPECT_EQ(engine_->Match("default", first)->matched_tokens, 80u);
  // Another request overwrites every page of the pool after the saves were waited for.
  ASSERT_TRUE(toy->AddRequest(MakeRequest("filler", Tokens(9, 128)), 1).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  ASSERT_EQ(freed_pages["filler"].size(), 8u);

  // Shares its first 3 blocks with `first`: they come back from kvtier.
  const std::vector<int32_t> second = Concat(Tokens(1, 48), Tokens(3, 20));
  ASSERT_TRUE(toy->AddRequest(MakeRequest("second", second), 1).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  const RequestReport* rep = toy->report("second");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->local_hit_tokens, 0u);
  EXPECT_EQ(rep->external_tokens, 48u);
  EXPECT_EQ(rep->computed_tokens, 20u);
  EXPECT_EQ(toy->connector().stats().blocks_loaded, 3u);

  const std::vector<std::vector<uint8_t>>& saved = freed_bytes["first"];
  const std::vector<std::vector<uint8_t>>& reloaded = freed_bytes["second"];
  ASSERT_EQ(saved.size(), 6u * g_.num_layers);
  ASSERT_EQ(reloaded.size(), 5u * g_.num_layers);
  const std::vector<uint64_t> hashes = PrefixHashes(first, "");
  for (size_t b = 0; b < 3; ++b) {
    // The pages differ between the two requests; their bytes do not.
    for (uint32_t l = 0; l < g_.num_layers; ++l) {
      const size_t i = b * g_.num_layers + l;
      EXPECT_EQ(reloaded[i], saved[i]) << "block " << b << " layer " << l;
      EXPECT_EQ(reloaded[i], ExpectedPage(g_, GetParam().layout, hashes, b, l))
          << "block " << b << " layer " << l;
    }
  }
  // Block 3 differs: `second` computed it from its own tokens.
  EXPECT_NE(reloaded[3 * g_.num_layers], saved[3 * g_.num_layers]);
}

TEST_P(VllmConnectorTest, ThePoolIsTheEnginesOwnMemoryRegisteredWhileTheConnectorLives) {
  Open();
  const size_t layer_bytes = size_t{g_.parts()} * 8 * g_.part_bytes();
  std::vector<kvtier::DevicePtr> layers;
  {
    std::unique_ptr<ToyEngine> toy = Toy(8, /*prefix_caching=*/false);
    ASSERT_NE(toy, nullptr);
    layers = toy->pool().layers;
    for (kvtier::DevicePtr layer : layers) {
      // Not kvtier's memory (kvtier never frees what it did not allocate) ...
      absl::Status s = engine_->device().Free(layer);
      EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
      EXPECT_NE(s.message().find("registered device memory"), std::string::npos) << s;
      // ... but registered, so kvtier's transfers accept it.
      EXPECT_TRUE(engine_->device().Contains(layer, layer_bytes));
    }
    // Registered by the connector, which still needs it.
    EXPECT_TRUE(absl::IsNotFound(engine_->UnregisterDeviceMemory(layers[0] + 256)));
    const std::vector<int32_t> prompt = Tokens(4, 64);
    ASSERT_TRUE(toy->AddRequest(MakeRequest("a", prompt), 1).ok());
    ASSERT_TRUE(toy->RunToCompletion().ok());
    EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 64u);
  }
  // The connector unregistered the pool (after its transfers) before the engine freed it.
  for (kvtier::DevicePtr layer : layers) {
    EXPECT_FALSE(engine_->device().Contains(layer, layer_bytes));
  }
}

TEST_P(VllmConnectorTest, APartialBlockIsSavedByTheStepThatFillsIt) {
  Open();
  std::unique_ptr<ToyEngine> toy = Toy(8, false);
  ASSERT_NE(toy, nullptr);
  const std::vector<int32_t> prompt = Tokens(4, 40);  // 2 full blocks + 8 tokens
  ASSERT_TRUE(toy->AddRequest(MakeRequest("r", prompt), 1).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  EXPECT_EQ(engine_->Stats().stored_blocks, 2u);

  // Decoding 10 tokens fills block 2 (tokens 32..47) at the 8th: it is saved then.
  ASSERT_TRUE(toy->AddRequest(MakeRequest("decode", Tokens(5, 40)), 10).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  const RequestReport* rep = toy->report("decode");
  ASSERT_NE(rep, nullptr);
  ASSERT_EQ(rep->output.size(), 10u);
  const std::vector<int32_t> all = Concat(Tokens(5, 40), rep->output);
  EXPECT_EQ(engine_->Match("default", all)->matched_tokens, 48u);
  EXPECT_EQ(engine_->Stats().stored_blocks, 2u + 3u);
}

TEST_P(VllmConnectorTest, APrefixPartlyInThePoolLoadsOnlyTheBlocksBeyondIt) {
  Open();
  const std::vector<int32_t> prompt = Concat(Tokens(6, 32), Tokens(7, 64));  // 6 blocks
  StoreThroughAnotherEngine(prompt);
  std::unique_ptr<ToyEngine> toy = Toy(12, /*prefix_caching=*/true);
  ASSERT_NE(toy, nullptr);
  // Leaves the first 2 blocks of `prompt` in this engine's own prefix cache.
  ASSERT_TRUE(toy->AddRequest(MakeRequest("short", Concat(Tokens(6, 32), Tokens(8, 5))), 1).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  const uint64_t loaded_before = toy->connector().stats().blocks_loaded;

  std::vector<uint32_t> pages;
  toy->set_on_free([&](const std::string& id, const std::vector<uint32_t>& p) {
    if (id == "full") pages = p;
  });
  ASSERT_TRUE(toy->AddRequest(MakeRequest("full", prompt), 1).ok());
  ASSERT_TRUE(toy->RunToCompletion().ok());
  const RequestReport* rep = toy->report("full");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->local_hit_tokens, 32u);
  // All 96 tokens are cached; the last one is computed anyway, for its logits.
  EXPECT_EQ(rep->external_tokens, 96u - 1 - 32);
  EXPECT_EQ(rep->computed_tokens, 1u);
  EXPECT_EQ(toy->connector().stats().blocks_loaded - loaded_before, 4u);
  ASSERT_EQ(pages.size(), 6u);
  ExpectModelKv(*toy, pages, prompt, 6);
}

TEST_P(VllmConnectorTest, BlocksEvictedAfterTheMatchAreLoadErrorsAndSavedAgain) {
  Open();
  const std::vector<int32_t> prompt = Tokens(10, 80);  // 5 blocks
  StoreThroughAnotherEngine(prompt);
  std::unique_ptr<ToyEngine> toy = Toy(8, false);
  ASSERT_NE(toy, nullptr);
  KvtierConnector& c = toy->connector();
  const Request req = MakeRequest("late", prompt);
  const std::vector<uint32_t> pages = {7, 2, 5, 0, 3};

  absl::StatusOr<size_t> n = c.GetNumNewMatchedTokens(req, 0);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 79u);
  ASSERT_TRUE(c.UpdateStateAfterAlloc(req, pages, *n).ok());
  SchedulerOutput out;
  out.scheduled.push_back({"late", {}, pages, 79, 1});
  absl::StatusOr<ConnectorMetadata> meta = c.BuildConnectorMeta(out);
  ASSERT_TRUE(meta.ok()) << meta.status();
  // Blocks 3 and 4 leave kvtier between the scheduler's match and the worker's load.
  const kvtier::MatchResult m = *engine_->Match("default", prompt);
  ASSERT_TRUE(engine_->Erase("default", {m.keys[3], m.keys[4]}).ok());

  c.BindConnectorMetadata(*meta);
  ASSERT_TRUE(c.StartLoadKv().ok());
  for (uint32_t l = 0; l < g_.num_layers; ++l) {
    ASSERT_TRUE(c.WaitForLayerLoad(l).ok());
    ASSERT_TRUE(c.SaveKvLayer(l).ok());
  }
  ASSERT_TRUE(c.WaitForSave().ok());
  EXPECT_EQ(c.GetBlockIdsWithLoadErrors(), (std::set<uint32_t>{0, 3}));
  c.ClearConnectorMetadata();
  ExpectModelKv(*toy, pages, prompt, 3);  // what was still cached arrived

  // The engine recomputes from block 3; the connector saves blocks 3 and 4 again.
  out.scheduled = {{"late", {}, pages, 48, 32}};
  meta = c.BuildConnectorMeta(out);
  ASSERT_TRUE(meta.ok()) << meta.status();
  ASSERT_EQ(meta->requests.size(), 1u);
  EXPECT_FALSE(meta->requests[0].load.has_value());
  ASSERT_TRUE(meta->requests[0].save.has_value());
  EXPECT_EQ(meta->requests[0].save->first_block, 3u);
  EXPECT_EQ(meta->requests[0].save->block_ids, (std::vector<uint32_t>{0, 3}));
  EXPECT_EQ(c.GetBlockIdsWithLoadErrors(), std::set<uint32_t>{});
  absl::StatusOr<bool> delay = c.RequestFinished(req, pages);
  ASSERT_TRUE(delay.ok()) << delay.status();
  EXPECT_FALSE(*delay);
}

TEST_P(VllmConnectorTest, ABlockThatFailsItsChecksumIsALoadErrorAndIsRecomputed) {
  Open(0, /*disk=*/true);
  const std::vector<int32_t> prompt = Tokens(14, 40);  // 2 full blocks + 8 tokens
  StoreThroughAnotherEngine(prompt);
  StoreThroughAnotherEngine(Tokens(15, 64));  // 4 newer blocks push those 2 to disk
  ASSERT_TRUE(engine_->Flush().ok());
  ASSERT_EQ(engine_->Match("default", prompt)->tiers,
            std::vector<kvtier::TierKind>(2, kvtier::TierKind::kDisk));
  engine_.reset();
  {
    const int fd = ::open((dir_ + "/cache/data.kvt").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "XXXX", 4, 4096 + 64), 4);  // the first record's payload
    ::close(fd);
  }
  Open(0, /*disk=*/true);
  ASSERT_EQ(engine_->Match("default", prompt)->matched_tokens, 32u);

  std::unique_ptr<ToyEngine> toy = Toy(8, false);
  ASSERT_NE(toy, nullptr);
  std::vector<uint32_t> pages;
  toy->set_on_free([&](const std::string&, const std::vector<uint32_t>& p) { pages = p; });
  ASSERT_TRUE(toy->AddRequest(MakeRequest("r", prompt), 1).ok());
  // The toy engine fails the step with DataLoss if attention ever reads a wrong block.
  ASSERT_TRUE(toy->RunToCompletion().ok());
  const RequestReport* rep = toy->report("r");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->external_tokens, 32u);
  // Only the block that failed its checksum is a load error (TransferHandle::FailedBlocks);
  // the engine recomputes from it, so both pages were recomputed with the rest of the prompt.
  EXPECT_EQ(rep->load_error_blocks, 1u);
  EXPECT_EQ(rep->computed_tokens, 8u + 40u);
  EXPECT_EQ(toy->connector().stats().load_error_blocks, 1u);
  ASSERT_EQ(pages.size(), 3u);
  ExpectModelKv(*toy, pages, prompt, 2);
  // ... and saved again: the prompt is whole in kvtier once more.
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 32u);
  EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(kvtier::TierKind::kDisk)].checksum_failures,
            1u);
  std::unique_ptr<ToyEngine> again = Toy(8, false);
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->AddRequest(MakeRequest("r2", prompt), 1).ok());
  ASSERT_TRUE(again->RunToCompletion().ok());
  EXPECT_EQ(again->report("r2")->external_tokens, 32u);
  EXPECT_EQ(again->report("r2")->load_error_blocks, 0u);
}

// ------------------------------------------------------------------ load plans and deadlines

// With a compute model the connector offers only the prefix worth loading: every hit when the
// host tier is far faster than the model's prefill, nothing when the disk (as the engine
// measures it, here its stated prior) is slower than recomputing.
TEST_P(VllmConnectorTest, PlansOfferOnlyThePrefixFasterToLoadThanToRecompute) {
  const std::vector<int32_t> prompt = Tokens(30, 40);  // 2 full blocks + 8 tokens
  ConnectorOptions co;
  co.compute.prefill_tokens_per_s = 2000;  // a slow model: loading from RAM wins
  {
    Open();
    StoreThroughAnotherEngine(prompt);
    absl::StatusOr<std::unique_ptr<ToyEngine>> toy =
        ToyEngine::Create(engine_.get(), ToyOptions(), co);
    ASSERT_TRUE(toy.ok()) << toy.status();
    absl::StatusOr<size_t> n =
        (*toy)->connector().GetNumNewMatchedTokens(MakeRequest("host", prompt), 0);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 32u);
    EXPECT_EQ((*toy)->connector().stats().planned_tokens, 32u);
    EXPECT_EQ((*toy)->connector().stats().recompute_chosen_tokens, 0u);
  }
  // A disk that reads 10 KB/s with 50 ms per read, under a model that prefills 1M tokens/s.
  read_rate_priors_[kvtier::TierKind::kDisk] = {1e4, absl::Milliseconds(50)};
  co.compute.prefill_tokens_per_s = 1e6;
  Open(0, /*disk=*/true);
  StoreThroughAnotherEngine(prompt);
  StoreThroughAnotherEngine(Tokens(31, 64));  // 4 newer blocks push those 2 to disk
  ASSERT_TRUE(engine_->Flush().ok());
  ASSERT_EQ(engine_->Match("default", prompt)->tiers,
            std::vector<kvtier::TierKind>(2, kvtier::TierKind::kDisk));
  absl::StatusOr<std::unique_ptr<ToyEngine>> toy =
      ToyEngine::Create(engine_.get(), ToyOptions(), co);
  ASSERT_TRUE(toy.ok()) << toy.status();
  ASSERT_TRUE((*toy)->AddRequest(MakeRequest("disk", prompt), 1).ok());
  ASSERT_TRUE((*toy)->RunToCompletion().ok());
  const RequestReport* rep = (*toy)->report("disk");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->external_tokens, 0u) << "a plan loaded from a disk slower than the model";
  EXPECT_EQ(rep->computed_tokens, 40u);
  EXPECT_EQ((*toy)->connector().stats().recompute_chosen_tokens, 32u);
  EXPECT_EQ(engine_->Stats().tiers[static_cast<int>(kvtier::TierKind::kDisk)].bytes_out, 0u);
}

// A planned load whose disk reads stall past its deadline does not wait for them: the late
// blocks become load errors, the engine recomputes them (the pages end up holding the model's
// KV either way) and saves them again.
TEST_P(VllmConnectorTest, ADiskStallPastTheDeadlineTurnsLateBlocksIntoLoadErrors) {
  const std::vector<int32_t> prompt = Tokens(32, 40);  // 2 full blocks + 8 tokens
  Open(0, /*disk=*/true);
  StoreThroughAnotherEngine(prompt);
  StoreThroughAnotherEngine(Tokens(33, 64));  // 4 newer blocks push those 2 to disk
  ASSERT_TRUE(engine_->Flush().ok());
  ASSERT_EQ(engine_->Match("default", prompt)->tiers,
            std::vector<kvtier::TierKind>(2, kvtier::TierKind::kDisk));
  ConnectorOptions co;
  co.compute.prefill_tokens_per_s = 100;  // slow enough that the plan loads both blocks
  co.min_deadline = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<ToyEngine>> toy =
      ToyEngine::Create(engine_.get(), ToyOptions(), co);
  ASSERT_TRUE(toy.ok()) << toy.status();
  // Every disk operation from now on stalls for 2 s: both reads (and the writes of the blocks
  // their host slots evict, which nothing here waits for).
  ASSERT_TRUE(
      kvtier::InjectDiskFault(*engine_, {kvtier::FaultSpec::Kind::kDelay, 0, 0, absl::Seconds(2)})
          .ok());
  std::vector<uint32_t> pages;
  (*toy)->set_on_free([&](const std::string&, const std::vector<uint32_t>& p) { pages = p; });
  ASSERT_TRUE((*toy)->AddRequest(MakeRequest("r", prompt), 1).ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE((*toy)->RunToCompletion().ok());  // fails with DataLoss on any wrong KV
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1500)) << "the load waited for the stall";
  const RequestReport* rep = (*toy)->report("r");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->external_tokens, 32u);
  EXPECT_EQ(rep->load_error_blocks, 2u);
  EXPECT_EQ(rep->computed_tokens, 8u + 40u);  // the first step's, then the whole prompt again
  EXPECT_EQ((*toy)->connector().stats().deadline_misses, 2u);
  EXPECT_EQ(engine_->Stats().blocks_abandoned, 2u);
  ASSERT_EQ(pages.size(), 3u);
  ExpectModelKv(**toy, pages, prompt, 2);
  ASSERT_TRUE(kvtier::ClearDiskFaults(*engine_).ok());
  ASSERT_TRUE(engine_->Flush().ok());
  // The abandoned blocks are still cached (on disk), and load exact once the disk is well.
  EXPECT_EQ(engine_->Match("default", prompt)->matched_tokens, 32u);
  std::unique_ptr<ToyEngine> again = Toy(8, false);
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->AddRequest(MakeRequest("r2", prompt), 1).ok());
  ASSERT_TRUE(again->RunToCompletion().ok());
  EXPECT_EQ(again->report("r2")->external_tokens, 32u);
  EXPECT_EQ(again->report("r2")->load_error_blocks, 0u);
}

// Starts a 4-block load for request `id` into `pages` through the connector, on a slow link.
void StartLoad(KvtierConnector& c, const Request& req, const std::vector<uint32_t>& pages) {
  absl::StatusOr<size_t> n = c.GetNumNewMatchedTokens(req, 0);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 64u);
  ASSERT_TRUE(c.UpdateStateAfterAlloc(req, pages, *n).ok());
  SchedulerOutput out;
  out.scheduled.push_back({req.request_id, {}, pages, 64, 1});
  absl::StatusOr<ConnectorMetadata> meta = c.BuildConnectorMeta(out);
  ASSERT_TRUE(meta.ok()) << meta.status();
  c.BindConnectorMetadata(*meta);
  ASSERT_TRUE(c.StartLoadKv().ok());
}

TEST_P(VllmConnectorTest, AFinishedRequestsPagesAreFreedOnlyOnceItsLoadLanded) {
  Open(/*copy_gbps=*/0.0002);  // 0.2 MB/s: 4 blocks of 12 KiB take about 250 ms
  const std::vector<int32_t> prompt = Tokens(11, 65);
  StoreThroughAnotherEngine(prompt);
  std::unique_ptr<ToyEngine> toy = Toy(8, false);
  ASSERT_NE(toy, nullptr);
  KvtierConnector& c = toy->connector();
  const Request req = MakeRequest("aborted", prompt);
  const std::vector<uint32_t> pages = {4, 5, 6, 7, 0};
  StartLoad(c, req, pages);

  // The client goes away while the load is in flight: the engine must keep the pages.
  absl::StatusOr<bool> delay = c.RequestFinished(req, pages);
  ASSERT_TRUE(delay.ok()) << delay.status();
  EXPECT_TRUE(*delay);
  c.ClearConnectorMetadata();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  FinishedRequests done;
  while (!done.finished_recving.contains("aborted")) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    absl::StatusOr<FinishedRequests> f = c.GetFinished();
    ASSERT_TRUE(f.ok()) << f.status();
    done = *f;
  }
  EXPECT_FALSE(done.finished_sending.contains("aborted"));
  // Reported finished means the pages hold all of it: nothing writes them any more.
  ExpectModelKv(*toy, pages, prompt, 4);
  EXPECT_EQ(c.stats().delayed_frees, 1u);
  // Reported once.
  absl::StatusOr<FinishedRequests> again = c.GetFinished();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->finished_recving.empty());
}

TEST_P(VllmConnectorTest, HandlePreemptionsWaitsForLoadsIntoThePreemptedPages) {
  Open(/*copy_gbps=*/0.0002);
  const std::vector<int32_t> prompt = Tokens(12, 65);
  StoreThroughAnotherEngine(prompt);
  std::unique_ptr<ToyEngine> toy = Toy(8, false);
  ASSERT_NE(toy, nullptr);
  KvtierConnector& c = toy->connector();
  const Request req = MakeRequest("preempted", prompt);
  const std::vector<uint32_t> pages = {1, 3, 5, 7, 2};
  StartLoad(c, req, pages);
  c.ClearConnectorMetadata();  // the step ends with the load still landing

  SchedulerOutput out;
  out.preempted_req_ids = {"preempted"};
  absl::StatusOr<ConnectorMetadata> meta = c.BuildConnectorMeta(out);
  ASSERT_TRUE(meta.ok()) << meta.status();
  ASSERT_EQ(meta->preempted_req_ids, std::vector<std::string>{"preempted"});
  c.BindConnectorMetadata(*meta);
  ASSERT_TRUE(c.HandlePreemptions(*meta).ok());
  // Once it returns the engine may reuse the pages: the load is complete, not half-written.
  ExpectModelKv(*toy, pages, prompt, 4);
  c.ClearConnectorMetadata();
  // The preempted request is forgotten: it is matched afresh when it resumes.
  EXPECT_TRUE(absl::IsNotFound(c.RequestFinished(req, pages).status()));
  absl::StatusOr<size_t> n = c.GetNumNewMatchedTokens(req, 0);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 64u);
}

std::string PoolCaseName(const ::testing::TestParamInfo<PoolCase>& info) {
  return std::string(kvtier::PageLayoutName(info.param.layout)) + "_" + ShapeName(info.param.shape);
}

INSTANTIATE_TEST_SUITE_P(Pools, VllmConnectorTest,
                         ::testing::Values(PoolCase{PageLayout::kNhd, Shape::kFp16},
                                           PoolCase{PageLayout::kHnd, Shape::kFp16},
                                           PoolCase{PageLayout::kNhd, Shape::kFp8},
                                           PoolCase{PageLayout::kHnd, Shape::kFp8},
                                           PoolCase{PageLayout::kNhd, Shape::kMla},
                                           PoolCase{PageLayout::kNhd, Shape::kTpRank1},
                                           PoolCase{PageLayout::kHnd, Shape::kTpRank1}),
                         PoolCaseName);

// ---- Bad input ----

class VllmConnectorBadInputTest : public VllmConnectorTest {};

TEST_P(VllmConnectorBadInputTest, SchedulerSideCallsNameWhatIsWrong) {
  Open();
  const std::vector<int32_t> prompt = Tokens(13, 64);
  StoreThroughAnotherEngine(prompt);
  std::unique_ptr<ToyEngine> toy = Toy(8, false);
  ASSERT_NE(toy, nullptr);
  KvtierConnector& c = toy->connector();
  const Request req = MakeRequest("req", prompt);

  absl::Status s = c.UpdateStateAfterAlloc(MakeRequest("nobody", prompt), {0, 1, 2, 3}, 0);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("unknown request id 'nobody'"), std::string::npos) << s;

  absl::StatusOr<size_t> n = c.GetNumNewMatchedTokens(req, 5);
  EXPECT_TRUE(absl::IsInvalidArgument(n.status())) << n.status();
  EXPECT_NE(n.status().message().find("multiple of the block size"), std::string::npos);

  n = c.GetNumNewMatchedTokens(req, 0);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 63u);
  s = c.UpdateStateAfterAlloc(req, {0, 1}, *n);  // 4 blocks to load into 2 pages
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("page table too short: 2 pages"), std::string::npos) << s;
  s = c.UpdateStateAfterAlloc(req, {0, 1, 2, 3}, 17);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  ASSERT_TRUE(c.UpdateStateAfterAlloc(req, {0, 1, 2, 3}, *n).ok());

  // All or nothing: a batch naming an unknown request changes nothing, not even for `req`.
  SchedulerOutput out;
  out.scheduled.push_back({"req", {}, {0, 1, 2, 3}, 63, 1});
  out.scheduled.push_back({"ghost", {}, {4}, 0, 16});
  absl::StatusOr<ConnectorMetadata> meta = c.BuildConnectorMeta(out);
  EXPECT_TRUE(absl::IsNotFound(meta.status())) << meta.status();
  EXPECT_NE(meta.status().message().find("'ghost'"), std::string::npos) << meta.status();
  out.scheduled = {{"req", {}, {0, 1, 2}, 63, 1}};
  meta = c.BuildConnectorMeta(out);
  EXPECT_TRUE(absl::IsInvalidArgument(meta.status())) << meta.status();
  EXPECT_NE(meta.status().message().find("page table too short"), std::string::npos);
  out.scheduled = {{"req", {}, {0, 1, 2, 3}, 63, 2}};  // one token more than the prompt has
  meta = c.BuildConnectorMeta(out);
  EXPECT_TRUE(absl::IsInvalidArgument(meta.status())) << meta.status();
  out.scheduled = {{"req", {}, {0, 1, 2, 3}, 63, 1}};
  meta = c.BuildConnectorMeta(out);
  ASSERT_TRUE(meta.ok()) << meta.status();
  ASSERT_EQ(meta->requests.size(), 1u);
  ASSERT_TRUE(meta->requests[0].load.has_value());
  EXPECT_EQ(meta->requests[0].load->keys.size(), 4u);

  absl::StatusOr<bool> fin = c.RequestFinished(MakeRequest("nobody", prompt), {});
  EXPECT_TRUE(absl::IsNotFound(fin.status())) << fin.status();
  fin = c.RequestFinished(req, {0, 1, 2, 3});
  ASSERT_TRUE(fin.ok()) << fin.status();
  EXPECT_FALSE(*fin);  // nothing was started
  EXPECT_TRUE(absl::IsNotFound(c.RequestFinished(req, {}).status()));  // only once
}

TEST_P(VllmConnectorBadInputTest, WorkerSideCallsRefuseWhatIsOutOfRangeOrOrder) {
  Open();
  std::unique_ptr<ToyEngine> toy = Toy(4, false);
  ASSERT_NE(toy, nullptr);
  KvtierConnector& c = toy->connector();
  EXPECT_TRUE(absl::IsFailedPrecondition(c.StartLoadKv()));  // no metadata bound
  c.BindConnectorMetadata({});
  EXPECT_TRUE(c.StartLoadKv().ok());
  absl::Status s = c.WaitForLayerLoad(g_.num_layers);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s;
  EXPECT_TRUE(absl::IsInvalidArgument(c.SaveKvLayer(g_.num_layers)));
  s = c.SaveKvLayer(1);  // layer 0 first
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find("out of order"), std::string::npos) << s;
  EXPECT_TRUE(c.SaveKvLayer(0).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(c.SaveKvLayer(0)));
  c.ClearConnectorMetadata();

  kvtier::KvBuffers::PagedPool pool = toy->pool();
  pool.layers.pop_back();
  absl::StatusOr<std::unique_ptr<kvtier::Stream>> stream = engine_->device().CreateStream();
  ASSERT_TRUE(stream.ok());
  s = c.RegisterKvCaches(pool, stream->get());
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("layer tensors"), std::string::npos) << s;
  pool = toy->pool();
  pool.num_pages *= 2;  // larger than the tensors
  EXPECT_TRUE(absl::IsInvalidArgument(c.RegisterKvCaches(pool, stream->get())));
  EXPECT_TRUE(absl::IsInvalidArgument(c.RegisterKvCaches(toy->pool(), nullptr)));
  // A pool kvtier cannot register (its last layer overlaps the registered pool without lying
  // inside it) leaves nothing registered: the first layers' registrations are undone.
  const size_t layer_bytes = size_t{g_.parts()} * toy->pool().num_pages * g_.part_bytes();
  std::vector<std::vector<uint8_t>> fresh(g_.num_layers - 1,
                                          std::vector<uint8_t>(layer_bytes + 256));
  pool = toy->pool();
  for (uint32_t l = 0; l + 1 < g_.num_layers; ++l) {
    pool.layers[l] = kvtier::DevicePtr::FromAddress(reinterpret_cast<uintptr_t>(fresh[l].data()));
  }
  pool.layers.back() = toy->pool().layers[0] + g_.part_bytes();
  s = c.RegisterKvCaches(pool, stream->get());
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("overlaps"), std::string::npos) << s;
  for (uint32_t l = 0; l + 1 < g_.num_layers; ++l) {
    EXPECT_FALSE(engine_->device().Contains(pool.layers[l], 1)) << "layer " << l;
  }

  absl::StatusOr<std::unique_ptr<KvtierConnector>> other =
      KvtierConnector::Create(engine_.get(), ConnectorOptions{.ns = "tenant-x"});
  EXPECT_TRUE(absl::IsNotFound(other.status())) << other.status();
  EXPECT_TRUE(toy->AddRequest(MakeRequest("a", Tokens(1, 4)), 1).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(toy->AddRequest(MakeRequest("a", Tokens(1, 4)), 1)));
}

INSTANTIATE_TEST_SUITE_P(Pools, VllmConnectorBadInputTest,
                         ::testing::Values(PoolCase{PageLayout::kNhd, Shape::kFp16},
                                           PoolCase{PageLayout::kNhd, Shape::kMla}),
                         PoolCaseName);

}  // namespace
}  // namespace kvtier_vllm
