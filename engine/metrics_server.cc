#include "engine/metrics_server.h"

#include <sys/socket.h>

#include <chrono>

#include "absl/strings/str_format.h"
#include "engine/metrics.h"
#include "httplib.h"

namespace kvtier {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    uint16_t port, size_t block_bytes, std::function<EngineStats()> stats) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->server_ = std::make_unique<httplib::Server>();
  httplib::Server& srv = *m->server_;
  // Two workers: a scrape and a `kvtier top` may overlap; more is never needed.
  srv.new_task_queue = [] { return new httplib::ThreadPool(2); };
  srv.Get("/metrics", [stats, block_bytes](const httplib::Request&, httplib::Response& res) {
    res.set_content(FormatPrometheus(stats(), block_bytes), "text/plain; version=0.0.4");
  });
  srv.Get("/stats", [stats, block_bytes](const httplib::Request&, httplib::Response& res) {
    res.set_content(FormatStatsJson(stats(), block_bytes), "application/json");
  });
  // httplib's default also sets SO_REUSEPORT, which would let a second engine bind the same
  // port and share its scrapes; SO_REUSEADDR alone still allows a quick restart.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    (void)::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (!srv.bind_to_port("127.0.0.1", port)) {
    return absl::UnavailableError(absl::StrFormat(
        "metrics endpoint: cannot bind 127.0.0.1:%u (in use?); pick another "
        "EngineOptions::metrics_port, or 0 to disable it",
        port));
  }
  MetricsServer* raw = m.get();
  m->thread_ = std::thread([raw] {
    raw->server_->listen_after_bind();
    raw->listen_returned_ = true;
  });
  return m;
}

MetricsServer::~MetricsServer() {
  // httplib's stop() only acts on a running server: wait for the thread to reach listen()
  // (or to have left it) so a server stopped right after Start cannot be missed.
  while (thread_.joinable() && !server_->is_running() && !listen_returned_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace kvtier
