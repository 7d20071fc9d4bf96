// A read-only HTTP server for a job's live status (issue #17), on
// cpp-httplib (Debian's libcpp-httplib-dev):
//   GET /             the status page (status_page.html, built in), which
//                     polls /status.json once a second;
//   GET /status.json  StatusJson(provider());
//   GET /metrics      MetricsText(provider()), Prometheus text format 0.0.4.
// Any other path is 404; any method other than GET or HEAD is 405.
//
// The token rule is on the bind address: bound to a loopback address
// (127.0.0.0/8, ::1, "localhost") every request is served; bound to
// anything else (0.0.0.0 included) a request must carry the job token, as
// `Authorization: Bearer TOKEN` or `?token=TOKEN` (the page passes its own
// ?token= on to /status.json), or it gets 401. Such a bind without a token
// is refused at Start().
//
// Threads: Start() starts a listener thread, which serves requests on a
// small pool of httplib's worker threads; Stop() (or the destructor) stops
// and joins them all. The provider is called on those threads, possibly
// concurrently: it must be thread-safe and quick (it runs per request).
// Start and Stop are called from one owning thread.
#ifndef PSTRAIN_STATUS_HTTP_STATUS_SERVER_H_
#define PSTRAIN_STATUS_HTTP_STATUS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "status/status.h"

namespace httplib {
class Server;
}

namespace pstrain {
namespace status {

struct HttpStatusServerOptions {
  std::string bind_address = "127.0.0.1";  // An IPv4/IPv6 address or name.
  int port = 0;                            // 0: any free port (port()).
  // The job token; required when bind_address is not loopback.
  std::string token;
  // Snapshot of the job, called per request. REQUIRES: non-null.
  std::function<JobStatus()> provider;
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackAddress(const std::string& address);

class HttpStatusServer {
 public:
  explicit HttpStatusServer(HttpStatusServerOptions options);
  ~HttpStatusServer();  // Stop().
  HttpStatusServer(const HttpStatusServer&) = delete;
  HttpStatusServer& operator=(const HttpStatusServer&) = delete;

  // Binds and starts serving. InvalidArgument: a non-loopback bind without
  // a token; Unavailable: the address cannot be bound (in use, not local).
  // REQUIRES: not started before.
  absl::Status Start();
  // Stops serving and joins every thread. Idempotent.
  void Stop();

  // The bound port (the chosen one when options.port was 0); -1 before
  // Start() succeeded.
  int port() const { return port_; }
  // "http://HOST:PORT/" for the bound address (IPv6 in brackets).
  std::string url() const;

 private:
  const HttpStatusServerOptions options_;
  const bool needs_token_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = -1;
};

// The page served at "/" (status_page.html).
extern const char kStatusPageHtml[];

}  // namespace status
}  // namespace pstrain

#endif  // PSTRAIN_STATUS_HTTP_STATUS_SERVER_H_
