// Whether an HTTP client is still there while its request waits for the engine. cpp-httplib
// does not hand its handlers the connection's socket, so the probe finds it among this
// process's descriptors by its two endpoints (Linux: /proc/self/fd), once per request, and then
// asks the kernel whether the peer has closed it.
#pragma once

#include <string>

namespace tessera::cli {

class ConnectionProbe {
 public:
  // The connection from remote_addr:remote_port to local_port (as cpp-httplib's Request has
  // them). When no such socket is found, closed() is always false.
  ConnectionProbe(const std::string& remote_addr, int remote_port, int local_port);
  bool found() const { return fd_ >= 0; }
  // The peer closed (or reset) the connection.
  bool closed() const;

 private:
  int fd_ = -1;
};

// cpp-httplib 0.11 listens with a backlog of 5 connections, so a burst of clients has its
// connections dropped and retried a second later. This finds the listening socket on `port` among
// this process's descriptors and listens again with `backlog`; false when none was found.
bool widen_listen_backlog(int port, int backlog);

}  // namespace tessera::cli
