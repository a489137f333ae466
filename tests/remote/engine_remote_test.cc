// The remote tier through the public Engine API, against a real Redis Cluster on loopback
// (one shared cluster for this binary: LocalCluster::Shared()). Every load is checked byte by
// byte: a block is the key's content, or zeros with an error; never anything else.

#include <sys/uio.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "common/mutex.h"
#include "kvtier/engine.h"
#include "remote/cluster_client.h"
#include "remote/remote_record.h"
#include "tests/remote/remote_engine_test_util.h"

namespace kvtier::testing {
namespace {

using remote::testing::LocalCluster;

// A namespace name no other test uses (the cluster is shared by the whole binary).
std::string UniqueNs(absl::string_view base) {
  static int n = 0;
  return absl::StrCat(base, "-", getpid(), "-", ++n);
}

std::unique_ptr<Engine> OpenOrDie(const EngineOptions& o) {
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

std::unique_ptr<remote::ClusterClient> Client(const LocalCluster& cluster) {
  remote::ClusterOptions o;
  o.seeds = cluster.seeds();
  if (cluster.tls()) {
    o.tls.enabled = true;
    o.tls.ca_file = cluster.ca_file();
  }
  absl::StatusOr<std::unique_ptr<remote::ClusterClient>> c = remote::ClusterClient::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

std::string KeyOf(const Engine& e, absl::string_view ns, const BlockKey& key) {
  const EngineOptions& o = e.options();
  return remote::RemoteKey(ns, remote::RemoteModelId(o.model_fingerprint, o.geometry.Fingerprint()),
                           key);
}

// The raw value stored under `key` (empty when absent).
std::string GetValue(remote::ClusterClient& c, const std::string& key) {
  std::string buf(4 << 20, '\0');
  Notification done;
  absl::StatusOr<size_t> got;
  c.Get(key, {iovec{buf.data(), buf.size()}}, [&](absl::StatusOr<size_t> n) {
    got = std::move(n);
    done.Notify();
  });
  done.WaitForNotification();
  if (!got.ok()) return "";
  buf.resize(*got);
  return buf;
}

absl::Status SetValue(remote::ClusterClient& c, const std::string& key, std::string value) {
  Notification done;
  absl::Status st;
  c.Set(key, {iovec{value.data(), value.size()}}, 0, [&](absl::Status s) {
    st = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  return st;
}

TEST(EngineRemoteTest, ABlockStoredOnOneEngineIsAHitOnAnother) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("share");
  auto a = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t> tokens = Prompt(4, 1);
  const std::vector<BlockKey> keys = StoreBlocks(*a, ns, tokens);
  ASSERT_TRUE(a->Flush().ok());  // the write-through writes have landed
  EXPECT_EQ(a->Stats().remote.writes, 4u);

  absl::StatusOr<MatchResult> m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->matched_tokens, tokens.size());
  EXPECT_EQ(m->keys, keys);
  EXPECT_EQ(m->tiers, std::vector<TierKind>(4, TierKind::kRemote));

  const LoadOutcome out = LoadAndCheck(*b, ns, m->keys);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.right, 4u);
  EXPECT_EQ(out.wrong, 0u);
  ASSERT_TRUE(b->Flush().ok());
  // B's own host tier holds them now.
  m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tiers, std::vector<TierKind>(4, TierKind::kHost));
  const EngineStats st = b->Stats();
  EXPECT_EQ(st.remote.enabled, 1u);
  EXPECT_EQ(st.remote.read_hits, 4u);
  EXPECT_EQ(st.tiers[TierKind::kRemote].hits, 4u);
  EXPECT_GE(st.remote.lookup_hits, 4u);
  EXPECT_EQ(st.remote.writes, 0u);  // blocks it read are not written back
  EXPECT_FALSE(st.remote.nodes.empty());
}

// Prefetch (and so Hint) reads remote blocks in: into the host tier of an engine without a
// GPU tier, on through the host tier into the GPU tier of one with. The handle waits for the
// reads and counts them as moved, not as already present.
TEST(EngineRemoteTest, PrefetchReadsRemoteBlocksInAndWaitsForThem) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("prefetch");
  auto a = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  ASSERT_NE(a, nullptr);
  const std::vector<int32_t> tokens = Prompt(6, 3);
  const std::vector<BlockKey> keys = StoreBlocks(*a, ns, tokens);
  ASSERT_TRUE(a->Flush().ok());
  for (size_t gpu_blocks : {size_t{0}, size_t{8}}) {
    SCOPED_TRACE(gpu_blocks == 0 ? "host tier only" : "with a GPU tier");
    auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}, 32, gpu_blocks));
    ASSERT_NE(b, nullptr);
    absl::StatusOr<MatchResult> m = b->Match(ns, tokens);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->keys, keys);
    absl::StatusOr<std::unique_ptr<TransferHandle>> h = b->Prefetch(ns, m->keys);
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_TRUE((*h)->Wait().ok());
    EXPECT_EQ((*h)->blocks_moved(), keys.size());
    EXPECT_EQ((*h)->blocks_present(), 0u);
    // Wait() returned after the reads were verified, not merely started.
    EXPECT_EQ(b->Stats().remote.read_hits, keys.size());
    m = b->Match(ns, tokens);
    ASSERT_TRUE(m.ok());
    const TierKind top = gpu_blocks == 0 ? TierKind::kHost : TierKind::kGpu;
    EXPECT_EQ(m->tiers, std::vector<TierKind>(keys.size(), top));
    const LoadOutcome out = LoadAndCheck(*b, ns, m->keys);
    EXPECT_TRUE(out.status.ok()) << out.status;
    EXPECT_EQ(out.right, keys.size());
    EXPECT_EQ(b->Stats().remote.reads, keys.size());  // the load read nothing more remotely
  }
}

