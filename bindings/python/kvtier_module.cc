// bindings/python/kvtier_module.cc — the `kvtier._kvtier` extension module: kvtier::Engine for
// Python. A binding: it includes kvtier's public headers only (include/kvtier/) and Abseil.
//
// Python hands kvtier NumPy arrays (host memory); the C++ API moves KV between tiers and
// *device* buffers (DevicePtr). store_device / load_device / store_paged / load_paged take
// device addresses directly: memory of the engine's device, or memory registered with
// register_device_memory (an inference engine's own pool; on the emulated device a NumPy array
// stands in for it). Each store and load of arrays stages through a device buffer
// of the engine's own Device: Store copies the array host → device on a staging stream and
// stores from there (the engine's copies wait on that stream, not the host); Load loads into
// the staging buffer and copies it device → host into the result. On the emulated device the
// "device" buffer is the emulated arena, on CUDA it is cudaMalloc'd memory. Staging buffers
// and their streams are pooled per engine, so steady-state calls allocate nothing.
//
// Promises:
//   * Every blocking wait (Open, Store/Load completion, Flush, Close) releases the GIL.
//   * absl::Status errors become exceptions of the kvtier.Error hierarchy, carrying the
//     engine's message: InvalidArgumentError (also a ValueError), NotFoundError (also a
//     LookupError), AlreadyExistsError, ResourceExhaustedError, FailedPreconditionError,
//     DataLossError, UnavailableError; any other code raises kvtier.Error (a RuntimeError).
//   * Array shapes and dtypes are checked before anything is enqueued, with messages that
//     name the expected shape.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "kvtier/block_key.h"
#include "kvtier/device.h"
#include "kvtier/engine.h"
#include "kvtier/geometry.h"
#include "kvtier/stats.h"

namespace py = pybind11;

namespace kvtier::python {
namespace {

// ----------------------------------------------------------------------------- errors

// The Python exception types, created at import (PyErr_NewException: several bases).
struct ErrorTypes {
  PyObject* base = nullptr;  // kvtier.Error(RuntimeError)
  std::map<absl::StatusCode, PyObject*> by_code;
};
ErrorTypes& Errors() {
  static ErrorTypes* errors = new ErrorTypes();  // lives as long as the interpreter
  return *errors;
}

// Thrown by the binding, translated to the exception type of its code.
class StatusError : public std::exception {
 public:
  explicit StatusError(absl::Status status)
      : status_(std::move(status)), what_(status_.message()) {}
  const absl::Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  absl::Status status_;
  std::string what_;
};

void ThrowIfError(const absl::Status& s) {
  if (!s.ok()) throw StatusError(s);
}
template <typename T>
T ValueOrThrow(absl::StatusOr<T> v) {
  if (!v.ok()) throw StatusError(v.status());
  return *std::move(v);
}
[[noreturn]] void ThrowInvalid(const std::string& message) {
  throw StatusError(absl::InvalidArgumentError(message));
}

void RegisterErrors(py::module_& m) {
  ErrorTypes& e = Errors();
  e.base = PyErr_NewExceptionWithDoc("kvtier.Error",
                                     "A kvtier call failed; the message says what was wrong.",
                                     PyExc_RuntimeError, nullptr);
  if (e.base == nullptr) throw py::error_already_set();
  m.attr("Error") = py::handle(e.base);
  struct Kind {
    absl::StatusCode code;
    const char* name;
    PyObject* also;  // a built-in exception the type also derives from, or null
    const char* doc;
  };
  const Kind kinds[] = {
      {absl::StatusCode::kInvalidArgument, "InvalidArgumentError", PyExc_ValueError,
       "Bad input: wrong geometry, shape, dtype, key, namespace name, size."},
      {absl::StatusCode::kNotFound, "NotFoundError", PyExc_LookupError,
       "A namespace, key or hint id that does not exist."},
      {absl::StatusCode::kAlreadyExists, "AlreadyExistsError", nullptr,
       "Creating something that already exists."},
      {absl::StatusCode::kResourceExhausted, "ResourceExhaustedError", nullptr,
       "A tier cannot hold the request without evicting pinned data."},
      {absl::StatusCode::kFailedPrecondition, "FailedPreconditionError", nullptr,
       "The engine is not in a state for this call (e.g. no GPU tier, engine closed)."},
      {absl::StatusCode::kDataLoss, "DataLossError", nullptr,
       "Block bytes failed verification; the destination holds zeros, never wrong data."},
      {absl::StatusCode::kUnavailable, "UnavailableError", nullptr,
       "A resource (metrics port, device) is not available."},
  };
  for (const Kind& k : kinds) {
    PyObject* bases = k.also ? PyTuple_Pack(2, e.base, k.also) : PyTuple_Pack(1, e.base);
    if (bases == nullptr) throw py::error_already_set();
    const std::string qualified = std::string("kvtier.") + k.name;
    PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), k.doc, bases, nullptr);
    Py_DECREF(bases);
    if (type == nullptr) throw py::error_already_set();
    e.by_code[k.code] = type;
    m.attr(k.name) = py::handle(type);
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& err) {
      const ErrorTypes& types = Errors();
      auto it = types.by_code.find(err.status().code());
      PyErr_SetString(it == types.by_code.end() ? types.base : it->second, err.what());
    }
  });
}

// ----------------------------------------------------------------------------- conversions

std::string Str(py::handle h) { return py::str(h).cast<std::string>(); }
std::string TypeName(py::handle h) { return Str(py::type::of(h).attr("__name__")); }

std::vector<int32_t> TokensFrom(const py::handle& tokens) {
  // Any sequence or array of integers; values must fit in int32 (token ids are int32 in the
  // key encoding). Non-integer arrays are refused rather than silently truncated.
  if (py::isinstance<py::array>(tokens)) {
    py::array a = py::reinterpret_borrow<py::array>(tokens);
    if (a.ndim() != 1) {
      ThrowInvalid(absl::StrFormat("tokens: expected a 1-D array, got %d dimensions", a.ndim()));
    }
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u') {
      ThrowInvalid(
          absl::StrFormat("tokens: expected an integer array, got dtype %s", Str(a.dtype())));
    }
    py::array_t<int64_t, py::array::forcecast> wide(a);
    std::vector<int32_t> out(static_cast<size_t>(wide.size()));
    auto v = wide.unchecked<1>();
    for (py::ssize_t i = 0; i < v.shape(0); ++i) {
      if (v(i) < INT32_MIN || v(i) > INT32_MAX) {
        ThrowInvalid(absl::StrFormat("tokens[%d] = %d does not fit in int32", i, v(i)));
      }
      out[static_cast<size_t>(i)] = static_cast<int32_t>(v(i));
    }
    return out;
  }
  if (py::isinstance<py::str>(tokens) || py::isinstance<py::bytes>(tokens) ||
      !py::isinstance<py::sequence>(tokens)) {
    ThrowInvalid(absl::StrFormat("tokens: expected a sequence or 1-D array of ints, got %s",
                                 TypeName(tokens)));
  }
  py::sequence seq = py::reinterpret_borrow<py::sequence>(tokens);
  std::vector<int32_t> out;
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    py::handle item = seq[i];
    if (!py::isinstance<py::int_>(item) && !py::hasattr(item, "__index__")) {
      ThrowInvalid(absl::StrFormat("tokens[%d]: expected an int, got %s", i, TypeName(item)));
    }
    const long long v = py::cast<long long>(item);  // NOLINT(runtime/int): Python's int
    if (v < INT32_MIN || v > INT32_MAX) {
      ThrowInvalid(absl::StrFormat("tokens[%d] = %d does not fit in int32", i, v));
    }
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

std::vector<BlockKey> KeysFrom(const std::vector<std::string>& hex) {
  std::vector<BlockKey> keys;
  keys.reserve(hex.size());
  for (const std::string& h : hex) keys.push_back(ValueOrThrow(BlockKey::FromHex(h)));
  return keys;
}

