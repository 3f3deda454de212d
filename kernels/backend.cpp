#include "kernels/backend.h"

#include <array>
#include <atomic>

namespace tessera {

Backend& cpu_backend();  // kernels/cpu/cpu_backend.cpp

namespace {

std::array<std::atomic<Backend*>, 2>& registered() {
  static std::array<std::atomic<Backend*>, 2> r{};
  return r;
}

}  // namespace

Backend& backend_for(DeviceType type) {
  if (type == DeviceType::kCPU) return cpu_backend();
  Backend* b = registered()[size_t(type)].load();
  const Device kind{type, 0};
  TESSERA_CHECK(b, "no backend for " << kind.str()
                                     << " devices: this tessera was built without it, or no such "
                                        "device was set up");
  return *b;
}

void register_backend(DeviceType type, Backend* backend) { registered()[size_t(type)] = backend; }

void synchronize(Device d) { backend_for(d.type).synchronize(d.index); }

std::unique_ptr<DeviceGraph> capture_graph(Device d, const std::function<void()>& record) {
  return backend_for(d.type).capture(d.index, record);
}

}  // namespace tessera
