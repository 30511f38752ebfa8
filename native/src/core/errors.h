// Errors raised by the runtime. The binding turns each into a JS exception whose `code` names the kind, so the
// TS layer can rethrow a typed error; the message always names the op and the shapes involved.
#pragma once
#include <stdexcept>
#include <string>

namespace owlet {

enum class ErrorKind { Shape, DType, Device, Disposed, Argument, OutOfMemory, Backend, NotImplemented, Distributed };

inline const char* error_code(ErrorKind k) {
  switch (k) {
    case ErrorKind::Shape: return "OWLET_SHAPE";
    case ErrorKind::DType: return "OWLET_DTYPE";
    case ErrorKind::Device: return "OWLET_DEVICE";
    case ErrorKind::Disposed: return "OWLET_DISPOSED";
    case ErrorKind::Argument: return "OWLET_ARGUMENT";
    case ErrorKind::OutOfMemory: return "OWLET_OOM";
    case ErrorKind::Backend: return "OWLET_BACKEND";
    case ErrorKind::NotImplemented: return "OWLET_NOT_IMPLEMENTED";
    case ErrorKind::Distributed: return "OWLET_DIST";
  }
  return "OWLET_ERROR";
}

struct Error : std::runtime_error {
  ErrorKind kind;
  Error(ErrorKind k, const std::string& msg) : std::runtime_error(msg), kind(k) {}
};

[[noreturn]] inline void fail(ErrorKind k, const std::string& msg) { throw Error(k, msg); }

}  // namespace owlet
