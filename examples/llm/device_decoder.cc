// examples/llm/device_decoder.cc — weights on the device, matmuls through device_gemm.h (see
// device_decoder.h).

#include "examples/llm/device_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "examples/llm/cublas_library.h"
#include "examples/llm/device_gemm.h"
#include "examples/llm/layer_math.h"
#include "kernels/numeric.h"

namespace kvtier::llm {
namespace {

#define DD_RETURN_IF_ERROR(expr)                       \
  do {                                                 \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (0)

// Tensor streams of Random: one per matrix.
constexpr uint64_t kEmbedStream = 1;
constexpr uint64_t kLmHeadStream = 2;
uint64_t LayerStream(uint32_t layer, uint32_t matrix) { return 16 + 4 * uint64_t{layer} + matrix; }

uint16_t Round(DType dtype, float f) {
  return dtype == DType::kBFloat16 ? numeric::FloatToBf16Bits(f) : numeric::FloatToHalfBits(f);
}

float Widen(DType dtype, uint16_t bits) {
  return dtype == DType::kBFloat16 ? numeric::Bf16BitsToFloat(bits)
                                   : numeric::HalfBitsToFloat(bits);
}

}  // namespace

DeviceDecoder::DeviceDecoder(const ModelConfig& config, Device& device, const Options& options)
    : config_(config),
      device_(device),
      options_(options),
      threads_(std::max(1u, std::thread::hardware_concurrency())) {}

DeviceDecoder::~DeviceDecoder() {
  if (stream_ != nullptr) (void)stream_->Synchronize();
  for (DevicePtr p : allocations_) (void)device_.Free(p);
  if (!x_dev_.is_null()) (void)device_.Free(x_dev_);
  if (!y_dev_.is_null()) (void)device_.Free(y_dev_);
}

std::string DeviceDecoder::Describe() const {
  const char* dtype = options_.weight_dtype == DType::kBFloat16 ? "bf16" : "fp16";
  return device_.kind() == DeviceKind::kCuda
             ? absl::StrCat("cuBLAS ", dtype)
             : absl::StrCat("emulated device ", dtype, " (CPU reference of cuBLAS)");
}

absl::StatusOr<DevicePtr> DeviceDecoder::AllocateWeights(uint64_t elements) {
  absl::StatusOr<DevicePtr> p = device_.Allocate(elements * 2);
  if (!p.ok()) {
    return absl::Status(p.status().code(),
                        absl::StrFormat("DeviceDecoder: allocating %.1f MiB of weights: %s",
                                        elements * 2 / 1048576.0, p.status().message()));
  }
  allocations_.push_back(*p);
  device_weight_bytes_ += elements * 2;
  return *p;
}

absl::Status DeviceDecoder::Init() {
  if (absl::Status s = config_.Validate(); !s.ok()) return s;
  if (options_.weight_dtype != DType::kFloat16 && options_.weight_dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DeviceDecoder: weight_dtype %s (expected float16 or bfloat16)",
                        DTypeName(options_.weight_dtype)));
  }
  if (device_.kind() == DeviceKind::kCuda && options_.cublas == nullptr) {
    return absl::FailedPreconditionError(
        "DeviceDecoder: a CUDA device needs cuBLAS (Options.cublas) for its matmuls");
  }
  absl::StatusOr<std::unique_ptr<Stream>> stream = device_.CreateStream();
  if (!stream.ok()) return stream.status();
  stream_ = std::move(*stream);
  const uint64_t d = config_.d_model, q = config_.q_dim(), kv = config_.kv_dim(),
                 f = config_.ffn_dim;
  layers_.resize(config_.num_layers);
  for (Layer& layer : layers_) {
    layer.input_norm.assign(d, 1.0f);
    layer.post_norm.assign(d, 1.0f);
    for (const auto& [ptr, elements] :
         {std::pair<DevicePtr*, uint64_t>{&layer.qkv, (q + 2 * kv) * d},
          {&layer.o, d * q},
          {&layer.gate_up, 2 * f * d},
          {&layer.down, d * f}}) {
      absl::StatusOr<DevicePtr> p = AllocateWeights(elements);
      if (!p.ok()) return p.status();
      *ptr = *p;
    }
  }
  norm_.assign(d, 1.0f);
  absl::StatusOr<DevicePtr> lm_head = AllocateWeights(uint64_t{config_.vocab_size} * d);
  if (!lm_head.ok()) return lm_head.status();
  lm_head_ = *lm_head;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceDecoder>> DeviceDecoder::Random(const ModelConfig& config,
                                                                     uint64_t seed, Device& device,
                                                                     const Options& options) {
  std::unique_ptr<DeviceDecoder> dd(new DeviceDecoder(config, device, options));
  DD_RETURN_IF_ERROR(dd->Init());
  Stream& stream = *dd->stream_;
  auto fill = [&](DevicePtr out, uint64_t count, uint64_t tensor, double stddev) {
    FillUniformParams p;
    p.dtype = options.weight_dtype;
    p.count = count;
    p.seed = seed;
    p.stream = tensor;
    p.stddev = stddev;
    p.out = out;
    return stream.Launch(MakeFillUniformKernel(p));
  };
  const uint64_t d = config.d_model, q = config.q_dim(), kv = config.kv_dim(), f = config.ffn_dim,
                 vocab = config.vocab_size;
  const double in_d = 1.0 / std::sqrt(static_cast<double>(d));
  for (uint32_t l = 0; l < config.num_layers; ++l) {
    const Layer& layer = dd->layers_[l];
    DD_RETURN_IF_ERROR(fill(layer.qkv, (q + 2 * kv) * d, LayerStream(l, 0), in_d));
    DD_RETURN_IF_ERROR(
        fill(layer.o, d * q, LayerStream(l, 1), 1.0 / std::sqrt(static_cast<double>(q))));
    DD_RETURN_IF_ERROR(fill(layer.gate_up, 2 * f * d, LayerStream(l, 2), in_d));
    DD_RETURN_IF_ERROR(
        fill(layer.down, d * f, LayerStream(l, 3), 1.0 / std::sqrt(static_cast<double>(f))));
  }
  DD_RETURN_IF_ERROR(fill(dd->lm_head_, vocab * d, kLmHeadStream, in_d));
  // The embedding table is drawn on the device too (same generator), then kept on the host.
  absl::StatusOr<DevicePtr> embed_dev = device.Allocate(vocab * d * 2);
  if (!embed_dev.ok()) return embed_dev.status();
  std::vector<uint16_t> embed_bits(vocab * d);
  absl::Status status = fill(*embed_dev, vocab * d, kEmbedStream, 1.0);
  if (status.ok()) status = stream.CopyToHost(embed_bits.data(), *embed_dev, vocab * d * 2);
  if (status.ok()) status = stream.Synchronize();
  (void)device.Free(*embed_dev);
  if (!status.ok()) return status;
  dd->embed_.resize(vocab * d);
  for (size_t i = 0; i < embed_bits.size(); ++i) {
    dd->embed_[i] = Widen(options.weight_dtype, embed_bits[i]);
  }
  return dd;
}

absl::StatusOr<std::unique_ptr<DeviceDecoder>> DeviceDecoder::FromModel(const Model& model,
                                                                        Device& device,
                                                                        const Options& options) {
  const ModelConfig& config = model.config();
  std::unique_ptr<DeviceDecoder> dd(new DeviceDecoder(config, device, options));
  DD_RETURN_IF_ERROR(dd->Init());
  const uint64_t d = config.d_model, q = config.q_dim(), kv = config.kv_dim();
  const uint64_t f = config.ffn_dim;
  std::vector<std::vector<uint16_t>> staged;  // host bytes alive until the stream syncs
  auto upload = [&](DevicePtr base, uint64_t offset_elements, absl::Span<const float> values) {
    std::vector<uint16_t>& bits = staged.emplace_back(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = Round(options.weight_dtype, values[i]);
    return dd->stream_->CopyToDevice(base + offset_elements * 2, bits.data(), bits.size() * 2);
  };
  for (const Model::NamedWeight& w : model.Weights()) {
    const std::string& name = w.name;
    if (name == "model.embed_tokens.weight") {
      dd->embed_.assign(w.data.begin(), w.data.end());
      continue;
    }
    if (name == "model.norm.weight") {
      dd->norm_.assign(w.data.begin(), w.data.end());
      continue;
    }
    if (name == "lm_head.weight") {
      DD_RETURN_IF_ERROR(upload(dd->lm_head_, 0, w.data));
      continue;
    }
    uint32_t l = 0;
    char rest[96] = {};
    if (std::sscanf(name.c_str(), "model.layers.%u.%95s", &l, rest) != 2 ||
        l >= config.num_layers) {
      return absl::InternalError(
          absl::StrCat("DeviceDecoder::FromModel: unexpected weight ", name));
    }
    Layer& layer = dd->layers_[l];
    const std::string part = rest;
    absl::Status s;
    if (part == "input_layernorm.weight") {
      layer.input_norm.assign(w.data.begin(), w.data.end());
    } else if (part == "post_attention_layernorm.weight") {
      layer.post_norm.assign(w.data.begin(), w.data.end());
    } else if (part == "self_attn.q_proj.weight") {
      s = upload(layer.qkv, 0, w.data);
    } else if (part == "self_attn.k_proj.weight") {
      s = upload(layer.qkv, q * d, w.data);
    } else if (part == "self_attn.v_proj.weight") {
      s = upload(layer.qkv, (q + kv) * d, w.data);
    } else if (part == "self_attn.o_proj.weight") {
      s = upload(layer.o, 0, w.data);
    } else if (part == "mlp.gate_proj.weight") {
      s = upload(layer.gate_up, 0, w.data);
    } else if (part == "mlp.up_proj.weight") {
      s = upload(layer.gate_up, f * d, w.data);
    } else if (part == "mlp.down_proj.weight") {
      s = upload(layer.down, 0, w.data);
    } else {
      s = absl::InternalError(absl::StrCat("DeviceDecoder::FromModel: unexpected weight ", name));
    }
    DD_RETURN_IF_ERROR(s);
  }
  DD_RETURN_IF_ERROR(dd->stream_->Synchronize());
  return dd;
}

absl::Status DeviceDecoder::MatMul(const float* x, size_t rows, size_t k, DevicePtr w, size_t n,
                                   float* y) const {
  absl::MutexLock lock(&mu_);
  const uint64_t x_bytes = rows * k * 2, y_bytes = rows * n * 4;
  auto grow = [&](DevicePtr* p, uint64_t* have, uint64_t need) -> absl::Status {
    if (*have >= need) return absl::OkStatus();
    if (!p->is_null()) DD_RETURN_IF_ERROR(device_.Free(*p));
    *p = DevicePtr();
    *have = 0;
    absl::StatusOr<DevicePtr> fresh = device_.Allocate(need);
    if (!fresh.ok()) return fresh.status();
    *p = *fresh;
    *have = need;
    return absl::OkStatus();
  };
  DD_RETURN_IF_ERROR(grow(&x_dev_, &x_dev_bytes_, x_bytes));
  DD_RETURN_IF_ERROR(grow(&y_dev_, &y_dev_bytes_, y_bytes));
  if (x_host_.size() < rows * k) x_host_.resize(rows * k);
  for (size_t i = 0; i < rows * k; ++i) x_host_[i] = Round(options_.weight_dtype, x[i]);
  DeviceGemmParams p;
  p.dtype = options_.weight_dtype;
  p.rows = static_cast<uint32_t>(rows);
  p.k = static_cast<uint32_t>(k);
  p.n = static_cast<uint32_t>(n);
  p.x = x_dev_;
  p.w = w;
  p.y = y_dev_;
  DD_RETURN_IF_ERROR(stream_->CopyToDevice(x_dev_, x_host_.data(), x_bytes));
  DD_RETURN_IF_ERROR(stream_->Launch(MakeDeviceGemmKernel(p, options_.cublas)));
  DD_RETURN_IF_ERROR(stream_->CopyToHost(y, y_dev_, y_bytes));
  return stream_->Synchronize();
}

absl::StatusOr<std::vector<float>> DeviceDecoder::Embed(absl::Span<const int32_t> tokens) const {
  return EmbedTokens(embed_, config_.d_model, config_.vocab_size, tokens);
}

absl::StatusOr<Model::QkvOut> DeviceDecoder::Qkv(uint32_t layer, absl::Span<const float> hidden,
                                                 uint32_t pos) const {
  const size_t d = config_.d_model, q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  if (layer >= config_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Qkv: layer %d of %d", layer, config_.num_layers));
  }
  if (hidden.empty() || hidden.size() % d != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Qkv: hidden has %d floats, not a nonzero multiple of d_model %d", hidden.size(), d));
  }
  const size_t rows = hidden.size() / d, n = q_dim + 2 * kv_dim;
  const Layer& w = layers_[layer];
  std::vector<float> x(rows * d), qkv(rows * n);
  layer_math::RmsNorm(hidden.data(), rows, w.input_norm, config_.norm_eps, x.data());
  DD_RETURN_IF_ERROR(MatMul(x.data(), rows, d, w.qkv, n, qkv.data()));
  Model::QkvOut out;
  out.q.resize(rows * q_dim);
  out.k.resize(rows * kv_dim);
  out.v.resize(rows * kv_dim);
  for (size_t t = 0; t < rows; ++t) {
    const float* row = qkv.data() + t * n;
    std::copy_n(row, q_dim, out.q.begin() + t * q_dim);
    std::copy_n(row + q_dim, kv_dim, out.k.begin() + t * kv_dim);
    std::copy_n(row + q_dim + kv_dim, kv_dim, out.v.begin() + t * kv_dim);
  }
  layer_math::ApplyRope(config_.rope_theta, pos, rows, config_.head_dim, config_.num_heads,
                        out.q.data(), config_.num_kv_heads, out.k.data());
  return out;
}

absl::Status DeviceDecoder::FinishLayer(uint32_t layer, absl::Span<const float> attn,
                                        std::vector<float>* hidden) const {
  const size_t d = config_.d_model, q_dim = config_.q_dim(), f = config_.ffn_dim;
  if (layer >= config_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FinishLayer: layer %d of %d", layer, config_.num_layers));
  }
  if (hidden == nullptr || hidden->empty() || hidden->size() % d != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FinishLayer: hidden is not a nonzero multiple of d_model %d", d));
  }
  const size_t rows = hidden->size() / d;
  if (attn.size() != rows * q_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "FinishLayer: attn has %d floats, expected %d x %d", attn.size(), rows, q_dim));
  }
  const Layer& w = layers_[layer];
  std::vector<float> o(rows * d), x(rows * d), gate_up(rows * 2 * f), act(rows * f);
  DD_RETURN_IF_ERROR(MatMul(attn.data(), rows, q_dim, w.o, d, o.data()));
  for (size_t i = 0; i < rows * d; ++i) (*hidden)[i] += o[i];
  layer_math::RmsNorm(hidden->data(), rows, w.post_norm, config_.norm_eps, x.data());
  DD_RETURN_IF_ERROR(MatMul(x.data(), rows, d, w.gate_up, 2 * f, gate_up.data()));
  layer_math::SwiGlu(gate_up.data(), rows, f, act.data());
  DD_RETURN_IF_ERROR(MatMul(act.data(), rows, f, w.down, d, o.data()));
  for (size_t i = 0; i < rows * d; ++i) (*hidden)[i] += o[i];
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> DeviceDecoder::Logits(absl::Span<const float> hidden_row) const {
  if (hidden_row.size() != config_.d_model) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Logits: hidden_row has %d floats, d_model %d", hidden_row.size(), config_.d_model));
  }
  std::vector<float> x(config_.d_model), logits(config_.vocab_size);
  layer_math::RmsNorm(hidden_row.data(), 1, norm_, config_.norm_eps, x.data());
  DD_RETURN_IF_ERROR(
      MatMul(x.data(), 1, config_.d_model, lm_head_, config_.vocab_size, logits.data()));
  return logits;
}

}  // namespace kvtier::llm
