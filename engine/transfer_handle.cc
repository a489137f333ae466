#include "engine/transfer_handle.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"

namespace kvtier {
namespace {

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

bool TransferHandleImpl::IsReady() {
  for (const std::shared_ptr<Event>& w : waits_) {
    absl::StatusOr<bool> ready = w->Query();
    if (!ready.ok() || !*ready) return ready.ok() ? false : true;  // an error is "done"
  }
  return finished_ == nullptr || finished_->HasBeenNotified();
}

bool TransferHandleImpl::Landed(Event* event) {
  for (const std::shared_ptr<Event>& w : waits_) {
    absl::StatusOr<bool> ready = w->Query();
    if (ready.ok() && !*ready) return false;
  }
  if (event == nullptr) return true;
  absl::StatusOr<bool> ready = event->Query();
  return !ready.ok() || *ready;
}

void TransferHandleImpl::ChargeStall(uint64_t ns) {
  for (const std::shared_ptr<StallMeter>& m : meters_) m->Add(ns);
}

absl::Status TransferHandleImpl::Wait() {
  const bool measure = !meters_.empty() && !IsReady();
  const uint64_t start = measure ? NowNs() : 0;
  absl::Status device, reads;
  WaitAll(&device, &reads);
  if (measure) ChargeStall(NowNs() - start);
  return device.ok() ? reads : device;
}

absl::StatusOr<std::vector<size_t>> TransferHandleImpl::FailedBlocks() {
  absl::Status device, reads;
  WaitAll(&device, &reads);
  if (!device.ok()) return device;
  std::vector<size_t> failed;
  for (size_t i = 0; i < fills_.size(); ++i) {
    if (fills_[i]->status.ok() || fill_blocks_[i] == SIZE_MAX) continue;
    failed.push_back(fill_blocks_[i]);
  }
  std::sort(failed.begin(), failed.end());
  failed.erase(std::unique(failed.begin(), failed.end()), failed.end());
  if (failed.empty() && !reads.ok()) return reads;  // a read no block of the request owns
  return failed;
}

void TransferHandleImpl::WaitAll(absl::Status* device, absl::Status* reads) {
  for (const std::shared_ptr<Event>& w : waits_) {
    if (absl::Status ws = w->Synchronize(); device->ok()) *device = ws;
  }
  if (done_ == nullptr) return;
  if (absl::Status ds = done_->Synchronize(); device->ok()) *device = ds;
  // The completion callback runs after the copies, in stream order, even when one failed.
  finished_->WaitForNotification();
  for (const std::shared_ptr<HostFill>& fill : fills_) {
    fill->done.WaitForNotification();  // already passed: the copies were gated on it
    // The engine's bookkeeping of the read (posted by the I/O thread after it released the
    // copies) can trail this transfer's own completion. Invariant: when Wait returns, that
    // bookkeeping is done — a failed block has been forgotten, so storing it again is not
    // taken for a duplicate of the copy about to go. An abandoned read may settle much
    // later (it may still be in the device): its block was forgotten when it was abandoned.
    if (fill->claim.abandoned()) {
      fill->abandon_settled.WaitForNotification();
    } else {
      fill->settled.WaitForNotification();
    }
    if (!fill->status.ok() && reads->ok()) *reads = fill->status;
  }
}

absl::StatusOr<Event*> TransferHandleImpl::LayerEvent(uint32_t layer) {
  if (layers_.empty()) {
    return absl::FailedPreconditionError(
        "WaitLayer: this transfer is not a load; use Wait() instead");
  }
  if (layer >= layers_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "WaitLayer: layer %u is out of range (the model has %d layers)", layer, layers_.size()));
  }
  return layers_[layer].get();
}

absl::Status TransferHandleImpl::WaitLayer(uint32_t layer, Stream& stream) {
  absl::StatusOr<Event*> event = LayerEvent(layer);
  if (!event.ok()) return event.status();
  // Bytes already landed: the stream will not wait, so there is nothing to measure.
  return StreamWaits(*event, stream, !meters_.empty() && !Landed(*event));
}

absl::Status TransferHandleImpl::StreamWaits(Event* event, Stream& stream, bool measure) {
  // The stream's stall is the time from reaching the wait (the work before it done) to
  // passing it; host callbacks on the stream on either side of the wait read the clock.
  auto reached = measure ? std::make_shared<std::atomic<uint64_t>>(0) : nullptr;
  if (reached != nullptr && !stream.AddCallback([reached] { reached->store(NowNs()); }).ok()) {
    reached = nullptr;  // a metric must not fail the wait: go on unmeasured
  }
  for (const std::shared_ptr<Event>& w : waits_) {
    if (absl::Status s = stream.Wait(*w); !s.ok()) return s;
  }
  if (event != nullptr) {
    if (absl::Status s = stream.Wait(*event); !s.ok()) return s;
  }
  if (reached != nullptr) {
    (void)stream.AddCallback([reached, meters = meters_] {
      const uint64_t ns = NowNs() - reached->load();
      for (const std::shared_ptr<StallMeter>& m : meters) m->Add(ns);
    });
  }
  return absl::OkStatus();
}

absl::Status TransferHandleImpl::WaitLayerHost(uint32_t layer) {
  absl::StatusOr<Event*> event = LayerEvent(layer);
  if (!event.ok()) return event.status();
  const bool measure = !meters_.empty() && !Landed(*event);
  const uint64_t start = measure ? NowNs() : 0;
  absl::Status s;
  for (const std::shared_ptr<Event>& w : waits_) {
    if (s = w->Synchronize(); !s.ok()) break;
  }
  if (s.ok() && *event != nullptr) s = (*event)->Synchronize();
  if (measure) ChargeStall(NowNs() - start);
  return s;
}

absl::Status TransferHandleImpl::Release() {
  absl::AnyInvocable<absl::Status()> release;
  {
    MutexLock lock(&release_mu_);
    release = std::move(release_);
    release_ = nullptr;
  }
  return release ? release() : absl::OkStatus();
}

}  // namespace kvtier