// Codecs as on disk: under "zstd" a compressible block travels and rests compressed (the value
// in the cluster is shorter than header + block and says so), and comes back byte for byte.
TEST(EngineRemoteTest, ZstdValuesAreSmallerAndComeBackExact) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("zstd");
  EngineOptions o = RemoteOptionsFor(*cluster, {ns});
  o.remote.codec = "zstd";
  auto a = OpenOrDie(o);
  auto b = OpenOrDie(o);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const size_t bytes = o.geometry.block_bytes();
  const std::vector<int32_t> tokens = Prompt(3, 7);
  const std::vector<BlockKey> keys = KeysOf(*a, ns, tokens);
  // Compressible: one byte of the key's content in every 16, zeros elsewhere.
  std::vector<std::vector<uint8_t>> content;
  DeviceBlocks src(a->device(), keys.size(), bytes);
  for (size_t i = 0; i < keys.size(); ++i) {
    std::vector<uint8_t> c = BlockContent(keys[i], bytes);
    for (size_t j = 0; j < c.size(); ++j) c[j] = j % 16 == 0 ? c[j] : 0;
    WriteDevice(a->device(), src[i], c);
    content.push_back(std::move(c));
  }
  StoreRequest r;
  r.ns = ns;
  r.tokens = tokens;
  r.buffers = KvBuffers::Blocks(src.ptrs());
  auto h = a->Store(r);
  ASSERT_TRUE(h.ok() && (*h)->Wait().ok());
  ASSERT_TRUE(a->Flush().ok());
  auto client = Client(*cluster);
  ASSERT_NE(client, nullptr);
  for (const BlockKey& k : keys) {
    const std::string value = GetValue(*client, KeyOf(*a, ns, k));
    ASSERT_GT(value.size(), remote::kRemoteHeaderBytes);
    EXPECT_LT(value.size(), remote::kRemoteHeaderBytes + bytes / 2);
    EXPECT_EQ(static_cast<Codec>(static_cast<uint8_t>(value[12])), Codec::kZstd);
  }
  absl::StatusOr<MatchResult> m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->keys, keys);
  DeviceBlocks dst(b->device(), keys.size(), bytes);
  Poison(b->device(), dst.ptrs(), bytes);
  LoadRequest lr;
  lr.ns = ns;
  lr.keys = m->keys;
  lr.buffers = KvBuffers::Blocks(dst.ptrs());
  auto lh = b->Load(lr);
  ASSERT_TRUE(lh.ok() && (*lh)->Wait().ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(ReadDevice(b->device(), dst[i], bytes), content[i]) << "block " << i;
  }
  EXPECT_EQ(b->Stats().remote.read_hits, keys.size());
}

