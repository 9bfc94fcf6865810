#include "util/file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace loopserve {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(testing::TempDir()) / name).string();
}

TEST(ReadWholeFileTest, ReadsEveryByteOfABinaryFile) {
  const std::string path = TempPath("read_whole_file_binary");
  std::string bytes = "a\0b\r\n\xff";
  bytes.append(1 << 20, 'x');  // more than one stream buffer
  std::ofstream(path, std::ios::binary) << bytes;
  EXPECT_EQ(ReadWholeFile(path), bytes);
  std::remove(path.c_str());
}

TEST(ReadWholeFileTest, AnEmptyFileIsEmptyText) {
  const std::string path = TempPath("read_whole_file_empty");
  std::ofstream{path};
  EXPECT_EQ(ReadWholeFile(path), std::string());
  std::remove(path.c_str());
}

TEST(ReadWholeFileTest, WhatCannotBeReadIsNothing) {
  EXPECT_EQ(ReadWholeFile(TempPath("read_whole_file_missing")), std::nullopt);
  EXPECT_EQ(ReadWholeFile(testing::TempDir()), std::nullopt);  // a directory
}

}  // namespace
}  // namespace loopserve
