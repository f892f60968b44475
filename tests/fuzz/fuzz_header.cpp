// libFuzzer target: the frame header decoder. Whatever it accepts must
// re-encode to the same header_size bytes (the reserved bits are all checked).
#include <corokv/wire/frame.hpp>

#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace corokv::wire;
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  frame_header h;
  if (decode_header(in, {}, h) != corokv::errc::success) return 0;
  const auto again = encode_header(h);
  if (std::memcmp(again.data(), data, header_size) != 0) __builtin_trap();
  return 0;
}
