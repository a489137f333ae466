#include "engine/transfer_handle.h"

#include "absl/strings/str_format.h"

namespace kvtier {

bool TransferHandleImpl::IsReady() {
  return finished_ == nullptr || finished_->HasBeenNotified();
}

absl::Status TransferHandleImpl::Wait() {
  if (done_ == nullptr) return absl::OkStatus();
  absl::Status s = done_->Synchronize();
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
  if (*event == nullptr) return absl::OkStatus();
  return stream.Wait(**event);
}

absl::Status TransferHandleImpl::WaitLayerHost(uint32_t layer) {
  absl::StatusOr<Event*> event = LayerEvent(layer);
  if (!event.ok()) return event.status();
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
