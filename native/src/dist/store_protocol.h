// The rendezvous store's wire protocol: one request, one reply, over a TCP connection that a client keeps open.
// Integers are little-endian; a string or value is a u32 length and its bytes.
//
//   SET  key value                 -> OK
//   GET  key timeout_ms            -> OK value | TIMEOUT        (waits until the key is set)
//   WAIT n key×n timeout_ms        -> OK | TIMEOUT m missing×m  (waits until every key is set)
//
// Keys are never deleted: a store lives for one launch, and what it holds (addresses, a few positions) is small.
#pragma once
#include <cstdint>

namespace owlet::dist {

enum class StoreOp : uint8_t { Set = 1, Get = 2, Wait = 3 };
enum class StoreStatus : uint8_t { Ok = 0, Timeout = 1 };

}  // namespace owlet::dist