TEST(EngineRemoteTest, MatchAsksTheClusterOnlyForTheRestOfTheChain) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("rest");
  auto a = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  const std::vector<int32_t> tokens = Prompt(5, 2);
  StoreBlocks(*a, ns, tokens);
  ASSERT_TRUE(a->Flush().ok());
  const std::vector<int32_t> head(tokens.begin(), tokens.begin() + 2 * 16);
  StoreBlocks(*b, ns, head);
  const uint64_t asked_before = b->Stats().remote.lookups;
  absl::StatusOr<MatchResult> m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tiers, (std::vector<TierKind>{TierKind::kHost, TierKind::kHost, TierKind::kRemote,
                                             TierKind::kRemote, TierKind::kRemote}));
  EXPECT_EQ(b->Stats().remote.lookups - asked_before, 3u);
  const LoadOutcome out = LoadAndCheck(*b, ns, m->keys);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.right, 5u);
}

TEST(EngineRemoteTest, AValueGoneBetweenMatchAndLoadIsAMissWithZeros) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("gone");
  auto a = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  const std::vector<int32_t> tokens = Prompt(3, 3);
  const std::vector<BlockKey> keys = StoreBlocks(*a, ns, tokens);
  ASSERT_TRUE(a->Flush().ok());
  absl::StatusOr<MatchResult> m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->keys.size(), 3u);
  auto c = Client(*cluster);
  ASSERT_NE(c, nullptr);
  const std::vector<absl::Status> del =
      c->Del({KeyOf(*a, ns, keys[1])}, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(del[0].ok()) << del[0];
  const LoadOutcome out = LoadAndCheck(*b, ns, m->keys);
  EXPECT_TRUE(absl::IsNotFound(out.status)) << out.status;
  EXPECT_EQ(out.right, 2u);
  EXPECT_EQ(out.zero, 1u);
  EXPECT_EQ(out.wrong, 0u);
  ASSERT_TRUE(b->Flush().ok());
  EXPECT_EQ(b->Stats().remote.read_misses, 1u);
  // The block is a miss from then on; the chain stops before it.
  m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->keys.size(), 1u);
}

