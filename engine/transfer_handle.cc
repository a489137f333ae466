#include "engine/transfer_handle.h"

#include "absl/strings/str_format.h"

namespace kvtier {

bool TransferHandleImpl::IsReady() {
  for (const std::shared_ptr<Event>& w : waits_) {
    absl::StatusOr<bool> ready = w->Query();
    if (!ready.ok() || !*ready) return ready.ok() ? false : true;  // an error is "done"
  }
  return finished_ == nullptr || finished_->HasBeenNotified();
}

absl::Status TransferHandleImpl::Wait() {
  absl::Status s;
  for (const std::shared_ptr<Event>& w : waits_) {
    if (absl::Status ws = w->Synchronize(); s.ok()) s = ws;
  }
  if (done_ == nullptr) return s;
  if (absl::Status ds = done_->Synchronize(); s.ok()) s = ds;
  // The completion callback runs after the copies, in stream order, even when one failed.
  finished_->WaitForNotification();
  for (const std::shared_ptr<HostFill>& fill : fills_) {
    fill->done.WaitForNotification();  // already passed: the copies were gated on it
    if (s.ok() && !fill->status.ok()) s = fill->status;
  }
  return s;
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
  for (const std::shared_ptr<Event>& w : waits_) {
    if (absl::Status s = stream.Wait(*w); !s.ok()) return s;
  }
  if (*event == nullptr) return absl::OkStatus();
  return stream.Wait(**event);
}

absl::Status TransferHandleImpl::WaitLayerHost(uint32_t layer) {
  absl::StatusOr<Event*> event = LayerEvent(layer);
  if (!event.ok()) return event.status();
  for (const std::shared_ptr<Event>& w : waits_) {
    if (absl::Status s = w->Synchronize(); !s.ok()) return s;
  }
  if (*event == nullptr) return absl::OkStatus();
  return (*event)->Synchronize();
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
