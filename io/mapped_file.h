// A read-only memory map of a whole file. Pages are loaded lazily by the OS, so opening a
// multi-gigabyte weight file costs no memory up front.
//
// Caveat of every mmap reader: if another process truncates the file while it is mapped, touching
// the lost pages raises SIGBUS. Weight files are treated as immutable while open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tessera {

class MappedFile {
 public:
  // Throws tessera::Error (kIo) naming the path when the file cannot be opened or mapped.
  // An empty file maps to data() == nullptr, size() == 0.
  static std::shared_ptr<const MappedFile> open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace tessera