TEST(EngineRemoteTest, DamagedSwappedAndForeignValuesAreMissesNeverWrongBytes) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("bad");
  const std::string other_ns = UniqueNs("other");
  auto a = OpenOrDie(RemoteOptionsFor(*cluster, {ns, other_ns}));
  EngineOptions other_model = RemoteOptionsFor(*cluster, {ns});
  other_model.model_fingerprint = "another-model@2";
  auto m2 = OpenOrDie(other_model);
  auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  const std::vector<int32_t> tokens = Prompt(5, 4);
  const std::vector<BlockKey> keys = StoreBlocks(*a, ns, tokens);
  StoreBlocks(*a, other_ns, tokens);
  StoreBlocks(*m2, ns, tokens);
  ASSERT_TRUE(a->Flush().ok());
  ASSERT_TRUE(m2->Flush().ok());
  auto c = Client(*cluster);
  ASSERT_NE(c, nullptr);
  // 0: a flipped payload byte; 1: block 2's value under block 1's key; 2: the same block of
  // another namespace; 3: of another model; 4: truncated.
  std::string v0 = GetValue(*c, KeyOf(*a, ns, keys[0]));
  ASSERT_GT(v0.size(), remote::kRemoteHeaderBytes);
  v0[remote::kRemoteHeaderBytes + 100] ^= 0x40;
  ASSERT_TRUE(SetValue(*c, KeyOf(*a, ns, keys[0]), v0).ok());
  ASSERT_TRUE(SetValue(*c, KeyOf(*a, ns, keys[1]), GetValue(*c, KeyOf(*a, ns, keys[2]))).ok());
  const std::vector<BlockKey> other_keys = KeysOf(*a, other_ns, tokens);
  ASSERT_TRUE(
      SetValue(*c, KeyOf(*a, ns, keys[2]), GetValue(*c, KeyOf(*a, other_ns, other_keys[2]))).ok());
  const std::vector<BlockKey> m2_keys = KeysOf(*m2, ns, tokens);
  ASSERT_TRUE(
      SetValue(*c, KeyOf(*a, ns, keys[3]), GetValue(*c, KeyOf(*m2, ns, m2_keys[3]))).ok());
  std::string v4 = GetValue(*c, KeyOf(*a, ns, keys[4]));
  v4.resize(v4.size() / 2);
  ASSERT_TRUE(SetValue(*c, KeyOf(*a, ns, keys[4]), v4).ok());

  for (size_t i = 0; i < keys.size(); ++i) {
    const LoadOutcome out = LoadAndCheck(*b, ns, {keys[i]});
    EXPECT_TRUE(absl::IsDataLoss(out.status)) << i << ": " << out.status;
    EXPECT_EQ(out.zero, 1u) << i;
    EXPECT_EQ(out.wrong, 0u) << i;
  }
  ASSERT_TRUE(b->Flush().ok());
  const RemoteStats st = b->Stats().remote;
  EXPECT_EQ(st.read_corrupt, 2u);      // the flipped byte, the truncated value
  EXPECT_EQ(st.read_wrong_block, 3u);  // another key, namespace, model
  EXPECT_EQ(st.read_hits, 0u);
}

TEST(EngineRemoteTest, AValueSignedWithAnotherSecretIsAMiss) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("mac");
  EngineOptions oa = RemoteOptionsFor(*cluster, {ns});
  oa.remote.hmac_secrets[ns] = "tenant secret number one";
  EngineOptions ob = RemoteOptionsFor(*cluster, {ns});
  ob.remote.hmac_secrets[ns] = "a peer that guessed wrong";
  auto a = OpenOrDie(oa);
  auto b = OpenOrDie(ob);
  auto same = OpenOrDie(oa);
  auto unsigned_writer = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  const std::vector<int32_t> tokens = Prompt(2, 5);
  const std::vector<BlockKey> keys = StoreBlocks(*a, ns, tokens);
  ASSERT_TRUE(a->Flush().ok());
  LoadOutcome out = LoadAndCheck(*b, ns, keys);
  EXPECT_TRUE(absl::IsDataLoss(out.status)) << out.status;
  EXPECT_EQ(out.zero, 2u);
  ASSERT_TRUE(b->Flush().ok());
  EXPECT_EQ(b->Stats().remote.read_bad_mac, 2u);
  out = LoadAndCheck(*same, ns, keys);  // the right secret
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.right, 2u);
  // A value with no MAC, read by a namespace that expects one, is a miss too.
  const std::vector<int32_t> other = Prompt(1, 6);
  const std::vector<BlockKey> unsigned_keys = StoreBlocks(*unsigned_writer, ns, other);
  ASSERT_TRUE(unsigned_writer->Flush().ok());
  out = LoadAndCheck(*same, ns, unsigned_keys);
  EXPECT_TRUE(absl::IsDataLoss(out.status)) << out.status;
  EXPECT_EQ(out.wrong, 0u);
}

