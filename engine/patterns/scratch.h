// Scratch memory for one match: on the stack for ordinary sizes, on the heap beyond.
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <memory>

namespace kbuild::patterns {

template <std::size_t N>
class Scratch {
 public:
  explicit Scratch(std::size_t size) {
    if (size > N) heap_ = std::make_unique<unsigned char[]>(size);
    data_ = heap_ ? heap_.get() : inline_.data();
    std::memset(data_, 0, size);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  unsigned char* data() { return data_; }

 private:
  std::array<unsigned char, N> inline_;
  std::unique_ptr<unsigned char[]> heap_;
  unsigned char* data_;
};

}  // namespace kbuild::patterns
