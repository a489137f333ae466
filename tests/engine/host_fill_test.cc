// HostFill (engine/block_table.h): a disk read into a host slot that its reader may abandon. The
// read's bookkeeping (SettleAfterAbandonment) must come after the abandonment's (on_abandon),
// whichever thread gets there first: a read that settled inside Abandon, between its claim and
// on_abandon, was booked first, and the engine then erased the block (its disk record too)
// and freed the slot while Abandon could still be zeroing it.

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "engine/block_table.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

class Log {
 public:
  void Add(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.push_back(what);
  }
  std::vector<std::string> entries() {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> entries_;
};

// An abandonable fill of `slot` whose on_abandon runs `on_abandon`.
std::unique_ptr<HostFill> FillOf(std::vector<char>& slot,
                                 absl::AnyInvocable<void() &&> on_abandon) {
  auto fill = std::make_unique<HostFill>();
  fill->slot = slot.data();
  fill->bytes = slot.size();
  fill->on_abandon = std::move(on_abandon);
  return fill;
}

TEST(HostFill, AReadThatSettlesInsideAnAbandonmentIsBookedAfterIt) {
  std::vector<char> slot(4096, 'x');
  Log log;
  Notification in_on_abandon, read_settled;
  std::unique_ptr<HostFill> owned = FillOf(slot, [&] {
    in_on_abandon.Notify();
    read_settled.WaitForNotification();  // the read lands meanwhile
    log.Add("abandoned");
  });
  HostFill& fill = *owned;
  std::thread reader(
      [&] { EXPECT_TRUE(fill.Abandon(absl::DeadlineExceededError("past the deadline"))); });
  in_on_abandon.WaitForNotification();
  // The disk tier finds its claim abandoned, so the read settles without touching the slot.
  EXPECT_FALSE(fill.claim.Claim());
  fill.SettleAfterAbandonment([&] { log.Add("settled"); });
  EXPECT_TRUE(log.entries().empty()) << "the read was booked before its abandonment";
  read_settled.Notify();
  reader.join();
  EXPECT_EQ(log.entries(), (std::vector<std::string>{"abandoned", "settled"}));
  EXPECT_TRUE(fill.done.HasBeenNotified());
  EXPECT_EQ(fill.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(slot, std::vector<char>(4096, 0));
}

TEST(HostFill, AReadThatSettlesAfterTheAbandonmentOrWithoutOneIsBookedAtOnce) {
  std::vector<char> slot(4096, 'x');
  {
    // Abandoned first, then the read settles: booked at once (on_abandon has run).
    Log log;
    std::unique_ptr<HostFill> owned = FillOf(slot, [&] { log.Add("abandoned"); });
    HostFill& fill = *owned;
    ASSERT_TRUE(fill.Abandon(absl::DeadlineExceededError("late")));
    fill.SettleAfterAbandonment([&] { log.Add("settled"); });
    EXPECT_EQ(log.entries(), (std::vector<std::string>{"abandoned", "settled"}));
    EXPECT_FALSE(fill.Abandon(absl::DeadlineExceededError("again")));  // once only
  }
  {
    // The read claimed the slot (it delivers): nothing can abandon it, booked at once.
    bool abandoned = false;
    std::unique_ptr<HostFill> owned = FillOf(slot, [&] { abandoned = true; });
    HostFill& fill = *owned;
    ASSERT_TRUE(fill.claim.Claim());
    bool settled = false;
    fill.SettleAfterAbandonment([&] { settled = true; });
    EXPECT_TRUE(settled);
    EXPECT_FALSE(fill.Abandon(absl::DeadlineExceededError("late")));
    EXPECT_FALSE(abandoned);
  }
  {
    // A fill nobody could abandon (no slot: the remote tier's): booked at once.
    HostFill fill;
    bool settled = false;
    fill.SettleAfterAbandonment([&] { settled = true; });
    EXPECT_TRUE(settled);
  }
}

}  // namespace
}  // namespace kvtier