std::vector<std::string> HexOf(const std::vector<BlockKey>& keys) {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const BlockKey& k : keys) out.push_back(k.ToHex());
  return out;
}

// The NumPy dtype a block's elements load as: float16, float32, or uint16 holding bfloat16
// bits (NumPy has no bfloat16).
py::dtype NativeDtype(DType d) {
  switch (d) {
    case DType::kFloat16:
      return py::dtype("float16");
    case DType::kFloat32:
      return py::dtype("float32");
    case DType::kBFloat16:
      return py::dtype("uint16");
    case DType::kFp8E4m3:
    case DType::kFp8E5m2:
      return py::dtype("uint8");  // NumPy has no fp8: the raw bytes
  }
  return py::dtype("uint8");
}

// Arrays accepted as blocks of `d`: the native dtype, or a same-width integer holding raw
// bits (how torch's bfloat16 / float16 reach NumPy: tensor.view(torch.int16).numpy()).
bool AcceptsDtype(DType d, const py::dtype& dt) {
  const char kind = dt.kind();
  const size_t size = static_cast<size_t>(dt.itemsize());
  if (size != DTypeSize(d)) return false;
  if (kind == 'i' || kind == 'u') return true;
  if (kind == 'f') return d == DType::kFloat16 || d == DType::kFloat32;  // not bf16/fp8 bits
  // Extension dtypes (ml_dtypes) of the same name: bfloat16, float8_e4m3fn, float8_e5m2.
  const std::string name = Str(dt);
  return (d == DType::kBFloat16 && name == "bfloat16") ||
         (d == DType::kFp8E4m3 && name == "float8_e4m3fn") ||
         (d == DType::kFp8E5m2 && name == "float8_e5m2");
}

std::vector<py::ssize_t> BlockShape(const Geometry& g) {
  return {static_cast<py::ssize_t>(g.num_layers), static_cast<py::ssize_t>(g.parts()),
          static_cast<py::ssize_t>(g.block_tokens), static_cast<py::ssize_t>(g.num_kv_heads),
          static_cast<py::ssize_t>(g.head_dim)};
}

std::string ShapeString(const std::vector<py::ssize_t>& shape) {
  return "(" + absl::StrJoin(shape, ", ") + ")";
}

// Checks `a` is (n, layers, parts, block_tokens, kv_heads, head_dim) (parts: 2 for K and V,
// 1 for an MLA latent), C-contiguous, of an
// accepted dtype (writable if `writable`); returns n.
size_t CheckBlocksArray(const py::array& a, const Geometry& g, const char* what, bool writable) {
  const std::vector<py::ssize_t> block = BlockShape(g);
  std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
  const std::string expected = "(n, " + ShapeString(block).substr(1);
  if (shape.size() != block.size() + 1 ||
      !std::equal(block.begin(), block.end(), shape.begin() + 1)) {
    ThrowInvalid(absl::StrFormat(
        "%s: expected shape (n, layers, parts, block_tokens, kv_heads, head_dim) = %s for geometry "
        "%s, got %s",
        what, expected, g.ToString(), ShapeString(shape)));
  }
  if (!AcceptsDtype(g.dtype, a.dtype())) {
    ThrowInvalid(absl::StrFormat(
        "%s: dtype %s does not hold %s elements (use %s, or a %d-byte integer dtype holding "
        "the raw bits)",
        what, Str(a.dtype()), DTypeName(g.dtype), Str(NativeDtype(g.dtype)), DTypeSize(g.dtype)));
  }
  if (!(a.flags() & py::array::c_style)) {
    ThrowInvalid(
        absl::StrFormat("%s: array must be C-contiguous (use numpy.ascontiguousarray)", what));
  }
  if (writable && !a.writeable()) ThrowInvalid(absl::StrFormat("%s: array is read-only", what));
  return static_cast<size_t>(shape[0]);
}

// ----------------------------------------------------------------------------- staging

// A device buffer and the stream that fills and drains it. Pooled by Staging.
struct Stager {
  std::unique_ptr<Stream> stream;
  DevicePtr buffer;
  size_t capacity = 0;
};

// Device staging buffers for NumPy ↔ engine copies. Thread-safe; buffers grow to the
// largest request and at most kKeep idle stagers are kept.
class Staging {
 public:
  explicit Staging(Device& device) : device_(device) {}
  ~Staging() { Clear(); }

  absl::StatusOr<std::unique_ptr<Stager>> Acquire(size_t bytes) {
    std::unique_ptr<Stager> s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        s = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (s == nullptr) {
      s = std::make_unique<Stager>();
      absl::StatusOr<std::unique_ptr<Stream>> stream = device_.CreateStream();
      if (!stream.ok()) return stream.status();
      s->stream = std::move(*stream);
    }
    if (s->capacity < bytes) {
      if (!s->buffer.is_null()) {
        if (absl::Status st = device_.Free(s->buffer); !st.ok()) return st;
        s->buffer = DevicePtr();
        s->capacity = 0;
      }
      absl::StatusOr<DevicePtr> p = device_.Allocate(bytes);
      if (!p.ok()) return p.status();
      s->buffer = *p;
      s->capacity = bytes;
    }
    return s;
  }

  void Return(std::unique_ptr<Stager> s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kKeep) {
      idle_.push_back(std::move(s));
      return;
    }
    if (!s->buffer.is_null()) device_.Free(s->buffer).IgnoreError();
  }

  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::unique_ptr<Stager>& s : idle_) {
      if (!s->buffer.is_null()) device_.Free(s->buffer).IgnoreError();
    }
    idle_.clear();
  }

 private:
  static constexpr size_t kKeep = 4;
  Device& device_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Stager>> idle_;  // guarded by mu_
};

// Returns a stager to its pool on every exit path.
class StagerLease {
 public:
  StagerLease(Staging& pool, std::unique_ptr<Stager> s) : pool_(pool), s_(std::move(s)) {}
  ~StagerLease() { pool_.Return(std::move(s_)); }
  Stager& operator*() { return *s_; }
  Stager* operator->() { return s_.get(); }

 private:
  Staging& pool_;
  std::unique_ptr<Stager> s_;
};

// ----------------------------------------------------------------------------- engine

// A Python buffer (a NumPy array) registered as device memory: the buffer export is held
// until unregistration, which keeps the object alive and its memory in place (NumPy refuses
// to resize an array while a buffer of it is exported).
class HeldBuffer {
 public:
  // Takes over `view`, a writable contiguous buffer export.
  explicit HeldBuffer(const Py_buffer& view) : view_(view) {}
  ~HeldBuffer() {
    py::gil_scoped_acquire gil;  // may run where the GIL was released (Close)
    PyBuffer_Release(&view_);
  }
  HeldBuffer(const HeldBuffer&) = delete;
  HeldBuffer& operator=(const HeldBuffer&) = delete;

 private:
  Py_buffer view_;
};

// An open engine plus its staging pool. Shared by the Python object and the calls in
// flight, so Close() from Python frees it once the last call has returned.
struct OpenEngine {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Staging> staging;
  // Buffers registered with register_device_memory, by address. Touched with the GIL held.
  std::map<uint64_t, std::unique_ptr<HeldBuffer>> registered;
  ~OpenEngine() {
    staging.reset();  // device buffers go back before the device does
    engine.reset();
    registered.clear();  // the engine no longer uses them
  }
};

std::vector<DevicePtr> DevicePtrs(const std::vector<uint64_t>& addresses) {
  std::vector<DevicePtr> out;
  out.reserve(addresses.size());
  for (uint64_t a : addresses) out.push_back(DevicePtr::FromAddress(a));
  return out;
}

