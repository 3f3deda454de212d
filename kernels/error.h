// Errors: libraries throw tessera::Error through TESSERA_CHECK; only launch/ turns one into a
// message and MPI_Abort. The message is built with operator<< so any streamable value can appear:
//   TESSERA_CHECK(n > 0, "tensor " << name << " has no elements");
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

// Kinds let callers react differently (a bad request vs. a broken file) without parsing text.
enum class ErrorKind {
  kInternal,     // a broken invariant inside tessera
  kInvalidInput, // something a user gave us (a file, a flag, a request) is wrong
  kIo,           // the operating system or a library failed to read or write
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, const char* file, int line)
      : std::runtime_error(message), kind_(kind), file_(file), line_(line) {}
  ErrorKind kind() const { return kind_; }
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  ErrorKind kind_;
  const char* file_;
  int line_;
};

}  // namespace tessera

#define TESSERA_THROW_KIND(kind, msg)                                     \
  do {                                                                    \
    std::ostringstream tessera_oss_;                                      \
    tessera_oss_ << msg;                                                  \
    throw ::tessera::Error((kind), tessera_oss_.str(), __FILE__, __LINE__); \
  } while (0)

// A user-facing problem (bad file, bad flag, bad request): the message must name it.
#define TESSERA_FAIL(msg) TESSERA_THROW_KIND(::tessera::ErrorKind::kInvalidInput, msg)
#define TESSERA_CHECK(cond, msg)  \
  do {                            \
    if (!(cond)) TESSERA_FAIL(msg); \
  } while (0)
// The operating system or a library failed to read or write (not the user's input).
#define TESSERA_CHECK_IO(cond, msg)                                       \
  do {                                                                    \
    if (!(cond)) TESSERA_THROW_KIND(::tessera::ErrorKind::kIo, msg);      \
  } while (0)
// An internal invariant: failing it is a tessera bug, not the user's.
#define TESSERA_ASSERT(cond, msg)                                                        \
  do {                                                                                   \
    if (!(cond))                                                                         \
      TESSERA_THROW_KIND(::tessera::ErrorKind::kInternal, "internal error: " << msg); \
  } while (0)
