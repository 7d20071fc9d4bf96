#include "tools/scaling.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace pstrain {
namespace scaling {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Tmp(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ScalingOptions Options() {
  ScalingOptions o;
  o.gpus_per_host = 16;
  o.network = "resnet";
  o.num_layers = 152;
  o.batch_size = 32;
  o.points = {1, 2, 4, 8, 16, 32};
  o.warmup_batches = 2;
  o.batches = 5;
  o.time_dilation = 10;
  o.launch_binary = "/bin/launch";
  o.worker_binary = "/bin/worker";
  return o;
}

// A worker's line as launch prints it.
std::string Line(int rank, int devices, int batch, double ips,
                 const std::string& extra = "") {
  return absl::StrCat(
      "[worker ", rank, " h", rank, "] benchmark: {\"rank\":", rank,
      ",\"devices\":", devices, ",\"batch_size\":", batch,
      ",\"batches\":5,\"warmup_batches\":2,\"time_dilation\":10,"
      "\"wall_seconds\":123.4,\"images_per_sec\":",
      ips,
      ",\"compute_s\":7.1,\"push_wait_s\":0.3,\"pull_wait_s\":0.9,"
      "\"other_s\":0.1",
      extra, "}\n");
}

TEST(ParsePointsTest, SortsAndRefuses) {
  EXPECT_THAT(*ParsePoints("4,1, 2"), ElementsAre(1, 2, 4));
  for (const char* bad : {"", "1,,2", "0", "-2", "x", "1,2,2", "1.5"}) {
    auto p = ParsePoints(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_THAT(p.status().message(), HasSubstr("--points")) << bad;
  }
}

TEST(PlanPointTest, HostsAndGpusPerWorker) {
  auto p = PlanPoint(1, 16, -1, "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->hosts, 1);
  EXPECT_EQ(p->gpus_per_worker, 1);
  p = PlanPoint(8, 16, 16, "hosts");
  EXPECT_EQ(p->hosts, 1);
  EXPECT_EQ(p->gpus_per_worker, 8);
  p = PlanPoint(256, 16, 16, "hosts");
  EXPECT_EQ(p->hosts, 16);
  EXPECT_EQ(p->gpus_per_worker, 16);
  EXPECT_EQ(p->workers(), 16);
  EXPECT_EQ(p->servers(), 16);
  p = PlanPoint(2, 1, -1, "");
  EXPECT_EQ(p->hosts, 2);
  EXPECT_EQ(p->gpus_per_worker, 1);
}

TEST(PlanPointTest, Errors) {
  auto p = PlanPoint(24, 16, -1, "");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("not a multiple of 16"));
  EXPECT_THAT(p.status().message(), HasSubstr("--gpus_per_host"));
  p = PlanPoint(64, 16, 3, "my.hosts");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("my.hosts"));
  EXPECT_THAT(p.status().message(), HasSubstr("need 4 hosts"));
  EXPECT_THAT(p.status().message(), HasSubstr("lists 3"));
  EXPECT_FALSE(PlanPoint(0, 16, -1, "").ok());
  EXPECT_THAT(PlanPoint(4, 0, -1, "").status().message(),
              HasSubstr("--gpus_per_host"));
}

TEST(ValidateOptionsTest, NamesTheFlag) {
  EXPECT_TRUE(ValidateOptions(Options()).ok());
  struct Case {
    void (*change)(ScalingOptions*);
    const char* flag;
  } cases[] = {
      {[](ScalingOptions* o) { o->batch_size = 0; }, "--batch_size"},
      {[](ScalingOptions* o) { o->mode = "tf"; }, "--mode"},
      {[](ScalingOptions* o) { o->time_dilation = 0; }, "--time_dilation"},
      {[](ScalingOptions* o) { o->batches = 0; }, "--batches"},
      {[](ScalingOptions* o) { o->warmup_batches = -1; }, "--warmup_batches"},
      {[](ScalingOptions* o) { o->gpus_per_host = 0; }, "--gpus_per_host"},
      {[](ScalingOptions* o) { o->points = {24}; }, "--points"},
      {[](ScalingOptions* o) {
         o->cpu_devices = true;
         o->emulate_device = "p.json";
       },
       "--cpu_devices"},
      {[](ScalingOptions* o) { o->ssh = true; }, "-H"},
      {[](ScalingOptions* o) { o->hostfile = "h"; }, "--hostfile"},
      {[](ScalingOptions* o) {
         o->ssh = true;
         o->hostfile = "one.hosts";
         o->hosts = {{"a", 22}};
       },
       "one.hosts"},
  };
  for (const auto& c : cases) {
    ScalingOptions o = Options();
    c.change(&o);
    absl::Status s = ValidateOptions(o);
    EXPECT_FALSE(s.ok()) << c.flag;
    EXPECT_THAT(s.message(), HasSubstr(c.flag));
  }
}

TEST(CommandTest, WorkerAndLaunch) {
  ScalingOptions o = Options();
  o.emulate_device = "k80.json";
  o.worker_args = {"--fusion_bytes=0"};
  const PointPlan plan = *PlanPoint(64, 16, 4, "hosts");
  EXPECT_THAT(
      WorkerCommand(o, plan),
      ElementsAre(
          "/bin/worker", "--kv_store=dist_device_sync", "--benchmark=true",
          "--network=resnet", "--num_layers=152", "--image_shape=3,224,224",
          "--num_classes=1000", "--batch_size=512", "--num_epochs=1",
          // 4 hosts x 512 x (2 + 5).
          "--num_examples=14336", "--disp_batches=1000000",
          "--kvstore_mode=pstrain", "--warmup_batches=2", "--time_dilation=10",
          "--emulate_device=k80.json",
          "--gpus=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "--fusion_bytes=0"));
  o.ssh = true;
  o.ssh_config = "cfg";
  o.launch_args = {"--env", "OMP_NUM_THREADS=1"};
  std::vector<std::string> launch = LaunchCommand(o, plan, "out/hosts-4");
  EXPECT_THAT(std::vector<std::string>(launch.begin(), launch.begin() + 16),
              ElementsAre("/bin/launch", "-n", "4", "-s", "4", "--launcher",
                          "ssh", "-H", "out/hosts-4", "--ssh_config", "cfg",
                          "--env", "OMP_NUM_THREADS=1", "--", "/bin/worker",
                          "--kv_store=dist_device_sync"));

  o = Options();
  o.cpu_devices = true;
  o.num_layers = 0;
  o.num_classes = 0;
  const PointPlan two = *PlanPoint(2, 2, -1, "");
  std::vector<std::string> w = WorkerCommand(o, two);
  EXPECT_THAT(w, Not(::testing::Contains(HasSubstr("--num_layers"))));
  EXPECT_THAT(w, Not(::testing::Contains(HasSubstr("--num_classes"))));
  EXPECT_THAT(w, Not(::testing::Contains(HasSubstr("--gpus"))));
  EXPECT_THAT(w, ::testing::Contains("--cpu_devices=2"));
  EXPECT_THAT(w, Not(::testing::Contains(HasSubstr("--slice_bytes"))));
  EXPECT_THAT(w, Not(::testing::Contains(HasSubstr("--send_credit_bytes"))));
  EXPECT_THAT(w, Not(::testing::Contains(HasSubstr("--gradient_compression"))));
  o.slice_bytes = 1 << 20;
  o.send_credit_bytes = 0;
  o.gradient_compression = "type=2bit,threshold=0.5";
  o.worker_args = {"--fusion_bytes=0"};
  w = WorkerCommand(o, two);
  EXPECT_THAT(std::vector<std::string>(w.end() - 4, w.end()),
              ElementsAre("--slice_bytes=1048576", "--send_credit_bytes=0",
                          "--gradient_compression=type=2bit,threshold=0.5",
                          "--fusion_bytes=0"));
  launch = LaunchCommand(o, two, "");
  EXPECT_THAT(std::vector<std::string>(launch.begin(), launch.begin() + 8),
              ElementsAre("/bin/launch", "-n", "1", "-s", "1", "--launcher",
                          "local", "--"));
}

TEST(CommandTest, HostsFile) {
  std::vector<launcher::Host> hosts = {{"a", 22}, {"b", 2222}, {"c", 22}};
  EXPECT_EQ(HostsFileText(hosts, 2), "a\nb:2222\n");
}

TEST(ParseBenchmarkOutputTest, Good) {
  ScalingOptions o = Options();
  const PointPlan plan = *PlanPoint(32, 16, -1, "");
  const std::string out = absl::StrCat(
      "[scheduler 0 localhost] up\n", "[worker 1 h1] benchmark: starting\n",
      Line(1, 16, 512, 400.5, ",\"extra\":[1,2]"),
      "[server 0 h0] benchmark: not a worker line\n", Line(0, 16, 512, 412.25));
  auto r = ParseBenchmarkOutput(out, o, plan);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].rank, 0);
  EXPECT_DOUBLE_EQ((*r)[0].images_per_sec, 412.25);
  EXPECT_DOUBLE_EQ((*r)[0].compute_s, 7.1);
  EXPECT_DOUBLE_EQ((*r)[0].pull_wait_s, 0.9);
  EXPECT_EQ((*r)[1].rank, 1);
  EXPECT_EQ((*r)[1].raw["extra"], nlohmann::ordered_json({1, 2}));
}

TEST(ParseBenchmarkOutputTest, Missing) {
  ScalingOptions o = Options();
  const PointPlan plan = *PlanPoint(64, 16, -1, "");
  auto r = ParseBenchmarkOutput(
      absl::StrCat(Line(0, 16, 512, 400), Line(2, 16, 512, 400)), o, plan);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("worker ranks 1, 3"));
  EXPECT_THAT(r.status().message(), HasSubstr("2 of 4"));
  r = ParseBenchmarkOutput("", o, plan);
  EXPECT_THAT(r.status().message(), HasSubstr("0 of 4"));
}

TEST(ParseBenchmarkOutputTest, Malformed) {
  ScalingOptions o = Options();
  const PointPlan plan = *PlanPoint(32, 16, -1, "");
  struct Case {
    std::string text;
    const char* why;
  } cases[] = {
      {"[worker 0 h] benchmark: {\"rank\":0,\n", "not one JSON object"},
      {"[worker 0 h] benchmark: {\"rank\":0} trailing\n",
       "not one JSON object"},
      {"[worker 0 h] benchmark: {\"devices\":1}\n", "has no \"rank\""},
      {absl::StrCat(Line(0, 16, 512, 1), Line(0, 16, 512, 1)),
       "repeats rank 0"},
      {Line(2, 16, 512, 1), "has rank 2"},
      {Line(0, 8, 256, 1), "\"devices\":8, not 16"},
      {Line(0, 16, 32, 1), "\"batch_size\":32, not 512"},
      {Line(0, 16, 512, 0), "\"images_per_sec\" is 0"},
      {"[worker 0 h] benchmark: {\"rank\":\"0\"}\n", "\"rank\" is not an"},
  };
  for (const auto& c : cases) {
    auto r = ParseBenchmarkOutput(c.text, o, plan);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_THAT(r.status().message(), HasSubstr(c.why)) << c.text;
  }
  // The offending line is quoted.
  auto r = ParseBenchmarkOutput(Line(0, 8, 256, 1), o, plan);
  EXPECT_THAT(r.status().message(), HasSubstr("[worker 0 h0] benchmark: {"));
  // A non-object after the marker is not taken for a worker's line.
  r = ParseBenchmarkOutput("[worker 0 h] benchmark: []\n", o, plan);
  EXPECT_THAT(r.status().message(), HasSubstr("no `benchmark: {...}` line"));
}

TEST(TailTest, LastLines) {
  EXPECT_EQ(Tail("a\nb\nc\n", 2), "b\nc\n");
  EXPECT_EQ(Tail("a\nb", 5), "a\nb\n");
  EXPECT_EQ(Tail("", 5), "");
}

TEST(CpuTest, ProcStat) {
  auto a = ParseProcStat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->total, 1000u);
  EXPECT_EQ(a->busy, 200u);
  auto b = ParseProcStat("cpu  250 0 150 1400 200 0 0 0 0 0\n");
  ASSERT_TRUE(b.ok());
  EXPECT_DOUBLE_EQ(CpuPercent(*a, *b), 100.0 * 200 / 1000);
  EXPECT_EQ(CpuPercent(*a, *a), 0);
  EXPECT_FALSE(ParseProcStat("intr 1 2\n").ok());
  EXPECT_TRUE(ReadCpuTimes().ok());
}

