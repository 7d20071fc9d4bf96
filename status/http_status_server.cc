#include "status/http_status_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "httplib.h"

namespace pstrain {
namespace status {
namespace {

// Requests are small and few (a browser tab, a Prometheus scraper): two
// worker threads, and short timeouts so a slow client cannot hold one long.
constexpr size_t kWorkerThreads = 2;
constexpr time_t kIoTimeoutS = 5;
constexpr size_t kMaxPayloadBytes = 1024;

// Compares in time independent of where the strings differ.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

void NoCache(httplib::Response& res) {
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Content-Type-Options", "nosniff");
}

}  // namespace

bool IsLoopbackAddress(const std::string& address) {
  if (address == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) return v6.s6_addr[12] == 127;
  }
  return false;
}

HttpStatusServer::HttpStatusServer(HttpStatusServerOptions options)
    : options_(std::move(options)),
      needs_token_(!IsLoopbackAddress(options_.bind_address)) {
  CHECK(options_.provider != nullptr);
}

HttpStatusServer::~HttpStatusServer() { Stop(); }

absl::Status HttpStatusServer::Start() {
  CHECK(server_ == nullptr) << "HttpStatusServer::Start called twice";
  if (needs_token_ && options_.token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the status server binds ", options_.bind_address,
        ", beyond loopback, which needs the job token (--token_file)"));
  }
  if (options_.port < 0 || options_.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("status port ", options_.port, ": must be in [0, 65535]"));
  }
  server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *server_;
  s.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  s.set_read_timeout(kIoTimeoutS);
  s.set_write_timeout(kIoTimeoutS);
  s.set_payload_max_length(kMaxPayloadBytes);
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // server bind a port already serving (and share its connections):
  // SO_REUSEADDR only, so a port in use is an error.
  s.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.set_pre_routing_handler([this](const httplib::Request& req,
                                   httplib::Response& res) {
    NoCache(res);
    if (req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("read-only: GET only\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (needs_token_) {
      const std::string auth = req.get_header_value("Authorization");
      const bool ok = (absl::StartsWith(auth, "Bearer ") &&
                       SameToken(auth.substr(7), options_.token)) ||
                      (req.has_param("token") &&
                       SameToken(req.get_param_value("token"), options_.token));
      if (!ok) {
        res.status = 401;
        res.set_header("WWW-Authenticate", "Bearer");
        res.set_content(
            "the job token is required: Authorization: Bearer TOKEN or "
            "?token=TOKEN\n",
            "text/plain");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Content-Security-Policy",
                   "default-src 'self' 'unsafe-inline'");
    res.set_content(kStatusPageHtml, "text/html; charset=utf-8");
  });
  s.Get("/status.json",
        [this](const httplib::Request&, httplib::Response& res) {
          res.set_content(StatusJson(options_.provider()), "application/json");
        });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(MetricsText(options_.provider()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(absl::StrCat(res.status, "\n"), "text/plain");
    }
  });

  const int port = options_.port == 0
                       ? s.bind_to_any_port(options_.bind_address)
                       : (s.bind_to_port(options_.bind_address, options_.port)
                              ? options_.port
                              : -1);
  if (port < 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("the status server cannot bind ", options_.bind_address,
                     ":", options_.port, " (in use, or not a local address)"));
  }
  port_ = port;
  listener_ = std::thread([this] { server_->listen_after_bind(); });
  // httplib's stop() only acts once the loop runs: wait for it, so that a
  // Stop() right after Start() cannot miss it. It starts at once.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server_->is_running() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  CHECK(server_->is_running()) << "httplib's listener did not start";
  LOG(INFO) << "status server on " << url()
            << (needs_token_ ? " (the job token is required)" : "");
  return absl::OkStatus();
}

void HttpStatusServer::Stop() {
  if (server_ == nullptr) return;
  server_->stop();
  if (listener_.joinable()) listener_.join();
  server_.reset();
}

std::string HttpStatusServer::url() const {
  const std::string& a = options_.bind_address;
  const bool v6 = a.find(':') != std::string::npos;
  return absl::StrCat("http://", v6 ? "[" : "", a, v6 ? "]" : "", ":", port_,
                      "/");
}

}  // namespace status
}  // namespace pstrain