KvBuffers PagedBuffers(const std::vector<uint64_t>& layers, uint32_t num_pages,
                       std::vector<uint32_t> pages, const std::string& layout) {
  KvBuffers::PagedPool pool;
  pool.layers = DevicePtrs(layers);
  pool.num_pages = num_pages;
  pool.layout = ValueOrThrow(ParsePageLayout(layout));  // "nhd" or "hnd", any case
  return KvBuffers::Paged(std::move(pool), std::move(pages));
}

// ------------------------------------------------------------------------------ statistics

// Engine.stats(): the snapshot as nested dicts, built by walking kvtier/stats.h's description
// of every statistic. Keys are the statistics' names, nested by group:
//   info, engine  top level                        {"device": ..., "match_calls": ...}
//   latency       top level, a dict each           {"match_latency": {"count", "sum_ns",
//                                                                     "buckets"}}
//   prefetch      "prefetch"                       {"prefetch": {"hinted": ...}}
//   tier          "tiers", by tier name            {"tiers": {"host": {"hits": ...}}}
//   namespace     "namespaces", by namespace name  {"namespaces": {"default": {"blocks": ...}}},
//                 per-tier figures a dict by tier name.
//   remote        "remote" (histograms a dict each) {"remote": {"enabled": 1, "get_latency": ...}}
//   remote_node   "remote"/"nodes", by address     {"remote": {"nodes": {"127.0.0.1:7000":
//                                                                         {"master": 1, ...}}}}
class PyStatsBuilder : public StatsVisitor {
 public:
  void BeginStat(const StatInfo& info) override {
    if (info.group == StatGroup::kPrefetch) Child(dict_, "prefetch");
    if (HasTierLabel(info.group) && !HasNamespaceLabel(info.group)) Child(dict_, "tiers");
    if (HasNamespaceLabel(info.group)) Child(dict_, "namespaces");
    if (info.group == StatGroup::kRemote) Child(dict_, "remote");
    if (HasNodeLabel(info.group)) Child(Child(dict_, "remote"), "nodes");
  }
  void Number(const StatInfo& info, const StatLabels& labels, uint64_t value) override {
    py::dict d = Container(info, labels);
    if (info.group == StatGroup::kNamespaceTier) {
      Child(d, info.name)[py::str(TierKindName(labels.tier))] = value;
    } else {
      d[Key(info.name)] = value;
    }
  }
  void Histogram(const StatInfo& info, const StatLabels& labels, const LatencyStats& l) override {
    py::dict h;
    h["count"] = l.count;
    h["sum_ns"] = l.sum_ns;
    h["buckets"] = std::vector<uint64_t>(std::begin(l.buckets), std::end(l.buckets));
    Container(info, labels)[Key(info.name)] = h;
  }
  void Label(const StatInfo& info, absl::string_view value) override {
    dict_[Key(info.name)] = py::str(std::string(value));
  }

  py::dict dict() const { return dict_; }

 private:
  static py::str Key(absl::string_view s) { return py::str(s.data(), s.size()); }
  // d[key], created as an empty dict the first time.
  static py::dict Child(py::dict d, absl::string_view key) {
    py::str k = Key(key);
    if (!d.contains(k)) d[k] = py::dict();
    return d[k].cast<py::dict>();
  }
  py::dict Container(const StatInfo& info, const StatLabels& labels) {
    switch (info.group) {
      case StatGroup::kPrefetch:
        return Child(dict_, "prefetch");
      case StatGroup::kTier:
        return Child(Child(dict_, "tiers"), TierKindName(labels.tier));
      case StatGroup::kNamespace:
      case StatGroup::kNamespaceTier:
        return Child(Child(dict_, "namespaces"), labels.ns);
      case StatGroup::kRemote:
        return Child(dict_, "remote");
      case StatGroup::kRemoteNode:
        return Child(Child(Child(dict_, "remote"), "nodes"), labels.node);
      case StatGroup::kInfo:
      case StatGroup::kEngine:
      case StatGroup::kLatency:
        break;
    }
    return dict_;
  }

  py::dict dict_;
};

py::dict StatsDict(const EngineStats& st) {
  PyStatsBuilder b;
  VisitStats(st, b);
  return b.dict();
}

// kvtier.stats_schema(): AllStats() as a list of dicts, for tools and tests that walk it.
py::list StatsSchema() {
  py::list out;
  for (const StatInfo& info : AllStats()) {
    py::dict d;
    d["name"] = std::string(info.name);
    d["group"] = StatGroupName(info.group);
    d["kind"] = StatKindName(info.kind);
    d["unit"] = StatUnitName(info.unit);
    py::list labels;
    if (HasNamespaceLabel(info.group)) labels.append("namespace");
    if (HasTierLabel(info.group)) labels.append("tier");
    if (HasNodeLabel(info.group)) labels.append("node");
    d["labels"] = labels;
    d["metric"] = std::string(info.metric);
    d["help"] = std::string(info.help);
    d["derived"] = info.derived;
    out.append(d);
  }
  return out;
}

class PyEngine {
 public:
  static std::unique_ptr<PyEngine> Open(const EngineOptions& options) {
    absl::StatusOr<std::unique_ptr<Engine>> e;
    {
      py::gil_scoped_release nogil;  // a disk tier's recovery can take a while
      e = Engine::Open(options);
    }
    auto open = std::make_shared<OpenEngine>();
    open->engine = ValueOrThrow(std::move(e));
    open->staging = std::make_unique<Staging>(open->engine->device());
    return std::unique_ptr<PyEngine>(new PyEngine(std::move(open)));
  }

  ~PyEngine() { Close(); }

  void Close() {
    std::shared_ptr<OpenEngine> last = std::move(open_);
    open_.reset();
    if (last == nullptr) return;
    py::gil_scoped_release nogil;  // the destructor waits for in-flight transfers
    last.reset();
  }
  bool closed() const { return open_ == nullptr; }

  const EngineOptions& options() const { return Get()->engine->options(); }
  const Geometry& geometry() const { return options().geometry; }

  std::string DeviceName() const { return Get()->engine->device().name(); }
  std::string DeviceKind() const { return DeviceKindName(Get()->engine->device().kind()); }

  void CreateNamespace(const std::string& ns) { ThrowIfError(Get()->engine->CreateNamespace(ns)); }
  std::vector<std::string> ListNamespaces() const { return Get()->engine->ListNamespaces(); }

  std::vector<std::string> BlockKeys(const std::string& ns, const py::handle& tokens,
                                     const std::string& extra) const {
    const EngineOptions& o = options();
    KeyHasher hasher(o.key_hash, ns, o.model_fingerprint, o.geometry.Fingerprint());
    return HexOf(hasher.Keys(TokensFrom(tokens), o.geometry.block_tokens, extra));
  }

  py::tuple Match(const std::string& ns, const py::handle& tokens, const std::string& extra) {
    std::shared_ptr<OpenEngine> e = Get();
    const std::vector<int32_t> t = TokensFrom(tokens);
    absl::StatusOr<MatchResult> m;
    {
      py::gil_scoped_release nogil;
      m = e->engine->Match(ns, t, extra);
    }
    MatchResult r = ValueOrThrow(std::move(m));
    return py::make_tuple(r.matched_tokens, HexOf(r.keys));
  }

