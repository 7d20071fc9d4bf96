// configs/k8s: every manifest parses as YAML (yaml-cpp), and every pod of
// the example job gets, from its DMLC_* variables alone (with the values
// Kubernetes and Kubeflow's MXJob operator fill in), the role its binary
// plays and the same job shape as every other pod: the scheduler's service
// and port, the number of servers and workers their Jobs start, and the
// token as a file from a Secret. Nothing here runs Kubernetes.
#include <dirent.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cluster/cluster_flags.h"
#include "cluster/node_flags.h"
#include "gflags/gflags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker_util.h"

namespace pstrain {
namespace {

using ::testing::HasSubstr;

constexpr char kPodIp[] = "10.0.0.7";
constexpr char kCompletionIndex[] = "2";

std::vector<std::string> Manifests() {
  const std::string dir = testing_util::Runfile("configs/k8s");
  std::vector<std::string> files;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (absl::EndsWith(e->d_name, ".yaml")) {
        files.push_back(dir + "/" + e->d_name);
      }
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// A pod's container as the test sees it.
struct Pod {
  std::string file;
  std::string role;  // From the binary its command runs.
  cluster::Environment env;
  std::string token_mount;  // Where a Secret volume is mounted ("" none).
  std::vector<std::string> args;
};

std::string Binary(const YAML::Node& container) {
  const std::string command = container["command"][0].as<std::string>();
  return command.substr(command.rfind('/') + 1);
}

// The container's environment, valueFrom filled in as Kubernetes would.
cluster::Environment Env(const YAML::Node& container) {
  cluster::Environment env;
  for (const YAML::Node& v : container["env"]) {
    const std::string name = v["name"].as<std::string>();
    if (v["value"]) {
      env[name] = v["value"].as<std::string>();
      continue;
    }
    const std::string field =
        v["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>();
    if (field == "status.podIP") {
      env[name] = kPodIp;
    } else if (field ==
               "metadata.annotations['batch.kubernetes.io/"
               "job-completion-index']") {
      env[name] = kCompletionIndex;
    } else {
      ADD_FAILURE() << name << ": unexpected fieldPath " << field;
    }
  }
  return env;
}

Pod ReadPod(const std::string& file, const YAML::Node& pod_spec) {
  Pod pod;
  pod.file = file;
  const YAML::Node container = pod_spec["containers"][0];
  pod.role = Binary(container);
  pod.env = Env(container);
  if (container["args"]) {
    for (const YAML::Node& a : container["args"]) {
      pod.args.push_back(a.as<std::string>());
    }
  }
  std::set<std::string> secret_volumes;
  for (const YAML::Node& v : pod_spec["volumes"]) {
    if (v["secret"]) secret_volumes.insert(v["name"].as<std::string>());
  }
  for (const YAML::Node& m : container["volumeMounts"]) {
    if (secret_volumes.count(m["name"].as<std::string>())) {
      pod.token_mount = m["mountPath"].as<std::string>();
    }
  }
  return pod;
}

// The flags a binary of `pod.role` ends up with from the environment.
std::map<std::string, std::string> FlagsFrom(const Pod& pod) {
  gflags::FlagSaver restore;
  EXPECT_TRUE(ParseFlags({"prog"}).ok());
  const proto::Role role = pod.role == "scheduler" ? proto::SCHEDULER
                           : pod.role == "server"  ? proto::SERVER
                                                   : proto::WORKER;
  auto notes = cluster::ApplyEnvironment(role, pod.env);
  EXPECT_TRUE(notes.ok()) << pod.file << " " << pod.role << ": "
                          << notes.status();
  std::map<std::string, std::string> flags;
  for (const char* f : {"scheduler_address", "num_workers", "num_servers",
                        "token_file", "host", "rank_hint"}) {
    gflags::GetCommandLineOption(f, &flags[f]);
  }
  return flags;
}

TEST(K8sManifestsTest, EveryFileParsesAndEveryPodAgreesOnTheJob) {
  const std::vector<std::string> files = Manifests();
  ASSERT_GE(files.size(), 4u) << "configs/k8s has no manifests";
  std::vector<Pod> pods;                   // Plain Kubernetes Jobs.
  std::map<std::string, int> completions;  // Job role -> pods.
  int service_port = 0;
  for (const std::string& file : files) {
    std::vector<YAML::Node> docs;
    try {  // yaml-cpp reports errors only by exception.
      docs = YAML::LoadAllFromFile(file);
    } catch (const YAML::Exception& e) {
      FAIL() << file << ": " << e.what();
    }
    ASSERT_FALSE(docs.empty()) << file;
    for (const YAML::Node& doc : docs) {
      const std::string kind = doc["kind"].as<std::string>();
      if (kind == "Service") {
        service_port = doc["spec"]["ports"][0]["port"].as<int>();
        EXPECT_EQ(doc["metadata"]["name"].as<std::string>(),
                  "pstrain-scheduler");
      } else if (kind == "Job") {
        Pod pod = ReadPod(file, doc["spec"]["template"]["spec"]);
        completions[pod.role] = doc["spec"]["completions"]
                                    ? doc["spec"]["completions"].as<int>()
                                    : 1;
        pods.push_back(pod);
      } else if (kind == "MXJob") {
        // The operator sets the cluster variables of every replica.
        const YAML::Node specs = doc["spec"]["mxReplicaSpecs"];
        for (const char* type : {"Scheduler", "Server", "Worker"}) {
          Pod pod = ReadPod(file, specs[type]["template"]["spec"]);
          pod.env["DMLC_ROLE"] = pod.role;
          pod.env["DMLC_PS_ROOT_URI"] = "pstrain-lenet-scheduler-0";
          pod.env["DMLC_PS_ROOT_PORT"] = "9991";
          pod.env["DMLC_NUM_SERVER"] =
              specs["Server"]["replicas"].as<std::string>();
          pod.env["DMLC_NUM_WORKER"] =
              specs["Worker"]["replicas"].as<std::string>();
          EXPECT_EQ(pod.role, absl::AsciiStrToLower(type)) << file;
          const std::map<std::string, std::string> flags = FlagsFrom(pod);
          EXPECT_EQ(flags.at("num_workers"), "4") << file << " " << type;
          EXPECT_EQ(flags.at("num_servers"), "2") << file << " " << type;
          EXPECT_EQ(flags.at("token_file"), pod.token_mount + "/token");
        }
      } else {
        ADD_FAILURE() << file << ": unexpected kind " << kind;
      }
    }
  }
  ASSERT_EQ(completions.count("scheduler"), 1u);
  ASSERT_EQ(completions.count("server"), 1u);
  ASSERT_EQ(completions.count("worker"), 1u);
  EXPECT_EQ(completions["scheduler"], 1);
  const std::set<std::string> known(std::begin(cluster::kEnvironmentVariables),
                                    std::end(cluster::kEnvironmentVariables));
  for (const Pod& pod : pods) {
    const std::string where = absl::StrCat(pod.file, " (", pod.role, ")");
    // Every DMLC_/PSTRAIN_ name is one the binaries read.
    for (const auto& [name, value] : pod.env) {
      if (absl::StartsWith(name, "DMLC_") ||
          absl::StartsWith(name, "PSTRAIN_")) {
        EXPECT_EQ(known.count(name), 1u) << where << ": " << name;
      }
    }
    ASSERT_EQ(pod.env.count("DMLC_ROLE"), 1u) << where;
    EXPECT_EQ(pod.env.at("DMLC_ROLE"), pod.role) << where;
    const std::map<std::string, std::string> flags = FlagsFrom(pod);
    EXPECT_EQ(flags.at("num_workers"), absl::StrCat(completions["worker"]))
        << where;
    EXPECT_EQ(flags.at("num_servers"), absl::StrCat(completions["server"]))
        << where;
    // The token is a file from the Secret, never a value.
    EXPECT_FALSE(pod.token_mount.empty()) << where;
    EXPECT_EQ(flags.at("token_file"), pod.token_mount + "/token") << where;
    if (pod.role == "scheduler") {
      EXPECT_EQ(flags.at("scheduler_address"),
                absl::StrCat(kPodIp, ":", service_port))
          << where;
    } else {
      EXPECT_EQ(flags.at("scheduler_address"),
                absl::StrCat("pstrain-scheduler:", service_port))
          << where;
      EXPECT_EQ(flags.at("host"), kPodIp) << where;
    }
    if (pod.role == "worker") {
      EXPECT_EQ(flags.at("rank_hint"), kCompletionIndex) << where;
      // The flag file the workers name is the repository's.
      for (const std::string& a : pod.args) {
        if (absl::StartsWith(a, "--flagfile=/opt/pstrain/configs/")) {
          const std::string rel =
              a.substr(std::string("--flagfile=/opt/pstrain/").size());
          EXPECT_FALSE(
              testing_util::ReadFileOrEmpty(testing_util::Runfile(rel)).empty())
              << where << ": " << a;
        }
      }
    }
  }
}

}  // namespace
}  // namespace pstrain
