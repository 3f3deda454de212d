#include "launch/connection_probe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
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
  const auto is_it = [&](int fd) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    std::string paddr, saddr;
    int pport = -1, sport = -1;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        !endpoint(peer, paddr, pport) || !local_endpoint(fd, saddr, sport))
      return false;
    // (cpp-httplib's address may carry an IPv6 scope, "%eth0", that inet_ntop leaves out)
    return pport == remote_port && sport == local_port &&
           paddr == remote_addr.substr(0, remote_addr.find('%'));
  };
  // A connection thread serves one connection at a time, often several requests on it: the
  // socket it found last is tried first.
  thread_local int last = -1;
  if (last >= 0 && is_it(last)) {
    fd_ = last;
    return;
  }
  for_each_descriptor([&](int fd) {
    if (!is_it(fd)) return false;
    fd_ = last = fd;
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

namespace {

short poll_now(int fd, short events) {
  pollfd p{fd, events, 0};
  return fd >= 0 && poll(&p, 1, 0) > 0 ? p.revents : 0;
}

}  // namespace

bool ConnectionProbe::finished_sending() const {
  return (poll_now(fd_, POLLRDHUP) & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool ConnectionProbe::reset() const {
  return (poll_now(fd_, 0) & (POLLHUP | POLLERR)) != 0;
}

void ConnectionProbe::finish(double seconds) const {
  if (fd_ < 0) return;
  ::shutdown(fd_, SHUT_WR);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  char sink[16384];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, int(left.count())) <= 0) return;
    const ssize_t n = ::recv(fd_, sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;  // closed (or reset)
  }
}

uint64_t ConnectionProbe::bytes_written() const {
  // One snapshot of the kernel's counts: sent (without retransmissions), plus not yet sent.
  tcp_info info{};
  socklen_t len = sizeof info;
  if (fd_ < 0 || getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  if (len >= offsetof(tcp_info, tcpi_bytes_retrans) + sizeof info.tcpi_bytes_retrans)
    return info.tcpi_bytes_sent - info.tcpi_bytes_retrans + info.tcpi_notsent_bytes;
  int queued = 0;  // (a kernel before 4.19: acknowledged plus queued, read one after the other)
  ioctl(fd_, SIOCOUTQ, &queued);
  return uint64_t(info.tcpi_bytes_acked) + uint64_t(queued);
}

bool ConnectionProbe::send(const std::string& bytes) const {
  if (fd_ < 0) return false;
  for (size_t at = 0; at < bytes.size();) {
    pollfd p{fd_, POLLOUT, 0};  // (a client that reads nothing holds a write 30 s at most)
    if (poll(&p, 1, 30000) <= 0 || !(p.revents & POLLOUT)) return false;
    const ssize_t n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += size_t(n);
  }
  return true;
}

}  // namespace tessera::cli