  // Engine::PlanLoad for the match of `tokens`: how much of it to load and how much to
  // recompute, at the tiers' measured rates and the stated prefill rate.
  py::dict PlanLoad(const std::string& ns, const py::handle& tokens, double prefill_tokens_per_s,
                    size_t local_tokens, const std::string& extra) {
    std::shared_ptr<OpenEngine> e = Get();
    const std::vector<int32_t> t = TokensFrom(tokens);
    absl::StatusOr<LoadPlan> plan;
    {
      py::gil_scoped_release nogil;
      absl::StatusOr<MatchResult> m = e->engine->Match(ns, t, extra);
      if (!m.ok()) {
        plan = m.status();
      } else {
        ComputeModel c;
        c.prefill_tokens_per_s = prefill_tokens_per_s;
        plan = e->engine->PlanLoad(*m, t.size(), local_tokens, c);
      }
    }
    const LoadPlan p = ValueOrThrow(std::move(plan));
    py::dict d;
    d["load_blocks"] = p.load_blocks;
    d["load_tokens"] = p.load_tokens;
    d["recompute_tokens"] = p.recompute_tokens;
    d["reason"] = LoadPlanReasonName(p.reason);
    d["expected_load_s"] = p.expected_stage_s + p.expected_load_s;
    d["expected_total_s"] = p.expected_total_s;
    d["recompute_all_s"] = p.recompute_all_s;
    d["load_all_s"] = p.load_all_s;
    return d;
  }

  std::vector<std::string> MatchTiers(const std::string& ns, const py::handle& tokens,
                                      const std::string& extra) {
    std::shared_ptr<OpenEngine> e = Get();
    const std::vector<int32_t> t = TokensFrom(tokens);
    absl::StatusOr<MatchResult> m;
    {
      py::gil_scoped_release nogil;
      m = e->engine->Match(ns, t, extra);
    }
    std::vector<std::string> out;
    for (TierKind tier : ValueOrThrow(std::move(m)).tiers) out.push_back(TierKindName(tier));
    return out;
  }

  // Stages `kv` into device memory and stores it as blocks first_block.. of `tokens`.
  py::dict Store(const std::string& ns, const py::handle& tokens, const py::array& kv,
                 size_t first_block, const std::string& extra) {
    std::shared_ptr<OpenEngine> e = Get();
    const Geometry& g = e->engine->options().geometry;
    const size_t n = CheckBlocksArray(kv, g, "store: kv", /*writable=*/false);
    if (n == 0) ThrowInvalid("store: kv holds no blocks (its first dimension is 0)");
    const std::vector<int32_t> t = TokensFrom(tokens);
    const size_t bytes = g.block_bytes();
    const void* host = kv.data();
    size_t moved = 0, present = 0, rejected = 0;
    {
      py::gil_scoped_release nogil;  // `kv` stays referenced by the caller's frame
      StagerLease s(*e->staging, ValueOrThrow(e->staging->Acquire(n * bytes)));
      ThrowIfError(s->stream->CopyToDevice(s->buffer, host, n * bytes));
      std::vector<DevicePtr> ptrs(n);
      for (size_t i = 0; i < n; ++i) ptrs[i] = s->buffer + i * bytes;
      StoreRequest r;
      r.ns = ns;
      r.tokens = t;
      r.extra = extra;
      r.first_block = first_block;
      r.buffers = KvBuffers::Blocks(std::move(ptrs));
      r.after = s->stream.get();
      absl::StatusOr<std::unique_ptr<TransferHandle>> h = e->engine->Store(r);
      // The staging copy must land before the buffer is reused, whatever Store said.
      const absl::Status staged = s->stream->Synchronize();
      std::unique_ptr<TransferHandle> handle = ValueOrThrow(std::move(h));
      ThrowIfError(staged);
      ThrowIfError(handle->Wait());
      moved = handle->blocks_moved();
      present = handle->blocks_present();
      rejected = handle->blocks_rejected();
    }
    py::dict d;
    d["stored"] = moved;
    d["present"] = present;
    d["rejected"] = rejected;
    return d;
  }

  // Loads `keys` into `out` (allocated when None) through a device staging buffer.
  py::array Load(const std::string& ns, const std::vector<std::string>& hex, py::object out) {
    return LoadBefore(ns, hex, out, absl::InfiniteFuture(), nullptr);
  }

  // Load with a deadline `seconds` from now: (array, failed block indices); the failed
  // blocks' rows are zeros.
  py::tuple LoadWithin(const std::string& ns, const std::vector<std::string>& hex, double seconds,
                       py::object out) {
    if (!(seconds >= 0) || !std::isfinite(seconds)) {
      ThrowInvalid(absl::StrFormat("load_within: seconds = %g must be finite and >= 0", seconds));
    }
    std::vector<size_t> failed;
    py::array a = LoadBefore(ns, hex, out, absl::Now() + absl::Seconds(seconds), &failed);
    return py::make_tuple(a, failed);
  }

  py::array LoadBefore(const std::string& ns, const std::vector<std::string>& hex, py::object out,
                       absl::Time deadline, std::vector<size_t>* failed) {
    std::shared_ptr<OpenEngine> e = Get();
    const Geometry& g = e->engine->options().geometry;
    std::vector<BlockKey> keys = KeysFrom(hex);
    const size_t n = keys.size();
    if (n == 0) ThrowInvalid("load: no keys given");
    py::array result;
    if (out.is_none()) {
      std::vector<py::ssize_t> shape = BlockShape(g);
      shape.insert(shape.begin(), static_cast<py::ssize_t>(n));
      result = py::array(NativeDtype(g.dtype), shape);
    } else {
      if (!py::isinstance<py::array>(out)) ThrowInvalid("load: out must be a numpy array");
      result = py::reinterpret_borrow<py::array>(out);
      const size_t got = CheckBlocksArray(result, g, "load: out", /*writable=*/true);
      if (got != n) {
        ThrowInvalid(absl::StrFormat("load: out holds %d blocks but %d keys were given", got, n));
      }
    }
    const size_t bytes = g.block_bytes();
    void* host = result.mutable_data();
    {
      py::gil_scoped_release nogil;
      StagerLease s(*e->staging, ValueOrThrow(e->staging->Acquire(n * bytes)));
      std::vector<DevicePtr> ptrs(n);
      for (size_t i = 0; i < n; ++i) ptrs[i] = s->buffer + i * bytes;
      LoadRequest r;
      r.ns = ns;
      r.keys = std::move(keys);
      r.buffers = KvBuffers::Blocks(std::move(ptrs));
      r.layerwise = false;  // the host wants whole blocks; one event, fewest copies
      r.deadline = deadline;
      std::unique_ptr<TransferHandle> h = ValueOrThrow(e->engine->Load(r));
      if (failed != nullptr) {
        *failed = ValueOrThrow(h->FailedBlocks());
      } else {
        ThrowIfError(h->Wait());
      }
      ThrowIfError(s->stream->CopyToHost(host, s->buffer, n * bytes));
      ThrowIfError(s->stream->Synchronize());
    }
    return result;
  }

  size_t Erase(const std::string& ns, const std::vector<std::string>& hex) {
    std::shared_ptr<OpenEngine> e = Get();
    const std::vector<BlockKey> keys = KeysFrom(hex);
    absl::StatusOr<size_t> n;
    {
      py::gil_scoped_release nogil;
      n = e->engine->Erase(ns, keys);
    }
    return ValueOrThrow(std::move(n));
  }

  size_t EraseNamespace(const std::string& ns) {
    std::shared_ptr<OpenEngine> e = Get();
    absl::StatusOr<size_t> n;
    {
      py::gil_scoped_release nogil;
      n = e->engine->EraseNamespace(ns);
    }
    return ValueOrThrow(std::move(n));
  }