TEST(EngineRemoteTest, TimeToLiveReachesTheClusterAsPx) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("ttl");
  EngineOptions o = RemoteOptionsFor(*cluster, {ns});
  o.namespace_limits[ns].ttl = absl::Seconds(60);
  auto a = OpenOrDie(o);
  const std::vector<BlockKey> keys = StoreBlocks(*a, ns, Prompt(1, 7));
  ASSERT_TRUE(a->Flush().ok());
  auto c = Client(*cluster);
  absl::StatusOr<std::string> pttl =
      c->Command({"PTTL", KeyOf(*a, ns, keys[0])}, KeyOf(*a, ns, keys[0]),
                 absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(pttl.ok()) << pttl.status();
  int64_t ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*pttl, &ms)) << *pttl;
  EXPECT_GT(ms, 50000);
  EXPECT_LE(ms, 60000);
}

TEST(EngineRemoteTest, EraseAndEraseNamespaceReachTheCluster) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("erase");
  auto a = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  const std::vector<int32_t> t1 = Prompt(3, 8);
  const std::vector<int32_t> t2 = Prompt(3, 9);
  const std::vector<BlockKey> k1 = StoreBlocks(*a, ns, t1);
  StoreBlocks(*a, ns, t2);
  ASSERT_TRUE(a->Flush().ok());
  ASSERT_EQ(b->Match(ns, t1)->keys.size(), 3u);
  ASSERT_TRUE(a->Erase(ns, {k1[2]}).ok());
  EXPECT_EQ(b->Match(ns, t1)->keys.size(), 2u);
  ASSERT_EQ(b->Match(ns, t2)->keys.size(), 3u);
  absl::StatusOr<size_t> erased = a->EraseNamespace(ns);
  ASSERT_TRUE(erased.ok()) << erased.status();
  EXPECT_EQ(b->Match(ns, t1)->keys.size(), 0u);
  EXPECT_EQ(b->Match(ns, t2)->keys.size(), 0u);
  EXPECT_EQ(a->Stats().remote.erased_keys, 1u + 5u);
}

TEST(EngineRemoteTest, OnEvictWritesBlocksWhenTheyLeaveTheHostTier) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("evict");
  EngineOptions o = RemoteOptionsFor(*cluster, {ns}, /*host_blocks=*/2);
  o.remote.write_policy = "on-evict";
  auto a = OpenOrDie(o);
  auto b = OpenOrDie(RemoteOptionsFor(*cluster, {ns}));
  const std::vector<int32_t> tokens = Prompt(6, 10);
  for (size_t i = 1; i <= 6; ++i) {
    StoreBlocks(*a, ns, std::vector<int32_t>(tokens.begin(), tokens.begin() + i * 16));
  }
  ASSERT_TRUE(a->Flush().ok());
  EXPECT_GE(a->Stats().remote.writes, 4u);  // the 4 evicted; the 2 resident are not written
  absl::StatusOr<MatchResult> m = b->Match(ns, tokens);
  ASSERT_TRUE(m.ok());
  EXPECT_GE(m->keys.size(), 4u);
  const LoadOutcome out = LoadAndCheck(*b, ns, m->keys);
  EXPECT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.right, m->keys.size());
}

TEST(EngineRemoteTest, AdmissionKeepsOneOffBlocksOutOfTheCluster) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("admit");
  EngineOptions o = RemoteOptionsFor(*cluster, {ns});
  o.remote.admit_min_seen = 2;
  auto a = OpenOrDie(o);
  StoreBlocks(*a, ns, Prompt(3, 11));
  ASSERT_TRUE(a->Flush().ok());
  const RemoteStats st = a->Stats().remote;
  EXPECT_EQ(st.writes, 0u);
  EXPECT_EQ(st.writes_rejected, 3u);
}

