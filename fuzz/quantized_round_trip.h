// fuzz/quantized_round_trip.h — what a record stored under fp8 / int8 must decode to: the
// quantization kernels' own CPU round trip (DequantizeBlocksCpu ∘ QuantizeBlocksCpu) of one
// block. Shared by the disk and remote record fuzz targets.

#ifndef KVTIER_FUZZ_QUANTIZED_ROUND_TRIP_H_
#define KVTIER_FUZZ_QUANTIZED_ROUND_TRIP_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/quantize.h"
#include "kvtier/geometry.h"

namespace kvtier::fuzz {

// REQUIRES: g.Validate().ok(); `raw` holds g.block_bytes() bytes.
inline std::vector<uint8_t> QuantizedRoundTrip(const Geometry& g, QuantFormat f,
                                               const uint8_t* raw) {
  QuantizeParams p;
  p.geometry = g;
  p.format = f;
  p.num_blocks = 1;
  p.src_stride = g.block_bytes();
  p.dst_stride = QuantizedBlockBytes(g, f);
  std::vector<uint8_t> q(QuantizedBlockBytes(g, f));
  QuantizeBlocksCpu(p, raw, q.data());
  std::vector<uint8_t> back(g.block_bytes());
  std::swap(p.src_stride, p.dst_stride);
  DequantizeBlocksCpu(p, q.data(), back.data());
  return back;
}

}  // namespace kvtier::fuzz

#endif  // KVTIER_FUZZ_QUANTIZED_ROUND_TRIP_H_
