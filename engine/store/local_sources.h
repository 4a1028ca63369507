// Directories the daemon keeps under its store root beside snapshots, blobs and cache mounts,
// which garbage collection lists and removes: the last materialization of each client context
// directory (BuildKit's source.local records). The solver's ContextCache keeps them; the
// collector reaches them only through this interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kbuild::store {

class LocalSources {
 public:
  struct Entry {
    std::string id;    // the directory's name under <root>/contexts
    std::string path;  // the directory
    std::string name;  // what the client's directory is to the build: "context"
    std::chrono::system_clock::time_point created;
    std::chrono::system_clock::time_point last_used;  // the last build that used it
    uint64_t usage_count = 0;                        // the builds that used it
    bool in_use = false;                             // a build holds it now
  };

  virtual ~LocalSources() = default;
  // Every directory remembered now.
  virtual std::vector<Entry> list() = 0;
  // Forgets `id` and removes its directory, unless a build holds it (or came to take it since
  // it was listed) or it is not remembered any more: false then, and nothing changes.
  virtual bool remove(const std::string& id) = 0;
};

}  // namespace kbuild::store
