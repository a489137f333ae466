// examples/llm/decoder.h — the layer-by-layer forward pass the long-context demo drives, as an
// interface with two implementations:
//
//   CpuDecoder     a Model (model.h): float32 weights, matmuls on the CPU. The reference.
//   DeviceDecoder  (device_decoder.h) fp16 or bf16 weights in a Device's memory, matmuls on
//                  the device: cuBLAS on a GPU, a CPU reference that rounds exactly as the
//                  GPU path does on the emulated device.
//
// The calls are Model's (see model.h for the loop a caller writes), but return a Status: a
// device decoder's calls can fail (a CUDA or cuBLAS error, named in the message). Shapes
// are the caller's duty: CpuDecoder aborts on a wrong shape as Model does, DeviceDecoder
// returns InvalidArgument.
//
// Everything between the matmuls (embedding look-up, RMSNorm, RoPE, SwiGLU, residuals) is the
// same host code in both (layer_math.h), so two decoders over the same weights differ only by
// the rounding of their matmuls.

#ifndef KVTIER_EXAMPLES_LLM_DECODER_H_
#define KVTIER_EXAMPLES_LLM_DECODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "examples/llm/model.h"

namespace kvtier::llm {

class Decoder {
 public:
  virtual ~Decoder() = default;

  virtual const ModelConfig& config() const = 0;
  // Where the matmuls run and in what precision, e.g. "CPU float32" or "cuBLAS fp16".
  virtual std::string Describe() const = 0;
  // Host threads a caller may use for host-side work beside it (ReferenceAttention).
  virtual uint32_t threads() const = 0;

  virtual absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const = 0;
  virtual absl::StatusOr<Model::QkvOut> Qkv(uint32_t layer, absl::Span<const float> hidden,
                                            uint32_t pos) const = 0;
  virtual absl::Status FinishLayer(uint32_t layer, absl::Span<const float> attn,
                                   std::vector<float>* hidden) const = 0;
  virtual absl::StatusOr<std::vector<float>> Logits(absl::Span<const float> hidden_row) const = 0;

 protected:
  Decoder() = default;
};

// A Model behind the Decoder interface. `model` must outlive it.
class CpuDecoder final : public Decoder {
 public:
  explicit CpuDecoder(const Model* model) : model_(model) {}

  const ModelConfig& config() const override { return model_->config(); }
  std::string Describe() const override { return "CPU float32"; }
  uint32_t threads() const override { return model_->threads(); }
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override {
    return model_->Embed(tokens);
  }
  absl::StatusOr<Model::QkvOut> Qkv(uint32_t layer, absl::Span<const float> hidden,
                                    uint32_t pos) const override {
    return model_->Qkv(layer, hidden, pos);
  }
  absl::Status FinishLayer(uint32_t layer, absl::Span<const float> attn,
                           std::vector<float>* hidden) const override {
    model_->FinishLayer(layer, attn, hidden);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<float>> Logits(absl::Span<const float> hidden_row) const override {
    return model_->Logits(hidden_row);
  }

 private:
  const Model* model_;
};

}  // namespace kvtier::llm

#endif  // KVTIER_EXAMPLES_LLM_DECODER_H_
