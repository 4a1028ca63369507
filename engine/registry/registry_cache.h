// A build cache in a registry repository (--cache-to/--cache-from type=registry,ref=...):
// the root document under the reference's tag or digest, the blobs beside it.
#pragma once

#include <string>

#include "engine/image/reference.h"
#include "engine/registry/client.h"
#include "engine/remotecache/cache_store.h"

namespace kbuild::registry {

class RegistryCache : public remotecache::CacheSource, public remotecache::CacheTarget {
 public:
  // `client` outlives this.
  RegistryCache(RegistryClient& client, image::Reference reference)
      : client_(client), reference_(std::move(reference)) {}

  std::string name() const override { return reference_.str(); }
  remotecache::RootDocument root() override;
  void blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) override;
  bool has_blob(const store::Digest& digest) override;
  void put_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) override;
  void put_root(const std::string& media_type, const std::string& bytes) override;

 private:
  std::string tag_or_digest() const { return reference_.digest.empty() ? reference_.tag : reference_.digest; }

  RegistryClient& client_;
  image::Reference reference_;
};

}  // namespace kbuild::registry
