// An HTTP request's connection, seen from its handler. cpp-httplib does not hand its handlers the
// connection's socket, so the probe finds it among this process's descriptors by its two
// endpoints (Linux: /proc/self/fd), once per request. Then it asks the kernel whether the client
// has finished sending (a FIN: it closed the connection, or only its sending half, as `nc -N`
// and some HTTP/1.0 tools do, still reading the answer) or has gone (a reset), and writes to the
// socket itself where cpp-httplib 0.11 will not: once it has read the end of the client's data it
// takes the connection for dead and writes nothing.
#pragma once

#include <cstdint>
#include <string>

namespace tessera::cli {

class ConnectionProbe {
 public:
  // The connection from remote_addr:remote_port to local_port (as cpp-httplib's Request has
  // them). When no such socket is found, found() is false, and so is every question below; send
  // fails.
  ConnectionProbe(const std::string& remote_addr, int remote_port, int local_port);
  bool found() const { return fd_ >= 0; }
  // The client sent a FIN: it sends nothing more (it may still read).
  bool finished_sending() const;
  // The connection was reset: nobody reads what is written (a client that had closed its socket
  // answers anything written to it with a reset).
  bool reset() const;
  // Ends the connection after its answer (a lingering close): sends nothing more (what
  // cpp-httplib would write next goes nowhere), then reads and drops what the client still sends
  // (a refused body, a pipelined request) until it closes, for `seconds` at most, so that the
  // client reads the answer instead of a reset; cpp-httplib then sees the end and closes.
  void finish(double seconds) const;
  // Bytes the server has written to the connection so far (0 where it cannot tell).
  uint64_t bytes_written() const;
  // Writes all of `bytes` to the connection; false when it cannot (reset, no socket found, or
  // the client read nothing for 30 s).
  bool send(const std::string& bytes) const;

 private:
  int fd_ = -1;
};

// cpp-httplib 0.11 listens with a backlog of 5 connections, so a burst of clients has its
// connections dropped and retried a second later. This finds the listening socket on `port` among
// this process's descriptors and listens again with `backlog`; false when none was found.
bool widen_listen_backlog(int port, int backlog);

}  // namespace tessera::cli
