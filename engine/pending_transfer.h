// engine/pending_transfer.h — one Store, Load, LoadToGpuTier or Prefetch from its first
// enqueued device operation to its handle: the sequence every transfer follows, written once.
//
//   1. Create, before the placement lock: the transfer's events (`done`, and one per layer for
//      loads) and the notification its handle's Wait returns on.
//   2. Under the placement lock, while the transfer is planned: WaitAfter (the caller's
//      stream), WaitFor / WaitForReuse (events of copies still landing, slots still read),
//      WaitForFill (disk reads into host slots), Enqueue (the copies), then Finish (record
//      `done` and attach the completion). Each step does nothing once a step has failed; the
//      first error is the transfer's status().
//   3. After the lock: when !ok(), Settle() waits until everything the transfer enqueued has
//      run, so its copies no longer touch slots or the caller's buffers; the caller then
//      undoes its placement (unpins, releases held slots) and returns status(). Otherwise
//      TakeHandle() gives the caller its TransferHandle.
//
// Promise: a transfer whose completion could not be attached (Stream::AddCallback failed)
// fails like one whose copies could not be enqueued. Without its completion the handle's
// Wait would never return and the pins the completion releases would leak.
//
// Not thread-safe: one thread drives a transfer; its completion runs on the completion queue.

#ifndef KVTIER_ENGINE_PENDING_TRANSFER_H_
#define KVTIER_ENGINE_PENDING_TRANSFER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "engine/block_table.h"
#include "engine/completion_queue.h"
#include "engine/copy_planner.h"
#include "engine/transfer_handle.h"
#include "kvtier/device.h"

namespace kvtier {

struct SlotReuse;

class PendingTransfer {
 public:
  // `op` names the call in errors ("Store", "Load", ...). `layer_events`: one event per layer
  // for a load (its handle's WaitLayer), 0 otherwise.
  static absl::StatusOr<PendingTransfer> Create(Device& device, CompletionQueue& completions,
                                                const char* op, uint32_t layer_events);
  PendingTransfer(PendingTransfer&&) = default;
  PendingTransfer& operator=(PendingTransfer&&) = default;

  // The stream the transfer's work goes on. May change until the first step runs.
  void set_stream(Stream* stream) { stream_ = stream; }
  // Loads: when the gates stop waiting for disk reads (WaitForFill). A read not delivered by
  // then is abandoned (HostFill::Abandon): its block's destination gets zeros and the block
  // is reported failed. InfiniteFuture (the default): wait for every read. Set before the
  // first WaitForFill.
  void set_deadline(absl::Time deadline) { deadline_ = deadline; }
  Stream& stream() const { return *stream_; }
  // Recorded after the copies (Finish): the ready event of every copy this transfer writes.
  const std::shared_ptr<Event>& done() const { return done_; }

  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }
  // Whether any step has put work on the stream (so Settle has something to wait for).
  bool enqueued() const { return enqueued_; }

  // The transfer's copies start only after the work already on `after` (the caller's
  // compute stream; null = no wait). A stream wait, not a host wait.
  absl::Status WaitAfter(Stream* after);
  // The copies start only after `event` (a copy still landing). Null: nothing.
  absl::Status WaitFor(const std::shared_ptr<Event>& event);
  // ... after a freed slot's previous readers (engine/placement.h, SlotReuse).
  absl::Status WaitForReuse(const SlotReuse& reuse);
  // ... after `e`'s copy in tier t has landed, if it is being written: a device copy (its
  // ready event) or a disk read into the host slot (WaitForFill). `block`: the index of the
  // block in the caller's request, which a failed read reports (FailedBlocks).
  absl::Status WaitForCopy(const BlockEntry& e, TierKind t, size_t block = kNoBlock);
  // ... after the disk read filling a host slot has been verified (a host callback holds
  // the stream, not the host), or abandoned at the deadline. The read's status becomes the
  // transfer's (its handle's Wait), and `block` one of its failed blocks.
  absl::Status WaitForFill(std::shared_ptr<HostFill> fill, size_t block = kNoBlock);
  static constexpr size_t kNoBlock = SIZE_MAX;
  // Times the copies the next Enqueue puts on the stream: `started` runs on the stream just
  // before them (a host callback: its failure fails the transfer, as any step's), and
  // `copied` with their time right after them, in the completion's callback (Finish).
  absl::Status MeasureCopies(absl::AnyInvocable<void() &&> started,
                             absl::AnyInvocable<void(absl::Duration) &&> copied);
  // Enqueues `copies` (layer by layer, recording the layer events, when `layerwise`).
  absl::Status Enqueue(const CopyPlanner& planner, absl::Span<const BlockCopy> copies,
                       bool layerwise);
  // Records `done` and attaches `on_done`, which runs on the completion queue once the
  // copies have run; after it the handle's Wait returns. Nothing enqueued: there is nothing
  // to wait for or settle, and `on_done` is dropped.
  absl::Status Finish(absl::AnyInvocable<void() &&> on_done);

  // After a failed step, without the placement lock (completions take it): waits until the
  // work already enqueued has run.
  void Settle();

  // The handle for the caller. `parts` supplies what only the caller knows (counts, slots,
  // release, meters, waits); the rest comes from the transfer. A transfer that enqueued
  // nothing gets a handle that is ready at once (after parts.waits).
  std::unique_ptr<TransferHandleImpl> TakeHandle(TransferHandleImpl::Parts parts);

 private:
  PendingTransfer(Device* device, CompletionQueue* completions, const char* op,
                  std::shared_ptr<Event> done, std::vector<std::shared_ptr<Event>> layers);
  // Records the first failure (prefixed with the op) and returns the transfer's status.
  absl::Status Step(absl::Status s);

  Device* device_;
  CompletionQueue* completions_;
  const char* op_;
  Stream* stream_ = nullptr;
  std::shared_ptr<Event> done_;
  std::shared_ptr<Notification> finished_ = std::make_shared<Notification>();
  std::vector<std::shared_ptr<Event>> layers_;
  std::vector<std::shared_ptr<HostFill>> fills_;
  std::vector<size_t> fill_blocks_;  // fills_[i] fills block fill_blocks_[i] (or kNoBlock)
  absl::Time deadline_ = absl::InfiniteFuture();
  // MeasureCopies: when the copies started (written on the stream), and what to tell.
  std::shared_ptr<absl::Time> copies_started_;
  absl::AnyInvocable<void(absl::Duration) &&> copied_;
  absl::Status status_;
  bool enqueued_ = false;
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_PENDING_TRANSFER_H_
