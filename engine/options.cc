// engine/options.cc — validation of EngineOptions and the small value types of engine.h.

#include "engine/options.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/admission_policy.h"
#include "engine/eviction/eviction_policy.h"
#include "kvtier/engine.h"

namespace kvtier {

const char* TierKindName(TierKind tier) {
  switch (tier) {
    case TierKind::kGpu:
      return "gpu";
    case TierKind::kHost:
      return "host";
    case TierKind::kDisk:
      return "disk";
    case TierKind::kRemote:
      return "remote";
  }
  return "invalid";
}

absl::StatusOr<TierKind> ParseTierKind(absl::string_view name) {
  for (TierKind t : kAllTiers) {
    if (name == TierKindName(t)) return t;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown tier '%s' (expected gpu, host, disk or remote)", absl::CHexEscape(name)));
}

absl::Status ValidateNamespaceName(absl::string_view name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrFormat("namespace name must be 1 to 128 bytes long, got %d bytes", name.size()));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "namespace name '%s' contains '%c'; allowed are letters, digits and . _ : @ -",
          absl::CHexEscape(name), c));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DiskTierOptions> MakeDiskTierOptions(const DiskOptions& disk,
                                                    const Geometry& geometry) {
  DiskTierOptions o;
  o.directory = disk.directory;
  o.capacity_bytes = disk.capacity_bytes;
  o.region_bytes = disk.region_bytes;
  if (absl::StatusOr<Codec> codec = ParseCodec(disk.codec); codec.ok()) {
    o.codec = *codec;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "disk.codec = '%s' is not one of none, zstd, zstd-shuffle, fp8, int8", disk.codec));
  }
  if (absl::Status s = CheckCodecDType(o.codec, geometry.dtype); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("disk.", s.message()));
  }
  o.zstd_level = disk.zstd_level;
  if (absl::StatusOr<SyncPolicy> sync = ParseSyncPolicy(disk.sync); sync.ok()) {
    o.sync = *sync;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("disk.sync: ", sync.status().message()));
  }
  o.queue_depth = disk.queue_depth;
  o.force_fallback_io = disk.force_fallback_io;
  o.group_access = disk.group_access;
  o.staging_buffers = disk.staging_buffers;
  o.codec_threads = disk.codec_threads;
  o.read_in_place = disk.read_in_place;
  if (absl::Status s = o.Validate(geometry); !s.ok()) return s;
  AdmissionOptions ao;
  ao.min_seen = disk.admit_min_seen;
  ao.write_budget_mbps = disk.write_budget_mbps;
  if (absl::Status s = ao.Validate(); !s.ok()) return s;
  return o;
}

KvBuffers KvBuffers::Blocks(std::vector<DevicePtr> blocks) {
  KvBuffers b;
  b.blocks_ = std::move(blocks);
  return b;
}

KvBuffers KvBuffers::Paged(PagedPool pool, std::vector<uint32_t> pages) {
  KvBuffers b;
  b.paged_ = true;
  b.pool_ = std::move(pool);
  b.pages_ = std::move(pages);
  return b;
}

Placement::Options PlacementOptions(const EngineOptions& options) {
  Placement::Options o;
  o.block_bytes = options.geometry.block_bytes();
  o.disk_record_bytes = DiskRecordBytes(options.disk, options.geometry);
  o.secure_erase = options.secure_erase;
  o.prefix_aware_eviction = options.prefix_aware_eviction;
  o.cost_aware_eviction = options.cost_aware_eviction;
  o.eviction_window = options.eviction_window;
  o.lease_timeout = options.lease_timeout;
  return o;
}

size_t DiskRecordBytes(const DiskOptions& disk, const Geometry& geometry) {
  const absl::StatusOr<Codec> codec = ParseCodec(disk.codec);
  return NominalRecordSize(geometry, codec.ok() ? *codec : Codec::kNone);
}

absl::Status ValidateNamespaceLimits(const NamespaceLimits& limits, size_t block_bytes) {
  const struct {
    const char* name;
    size_t bytes;
  } quotas[] = {{"gpu_bytes", limits.gpu_bytes},
                {"host_bytes", limits.host_bytes},
                {"disk_bytes", limits.disk_bytes}};
  for (const auto& q : quotas) {
    if (q.bytes != 0 && q.bytes < block_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s = %d is smaller than one block (%d bytes); use 0 for no quota", q.name, q.bytes,
          block_bytes));
    }
  }
  if (limits.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ttl = %s is not positive; use absl::InfiniteDuration() to keep blocks",
        absl::FormatDuration(limits.ttl)));
  }
  return absl::OkStatus();
}

const char* RemoteWritePolicyName(RemoteWritePolicy policy) {
  switch (policy) {
    case RemoteWritePolicy::kWriteThrough:
      return "write-through";
    case RemoteWritePolicy::kOnEvict:
      return "on-evict";
    case RemoteWritePolicy::kBoth:
      return "both";
  }
  return "invalid";
}

