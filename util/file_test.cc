#include "util/file.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace pstrain {
namespace {

std::string TempDir() {
  const char* d = getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

TEST(ReadFileToStringTest, ReadsBinaryBytesExactly) {
  const std::string path = TempDir() + "/bytes.bin";
  std::string bytes("a\0b\r\nc", 6);
  bytes += std::string(200000, 'x');  // more than one read() buffer
  {
    std::ofstream out(path, std::ios::binary);
    out << bytes;
  }
  auto got = ReadFileToString(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
}

TEST(ReadFileToStringTest, EmptyFileIsEmpty) {
  const std::string path = TempDir() + "/empty";
  { std::ofstream out(path); }
  auto got = ReadFileToString(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "");
}

TEST(ReadFileToStringTest, MissingFileNamesRoleAndPath) {
  auto got = ReadFileToString(TempDir() + "/no-such-file", "hosts file");
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(absl::IsNotFound(got.status())) << got.status();
  EXPECT_NE(got.status().message().find("hosts file "), std::string::npos);
  EXPECT_NE(got.status().message().find("no-such-file"), std::string::npos);
}

TEST(ReadFileToStringTest, DirectoryIsAnError) {
  auto got = ReadFileToString(TempDir());
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("open " + TempDir()), std::string::npos)
      << got.status();
}

TEST(WriteFileAtomicallyTest, WritesAndReplacesWholeFiles) {
  const std::string path = TempDir() + "/atomic.bin";
  const std::string bytes("x\0y", 3);
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  EXPECT_EQ(ReadFileToString(path).value(), bytes);
  ASSERT_TRUE(WriteFileAtomically(path, "shorter").ok());
  EXPECT_EQ(ReadFileToString(path).value(), "shorter");
}

TEST(WriteFileAtomicallyTest, MissingFolderNamesTheFile) {
  absl::Status s = WriteFileAtomically(TempDir() + "/no/such/f.json", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("/no/such/f.json"), std::string::npos) << s;
}

}  // namespace
}  // namespace pstrain
