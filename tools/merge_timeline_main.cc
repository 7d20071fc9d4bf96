// merge_timeline: merges timeline parts (timeline/timeline.h) into one
// Chrome trace, as `launch --timeline FILE` does after a job; for parts
// collected by hand (ssh jobs without a shared filesystem).
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "timeline/merge.h"
#include "util/flags.h"

int main(int argc, char** argv) {
  constexpr char kProgram[] = "merge_timeline";
  std::vector<std::string> args = pstrain::ParseFlagsOrExit(
      {kProgram,
       "merge_timeline OUT [PART.json...]\n"
       "Merges the timeline parts of a job's nodes into OUT, a Chrome trace\n"
       "for https://ui.perfetto.dev or chrome://tracing. Without parts: the\n"
       "*.json files of OUT.parts/ (where launch --timeline OUT has the\n"
       "nodes write them). A part that is missing or broken is skipped with a\n"
       "warning. Exit codes: 0 merged, 1 OUT not written, 2 bad arguments.",
       {},
       /*takes_arguments=*/true},
      {argv, argv + argc});
  if (args.size() < 2) {
    pstrain::ExitWithError(kProgram, "give OUT (see --help)");
  }
  const std::string out = args[1];
  std::vector<std::string> parts(args.begin() + 2, args.end());
  if (parts.empty()) {
    auto listed =
        pstrain::timeline::ListPartFiles(pstrain::timeline::PartsDir(out));
    if (!listed.ok()) {
      std::cerr << kProgram << ": " << listed.status().message() << "\n";
      return 1;
    }
    parts = *listed;
  }
  auto merged = pstrain::timeline::MergePartFiles(parts, out);
  if (!merged.ok()) {
    std::cerr << kProgram << ": " << merged.status().message() << "\n";
    return 1;
  }
  for (const std::string& w : merged->warnings) {
    std::cerr << kProgram << ": warning: " << w << "\n";
  }
  std::cout << kProgram << ": " << out << " (" << merged->events
            << " events from " << merged->parts << " parts)\n";
  return 0;
}
