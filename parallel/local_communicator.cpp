#include "parallel/communicator.h"

namespace tessera {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(Tensor&, ReduceOp) override {}
  void all_gather(const Tensor& in, Tensor& out) override { copy(in, out, "all_gather"); }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp) override {
    copy(in, out, "reduce_scatter");
  }
  void send(const Tensor&, int dst, int) override {
    TESSERA_ASSERT(false, "send to rank " << dst << " in a world of one");
  }
  void recv(Tensor&, int src, int) override {
    TESSERA_ASSERT(false, "recv from rank " << src << " in a world of one");
  }
  void send_recv(const Tensor& out, int dst, Tensor& in, int src, int) override {
    TESSERA_ASSERT(dst == 0 && src == 0, "send_recv with ranks " << dst << ", " << src
                                                                  << " in a world of one");
    copy(out, in, "send_recv");
  }
  void broadcast(Tensor&, int root) override {
    TESSERA_ASSERT(root == 0, "broadcast from rank " << root << " in a world of one");
  }
  void broadcast_bytes(std::string&, int root) override {
    TESSERA_ASSERT(root == 0, "broadcast from rank " << root << " in a world of one");
  }
  void send_bytes(const std::string&, int dst, int) override {
    TESSERA_ASSERT(false, "send to rank " << dst << " in a world of one");
  }
  void recv_bytes(std::string&, int src, int) override {
    TESSERA_ASSERT(false, "recv from rank " << src << " in a world of one");
  }
  void barrier() override {}

 private:
  static void copy(const Tensor& in, Tensor& out, const char* what) {
    TESSERA_ASSERT(in.nbytes() == out.nbytes() && in.dtype() == out.dtype(),
                   what << ": " << shape_str(in.shape()) << " into " << shape_str(out.shape()));
    if (in.raw() != out.raw())
      allocator_for(out.device().is_cpu() ? in.device().type : out.device().type)
          .copy(out.raw(), out.device(), in.raw(), in.device(), in.nbytes());
  }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace tessera
