// NamespaceRegistry: dense ids in creation order, names checked, namespaces that never move,
// and keys seeded by the namespace.

#include "engine/namespace_registry.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

NamespaceRegistry MakeRegistry() {
  return NamespaceRegistry(KeyHash::kXxh3, "test-model@1", /*geometry_fingerprint=*/42);
}

TEST(NamespaceRegistry, IdsAreDenseInCreationOrderAndNamesResolveBothWays) {
  NamespaceRegistry r = MakeRegistry();
  EXPECT_EQ(r.size(), 0u);
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<uint32_t> id = r.Create(absl::StrCat("tenant-", i));
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(*id, static_cast<uint32_t>(i));
  }
  EXPECT_EQ(r.size(), 5u);
  absl::StatusOr<const Namespace*> found = r.Find("tenant-3");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ((*found)->id, 3u);
  EXPECT_EQ((*found)->name, "tenant-3");
  EXPECT_EQ(&r.Get(3), *found);
  EXPECT_EQ(r.Name(4), "tenant-4");
  EXPECT_EQ(r.Name(99), "") << "an id never issued has no name";
  EXPECT_EQ(r.List(), (std::vector<std::string>{"tenant-0", "tenant-1", "tenant-2", "tenant-3",
                                                "tenant-4"}));
  std::vector<uint32_t> seen;
  r.ForEach([&](const Namespace& n) { seen.push_back(n.id); });
  EXPECT_EQ(seen, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
}

TEST(NamespaceRegistry, BadAndDuplicateNamesAreRefusedNamingThem) {
  NamespaceRegistry r = MakeRegistry();
  ASSERT_TRUE(r.Create("a").ok());
  absl::StatusOr<uint32_t> dup = r.Create("a");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(dup.status().message(), "'a'")) << dup.status();
  absl::StatusOr<uint32_t> bad = r.Create("has space");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "' '")) << bad.status();
  EXPECT_EQ(r.Create("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Create(std::string(129, 'x')).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.size(), 1u) << "a refused name creates nothing";
  absl::StatusOr<const Namespace*> missing = r.Find("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "CreateNamespace")) << missing.status();
}

TEST(NamespaceRegistry, NamespacesNeverMoveWhileTheRegistryGrows) {
  NamespaceRegistry r = MakeRegistry();
  ASSERT_TRUE(r.Create("first").ok());
  const Namespace* first = *r.Find("first");
  first->counters.stored.fetch_add(7);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(r.Create(absl::StrCat("n", i)).ok());
  EXPECT_EQ(*r.Find("first"), first);
  EXPECT_EQ(first->counters.stored.load(), 7u);
}

TEST(NamespaceRegistry, KeysAreSeededByTheNamespace) {
  NamespaceRegistry r = MakeRegistry();
  ASSERT_TRUE(r.Create("a").ok());
  ASSERT_TRUE(r.Create("b").ok());
  const std::vector<int32_t> tokens(16, 5);
  const BlockKey ka = r.Get(0).hasher.Keys(tokens, 16, "")[0];
  const BlockKey kb = r.Get(1).hasher.Keys(tokens, 16, "")[0];
  EXPECT_NE(ka, kb);
  // The same name in another registry of the same model and geometry gives the same keys.
  NamespaceRegistry other = MakeRegistry();
  ASSERT_TRUE(other.Create("a").ok());
  EXPECT_EQ(other.Get(0).hasher.Keys(tokens, 16, "")[0], ka);
}

TEST(NamespaceRegistry, ConcurrentCreatesGetDistinctIds) {
  NamespaceRegistry r = MakeRegistry();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r, t] {
      for (int i = 0; i < 100; ++i) ASSERT_TRUE(r.Create(absl::StrCat(t, "-", i)).ok());
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(r.size(), 400u);
  for (uint32_t id = 0; id < 400; ++id) {
    absl::StatusOr<const Namespace*> n = r.Find(r.Name(id));
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ((*n)->id, id);
  }
}

}  // namespace
}  // namespace kvtier
