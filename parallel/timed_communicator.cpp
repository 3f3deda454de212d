#include "parallel/timed_communicator.h"

#include <chrono>

namespace tessera {

namespace {

// A share of `bytes`: parts / whole of it.
double share(size_t bytes, int parts, int whole) {
  return double(bytes) * double(parts) / double(whole);
}

}  // namespace

template <typename F>
void TimedCommunicator::timed(double bytes, F&& f) {
  if (size() > 1) bytes_ += bytes;  // (a group of one sends nothing)
  const auto t0 = std::chrono::steady_clock::now();
  f();
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++calls_;
}

void TimedCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  timed(share(t.nbytes(), 2 * (size() - 1), size()), [&] { inner_->all_reduce(t, op); });
}
void TimedCommunicator::all_gather(const Tensor& in, Tensor& out) {
  timed(share(in.nbytes(), size() - 1, 1), [&] { inner_->all_gather(in, out); });
}
void TimedCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  timed(share(in.nbytes(), size() - 1, size()), [&] { inner_->reduce_scatter(in, out, op); });
}
void TimedCommunicator::send(const Tensor& t, int dst, int tag) {
  timed(double(t.nbytes()), [&] { inner_->send(t, dst, tag); });
}
void TimedCommunicator::recv(Tensor& t, int src, int tag) {
  timed(0, [&] { inner_->recv(t, src, tag); });
}
void TimedCommunicator::send_recv(const Tensor& out, int dst, Tensor& in, int src, int tag) {
  timed(double(out.nbytes()), [&] { inner_->send_recv(out, dst, in, src, tag); });
}
void TimedCommunicator::broadcast(Tensor& t, int root) {
  timed(share(t.nbytes(), size() - 1, size()), [&] { inner_->broadcast(t, root); });
}
void TimedCommunicator::broadcast_bytes(std::string& bytes, int root) {
  timed(0, [&] { inner_->broadcast_bytes(bytes, root); });
  if (size() > 1) bytes_ += share(bytes.size(), size() - 1, size());  // (known after the call)
}
void TimedCommunicator::send_bytes(const std::string& bytes, int dst, int tag) {
  timed(double(bytes.size()), [&] { inner_->send_bytes(bytes, dst, tag); });
}
void TimedCommunicator::recv_bytes(std::string& bytes, int src, int tag) {
  timed(0, [&] { inner_->recv_bytes(bytes, src, tag); });
}
void TimedCommunicator::barrier() {
  timed(0, [&] { inner_->barrier(); });
}

}  // namespace tessera
