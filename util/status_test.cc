#include "util/status.h"

#include <cerrno>
#include <string>

#include "gtest/gtest.h"

namespace pstrain {
namespace {

absl::StatusOr<int> ParsePositive(int v) {
  if (v <= 0) return absl::InvalidArgumentError("not positive");
  return v;
}

absl::Status Doubled(int v, int* out) {
  PSTRAIN_ASSIGN_OR_RETURN(int x, ParsePositive(v));
  *out = 2 * x;
  return absl::OkStatus();
}

absl::Status Chain(absl::Status s) {
  PSTRAIN_RETURN_IF_ERROR(s);
  return absl::InternalError("reached the end");
}

TEST(StatusTest, AssignOrReturnPassesValueAndError) {
  int out = 0;
  EXPECT_TRUE(Doubled(21, &out).ok());
  EXPECT_EQ(out, 42);
  absl::Status s = Doubled(-1, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out, 42);
}

TEST(StatusTest, ReturnIfErrorStopsEarly) {
  EXPECT_EQ(Chain(absl::NotFoundError("x")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Chain(absl::OkStatus()).code(), absl::StatusCode::kInternal);
}

TEST(StatusTest, AnnotateKeepsCodeAndPrefixesContext) {
  absl::Status s = Annotate(absl::DataLossError("bad magic"), "a.rec");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "a.rec: bad magic");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ctx").ok());
}

TEST(StatusTest, ErrnoToStatusMapsCodesAndNamesTheCall) {
  absl::Status s = ErrnoToStatus(ENOENT, "open /no/such/file");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("open /no/such/file"), absl::string_view::npos);
  EXPECT_NE(s.message().find("No such file"), absl::string_view::npos);
  EXPECT_NE(s.message().find("errno 2"), absl::string_view::npos);
  EXPECT_EQ(ErrnoToStatus(ECONNREFUSED, "connect").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrnoToStatus(EADDRINUSE, "bind").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ErrnoToStatus(EIO, "read").code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace pstrain
