// The results file of a batch job: JSON lines appended as requests finish, each flushed and
// synced to the disk before the next, so that a job killed at any moment leaves whole lines
// followed by at most one partial line. Opening it again for a resume reads what is there, drops
// a partial last line (a crash mid-write), and says which records it holds, so the job computes
// only what is missing.
//
// A stream is different: standard output ("-"), or any path that is not a regular file (a pipe,
// /dev/stdout, a terminal). Its records are written as they finish and never read back, so a
// job writing to one cannot resume.
#pragma once

#include <cstdint>
#include <set>
#include <string>

namespace tessera {

class ResultLog {
 public:
  // Whether `path` names a stream (see above).
  static bool is_stream(const std::string& path);
  // overwrite: start afresh (the file is emptied). Otherwise the file's records are read (a
  // missing file is an empty log); a partial last line is cut off; a line in the middle that is
  // not a JSON object with an "id" throws (invalid input) naming the line, since appending to it
  // would hide the damage.
  ResultLog(const std::string& path, bool overwrite);
  ~ResultLog();
  ResultLog(const ResultLog&) = delete;
  ResultLog& operator=(const ResultLog&) = delete;

  bool streaming() const { return streaming_; }
  // The key of every record read at open (record_key of each line; none for a stream).
  const std::set<std::string>& done() const { return done_; }
  int64_t records_read() const { return records_read_; }
  bool dropped_partial_line() const { return dropped_partial_; }

  // Appends one record (a JSON object on one line, without the newline), written, flushed and
  // (to a file) fsync'ed before it returns.
  void append(const std::string& record_json);

 private:
  std::string path_;
  int fd_ = -1;
  std::set<std::string> done_;
  int64_t records_read_ = 0;
  bool dropped_partial_ = false;
  bool streaming_ = false;
};

// What identifies a record for a resume: its "id", or for the error record of a line whose id
// another line already has, "id#line N".
std::string record_key(const std::string& id, bool duplicate, int64_t line);

}  // namespace tessera