absl::StatusOr<RemoteWritePolicy> ParseRemoteWritePolicy(absl::string_view name) {
  for (RemoteWritePolicy p :
       {RemoteWritePolicy::kWriteThrough, RemoteWritePolicy::kOnEvict, RemoteWritePolicy::kBoth}) {
    if (name == RemoteWritePolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown remote write policy '%s' (expected write-through, on-evict or both)",
      absl::CHexEscape(name)));
}

absl::Status ValidateRemoteSeed(absl::string_view seed) {
  const size_t colon = seed.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "remote.seeds: '%s' is not host:port (for example 127.0.0.1:7000)", absl::CHexEscape(seed)));
  }
  absl::string_view port = seed.substr(colon + 1);
  uint32_t p = 0;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return absl::InvalidArgumentError(
        absl::StrFormat("remote.seeds: '%s' has no port number after ':'", absl::CHexEscape(seed)));
  }
  for (char c : port) p = p * 10 + static_cast<uint32_t>(c - '0');
  if (p == 0 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "remote.seeds: port %u of '%s' is not in 1..65535", p, absl::CHexEscape(seed)));
  }
  return absl::OkStatus();
}

absl::Status ValidateRemoteOptions(const RemoteOptions& r, const Geometry& geometry) {
  if (r.seeds.empty()) return absl::OkStatus();  // no remote tier
  for (const std::string& seed : r.seeds) {
    if (absl::Status s = ValidateRemoteSeed(seed); !s.ok()) return s;
  }
  if (r.tls && r.tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "remote.tls is on but remote.tls_ca_file is empty: name the CA bundle the cluster's "
        "certificates chain to");
  }
  if (r.tls_cert_file.empty() != r.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "remote.tls_cert_file and remote.tls_key_file go together: set both or neither");
  }
  if (!r.tls && (!r.tls_ca_file.empty() || !r.tls_cert_file.empty())) {
    return absl::InvalidArgumentError(
        "remote.tls_* files are set but remote.tls is off: set remote.tls = true to use TLS");
  }
  for (const auto& [name, d] : {std::pair<const char*, absl::Duration>{"connect_timeout",
                                                                        r.connect_timeout},
                                {"op_timeout", r.op_timeout},
                                {"match_timeout", r.match_timeout}}) {
    if (d <= absl::ZeroDuration() || d > absl::Minutes(10)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "remote.%s = %s must be positive and at most 10m", name, absl::FormatDuration(d)));
    }
  }
  if (r.connections_per_node < 1 || r.connections_per_node > 16) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "remote.connections_per_node = %u must be in [1, 16]", r.connections_per_node));
  }
  if (r.io_threads < 1 || r.io_threads > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("remote.io_threads = %u must be in [1, 16]", r.io_threads));
  }
  const size_t value = geometry.block_bytes() + 256;
  if (r.max_inflight_bytes < value) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "remote.max_inflight_bytes = %d is smaller than one value (%d bytes: a block and its "
        "header)",
        r.max_inflight_bytes, value));
  }
  if (absl::StatusOr<RemoteWritePolicy> p = ParseRemoteWritePolicy(r.write_policy); !p.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("remote.write_policy: ", p.status().message()));
  }
  absl::StatusOr<Codec> codec = ParseCodec(r.codec);
  if (!codec.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "remote.codec = '%s' is not one of none, zstd, zstd-shuffle, fp8, int8",
        absl::CHexEscape(r.codec)));
  }
  if (absl::Status s = CheckCodecDType(*codec, geometry.dtype); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("remote.", s.message()));
  }
  if (r.zstd_level < 1 || r.zstd_level > 19) {
    return absl::InvalidArgumentError(
        absl::StrFormat("remote.zstd_level = %d must be in [1, 19]", r.zstd_level));
  }
  AdmissionOptions ao;
  ao.min_seen = r.admit_min_seen;
  ao.write_budget_mbps = r.write_budget_mbps;
  if (absl::Status s = ao.Validate(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("remote: ", s.message()));
  }
  for (const auto& [ns, secret] : r.hmac_secrets) {
    if (absl::Status s = ValidateNamespaceName(ns); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("remote.hmac_secrets: ", s.message()));
    }
    if (secret.size() < 16) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "remote.hmac_secrets['%s'] is %d bytes; use at least 16 random bytes", ns,
          secret.size()));
    }
  }
  return absl::OkStatus();
}

