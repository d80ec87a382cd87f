// SHA-256 of a file, for verifying a bundle against its manifest.
// Self-contained (FIPS 180-4) so that the demo needs no OpenSSL on an edge device.
#pragma once
#include <cstdint>
#include <string>

namespace bx {
// Lower-case hex digest of the file's bytes; throws std::runtime_error if it cannot be read.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const std::string& data);
// Digest of what read(fd) yields, stopping once more than `limit` bytes were read (`total` says
// how many): a file that grows or never ends (a FIFO, a device) cannot make this read forever.
std::string sha256_fd(int fd, uint64_t limit, uint64_t& total);
}  // namespace bx
