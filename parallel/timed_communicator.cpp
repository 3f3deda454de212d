#include "parallel/timed_communicator.h"

#include <chrono>

namespace tessera {

template <typename F>
void TimedCommunicator::timed(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++calls_;
}

void TimedCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  timed([&] { inner_->all_reduce(t, op); });
}
void TimedCommunicator::all_gather(const Tensor& in, Tensor& out) {
  timed([&] { inner_->all_gather(in, out); });
}
void TimedCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  timed([&] { inner_->reduce_scatter(in, out, op); });
}
void TimedCommunicator::send(const Tensor& t, int dst, int tag) {
  timed([&] { inner_->send(t, dst, tag); });
}
void TimedCommunicator::recv(Tensor& t, int src, int tag) {
  timed([&] { inner_->recv(t, src, tag); });
}
void TimedCommunicator::send_recv(const Tensor& out, int dst, Tensor& in, int src, int tag) {
  timed([&] { inner_->send_recv(out, dst, in, src, tag); });
}
void TimedCommunicator::broadcast(Tensor& t, int root) {
  timed([&] { inner_->broadcast(t, root); });
}
void TimedCommunicator::broadcast_bytes(std::string& bytes, int root) {
  timed([&] { inner_->broadcast_bytes(bytes, root); });
}
void TimedCommunicator::send_bytes(const std::string& bytes, int dst, int tag) {
  timed([&] { inner_->send_bytes(bytes, dst, tag); });
}
void TimedCommunicator::recv_bytes(std::string& bytes, int src, int tag) {
  timed([&] { inner_->recv_bytes(bytes, src, tag); });
}
void TimedCommunicator::barrier() {
  timed([&] { inner_->barrier(); });
}

}  // namespace tessera