absl::Status TensorParallelOptions::Validate(const Geometry& geometry) const {
  if (size == 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor_parallel.rank = %u must be in [0, tensor_parallel.size = %u)", rank, size));
  }
  if (store_rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor_parallel.store_rank = %u must be in [0, tensor_parallel.size = %u)",
                        store_rank, size));
  }
  if (size == 1 || geometry.kind == KvKind::kLatent) return absl::OkStatus();
  if (geometry.total_kv_heads == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor_parallel.size = %u, but the geometry is not a shard (total_kv_heads = 0): "
        "ranks holding different KV heads would share keys; build each rank's geometry with "
        "Geometry::ForTensorParallelRank",
        size));
  }
  Geometry full = geometry;
  full.num_kv_heads = geometry.total_kv_heads;
  full.kv_head_begin = 0;
  full.total_kv_heads = 0;
  absl::StatusOr<Geometry> want = full.ForTensorParallelRank(rank, size);
  if (!want.ok()) return want.status();  // "tensor parallel: ..." naming the field
  if (want->num_kv_heads != geometry.num_kv_heads ||
      want->kv_head_begin != geometry.kv_head_begin) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor_parallel: rank %u of %u holds KV heads [%u, %u) of %u, but the geometry says "
        "kv_head_begin = %u, num_kv_heads = %u (Geometry::ForTensorParallelRank gives the "
        "rank's geometry)",
        rank, size, want->kv_head_begin, want->kv_head_begin + want->num_kv_heads,
        geometry.total_kv_heads, geometry.kv_head_begin, geometry.num_kv_heads));
  }
  return absl::OkStatus();
}

bool TensorParallelOptions::Stores(const Geometry& geometry) const {
  const uint32_t group = geometry.ReplicasUnder(size);
  return rank % group == store_rank % group;
}

absl::Status EngineOptions::ShardForTensorParallel(uint32_t rank, uint32_t size,
                                                   uint32_t store_rank) {
  absl::StatusOr<Geometry> g = geometry.ForTensorParallelRank(rank, size);
  if (!g.ok()) return g.status();
  const TensorParallelOptions tp{rank, size, store_rank};
  if (absl::Status s = tp.Validate(*g); !s.ok()) return s;
  geometry = *g;
  tensor_parallel = tp;
  return absl::OkStatus();
}

absl::Status EngineOptions::Validate() const {
  if (absl::Status s = geometry.Validate(); !s.ok()) return s;
  if (absl::Status s = tensor_parallel.Validate(geometry); !s.ok()) return s;
  if (model_fingerprint.empty()) {
    return absl::InvalidArgumentError(
        "model_fingerprint is empty: set it to the model's name and revision, so blocks of "
        "different models never match");
  }
  if (key_hash != KeyHash::kSha256 && key_hash != KeyHash::kXxh3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("key_hash = %d is not a known hash", static_cast<int>(key_hash)));
  }
  if (absl::Status s = device.Validate(); !s.ok()) return s;
  const size_t block = geometry.block_bytes();
  if (host_tier_bytes < block) {
    return absl::InvalidArgumentError(
        absl::StrFormat("host_tier_bytes = %d is smaller than one block (%d bytes for %s)",
                        host_tier_bytes, block, geometry.ToString()));
  }
  if (gpu_tier_bytes != 0 && gpu_tier_bytes < block) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "gpu_tier_bytes = %d is smaller than one block (%d bytes); use 0 to disable the GPU "
        "tier",
        gpu_tier_bytes, block));
  }
  for (const std::string* policy : {&gpu_eviction, &host_eviction}) {
    if (absl::StatusOr<std::unique_ptr<EvictionPolicy>> p = MakeEvictionPolicy(*policy, 1);
        !p.ok()) {
      return p.status();
    }
  }
  if (eviction_window == 0 || eviction_window > 1024) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "eviction_window = %u must be in [1, 1024] (candidates weighed per eviction)",
        eviction_window));
  }
  for (const auto& [name, limits] : namespace_limits) {
    if (absl::Status s = ValidateNamespaceName(name); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("namespace_limits: ", s.message()));
    }
    if (absl::Status s = ValidateNamespaceLimits(limits, geometry.block_bytes()); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("namespace_limits['%s']: %s", name, s.message()));
    }
  }
  for (size_t i = 0; i < namespaces.size(); ++i) {
    if (absl::Status s = ValidateNamespaceName(namespaces[i]); !s.ok()) return s;
    for (size_t j = 0; j < i; ++j) {
      if (namespaces[i] == namespaces[j]) {
        return absl::InvalidArgumentError(
            absl::StrFormat("namespace '%s' is listed twice", namespaces[i]));
      }
    }
  }
  if (!disk.directory.empty()) {
    if (absl::StatusOr<DiskTierOptions> d = MakeDiskTierOptions(disk, geometry); !d.ok()) {
      return d.status();
    }
  }
  if (absl::Status s = ValidateRemoteOptions(remote, geometry); !s.ok()) return s;
  if (lease_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrFormat("lease_timeout = %s must be positive",
                                                      absl::FormatDuration(lease_timeout)));
  }
  for (TierKind t : kAllTiers) {
    const ReadRate& r = read_rate_priors[t];
    if (!std::isfinite(r.bytes_per_s) || r.bytes_per_s < 0 || r.latency < absl::ZeroDuration() ||
        r.latency == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "read_rate_priors[%s] = {bytes_per_s %g, latency %s}: bytes_per_s must be finite and "
          ">= 0 (0 = the default), latency finite and >= 0",
          TierKindName(t), r.bytes_per_s, absl::FormatDuration(r.latency)));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier
