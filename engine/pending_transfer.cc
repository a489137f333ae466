// engine/pending_transfer.cc — see pending_transfer.h.

#include "engine/pending_transfer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/placement.h"

namespace kvtier {

absl::StatusOr<PendingTransfer> PendingTransfer::Create(Device& device,
                                                        CompletionQueue& completions,
                                                        const char* op,
                                                        uint32_t layer_events) {
  auto event = [&]() -> absl::StatusOr<std::shared_ptr<Event>> {
    absl::StatusOr<std::unique_ptr<Event>> e = device.CreateEvent();
    if (!e.ok()) return e.status();
    return std::shared_ptr<Event>(std::move(*e));
  };
  absl::StatusOr<std::shared_ptr<Event>> done = event();
  if (!done.ok()) return done.status();
  std::vector<std::shared_ptr<Event>> layers;
  layers.reserve(layer_events);
  for (uint32_t l = 0; l < layer_events; ++l) {
    absl::StatusOr<std::shared_ptr<Event>> e = event();
    if (!e.ok()) return e.status();
    layers.push_back(std::move(*e));
  }
  return PendingTransfer(&device, &completions, op, std::move(*done), std::move(layers));
}

PendingTransfer::PendingTransfer(Device* device, CompletionQueue* completions, const char* op,
                                 std::shared_ptr<Event> done,
                                 std::vector<std::shared_ptr<Event>> layers)
    : device_(device),
      completions_(completions),
      op_(op),
      done_(std::move(done)),
      layers_(std::move(layers)) {}

absl::Status PendingTransfer::Step(absl::Status s) {
  if (!s.ok() && status_.ok()) {
    status_ = absl::Status(s.code(), absl::StrCat(op_, ": enqueueing copies: ", s.message()));
  }
  return status_;
}

absl::Status PendingTransfer::WaitAfter(Stream* after) {
  if (!status_.ok() || after == nullptr) return status_;
  // The caller's stream records an event of ours, and ours waits on it.
  absl::StatusOr<std::unique_ptr<Event>> e = device_->CreateEvent();
  if (!e.ok()) return Step(e.status());
  std::shared_ptr<Event> event(std::move(*e));
  if (!Step(after->Record(*event)).ok()) return status_;
  enqueued_ = true;
  return Step(stream_->Wait(*event));
}

absl::Status PendingTransfer::WaitFor(const std::shared_ptr<Event>& event) {
  if (!status_.ok() || event == nullptr) return status_;
  enqueued_ = true;
  return Step(stream_->Wait(*event));
}

absl::Status PendingTransfer::WaitForReuse(const SlotReuse& reuse) {
  if (!status_.ok() || !reuse.pending()) return status_;
  enqueued_ = true;
  return Step(reuse.OrderStream(*stream_));
}

absl::Status PendingTransfer::WaitForCopy(const BlockEntry& e, TierKind t, size_t block) {
  if (!status_.ok() || !e.is_writing(t)) return status_;
  if (e.ready[t] != nullptr) return WaitFor(e.ready[t]);
  if (t == TierKind::kHost && e.host_fill != nullptr) return WaitForFill(e.host_fill, block);
  return status_;
}

absl::Status PendingTransfer::WaitForFill(std::shared_ptr<HostFill> fill, size_t block) {
  if (!status_.ok()) return status_;
  fills_.push_back(fill);
  fill_blocks_.push_back(block);
  enqueued_ = true;
  // A host callback that holds the stream (not the host) until the disk read is verified, or
  // until the deadline, when the read is abandoned: the slot is zeroed first, so the copies
  // after the gate deliver zeros, never a previous occupant's bytes. A read that claimed the
  // slot just before is writing it now (a copy or a decode, not I/O): wait for it. Reads that
  // cannot be abandoned (the remote tier's: they land in the slot as they arrive) are waited
  // for; the remote client's own operation timeout bounds them.
  return Step(stream_->AddCallback([fill = std::move(fill), deadline = deadline_] {
    if (fill->done.WaitForNotificationWithDeadline(deadline)) return;
    if (fill->abandonable() &&
        fill->Abandon(absl::DeadlineExceededError(
            "the disk read of this block did not complete by the load's deadline (abandoned: "
            "recompute the block)"))) {
      return;
    }
    fill->done.WaitForNotification();
  }));
}

absl::Status PendingTransfer::MeasureCopies(absl::AnyInvocable<void() &&> started,
                                            absl::AnyInvocable<void(absl::Duration) &&> copied) {
  if (!status_.ok()) return status_;
  enqueued_ = true;
  copies_started_ = std::make_shared<absl::Time>();
  copied_ = std::move(copied);
  return Step(stream_->AddCallback([at = copies_started_, started = std::move(started)]() mutable {
    *at = absl::Now();
    std::move(started)();
  }));
}

absl::Status PendingTransfer::Enqueue(const CopyPlanner& planner,
                                      absl::Span<const BlockCopy> copies, bool layerwise) {
  if (!status_.ok() || copies.empty()) return status_;
  enqueued_ = true;
  return Step(planner.Enqueue(*stream_, copies, layerwise, layers_));
}

absl::Status PendingTransfer::Finish(absl::AnyInvocable<void() &&> on_done) {
  if (!status_.ok()) return status_;
  if (!enqueued_) return status_;  // nothing to wait for, nothing to settle
  if (!Step(stream_->Record(*done_)).ok()) return status_;
  if (absl::Status s = stream_->AddCallback(
          [queue = completions_, finished = finished_, on_done = std::move(on_done),
           started = copies_started_, copied = std::move(copied_)]() mutable {
            if (copied) std::move(copied)(absl::Now() - *started);
            queue->Post([finished = std::move(finished), on_done = std::move(on_done)]() mutable {
              std::move(on_done)();
              finished->Notify();
            });
          });
      !s.ok()) {
    return Step(absl::Status(s.code(), absl::StrCat("attaching its completion: ", s.message())));
  }
  return status_;
}

void PendingTransfer::Settle() {
  if (enqueued_ && stream_ != nullptr) (void)stream_->Synchronize();
}

std::unique_ptr<TransferHandleImpl> PendingTransfer::TakeHandle(TransferHandleImpl::Parts parts) {
  if (enqueued_) {
    parts.done = std::move(done_);
    parts.finished = std::move(finished_);
    parts.fills = std::move(fills_);
    parts.fill_blocks = std::move(fill_blocks_);
  }
  if (!layers_.empty()) {
    // A load whose blocks were all in place already enqueued nothing: its layers are ready
    // once parts.waits are (null layer events).
    if (!enqueued_) layers_.assign(layers_.size(), nullptr);
    parts.layers = std::move(layers_);
  }
  return std::make_unique<TransferHandleImpl>(std::move(parts));
}

}  // namespace kvtier