  // Registers `memory` (an int address with `nbytes`, or a writable contiguous buffer such
  // as a NumPy array, whose export is held until unregistration) as device memory; returns
  // its address.
  uint64_t RegisterDeviceMemory(const py::handle& memory, std::optional<size_t> nbytes) {
    std::shared_ptr<OpenEngine> e = Get();
    if (py::isinstance<py::int_>(memory)) {
      if (!nbytes.has_value()) {
        ThrowInvalid("register_device_memory: nbytes is required with an integer address");
      }
      const uint64_t address = memory.cast<uint64_t>();
      ThrowIfError(e->engine->RegisterDeviceMemory(DevicePtr::FromAddress(address), *nbytes));
      return address;
    }
    Py_buffer view;
    if (!PyObject_CheckBuffer(memory.ptr()) ||
        PyObject_GetBuffer(memory.ptr(), &view, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS) != 0) {
      std::string why = "it does not expose the buffer protocol";
      if (PyErr_Occurred()) {
        why = py::error_already_set().what();  // fetches and clears the Python error
      }
      ThrowInvalid(absl::StrFormat(
          "register_device_memory: expected an integer address (with nbytes) or a writable, "
          "contiguous buffer such as a NumPy array; got %s (%s)",
          TypeName(memory), why));
    }
    auto held = std::make_unique<HeldBuffer>(view);
    const uint64_t address = reinterpret_cast<uintptr_t>(view.buf);
    const size_t bytes = static_cast<size_t>(view.len);
    if (nbytes.has_value() && *nbytes > bytes) {
      ThrowInvalid(absl::StrFormat(
          "register_device_memory: nbytes = %d is larger than the buffer (%d bytes)", *nbytes,
          bytes));
    }
    ThrowIfError(
        e->engine->RegisterDeviceMemory(DevicePtr::FromAddress(address), nbytes.value_or(bytes)));
    e->registered[address] = std::move(held);
    return address;
  }

  void UnregisterDeviceMemory(const py::handle& memory) {
    std::shared_ptr<OpenEngine> e = Get();
    uint64_t address = 0;
    if (py::isinstance<py::int_>(memory)) {
      address = memory.cast<uint64_t>();
    } else {
      Py_buffer view;
      if (!PyObject_CheckBuffer(memory.ptr()) ||
          PyObject_GetBuffer(memory.ptr(), &view, PyBUF_SIMPLE | PyBUF_ANY_CONTIGUOUS) != 0) {
        PyErr_Clear();
        ThrowInvalid(absl::StrFormat(
            "unregister_device_memory: expected an integer address or the buffer that was "
            "registered; got %s",
            TypeName(memory)));
      }
      address = reinterpret_cast<uintptr_t>(view.buf);
      PyBuffer_Release(&view);
    }
    ThrowIfError(e->engine->UnregisterDeviceMemory(DevicePtr::FromAddress(address)));
    e->registered.erase(address);
  }

  // Store from device memory: blocks[i] is the address of block first_block + i.
  py::dict StoreFrom(const std::string& ns, const py::handle& tokens, KvBuffers buffers,
                     size_t first_block, const std::string& extra) {
    std::shared_ptr<OpenEngine> e = Get();
    const std::vector<int32_t> t = TokensFrom(tokens);
    size_t moved = 0, present = 0, rejected = 0;
    {
      py::gil_scoped_release nogil;
      StoreRequest r;
      r.ns = ns;
      r.tokens = t;
      r.extra = extra;
      r.first_block = first_block;
      r.buffers = std::move(buffers);
      std::unique_ptr<TransferHandle> h = ValueOrThrow(e->engine->Store(r));
      ThrowIfError(h->Wait());
      moved = h->blocks_moved();
      present = h->blocks_present();
      rejected = h->blocks_rejected();
    }
    py::dict d;
    d["stored"] = moved;
    d["present"] = present;
    d["rejected"] = rejected;
    return d;
  }

  // Load into device memory, one destination per key.
  void LoadInto(const std::string& ns, const std::vector<std::string>& hex, KvBuffers buffers,
                bool layerwise) {
    std::shared_ptr<OpenEngine> e = Get();
    std::vector<BlockKey> keys = KeysFrom(hex);
    py::gil_scoped_release nogil;
    LoadRequest r;
    r.ns = ns;
    r.keys = std::move(keys);
    r.buffers = std::move(buffers);
    r.layerwise = layerwise;
    std::unique_ptr<TransferHandle> h = ValueOrThrow(e->engine->Load(r));
    ThrowIfError(h->Wait());
  }

  void SetNamespaceLimits(const std::string& ns, const NamespaceLimits& limits) {
    std::shared_ptr<OpenEngine> e = Get();
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = e->engine->SetNamespaceLimits(ns, limits);
    }
    ThrowIfError(s);
  }

  uint64_t Hint(const std::string& ns, const std::vector<std::string>& hex) {
    std::shared_ptr<OpenEngine> e = Get();
    const std::vector<BlockKey> keys = KeysFrom(hex);
    absl::StatusOr<uint64_t> id;
    {
      py::gil_scoped_release nogil;
      id = e->engine->Hint(ns, keys);
    }
    return ValueOrThrow(std::move(id));
  }

  size_t CancelHint(uint64_t id) {
    std::shared_ptr<OpenEngine> e = Get();
    absl::StatusOr<size_t> n;
    {
      py::gil_scoped_release nogil;
      n = e->engine->CancelHint(id);
    }
    return ValueOrThrow(std::move(n));
  }

  void Flush() {
    std::shared_ptr<OpenEngine> e = Get();
    absl::Status s;
    {
      py::gil_scoped_release nogil;
      s = e->engine->Flush();
    }
    ThrowIfError(s);
  }

  py::dict Stats() {
    std::shared_ptr<OpenEngine> e = Get();
    EngineStats st;
    {
      py::gil_scoped_release nogil;
      st = e->engine->Stats();
    }
    st.block_bytes = e->engine->options().geometry.block_bytes();
    return StatsDict(st);
  }

 private:
  explicit PyEngine(std::shared_ptr<OpenEngine> open) : open_(std::move(open)) {}

  std::shared_ptr<OpenEngine> Get() const {
    if (open_ == nullptr) {
      throw StatusError(absl::FailedPreconditionError("the kvtier engine is closed"));
    }
    return open_;
  }

  std::shared_ptr<OpenEngine> open_;
};

// ----------------------------------------------------------------------------- options

// Sets one EngineOptions field from a keyword argument of EngineOptions(**kwargs) or
// Engine.open(**kwargs), by going through the Python attribute (so both share the checks).
void SetOptions(py::object self, const py::kwargs& kwargs) {
  for (auto item : kwargs) {
    const std::string name = py::cast<std::string>(item.first);
    if (name.empty() || name[0] == '_' || !py::hasattr(self, name.c_str())) {
      throw py::type_error(absl::StrFormat("EngineOptions has no option '%s'", name));
    }
    self.attr(name.c_str()) = item.second;
  }
}

NamespaceLimits LimitsFrom(size_t gpu_bytes, size_t host_bytes, size_t disk_bytes,
                           std::optional<double> ttl_s) {
  NamespaceLimits l;
  l.gpu_bytes = gpu_bytes;
  l.host_bytes = host_bytes;
  l.disk_bytes = disk_bytes;
  // A non-positive TTL reaches the engine as is, so its check names it.
  if (ttl_s.has_value()) l.ttl = absl::Seconds(*ttl_s);
  return l;
}

