// libFuzzer target: response decoding, as a client meets it. The first byte
// picks the message type, the rest is the payload. Whatever decodes must
// re-encode and decode to an equal message with the same trailing size.
#include <corokv/wire/operations.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace corokv::wire;
  if (size == 0) return 0;
  const auto type = static_cast<message_type>(1 + data[0] % last_message_type);
  const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  response decoded;
  std::span<const std::byte> trailing;
  if (decode_response(type, payload, decoded, trailing) != corokv::errc::success) return 0;
  std::vector<std::byte> again;
  if (std::visit([&](auto& m) { return encode(m, again); }, decoded) != corokv::errc::success) __builtin_trap();
  again.insert(again.end(), trailing.begin(), trailing.end());
  response twice;
  std::span<const std::byte> trailing_twice;
  if (decode_response(type, again, twice, trailing_twice) != corokv::errc::success) __builtin_trap();
  if (!(twice == decoded) || trailing_twice.size() != trailing.size()) __builtin_trap();
  return 0;
}
