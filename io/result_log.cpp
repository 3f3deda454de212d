#include "io/result_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/error.h"

namespace tessera {
namespace {

// The key of one record line, or "" when it is not a record.
std::string key_of(const std::string& line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error&) {
    return "";
  }
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) return "";
  const bool duplicate = j.contains("error") && j["error"].is_object() &&
                         j["error"].value("reason", "") == "duplicate_id";
  const int64_t line_no =
      duplicate && j["error"].contains("line") ? j["error"]["line"].get<int64_t>() : 0;
  return record_key(j["id"].get<std::string>(), duplicate, line_no);
}

}  // namespace

std::string record_key(const std::string& id, bool duplicate, int64_t line) {
  return duplicate ? id + "#line " + std::to_string(line) : id;
}

bool ResultLog::is_stream(const std::string& path) {
  struct stat st;
  return path == "-" || (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode));
}

ResultLog::ResultLog(const std::string& path, bool overwrite)
    : path_(path == "-" ? "standard output" : path) {
  if (is_stream(path)) {  // written as records finish, never read back
    streaming_ = true;
    fd_ = path == "-" ? ::dup(STDOUT_FILENO) : ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    TESSERA_CHECK_IO(fd_ >= 0, path << ": cannot open for writing: " << std::strerror(errno));
    return;
  }
  int64_t keep = 0;  // bytes of whole records
  if (!overwrite) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::stringstream buf;
      buf << in.rdbuf();
      const std::string text = buf.str();
      size_t at = 0;
      int64_t line_no = 0;
      while (at < text.size()) {
        const size_t end = text.find('\n', at);
        ++line_no;
        const std::string line = text.substr(at, end == std::string::npos ? end : end - at);
        const std::string key = key_of(line);
        if (end == std::string::npos || key.empty()) {
          const bool last = end == std::string::npos || end + 1 == text.size();
          TESSERA_CHECK(last, path << ": line " << line_no
                                   << " is not a result record, and lines follow it: the file "
                                      "is damaged (--overwrite starts afresh)");
          dropped_partial_ = true;  // a crash mid-write: the request runs again
          break;
        }
        done_.insert(key);
        ++records_read_;
        at = end + 1;
        keep = int64_t(at);
      }
    }
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  TESSERA_CHECK_IO(fd_ >= 0, path << ": cannot open for writing: " << std::strerror(errno));
  TESSERA_CHECK_IO(::ftruncate(fd_, keep) == 0 && ::lseek(fd_, keep, SEEK_SET) == keep,
                   path << ": cannot cut the file to its whole records: " << std::strerror(errno));
}

ResultLog::~ResultLog() {
  if (fd_ >= 0) ::close(fd_);
}

void ResultLog::append(const std::string& record_json) {
  const std::string line = record_json + "\n";
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    TESSERA_CHECK_IO(n > 0, path_ << ": write failed: " << std::strerror(errno));
    written += size_t(n);
  }
  if (streaming_) return;
  TESSERA_CHECK_IO(::fdatasync(fd_) == 0, path_ << ": sync failed: " << std::strerror(errno));
}

}  // namespace tessera
