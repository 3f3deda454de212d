#include "launch/connection_probe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

namespace tessera::cli {
namespace {

// The address and port of a socket address, or false for another family.
bool endpoint(const sockaddr_storage& a, std::string& addr, int& port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    port = ntohs(v4->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    port = ntohs(v6->sin6_port);
  } else {
    return false;
  }
  addr = buf;
  return true;
}

// Calls visit(fd) for each open descriptor of this process until it returns true.
template <typename Visit>
void for_each_descriptor(Visit visit) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return;
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    if (visit(int(fd))) break;
  }
  closedir(dir);
}

// The address and port a socket is bound to (getsockname), or false.
bool local_endpoint(int fd, std::string& addr, int& port) {
  sockaddr_storage self{};
  socklen_t len = sizeof self;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) == 0 &&
         endpoint(self, addr, port);
}

}  // namespace

ConnectionProbe::ConnectionProbe(const std::string& remote_addr, int remote_port, int local_port) {
  for_each_descriptor([&](int fd) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    std::string paddr, saddr;
    int pport = -1, sport = -1;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        !endpoint(peer, paddr, pport) || !local_endpoint(fd, saddr, sport))
      return false;
    // (cpp-httplib's address may carry an IPv6 scope, "%eth0", that inet_ntop leaves out)
    if (pport != remote_port || sport != local_port ||
        paddr != remote_addr.substr(0, remote_addr.find('%')))
      return false;
    fd_ = fd;
    return true;
  });
}

bool widen_listen_backlog(int port, int backlog) {
  bool done = false;
  for_each_descriptor([&](int fd) {
    int listening = 0;
    socklen_t len = sizeof listening;
    std::string addr;
    int p = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening &&
        local_endpoint(fd, addr, p) && p == port)
      done |= ::listen(fd, backlog) == 0;
    return false;
  });
  return done;
}

bool ConnectionProbe::closed() const {
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace tessera::cli