// Tensor parallelism (one engine per rank, sharing the cluster): ranks holding different KV
// heads never match each other's blocks, nor a TP = 1 engine's; ranks holding the same bytes
// (every rank's MLA latent) share them, and only the store_rank writes them.
TEST(EngineRemoteTest, TensorParallelRanksShareOnlyTheBytesTheyHold) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string ns = UniqueNs("tp");
  auto rank_options = [&](const Geometry& full, uint32_t rank, uint32_t size) {
    EngineOptions o = RemoteOptionsFor(*cluster, {ns});
    o.geometry = *full.ForTensorParallelRank(rank, size);
    o.host_tier_bytes = 32 * o.geometry.block_bytes();
    o.tensor_parallel = {rank, size, 0};
    return o;
  };
  const Geometry gqa{2, 4, 16, DType::kFloat16, 16};
  auto g0 = OpenOrDie(rank_options(gqa, 0, 2));
  auto g1 = OpenOrDie(rank_options(gqa, 1, 2));
  auto g_tp1 = OpenOrDie(rank_options(gqa, 0, 1));
  ASSERT_TRUE(g0 && g1 && g_tp1);
  const std::vector<int32_t> tokens = Prompt(4, 20);
  StoreBlocks(*g0, ns, tokens);
  StoreBlocks(*g_tp1, ns, tokens);
  ASSERT_TRUE(g0->Flush().ok());
  ASSERT_TRUE(g_tp1->Flush().ok());
  EXPECT_EQ(g0->Stats().remote.writes, 4u);  // head-sharded: every rank writes its own
  EXPECT_EQ(g_tp1->Stats().remote.writes, 4u);
  absl::StatusOr<MatchResult> m = g1->Match(ns, tokens);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->matched_tokens, 0u) << "rank 1 matched rank 0's (or TP = 1's) heads";
  EXPECT_NE(g0->Match(ns, tokens)->keys, g_tp1->Match(ns, tokens)->keys);
  // The keys differ, not just the lookup: the same tokens under each rank's geometry.
  EXPECT_NE(KeysOf(*g0, ns, tokens), KeysOf(*g1, ns, tokens));

  Geometry mla{2, 1, 48, DType::kBFloat16, 16};
  mla.kind = KvKind::kLatent;
  mla.rope_dim = 16;
  auto m0 = OpenOrDie(rank_options(mla, 0, 2));
  auto m1 = OpenOrDie(rank_options(mla, 1, 2));
  auto m_tp1 = OpenOrDie(rank_options(mla, 0, 1));
  ASSERT_TRUE(m0 && m1 && m_tp1);
  const std::vector<int32_t> first = Prompt(4, 21);
  // Rank 1 is not the store rank: it keeps its blocks locally and leaves the cluster to rank 0.
  StoreBlocks(*m1, ns, first);
  ASSERT_TRUE(m1->Flush().ok());
  EXPECT_EQ(m1->Stats().remote.writes, 0u);
  EXPECT_EQ(m1->Stats().remote.writes_skipped_replica, 4u);
  EXPECT_EQ(m0->Match(ns, first)->matched_tokens, 0u);
  // Rank 0 stores: its blocks are hits for rank 1 (and for a TP = 1 engine: same bytes).
  const std::vector<int32_t> second = Prompt(4, 22);
  const std::vector<BlockKey> keys = StoreBlocks(*m0, ns, second);
  ASSERT_TRUE(m0->Flush().ok());
  EXPECT_EQ(m0->Stats().remote.writes, 4u);
  EXPECT_EQ(m0->Stats().remote.writes_skipped_replica, 0u);
  for (Engine* reader : {m1.get(), m_tp1.get()}) {
    m = reader->Match(ns, second);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->matched_tokens, second.size());
    EXPECT_EQ(m->keys, keys);
    EXPECT_EQ(m->tiers, std::vector<TierKind>(4, TierKind::kRemote));
    const LoadOutcome out = LoadAndCheck(*reader, ns, m->keys);
    EXPECT_TRUE(out.status.ok()) << out.status;
    EXPECT_EQ(out.right, 4u);
    EXPECT_EQ(out.wrong, 0u);
  }
  EXPECT_EQ(m1->Stats().remote.read_hits, 4u);
}

