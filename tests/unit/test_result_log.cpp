// The batch job's results file (io/result_log.h): records appended whole; reopened, it keeps
// every whole record, drops a partial last line, refuses a damaged line in the middle, and
// knows the duplicate-id error records apart from results.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "io/result_log.h"
#include "kernels/error.h"

namespace tessera {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name))
      .string();
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(ResultLog, AppendsWholeRecordsAndResumesFromThem) {
  const std::string path = temp_path("log.jsonl");
  {
    ResultLog log(path, true);
    EXPECT_TRUE(log.done().empty());
    log.append(R"({"id":"a","text":"x"})");
    log.append(R"({"id":"a","error":{"message":"dup","line":7,"reason":"duplicate_id"}})");
  }
  EXPECT_EQ(read(path),
            "{\"id\":\"a\",\"text\":\"x\"}\n"
            "{\"id\":\"a\",\"error\":{\"message\":\"dup\",\"line\":7,\"reason\":"
            "\"duplicate_id\"}}\n");
  // A crash mid-write left half a record.
  write(path, read(path) + R"({"id":"b","te)");
  {
    ResultLog log(path, false);
    EXPECT_TRUE(log.dropped_partial_line());
    EXPECT_EQ(log.records_read(), 2);
    EXPECT_EQ(log.done(), (std::set<std::string>{"a", record_key("a", true, 7)}));
    log.append(R"({"id":"b","text":"y"})");
  }
  EXPECT_EQ(read(path).find("\"te{"), std::string::npos);  // the half record is gone
  ResultLog again(path, false);
  EXPECT_FALSE(again.dropped_partial_line());
  EXPECT_EQ(again.records_read(), 3);
  std::filesystem::remove(path);
}

TEST(ResultLog, RefusesADamagedLineInTheMiddleAndOverwriteStartsAfresh) {
  const std::string path = temp_path("damaged.jsonl");
  write(path, "{\"id\":\"a\"}\n{\"id\":\n{\"id\":\"c\"}\n");
  try {
    ResultLog log(path, false);
    FAIL() << "a damaged file was resumed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("line 2 is not a result record"), std::string::npos);
  }
  EXPECT_EQ(read(path), "{\"id\":\"a\"}\n{\"id\":\n{\"id\":\"c\"}\n");  // untouched
  {
    ResultLog log(path, true);
    EXPECT_EQ(log.records_read(), 0);
  }
  EXPECT_EQ(read(path), "");
  // A missing file is an empty log.
  std::filesystem::remove(path);
  ResultLog fresh(path, false);
  EXPECT_EQ(fresh.records_read(), 0);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tessera
