// SHA-256 of a file, for verifying a bundle against its manifest.
// Self-contained (FIPS 180-4) so that the demo needs no OpenSSL on an edge device.
#pragma once
#include <string>

namespace bx {
// Lower-case hex digest of the file's bytes; throws std::runtime_error if it cannot be read.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const std::string& data);
}  // namespace bx
