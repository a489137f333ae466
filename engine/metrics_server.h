// engine/metrics_server.h — the engine's HTTP metrics endpoint (EngineOptions::metrics_port).
//
// Serves, on 127.0.0.1 only (metrics are not for the network at large; put a reverse proxy
// or a Prometheus agent on the host), from its own thread:
//   GET /metrics   Prometheus text format (engine/metrics.h FormatPrometheus)
//   GET /stats     the same snapshot as JSON (FormatStatsJson)
// with cpp-httplib (Debian libcpp-httplib-dev). Each request takes one Stats() snapshot.

#ifndef KVTIER_ENGINE_METRICS_SERVER_H_
#define KVTIER_ENGINE_METRICS_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "kvtier/engine.h"

namespace httplib {
class Server;
}

namespace kvtier {

class MetricsServer {
 public:
  // Binds 127.0.0.1:`port` and starts serving. Unavailable when the port cannot be bound.
  // `stats` is called from the server thread; it must stay valid until the server is gone.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      uint16_t port, size_t block_bytes, std::function<EngineStats()> stats);
  // Stops accepting, waits for the request in progress, joins the thread.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
};

}  // namespace kvtier

#endif  // KVTIER_ENGINE_METRICS_SERVER_H_