TEST(EngineRemoteTest, BadRemoteOptionsAreClearErrorsAtOpen) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  EngineOptions o = RemoteOptionsFor(*cluster, {"default"});
  o.remote.seeds = {"localhost"};
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Open(o);
  EXPECT_TRUE(absl::IsInvalidArgument(e.status())) << e.status();
  EXPECT_NE(e.status().message().find("host:port"), std::string::npos) << e.status();
  o.remote.seeds = {"127.0.0.1:70000"};
  e = Engine::Open(o);
  EXPECT_TRUE(absl::IsInvalidArgument(e.status())) << e.status();
  EXPECT_NE(e.status().message().find("70000"), std::string::npos) << e.status();
  o.remote.seeds = {"127.0.0.1:0"};
  EXPECT_TRUE(absl::IsInvalidArgument(Engine::Open(o).status()));
  o = RemoteOptionsFor(*cluster, {"default"});
  o.remote.write_policy = "sometimes";
  e = Engine::Open(o);
  EXPECT_TRUE(absl::IsInvalidArgument(e.status())) << e.status();
  EXPECT_NE(e.status().message().find("write-through"), std::string::npos) << e.status();
  o = RemoteOptionsFor(*cluster, {"default"});
  o.remote.hmac_secrets["default"] = "short";
  EXPECT_TRUE(absl::IsInvalidArgument(Engine::Open(o).status()));

  // Nothing listens on port 1: Unavailable, within the connect timeout.
  o = RemoteOptionsFor(*cluster, {"default"});
  o.remote.seeds = {"127.0.0.1:1"};
  o.remote.connect_timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  e = Engine::Open(o);
  EXPECT_TRUE(absl::IsUnavailable(e.status())) << e.status();
  EXPECT_NE(e.status().message().find("127.0.0.1:1"), std::string::npos) << e.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));

  // Asked for: a degraded engine that opens anyway; every remote lookup is a counted miss.
  o.remote.allow_unreachable = true;
  e = Engine::Open(o);
  ASSERT_TRUE(e.ok()) << e.status();
  const std::vector<int32_t> tokens = Prompt(2, 12);
  StoreBlocks(**e, "default", tokens);
  absl::StatusOr<MatchResult> m = (*e)->Match("default", Prompt(2, 13));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->keys.size(), 0u);
  ASSERT_TRUE((*e)->Flush().ok());
  const RemoteStats st = (*e)->Stats().remote;
  EXPECT_GT(st.lookup_errors, 0u);
  EXPECT_EQ(st.writes, 0u);
  // Local tiers work as ever.
  EXPECT_EQ((*e)->Match("default", tokens)->keys.size(), 2u);
}

}  // namespace
}  // namespace kvtier::testing

namespace kvtier::testing {
namespace {

// Runs the peer program (tests/remote/remote_peer.cc) and returns its output line.
std::string Peer(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {KVTIER_REMOTE_PEER};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<std::string> out = remote::testing::RunProgram(argv, absl::Seconds(60));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : "";
}

TEST(EngineRemoteTest, TwoProcessesShareBlocksThroughTheCluster) {
  KVTIER_SHARED_CLUSTER_OR_SKIP(cluster);
  const std::string seeds = absl::StrJoin(cluster->seeds(), ",");
  const std::string ns = UniqueNs("procs");
  EXPECT_NE(Peer({seeds, ns, "store", "77", "4"}).find("stored=4 writes=4"), std::string::npos);
  EXPECT_NE(Peer({seeds, ns, "load", "77", "4"})
                .find("matched=4 remote=4 right=4 wrong=0 zero=0 host_after=4 status=OK"),
            std::string::npos);
  EXPECT_NE(Peer({seeds, ns, "erase-ns"}).find("erased=ok"), std::string::npos);
  EXPECT_NE(Peer({seeds, ns, "load", "77", "4"}).find("matched=0 remote=0"), std::string::npos);
}

}  // namespace
}  // namespace kvtier::testing