TEST(ReferenceTest, Parses) {
  auto r = ParseReference(
      "# MXNet\n\ngpus,images_per_sec\n1,20.8\n# two\n 2 , 38.7\n", "ref.csv");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 2u);
  EXPECT_DOUBLE_EQ(r->at(2), 38.7);
}

TEST(ReferenceTest, ErrorsNameFileAndLine) {
  struct Case {
    const char* text;
    const char* where;
  } cases[] = {
      {"gpus,ips\n1,2\n", "f.csv:1: the header"},
      {"# c\ngpus,images_per_sec\n1,2\nx,3\n", "f.csv:4: GPUs"},
      {"gpus,images_per_sec\n1,-2\n", "f.csv:2: images/s"},
      {"gpus,images_per_sec\n1,2,3\n", "f.csv:2: expected"},
      {"gpus,images_per_sec\n1,2\n1,3\n", "f.csv:3: 1 GPUs again"},
      {"gpus,images_per_sec\n", "f.csv: no rows"},
  };
  for (const auto& c : cases) {
    auto r = ParseReference(c.text, "f.csv");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_THAT(r.status().message(), HasSubstr(c.where)) << c.text;
  }
  auto r = ReadReference(Tmp("absent.csv"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("absent.csv"));
}

TEST(ReferenceTest, ShippedTables) {
  for (const char* name :
       {"mxnet_alexnet", "mxnet_inception_v3", "mxnet_resnet152"}) {
    auto r = ReadReference(absl::StrCat(
        std::getenv("TEST_SRCDIR"), "/pstrain/configs/scaling/", name, ".csv"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->size(), 9u) << name;
    EXPECT_EQ(r->begin()->first, 1);
    EXPECT_EQ(r->rbegin()->first, 256);
  }
  auto r = ReadReference(absl::StrCat(std::getenv("TEST_SRCDIR"),
                                      "/pstrain/configs/scaling/"
                                      "mxnet_resnet152.csv"));
  EXPECT_DOUBLE_EQ(r->at(256), 4630);
}

// Three points: 1 GPU (1 worker), 2 GPUs (failed), 4 GPUs (2 workers).
std::vector<PointResult> Results() {
  std::vector<PointResult> points(3);
  points[0].plan = *PlanPoint(1, 2, -1, "");
  points[0].ok = true;
  points[0].images_per_sec = 100;
  points[0].cpu_percent = 50;
  points[0].wall_seconds = 10;
  WorkerResult w;
  w.images_per_sec = 100;
  w.compute_s = 1;
  w.push_wait_s = 0.5;
  w.raw = {{"rank", 0}, {"images_per_sec", 100}};
  points[0].workers = {w};
  points[1].plan = *PlanPoint(2, 2, -1, "");
  points[1].error = "point 2 of 3: launch exit status 1";
  points[1].wall_seconds = 3;
  points[2].plan = *PlanPoint(4, 2, -1, "");
  points[2].ok = true;
  points[2].images_per_sec = 360;
  points[2].cpu_percent = 90;
  points[2].wall_seconds = 12;
  w.images_per_sec = 180;
  w.compute_s = 2;
  points[2].workers = {w, w};
  points[2].workers[1].compute_s = 4;
  return points;
}

TEST(WritersTest, ScalingAndTable) {
  std::vector<PointResult> points = Results();
  Reference ref = {{1, 90}, {4, 400}};
  ComputeScaling(&ref, &points);
  EXPECT_DOUBLE_EQ(points[2].speedup, 3.6);
  EXPECT_DOUBLE_EQ(points[2].efficiency, 0.9);
  EXPECT_DOUBLE_EQ(*points[2].reference, 400);
  EXPECT_FALSE(points[1].reference.has_value());
  const std::string table = FormatTable(points, true);
  std::vector<std::string> lines = absl::StrSplit(table, '\n');
  ASSERT_GE(lines.size(), 4u);
  EXPECT_THAT(lines[0], HasSubstr("GPUs"));
  EXPECT_THAT(lines[0], HasSubstr("speed-up"));
  EXPECT_THAT(lines[0], HasSubstr("reference"));
  EXPECT_THAT(lines[0], HasSubstr("CPU %"));
  EXPECT_THAT(lines[1], HasSubstr("100.00"));
  EXPECT_THAT(lines[1], HasSubstr("1.111"));  // 100 / 90.
  EXPECT_THAT(lines[2], HasSubstr("failed"));
  EXPECT_THAT(lines[3], HasSubstr("360.00"));
  EXPECT_THAT(lines[3], HasSubstr("3.60"));
  EXPECT_THAT(lines[3], HasSubstr("0.900"));
  EXPECT_THAT(lines[3], HasSubstr("90.0"));
  EXPECT_THAT(FormatTable(points, false), Not(HasSubstr("reference")));
}

TEST(WritersTest, Csv) {
  std::vector<PointResult> points = Results();
  Reference ref = {{4, 400}};
  ComputeScaling(&ref, &points);
  std::vector<std::string> lines =
      absl::StrSplit(CsvText(points), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u);
  std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  for (const auto& l : lines) {
    EXPECT_EQ(std::vector<std::string>(absl::StrSplit(l, ',')).size(),
              header.size())
        << l;
  }
  EXPECT_EQ(lines[1], "1,1,1,1,1,ok,100,1,1,,,50,10,1,0.5,0,0");
  EXPECT_EQ(lines[2], "2,1,1,1,2,failed,,,,,,,3,,,,");
  EXPECT_EQ(lines[3], "4,2,2,2,2,ok,360,3.6,0.9,400,0.9,90,12,3,0.5,0,0");
}

TEST(WritersTest, Json) {
  std::vector<PointResult> points = Results();
  ComputeScaling(nullptr, &points);
  ScalingOptions o = Options();
  const auto j =
      ResultsJson(o, {"scaling", "--points=1,2,4"}, "", nullptr, points);
  EXPECT_EQ(j["tool"], "scaling");
  EXPECT_EQ(j["command_line"][1], "--points=1,2,4");
  EXPECT_EQ(j["flags"]["batch_size"], 32);
  EXPECT_EQ(j["flags"]["network"], "resnet");
  EXPECT_TRUE(j["reference"].is_null());
  ASSERT_EQ(j["points"].size(), 3u);
  EXPECT_EQ(j["points"][0]["gpus"], 1);
  EXPECT_EQ(j["points"][1]["ok"], false);
  EXPECT_THAT(j["points"][1]["error"].get<std::string>(),
              HasSubstr("exit status 1"));
  EXPECT_TRUE(j["points"][1]["images_per_sec"].is_null());
  EXPECT_DOUBLE_EQ(j["points"][2]["efficiency"].get<double>(), 0.9);
  ASSERT_EQ(j["points"][2]["workers"].size(), 2u);
  EXPECT_EQ(j["points"][2]["workers"][0]["rank"], 0);
  // Round trip through text.
  EXPECT_EQ(nlohmann::ordered_json::parse(j.dump()), j);
}

TEST(PlotTest, DataAndScript) {
  std::vector<PointResult> points = Results();
  Reference ref = {{1, 90}, {4, 300}};
  ComputeScaling(&ref, &points);
  const std::string data = PlotData(points, &ref);
  EXPECT_THAT(data, HasSubstr("\n1 100 100 1\n4 360 400 0.9\n\n\n"));
  EXPECT_THAT(data, HasSubstr("\n1 90 1\n4 300 0.833333\n"));
  const std::string gp = GnuplotScript("resnet-152, it's", true, {1, 4},
                                       "scaling.dat", "s.png", "s.svg");
  EXPECT_THAT(gp, HasSubstr("set title 'resnet-152, it''s'"));
  EXPECT_THAT(gp, HasSubstr("set logscale x 2"));
  EXPECT_THAT(gp, HasSubstr("set xtics (1, 4)"));
  EXPECT_THAT(gp, HasSubstr("pngcairo"));
  EXPECT_THAT(gp, HasSubstr("set terminal png "));
  EXPECT_THAT(gp, HasSubstr("set terminal svg"));
  EXPECT_THAT(gp, HasSubstr("set output 's.png'"));
  EXPECT_THAT(gp, HasSubstr("set output 's.svg'"));
  EXPECT_THAT(gp, HasSubstr("title 'ideal'"));
  EXPECT_THAT(gp, HasSubstr("axes x1y2"));
  EXPECT_THAT(gp, HasSubstr("title 'reference'"));
  EXPECT_THAT(GnuplotScript("t", false, {1}, "d", "p", "s"),
              Not(HasSubstr("reference")));
}

TEST(PlotTest, WritesFilesWithGnuplot) {
  const std::string dir = Tmp("plot");
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  std::vector<PointResult> points = Results();
  Reference ref = {{1, 90}, {2, 170}, {4, 300}, {8, 500}};
  ComputeScaling(&ref, &points);
  const std::string gnuplot = FindInPath("gnuplot");
  if (gnuplot.empty()) {
    absl::Status s = WritePlot(dir, "", "t", points, &ref);
    EXPECT_THAT(s.message(), HasSubstr("scripts/setup"));
    GTEST_SKIP() << "gnuplot is not installed (scripts/setup installs "
                    "gnuplot-nox); only the error was checked";
  }
  absl::Status s = WritePlot(dir, gnuplot, "resnet-152 test", points, &ref);
  ASSERT_TRUE(s.ok()) << s;
  for (const char* f :
       {"scaling.dat", "scaling.gp", "scaling.png", "scaling.svg"}) {
    EXPECT_GT(ReadAll(dir + "/" + f).size(), 100u) << f;
  }
  EXPECT_EQ(ReadAll(dir + "/scaling.png").substr(1, 3), "PNG");
  EXPECT_THAT(ReadAll(dir + "/scaling.svg"), HasSubstr("<svg"));
  // No successful point: nothing to plot, said so.
  points[0].ok = points[2].ok = false;
  EXPECT_THAT(WritePlot(dir, gnuplot, "t", points, nullptr).message(),
              HasSubstr("nothing to plot"));
}

TEST(PlotTest, MissingGnuplotSaysRunSetup) {
  std::vector<PointResult> points = Results();
  ComputeScaling(nullptr, &points);
  absl::Status s =
      WritePlot(std::getenv("TEST_TMPDIR"), "", "t", points, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("scripts/setup"));
}

}  // namespace
}  // namespace scaling
}  // namespace pstrain
