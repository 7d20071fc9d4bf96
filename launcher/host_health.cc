#include "launcher/host_health.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pstrain {
namespace launcher {
namespace {

// The slots of `hosts` together; -1 when one of them has no limit.
int TotalSlots(const std::vector<Host>& hosts) {
  int total = 0;
  for (const Host& h : hosts) {
    if (h.slots <= 0) return -1;
    total += h.slots;
  }
  return total;
}

std::string Processes(int servers, int workers) {
  return absl::StrCat(servers, " server(s) and ", workers, " worker(s)");
}

}  // namespace

absl::StatusOr<std::vector<int>> PlaceProcesses(const std::vector<Host>& hosts,
                                                int processes) {
  if (hosts.empty()) return absl::InvalidArgumentError("no host to run on");
  const int total = TotalSlots(hosts);
  if (total >= 0 && total < processes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the hosts' slots (", total, " on ", hosts.size(),
        " host(s)) cannot hold the job's ", processes, " servers and workers"));
  }
  const int n = static_cast<int>(hosts.size());
  std::vector<int> used(n, 0);
  std::vector<int> where;
  where.reserve(processes);
  int next = 0;
  for (int i = 0; i < processes; ++i) {
    // A host with a free slot exists: the total was checked above.
    while (hosts[next].slots > 0 && used[next] >= hosts[next].slots) {
      next = (next + 1) % n;
    }
    where.push_back(next);
    ++used[next];
    next = (next + 1) % n;
  }
  return where;
}

HostExclusion LeaveOutFailedHosts(const std::vector<Host>& hosts,
                                  const HostFailures& failures, int servers,
                                  int workers, int threshold) {
  HostExclusion result;
  result.hosts = hosts;
  // Candidates: most failures first, then in hosts-file order.
  std::vector<std::pair<int, size_t>> candidates;  // (-failures, index)
  for (size_t i = 0; i < hosts.size(); ++i) {
    auto it = failures.find(hosts[i].ToString());
    const int n =
        it == failures.end() ? 0 : static_cast<int>(it->second.size());
    if (n >= threshold) candidates.push_back({-n, i});
  }
  std::sort(candidates.begin(), candidates.end());
  const int processes = servers + workers;
  for (const auto& [minus_n, index] : candidates) {
    const Host& host = hosts[index];
    const std::string name = host.ToString();
    const std::vector<std::string>& why = failures.at(name);
    std::vector<Host> rest;
    for (const Host& h : result.hosts) {
      if (!(h == host)) rest.push_back(h);
    }
    const std::string times =
        absl::StrCat(-minus_n, " times (", absl::StrJoin(why, "; "), ")");
    const std::string failed = absl::StrCat("host ", name, " failed ", times);
    result.message_hosts.push_back(name);
    if (rest.empty()) {
      result.messages.push_back(absl::StrCat(
          failed, "; kept: it is the only host left for the job's ",
          Processes(servers, workers)));
      continue;
    }
    absl::StatusOr<std::vector<int>> placed = PlaceProcesses(rest, processes);
    if (!placed.ok()) {
      result.messages.push_back(absl::StrCat(failed, "; kept: without it ",
                                             placed.status().message()));
      continue;
    }
    result.messages.push_back(
        absl::StrCat("leaving out host ", name, ", which failed ", times,
                     ": the job's ", Processes(servers, workers),
                     " fit on the other ", rest.size(), " host(s)"));
    result.hosts = std::move(rest);
  }
  return result;
}

}  // namespace launcher
}  // namespace pstrain
