#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "collectives/rendezvous/store.h"
#include "common/process.h"
#include "common/status.h"

namespace plexus::collectives {
namespace {

// Keys may contain '/', which must not make folders: every byte outside
// [A-Za-z0-9._-] is written as %XX.
std::string EscapeKey(absl::string_view key) {
  std::string out;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

class FileStore : public Store {
 public:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    if (key.empty()) return absl::InvalidArgumentError("store: empty key");
    return WriteFileAtomically(PathOf(key), std::string(value));
  }

  absl::StatusOr<std::string> Get(absl::string_view key,
                                  absl::Time deadline) override {
    std::string keys[] = {std::string(key)};
    PLEXUS_RETURN_IF_ERROR(Wait(keys, deadline));
    return Read(key);
  }

  absl::Status Wait(absl::Span<const std::string> keys,
                    absl::Time deadline) override {
    absl::Duration backoff = absl::Milliseconds(1);
    while (true) {
      std::vector<std::string> missing;
      for (const auto& k : keys) {
        if (!std::filesystem::exists(PathOf(k))) missing.push_back(k);
      }
      if (missing.empty()) return absl::OkStatus();
      absl::Time now = absl::Now();
      if (now >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "store: keys not set in time: ", absl::StrJoin(missing, ", ")));
      }
      // Polling the file system: the backoff bounds the cost of waiting.
      absl::SleepFor(std::min(backoff, deadline - now));
      backoff = std::min(backoff * 2, absl::Milliseconds(20));
    }
  }

  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override {
    std::string lock_path = absl::StrCat(dir_, "/.lock");
    int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("store: open ", lock_path, ": ", strerror(errno)));
    }
    if (flock(fd, LOCK_EX) != 0) {
      close(fd);
      return absl::InternalError(
          absl::StrCat("store: flock: ", strerror(errno)));
    }
    absl::StatusOr<int64_t> result = AddLocked(key, delta);
    flock(fd, LOCK_UN);
    close(fd);
    return result;
  }

 private:
  std::string PathOf(absl::string_view key) const {
    return absl::StrCat(dir_, "/", EscapeKey(key));
  }

  absl::StatusOr<std::string> Read(absl::string_view key) const {
    std::ifstream in(PathOf(key), std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("store: no key ", key));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  absl::StatusOr<int64_t> AddLocked(absl::string_view key, int64_t delta) {
    int64_t value = 0;
    if (std::filesystem::exists(PathOf(key))) {
      PLEXUS_ASSIGN_OR_RETURN(std::string text, Read(key));
      if (!absl::SimpleAtoi(text, &value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("store key ", key, " is not a counter"));
      }
    }
    value += delta;
    PLEXUS_RETURN_IF_ERROR(Set(key, absl::StrCat(value)));
    return value;
  }

  const std::string dir_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> NewFileStore(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("file store: not a folder: ", dir));
  }
  return std::make_unique<FileStore>(dir);
}

}  // namespace plexus::collectives
