// examples/llm/device_decoder.h — the demo's decoder with its weights in device memory and its
// matmuls on the device.
//
// Weights are fp16 or bf16 in memory of a kvtier Device, one allocation per matrix (q/k/v
// stacked, gate/up stacked, as Model keeps them), the embedding table on the host (a
// look-up, not a matmul). Each matmul uploads its input rounded to the weights' dtype, runs
// MakeDeviceGemmKernel (cuBLAS on a GPU, its rounding-faithful CPU reference on the emulated
// device) and copies the float32 result back; the rest of the layer is layer_math.h on the
// host, the same code as the CPU Model's. So on the emulated device this decoder is the
// CPU reference of the GPU path: the same rounded inputs, float accumulation in another
// order.
//
// Against the CPU Model over the same weights (FromModel) the difference is the rounding of
// weights and matmul inputs to 11 (fp16) or 8 (bf16) significant bits; llm_device_decoder_test
// measures and bounds it.
//
// Random weights (Random) are drawn on the device by a counter-based hash (device_gemm.h):
// the same bits on a GPU and on the emulated device, in well under a second for 8B
// parameters on a GPU. They are not Model::Random's weights (another generator), though
// drawn from the same distributions.
//
// Thread safety: calls are serialized by a lock (one stream, one set of staging buffers).

#ifndef KVTIER_EXAMPLES_LLM_DEVICE_DECODER_H_
#define KVTIER_EXAMPLES_LLM_DEVICE_DECODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "examples/llm/decoder.h"
#include "examples/llm/model.h"
#include "kvtier/device.h"
#include "kvtier/geometry.h"

namespace kvtier::llm {

class CublasLibrary;

class DeviceDecoder final : public Decoder {
 public:
  struct Options {
    DType weight_dtype = DType::kFloat16;  // kFloat16 or kBFloat16
    // Runs the matmuls on a CUDA device: required there (FailedPrecondition without it),
    // unused on the emulated device. Must outlive the decoder.
    const CublasLibrary* cublas = nullptr;
  };

  // Weights drawn from `seed` on the device (see above); RMSNorm weights 1. InvalidArgument
  // for a bad config or dtype; device errors (out of memory) as the device returned them.
  // `device` must outlive the decoder.
  static absl::StatusOr<std::unique_ptr<DeviceDecoder>> Random(const ModelConfig& config,
                                                               uint64_t seed, Device& device,
                                                               const Options& options);
  // `model`'s weights, matrices rounded to the dtype and uploaded; the embedding table and
  // the norms kept as they are.
  static absl::StatusOr<std::unique_ptr<DeviceDecoder>> FromModel(const Model& model,
                                                                  Device& device,
                                                                  const Options& options);
  ~DeviceDecoder() override;

  const ModelConfig& config() const override { return config_; }
  std::string Describe() const override;
  uint32_t threads() const override { return threads_; }
  // Bytes of weights in device memory.
  uint64_t device_weight_bytes() const { return device_weight_bytes_; }

  // As Model's, with InvalidArgument (naming the argument) for a layer out of range or a
  // shape that does not fit the config, and a device error naming the call that failed.
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override;
  absl::StatusOr<Model::QkvOut> Qkv(uint32_t layer, absl::Span<const float> hidden,
                                    uint32_t pos) const override;
  absl::Status FinishLayer(uint32_t layer, absl::Span<const float> attn,
                           std::vector<float>* hidden) const override;
  absl::StatusOr<std::vector<float>> Logits(absl::Span<const float> hidden_row) const override;

 private:
  struct Layer {
    std::vector<float> input_norm, post_norm;  // host, [d_model]
    DevicePtr qkv, o, gate_up, down;           // device, dtype, Model's layouts
  };

  DeviceDecoder(const ModelConfig& config, Device& device, const Options& options);
  // Allocates every device matrix and the stream.
  absl::Status Init();
  absl::StatusOr<DevicePtr> AllocateWeights(uint64_t elements);
  // y [rows][n] = round(x) [rows][k] · w [n][k]ᵀ on the device.
  absl::Status MatMul(const float* x, size_t rows, size_t k, DevicePtr w, size_t n, float* y) const;

  const ModelConfig config_;
  Device& device_;
  const Options options_;
  const uint32_t threads_;
  std::unique_ptr<Stream> stream_;
  std::vector<DevicePtr> allocations_;  // freed by the destructor
  uint64_t device_weight_bytes_ = 0;
  std::vector<float> embed_;  // host, [vocab][d_model]
  std::vector<Layer> layers_;
  std::vector<float> norm_;  // host, [d_model]
  DevicePtr lm_head_;

  mutable absl::Mutex mu_;
  // Staging: the matmul's input (rounded) on the host and both operands on the device, grown
  // to the largest call.
  mutable std::vector<uint16_t> x_host_ ABSL_GUARDED_BY(mu_);
  mutable DevicePtr x_dev_ ABSL_GUARDED_BY(mu_);
  mutable DevicePtr y_dev_ ABSL_GUARDED_BY(mu_);
  mutable uint64_t x_dev_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  mutable uint64_t y_dev_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvtier::llm

#endif  // KVTIER_EXAMPLES_LLM_DEVICE_DECODER_H_