void BindOptions(py::module_& m) {
  py::class_<EngineOptions> o(m, "EngineOptions", R"doc(
Options for Engine.open. Every field is also a keyword argument:
  EngineOptions(layers=4, kv_heads=2, head_dim=16, dtype="fp16", block_tokens=16,
                model="my-model@1", host_tier_bytes=1 << 20)
Geometry: layers, kv_heads, head_dim, dtype ("fp16", "bf16", "fp32", "fp8_e4m3",
"fp8_e5m2"), block_tokens; kind ("kv", or "mla": one latent of head_dim elements per token and
layer, kv_heads 1) and rope_dim (its rope part: 64 of DeepSeek-V3's 576).
Tensor parallelism (one engine per rank): shard(rank, size, store_rank=0) turns the whole
model's geometry into the rank's (its KV heads; an MLA latent is every rank's) and sets
tp_rank, tp_size and store_rank; kv_head_begin and total_kv_heads are the shard's fields.
Tiers: gpu_tier_bytes (0 = none), host_tier_bytes, disk_dir ("" = no disk tier),
disk_capacity_bytes, disk_region_bytes, codec ("none", "zstd", "zstd-shuffle"; lossy "fp8",
"int8": disk reads return dequantized values), zstd_level,
disk_sync, admit_min_seen, write_budget_mbps, force_fallback_io, disk_group_access (the
directory 0750 / files 0640 instead of 0700 / 0600; a group-readable directory accepted).
Policies: gpu_eviction, host_eviction ("lru", "fifo", "clock", "sieve", "s3fifo", "arc",
"tinylfu", "lfu", "adaptive"), prefix_aware_eviction, cost_aware_eviction, eviction_window,
prefetch_budget_bytes. Device: device ("auto", "cuda", "emulated"), cuda_ordinal,
emulated_copy_gbps, emulated_memory_limit. Keys: model (fingerprint, required), key_hash
("sha256", "xxh3"), namespaces. Tenants: set_namespace_limits(ns, gpu_bytes=, host_bytes=,
disk_bytes=, ttl_s=), secure_erase. Other: lease_timeout_s, metrics_port.
Remote tier (a shared Redis Cluster below disk; off while remote_seeds is empty), the fields
of kvtier::RemoteOptions prefixed with remote_: remote_seeds (["host:port", ...]),
remote_user, remote_password, remote_tls, remote_tls_ca_file, remote_tls_cert_file,
remote_tls_key_file, remote_tls_server_name, remote_connect_timeout_s, remote_op_timeout_s,
remote_match_timeout_s, remote_connections_per_node, remote_io_threads,
remote_max_inflight_bytes, remote_write_policy ("write-through", "on-evict", "both"),
remote_admit_min_seen, remote_write_budget_mbps, remote_codec, remote_zstd_level,
remote_hmac_secrets ({namespace: bytes}), remote_allow_unreachable. Bad values raise
InvalidArgumentError (a ValueError) naming "remote.<field>" at validate() and Engine.open.)doc");
  o.def(py::init([](const py::kwargs& kwargs) {
          // Default options, then each keyword set through its property (same checks).
          py::object tmp = py::cast(EngineOptions{});
          SetOptions(tmp, kwargs);
          return std::make_unique<EngineOptions>(py::cast<EngineOptions>(tmp));
        }),
        "Default options, then each keyword argument set as its attribute.");
#define KVTIER_FIELD(name, member)                           \
  o.def_property(                                            \
      name, [](const EngineOptions& x) { return x.member; }, \
      [](EngineOptions& x, decltype(EngineOptions::member) v) { x.member = v; })
  o.def_property(
      "layers", [](const EngineOptions& x) { return x.geometry.num_layers; },
      [](EngineOptions& x, uint32_t v) { x.geometry.num_layers = v; });
  o.def_property(
      "kv_heads", [](const EngineOptions& x) { return x.geometry.num_kv_heads; },
      [](EngineOptions& x, uint32_t v) { x.geometry.num_kv_heads = v; });
  o.def_property(
      "head_dim", [](const EngineOptions& x) { return x.geometry.head_dim; },
      [](EngineOptions& x, uint32_t v) { x.geometry.head_dim = v; });
  o.def_property(
      "block_tokens", [](const EngineOptions& x) { return x.geometry.block_tokens; },
      [](EngineOptions& x, uint32_t v) { x.geometry.block_tokens = v; });
  o.def_property(
      "dtype", [](const EngineOptions& x) { return std::string(DTypeName(x.geometry.dtype)); },
      [](EngineOptions& x, const std::string& v) {
        x.geometry.dtype = ValueOrThrow(ParseDType(v));
      });
  o.def_property(
      "kind", [](const EngineOptions& x) { return std::string(KvKindName(x.geometry.kind)); },
      [](EngineOptions& x, const std::string& v) {
        x.geometry.kind = ValueOrThrow(ParseKvKind(v));
      });
  o.def_property(
      "rope_dim", [](const EngineOptions& x) { return x.geometry.rope_dim; },
      [](EngineOptions& x, uint32_t v) { x.geometry.rope_dim = v; });
  o.def_property(
      "kv_head_begin", [](const EngineOptions& x) { return x.geometry.kv_head_begin; },
      [](EngineOptions& x, uint32_t v) { x.geometry.kv_head_begin = v; });
  o.def_property(
      "total_kv_heads", [](const EngineOptions& x) { return x.geometry.total_kv_heads; },
      [](EngineOptions& x, uint32_t v) { x.geometry.total_kv_heads = v; });
  KVTIER_FIELD("tp_rank", tensor_parallel.rank);
  KVTIER_FIELD("tp_size", tensor_parallel.size);
  KVTIER_FIELD("store_rank", tensor_parallel.store_rank);
  o.def(
      "shard",
      [](EngineOptions& x, uint32_t rank, uint32_t size, uint32_t store_rank) {
        ThrowIfError(x.ShardForTensorParallel(rank, size, store_rank));
      },
      py::arg("rank"), py::arg("size"), py::arg("store_rank") = 0,
      "Makes these options tensor-parallel rank `rank` of `size`: the geometry (the whole "
      "model's) becomes the rank's shard, as vLLM shards KV heads. Raises InvalidArgumentError "
      "naming the field (rank out of range, heads that do not divide, already a shard).");
  // `model_fingerprint` as in C++ and in the engine's error messages; `model` for short.
  for (const char* name : {"model", "model_fingerprint"}) {
    o.def_property(
        name, [](const EngineOptions& x) { return x.model_fingerprint; },
        [](EngineOptions& x, const std::string& v) { x.model_fingerprint = v; });
  }
  o.def_property(
      "key_hash", [](const EngineOptions& x) { return std::string(KeyHashName(x.key_hash)); },
      [](EngineOptions& x, const std::string& v) { x.key_hash = ValueOrThrow(ParseKeyHash(v)); });
  o.def_property(
      "device",
      [](const EngineOptions& x) { return std::string(DeviceChoiceName(x.device.choice)); },
      [](EngineOptions& x, const std::string& v) {
        x.device.choice = ValueOrThrow(ParseDeviceChoice(v));
      });
  KVTIER_FIELD("cuda_ordinal", device.cuda_ordinal);
  KVTIER_FIELD("emulated_copy_gbps", device.emulated_copy_gbps);
  KVTIER_FIELD("emulated_memory_limit", device.emulated_memory_limit);
  KVTIER_FIELD("gpu_tier_bytes", gpu_tier_bytes);
  KVTIER_FIELD("host_tier_bytes", host_tier_bytes);
  KVTIER_FIELD("gpu_eviction", gpu_eviction);
  KVTIER_FIELD("host_eviction", host_eviction);
  KVTIER_FIELD("prefix_aware_eviction", prefix_aware_eviction);
  KVTIER_FIELD("cost_aware_eviction", cost_aware_eviction);
  KVTIER_FIELD("eviction_window", eviction_window);
  KVTIER_FIELD("disk_dir", disk.directory);
  KVTIER_FIELD("disk_capacity_bytes", disk.capacity_bytes);
  KVTIER_FIELD("disk_region_bytes", disk.region_bytes);
  KVTIER_FIELD("codec", disk.codec);
  KVTIER_FIELD("zstd_level", disk.zstd_level);
  KVTIER_FIELD("disk_sync", disk.sync);
  KVTIER_FIELD("disk_queue_depth", disk.queue_depth);
  KVTIER_FIELD("force_fallback_io", disk.force_fallback_io);
  KVTIER_FIELD("disk_group_access", disk.group_access);
  KVTIER_FIELD("disk_staging_buffers", disk.staging_buffers);
  KVTIER_FIELD("disk_codec_threads", disk.codec_threads);
  KVTIER_FIELD("disk_read_in_place", disk.read_in_place);
  KVTIER_FIELD("admit_min_seen", disk.admit_min_seen);
  KVTIER_FIELD("write_budget_mbps", disk.write_budget_mbps);
  KVTIER_FIELD("namespaces", namespaces);
  KVTIER_FIELD("paged_dma_min_part_bytes", paged_dma_min_part_bytes);
  KVTIER_FIELD("prefetch_budget_bytes", prefetch_budget_bytes);
  KVTIER_FIELD("metrics_port", metrics_port);
  KVTIER_FIELD("secure_erase", secure_erase);
  KVTIER_FIELD("remote_seeds", remote.seeds);
  KVTIER_FIELD("remote_user", remote.user);
  KVTIER_FIELD("remote_password", remote.password);
  KVTIER_FIELD("remote_tls", remote.tls);
  KVTIER_FIELD("remote_tls_ca_file", remote.tls_ca_file);
  KVTIER_FIELD("remote_tls_cert_file", remote.tls_cert_file);
  KVTIER_FIELD("remote_tls_key_file", remote.tls_key_file);
  KVTIER_FIELD("remote_tls_server_name", remote.tls_server_name);
  KVTIER_FIELD("remote_connections_per_node", remote.connections_per_node);
  KVTIER_FIELD("remote_io_threads", remote.io_threads);
  KVTIER_FIELD("remote_max_inflight_bytes", remote.max_inflight_bytes);
  KVTIER_FIELD("remote_write_policy", remote.write_policy);
  KVTIER_FIELD("remote_admit_min_seen", remote.admit_min_seen);
  KVTIER_FIELD("remote_write_budget_mbps", remote.write_budget_mbps);
  KVTIER_FIELD("remote_codec", remote.codec);
  KVTIER_FIELD("remote_zstd_level", remote.zstd_level);
  KVTIER_FIELD("remote_allow_unreachable", remote.allow_unreachable);
#undef KVTIER_FIELD
  // The remote tier's timeouts in seconds, as lease_timeout_s. Out-of-range values reach the
  // engine's validation as they are, so its message names the field.
#define KVTIER_SECONDS_FIELD(name, member)                                          \
  o.def_property(                                                                   \
      name, [](const EngineOptions& x) { return absl::ToDoubleSeconds(x.member); }, \
      [](EngineOptions& x, double v) { x.member = absl::Seconds(v); })
  KVTIER_SECONDS_FIELD("remote_connect_timeout_s", remote.connect_timeout);
  KVTIER_SECONDS_FIELD("remote_op_timeout_s", remote.op_timeout);
  KVTIER_SECONDS_FIELD("remote_match_timeout_s", remote.match_timeout);
#undef KVTIER_SECONDS_FIELD
  // Secrets are raw bytes: returned as bytes, accepted as bytes (or str, as UTF-8).
  o.def_property(
      "remote_hmac_secrets",
      [](const EngineOptions& x) {
        py::dict d;
        for (const auto& [ns, secret] : x.remote.hmac_secrets) d[py::str(ns)] = py::bytes(secret);
        return d;
      },
      [](EngineOptions& x, const std::map<std::string, std::string>& v) {
        x.remote.hmac_secrets = v;
      });
  o.def(
      "set_namespace_limits",
      [](EngineOptions& x, const std::string& ns, size_t gpu_bytes, size_t host_bytes,
         size_t disk_bytes, std::optional<double> ttl_s) {
        x.namespace_limits[ns] = LimitsFrom(gpu_bytes, host_bytes, disk_bytes, ttl_s);
      },
      py::arg("ns"), py::kw_only(), py::arg("gpu_bytes") = 0, py::arg("host_bytes") = 0,
      py::arg("disk_bytes") = 0, py::arg("ttl_s") = py::none(),
      "Quotas per tier in bytes (0 = none) and a time to live in seconds (None = keep) for "
      "namespace `ns`, applied when the engine creates it.");
  o.def_property(
      "lease_timeout_s",
      [](const EngineOptions& x) { return absl::ToDoubleSeconds(x.lease_timeout); },
      [](EngineOptions& x, double v) { x.lease_timeout = absl::Seconds(v); });
  o.def(
      "validate", [](const EngineOptions& x) { ThrowIfError(x.Validate()); },
      "Raises InvalidArgumentError naming the bad field, if any.");
  o.def_property_readonly("block_bytes",
                          [](const EngineOptions& x) { return x.geometry.block_bytes(); });
  o.def("__repr__", [](const EngineOptions& x) {
    return absl::StrFormat(
        "kvtier.EngineOptions(%s, model='%s', gpu_tier_bytes=%d, "
        "host_tier_bytes=%d, disk_dir='%s')",
        x.geometry.ToString(), x.model_fingerprint, x.gpu_tier_bytes, x.host_tier_bytes,
        x.disk.directory);
  });
}

void BindModule(py::module_& m) {
  m.doc() = "kvtier: a hierarchical GPU / host / disk / remote KV-cache storage engine.";
  RegisterErrors(m);
  BindOptions(m);
  m.def("stats_schema", &StatsSchema,
        "Every statistic Engine.stats() reports (kvtier/stats.h): name, group, kind, unit, "
        "labels, Prometheus metric, help.");

  py::class_<PyEngine>(m, "Engine", R"doc(
An open kvtier engine. Open with Engine.open(options) or Engine.open(**option_keywords).
Blocks are NumPy arrays of shape (n, layers, parts, block_tokens, kv_heads, head_dim) (parts:
2 for K and V, 1 for an MLA latent) in the engine's dtype (float16, float32, uint16 holding
bfloat16 bits, uint8 holding fp8 bits). Keys are 32-digit hex
strings. Usable as a context manager; close() waits for transfers and frees the tiers.)doc")
      .def_static(
          "open",
          [](py::object options, const py::kwargs& kwargs) {
            EngineOptions o;
            if (!options.is_none()) o = py::cast<EngineOptions>(options);
            if (kwargs.size() > 0) {
              py::object copy = py::cast(o);
              SetOptions(copy, kwargs);
              o = py::cast<EngineOptions>(copy);
            }
            return PyEngine::Open(o);
          },
          py::arg("options") = py::none(),
          "Opens an engine from EngineOptions and/or option keywords (keywords win).")
      .def("close", &PyEngine::Close, "Waits for in-flight transfers and frees every tier.")
      .def_property_readonly("closed", &PyEngine::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyEngine& e, py::args) { e.Close(); })
      .def_property_readonly(
          "options", [](const PyEngine& e) { return e.options(); },
          "A copy of the options the engine was opened with.")
      .def_property_readonly("device_name", &PyEngine::DeviceName)
      .def_property_readonly("device_kind", &PyEngine::DeviceKind, "'emulated' or 'cuda'.")
      .def_property_readonly("block_bytes",
                             [](const PyEngine& e) { return e.geometry().block_bytes(); })
      .def_property_readonly("block_tokens",
                             [](const PyEngine& e) { return e.geometry().block_tokens; })
      .def_property_readonly(
          "block_shape",
          [](const PyEngine& e) { return py::tuple(py::cast(BlockShape(e.geometry()))); },
          "(layers, parts, block_tokens, kv_heads, head_dim): one block, layer-major.")
      .def_property_readonly(
          "dtype", [](const PyEngine& e) { return NativeDtype(e.geometry().dtype); },
          "The NumPy dtype load() returns.")
      .def("create_namespace", &PyEngine::CreateNamespace, py::arg("ns"))
      .def("list_namespaces", &PyEngine::ListNamespaces)
      .def("block_keys", &PyEngine::BlockKeys, py::arg("ns"), py::arg("tokens"),
           py::arg("extra") = "",
           "Keys of the full blocks of `tokens` in `ns`, computed locally (no lookup).")
      .def("match", &PyEngine::Match, py::arg("ns"), py::arg("tokens"), py::arg("extra") = "",
           "Longest cached prefix: (matched_tokens, keys). No I/O.")
      .def("match_tiers", &PyEngine::MatchTiers, py::arg("ns"), py::arg("tokens"),
           py::arg("extra") = "",
           "The fastest tier ('gpu', 'host', 'disk', 'remote') holding each matched block.")
      .def("store", &PyEngine::Store, py::arg("ns"), py::arg("tokens"), py::arg("kv"),
           py::arg("first_block") = 0, py::arg("extra") = "",
           "Stores kv (blocks first_block.. of tokens) and waits until it is in the host "
           "tier. Returns {'stored', 'present', 'rejected'} block counts.")
      .def("load", &PyEngine::Load, py::arg("ns"), py::arg("keys"), py::arg("out") = py::none(),
           "Loads cached blocks into a new array (or `out`) and returns it.")
      .def("load_within", &PyEngine::LoadWithin, py::arg("ns"), py::arg("keys"), py::arg("seconds"),
           py::arg("out") = py::none(),
           "load with a deadline `seconds` from now: returns (array, failed), where failed "
           "lists the blocks whose disk reads had not arrived by then (their rows are zeros; "
           "recompute them). They stay cached.")
      .def("plan_load", &PyEngine::PlanLoad, py::arg("ns"), py::arg("tokens"),
           py::arg("prefill_tokens_per_s"), py::arg("local_tokens") = 0, py::arg("extra") = "",
           "How much of the cached prefix of `tokens` is worth loading at the tiers' measured "
           "rates, against recomputing at prefill_tokens_per_s: {'load_blocks', "
           "'load_tokens', 'recompute_tokens', 'reason', 'expected_load_s', "
           "'expected_total_s', 'recompute_all_s', 'load_all_s'}.")
      .def("register_device_memory", &PyEngine::RegisterDeviceMemory, py::arg("memory"),
           py::arg("nbytes") = py::none(),
           R"doc(Makes memory the caller owns usable as the device buffers of store_device,
load_device, store_paged and load_paged, as an inference engine's own KV pool; returns its
address. `memory` is an int address (nbytes required: on CUDA, e.g. a torch tensor's
data_ptr(), which must be memory of the engine's GPU) or a writable, contiguous buffer such
as a NumPy array: on the emulated device, whose device memory is host memory, the array
itself is the "GPU" pool, read and written in place. A buffer is kept alive (and NumPy will
not resize it) until unregister_device_memory or close. InvalidArgumentError for host memory
on CUDA, overlaps, zero bytes; AlreadyExistsError for memory registered already.)doc")
      .def("unregister_device_memory", &PyEngine::UnregisterDeviceMemory, py::arg("memory"),
           "Forgets memory register_device_memory registered (its address, or the same "
           "buffer). NotFoundError if it is not registered. The transfer calls wait for their "
           "copies, so nothing is in flight once they return.")
      .def(
          "store_device",
          [](PyEngine& e, const std::string& ns, const py::handle& tokens,
             const std::vector<uint64_t>& blocks, size_t first_block, const std::string& extra) {
            return e.StoreFrom(ns, tokens, KvBuffers::Blocks(DevicePtrs(blocks)), first_block,
                               extra);
          },
          py::arg("ns"), py::arg("tokens"), py::arg("blocks"), py::arg("first_block") = 0,
          py::arg("extra") = "",
          "Stores blocks first_block.. of tokens from device memory: blocks[i] is the address "
          "of one block (block_bytes, kvtier's layer-major layout) in memory of the engine's "
          "device or registered with register_device_memory. Waits until the copies are done; "
          "returns {'stored', 'present', 'rejected'}.")
      .def(
          "load_device",
          [](PyEngine& e, const std::string& ns, const std::vector<std::string>& keys,
             const std::vector<uint64_t>& blocks, bool layerwise) {
            e.LoadInto(ns, keys, KvBuffers::Blocks(DevicePtrs(blocks)), layerwise);
          },
          py::arg("ns"), py::arg("keys"), py::arg("blocks"), py::arg("layerwise") = false,
          "Loads cached blocks into device memory (blocks[i] receives keys[i]) and waits.")
      .def(
          "store_paged",
          [](PyEngine& e, const std::string& ns, const py::handle& tokens,
             const std::vector<uint64_t>& layers, uint32_t num_pages, std::vector<uint32_t> pages,
             const std::string& layout, size_t first_block, const std::string& extra) {
            return e.StoreFrom(ns, tokens,
                               PagedBuffers(layers, num_pages, std::move(pages), layout),
                               first_block, extra);
          },
          py::arg("ns"), py::arg("tokens"), py::arg("layers"), py::arg("num_pages"),
          py::arg("pages"), py::kw_only(), py::arg("layout") = "nhd", py::arg("first_block") = 0,
          py::arg("extra") = "",
          "Stores blocks first_block.. of tokens from a vLLM-style paged pool: layers[l] is the "
          "address of layer l's tensor [2 (K,V)][num_pages][page], a page being "
          "[block_tokens][kv_heads][head_dim] ('nhd') or [kv_heads][block_tokens][head_dim] "
          "('hnd'); pages[i] holds block first_block + i. Waits; returns the counts.")
      .def(
          "load_paged",
          [](PyEngine& e, const std::string& ns, const std::vector<std::string>& keys,
             const std::vector<uint64_t>& layers, uint32_t num_pages, std::vector<uint32_t> pages,
             const std::string& layout, bool layerwise) {
            e.LoadInto(ns, keys, PagedBuffers(layers, num_pages, std::move(pages), layout),
                       layerwise);
          },
          py::arg("ns"), py::arg("keys"), py::arg("layers"), py::arg("num_pages"), py::arg("pages"),
          py::kw_only(), py::arg("layout") = "nhd", py::arg("layerwise") = false,
          "Loads cached blocks into pages of a paged pool (pages[i] receives keys[i]) and "
          "waits.")
      .def("erase", &PyEngine::Erase, py::arg("ns"), py::arg("keys"),
           "Removes blocks from every tier; returns how many were present.")
      .def("erase_namespace", &PyEngine::EraseNamespace, py::arg("ns"))
      .def(
          "set_namespace_limits",
          [](PyEngine& e, const std::string& ns, size_t gpu_bytes, size_t host_bytes,
             size_t disk_bytes, std::optional<double> ttl_s) {
            e.SetNamespaceLimits(ns, LimitsFrom(gpu_bytes, host_bytes, disk_bytes, ttl_s));
          },
          py::arg("ns"), py::kw_only(), py::arg("gpu_bytes") = 0, py::arg("host_bytes") = 0,
          py::arg("disk_bytes") = 0, py::arg("ttl_s") = py::none(),
          "Replaces the namespace's quotas per tier (bytes, 0 = none) and time to live "
          "(seconds, None = keep): at its quota a namespace evicts only its own blocks.")
      .def("hint", &PyEngine::Hint, py::arg("ns"), py::arg("keys"),
           "Queues keys for the background prefetcher (disk -> host -> GPU tier); returns "
           "an id for cancel_hint.")
      .def("cancel_hint", &PyEngine::CancelHint, py::arg("hint_id"))
      .def("flush", &PyEngine::Flush,
           "Waits for every transfer started so far, including writes to disk.")
      .def("stats", &PyEngine::Stats,
           "Engine statistics as nested dicts: every statistic of kvtier.stats_schema(), keyed "
           "by name; tier figures under 'tiers' by tier name, namespace figures under "
           "'namespaces' by namespace name, prefetch figures under 'prefetch', the remote tier's "
           "own "
           "figures under 'remote' (its nodes under 'remote'/'nodes' by address).");
}

}  // namespace
}  // namespace kvtier::python

PYBIND11_MODULE(_kvtier, m) { kvtier::python::BindModule(m); }
